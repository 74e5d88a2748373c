package main

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/queues"
)

func TestMaxMemoryFlag(t *testing.T) {
	for _, c := range []struct {
		args []string
		env  []string
		want int64
	}{
		{[]string{"--max-memory", "512MiB"}, nil, 512 << 20},
		{[]string{"--max-memory", "2GiB"}, nil, 2 << 30},
		{[]string{"--max-memory", "1048576"}, nil, 1 << 20},
		{[]string{"--max-memory", "0"}, nil, 0},
		{nil, []string{"SHOAL_MAX_MEMORY", "64MiB"}, 64 << 20},
	} {
		if got := mustParse(t, c.args, env(c.env...)).gridConfig(nil).MaxMemory; got != c.want {
			t.Errorf("%q %q: MaxMemory %d, want %d", c.args, c.env, got, c.want)
		}
	}
	for _, bad := range []string{"lots", "-1", "0%", "101%", "1.5GiB", "12PiB"} {
		if _, err := parseOptions([]string{"--max-memory", bad}, env()); err == nil {
			t.Errorf("--max-memory %q accepted", bad)
		}
	}
	// The default is a share of what the process may use, never 0 on
	// Linux.
	o := mustParse(t, nil, env())
	if o.maxMemory != defaultMaxMemory {
		t.Fatalf("default %q, want %q", o.maxMemory, defaultMaxMemory)
	}
	if total, from, err := availableMemory(); err == nil {
		got := o.gridConfig(nil).MaxMemory
		if want := int64(total / 100 * 70); got != want {
			t.Fatalf("default MaxMemory %d, want 70%% of %d (%s) = %d", got, total, from, want)
		}
	}
}

func TestResolveMaxMemory(t *testing.T) {
	avail := func() (uint64, string, error) { return 1000 << 20, "test", nil }
	if n, _, err := resolveMaxMemory("70%", avail); err != nil || n != 700<<20 {
		t.Fatalf("70%% of 1000MiB: %d, %v", n, err)
	}
	if n, _, err := resolveMaxMemory("1GiB", func() (uint64, string, error) { t.Fatal("sizes need no detection"); return 0, "", nil }); err != nil || n != 1<<30 {
		t.Fatalf("1GiB: %d, %v", n, err)
	}
	failing := func() (uint64, string, error) { return 0, "", errors.New("no idea") }
	if n, _, err := resolveMaxMemory("70%", failing); err == nil || n != 0 {
		t.Fatalf("undetectable memory: %d, %v; want an error and 0 (off)", n, err)
	}
}

func TestMemTotal(t *testing.T) {
	n, _, err := memTotal([]byte("MemTotal:       24684084 kB\nMemFree:  1 kB\n"))
	if err != nil || n != 24684084<<10 {
		t.Fatalf("MemTotal: %d, %v", n, err)
	}
	if _, _, err := memTotal([]byte("MemFree: 1 kB\n")); err == nil {
		t.Fatal("no MemTotal accepted")
	}
}

func TestMapRulesInConfigFile(t *testing.T) {
	cfg := writeConfig(t, `
partitions: 7
maps:
  - pattern: "cache-*"
    default-ttl: 10m
    max-entries: 70000
    eviction: lfu
  - pattern: sessions
    default-ttl: 30s
    max-idle: 5m
`)
	o := mustParse(t, []string{"--config", cfg}, env())
	want := []maps.Rule{{Pattern: "cache-*", DefaultTTL: 10 * time.Minute, MaxEntries: 70000, Eviction: maps.EvictLFU}, {Pattern: "sessions", DefaultTTL: 30 * time.Second, MaxIdle: 5 * time.Minute}}
	if !slices.Equal(o.mapRules, want) {
		t.Fatalf("map rules %+v, want %+v", o.mapRules, want)
	}
	svc, ok := services(o)[0].(maps.Service)
	if !ok || !slices.Equal(svc.Rules, want) || svc.PartitionCount != 7 {
		t.Fatalf("map service %+v", services(o)[0])
	}
	for _, bad := range []string{
		"maps: [{pattern: a, ttl: 1s}]",           // unknown key
		"maps: [{default-ttl: 1s}]",               // no pattern
		"maps: [{pattern: a, default-ttl: soon}]", // bad duration
		"maps: [{pattern: a, max-entries: -1}]",   // negative bound
		"maps: [{pattern: '[', max-entries: 1}]",  // bad pattern
		"maps: [{pattern: a, eviction: random}]",  // unknown policy
		"maps: [{pattern: a, max-idle: -1s}]",     // negative max-idle
		"maps: {pattern: a}",                      // not a list
	} {
		if _, err := parseOptions([]string{"--config", writeConfig(t, bad)}, env()); err == nil {
			t.Errorf("config %q accepted", bad)
		}
	}
}

func TestQueueRulesInConfigFile(t *testing.T) {
	cfg := writeConfig(t, `
queues:
  - pattern: "orders*"
    capacity: 100
    visibility: 45s
    max-deliveries: 5
    item-events: true
`)
	o := mustParse(t, []string{"--config", cfg}, env())
	want := []queues.Rule{{Pattern: "orders*", Capacity: 100, Visibility: 45 * time.Second, MaxDeliveries: 5, ItemEvents: true}}
	if !slices.Equal(o.queueRules, want) {
		t.Fatalf("queue rules %+v, want %+v", o.queueRules, want)
	}
	for _, bad := range []string{
		"queues: [{pattern: a, size: 1}]",          // unknown key
		"queues: [{capacity: 1}]",                  // no pattern
		"queues: [{pattern: a, visibility: soon}]", // bad duration
		"queues: [{pattern: a, capacity: -1}]",     // negative capacity
		"queues: [{pattern: '[', capacity: 1}]",    // bad pattern
		"queues: {pattern: a}",                     // not a list
	} {
		if _, err := parseOptions([]string{"--config", writeConfig(t, bad)}, env()); err == nil {
			t.Errorf("config %q accepted", bad)
		}
	}
}
