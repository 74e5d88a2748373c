package grid_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/grid/gridtest"
	"github.com/shoalgrid/shoal/maps"
)

// TestOpLatenciesCountWhereExecuted checks that each request is recorded
// once, by the member that owns its partition, under its operation's name.
func TestOpLatenciesCountWhereExecuted(t *testing.T) {
	cl := gridtest.New(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m := maps.New(cl.Member(0), "lat")
	const n = 200
	for i := range n {
		if err := m.Put(ctx, "k"+strconv.Itoa(i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		if _, _, err := maps.New(cl.Member(1), "lat").Get(ctx, "k"+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	counts := map[string]uint64{}
	for _, mb := range cl.Live() {
		for _, l := range mb.OpLatencies() {
			if l.Service != "map" {
				continue
			}
			counts[l.Op] += l.Count
			var sum uint64
			for _, b := range l.Buckets {
				sum += b
			}
			if sum != l.Count || l.Sum <= 0 || len(l.Buckets) != len(grid.LatencyBounds())+1 {
				t.Errorf("%s %s: buckets sum to %d, count %d, sum %v", mb.Name(), l.Op, sum, l.Count, l.Sum)
			}
		}
	}
	if counts["put"] != n || counts["get"] != n {
		t.Errorf("recorded %v, want %d puts and %d gets over both members", counts, n, n)
	}
}

func TestStructures(t *testing.T) {
	cl := gridtest.New(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 50 {
		if err := maps.New(cl.Member(0), "a").Put(ctx, "k"+strconv.Itoa(i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	if err := maps.New(cl.Member(1), "b").Put(ctx, "only", []byte("v")); err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, m := range cl.Live() {
		for _, s := range m.Structures() {
			if s.Service != "map" || s.Partitions == 0 {
				t.Errorf("%+v", s)
			}
			got[s.Name] += s.Entries
		}
	}
	if got["a"] != 50 || got["b"] != 1 || len(got) != 2 {
		t.Errorf("structures over both members: %v, want a:50 b:1", got)
	}
}
