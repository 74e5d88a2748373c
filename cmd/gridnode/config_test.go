package main

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/wire"
)

// env returns a getenv over a fixed set of variables, so tests never see
// the real environment.
func env(kv ...string) func(string) (string, bool) {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "gridnode.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustParse(t *testing.T, args []string, getenv func(string) (string, bool)) options {
	t.Helper()
	o, err := parseOptions(args, getenv)
	if err != nil {
		t.Fatalf("parseOptions(%q): %v", args, err)
	}
	return o
}

func TestDefaults(t *testing.T) {
	o := mustParse(t, nil, env())
	want := options{
		bind: grid.DefaultBindAddr, addr: grid.DefaultDataAddr, cluster: grid.DefaultCluster,
		partitions: 271, gossip: "lan", shutdownTimeout: 30 * time.Second, joinTimeout: time.Minute,
		logLevel: "info", logFormat: "text",
		maxValueSize: wire.DefaultMaxValueSize, maxKeySize: wire.DefaultMaxKeySize,
		maxNameSize: wire.DefaultMaxNameSize, maxConns: grid.DefaultMaxConns, maxConnsPerAddr: grid.DefaultMaxConnsPerAddr,
		maxInFlight: grid.DefaultMaxInFlight, handshakeTimeout: grid.DefaultHandshakeTimeout, idleTimeout: grid.DefaultIdleTimeout,
		profile: "reliable", backupCount: -1, asyncBackupCount: -1, backupTimeout: 5 * time.Second, placement: "member",
		sessionTTL: grid.DefaultSessionTTL,
		maxMemory:  defaultMaxMemory,
	}
	if !reflect.DeepEqual(o, want) {
		t.Errorf("defaults\n got %+v\nwant %+v", o, want)
	}
}

func TestPrecedenceFlagsOverEnvOverFile(t *testing.T) {
	cfg := writeConfig(t, `
name: from-file
bind: 127.0.0.1:1001
addr: 127.0.0.1:1002
cluster: file-cluster
join: [127.0.0.1:2001, 127.0.0.1:2002]
partitions: 17
gossip: fast
probe-interval: 300ms
shutdown-timeout: 5s
max-value-size: 1MiB
`)
	getenv := env(
		"SHOAL_CONFIG", cfg,
		"SHOAL_BIND", "127.0.0.1:3001",
		"SHOAL_CLUSTER", "env-cluster",
		"SHOAL_JOIN", "127.0.0.1:4001",
		"SHOAL_PROBE_INTERVAL", "400ms",
		"SHOAL_MAX_VALUE_SIZE", "2MiB",
	)
	o := mustParse(t, []string{"--cluster", "flag-cluster", "--join", "127.0.0.1:5001", "--join=127.0.0.1:5002,127.0.0.1:5003", "--max-value-size", "3MiB"}, getenv)
	checks := []struct {
		what      string
		got, want any
	}{
		{"name (file only)", o.name, "from-file"},
		{"addr (file only)", o.addr, "127.0.0.1:1002"},
		{"bind (env over file)", o.bind, "127.0.0.1:3001"},
		{"cluster (flag over env over file)", o.cluster, "flag-cluster"},
		{"join (flags extend each other, replace env and file)", strings.Join(o.join, ","), "127.0.0.1:5001,127.0.0.1:5002,127.0.0.1:5003"},
		{"partitions (file)", o.partitions, 17},
		{"gossip (file)", o.gossip, "fast"},
		{"probe-interval (env over file)", o.probeInterval, 400 * time.Millisecond},
		{"shutdown-timeout (file)", o.shutdownTimeout, 5 * time.Second},
		{"max-value-size (flag)", o.maxValueSize, 3 << 20},
		{"max-key-size (default)", o.maxKeySize, wire.DefaultMaxKeySize},
		{"config (from env)", o.config, cfg},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
		}
	}

	// Without the flag, the environment replaces the file's list.
	o = mustParse(t, nil, getenv)
	if got := strings.Join(o.join, ","); got != "127.0.0.1:4001" {
		t.Errorf("join (env over file) = %q", got)
	}
	// The --config flag wins over SHOAL_CONFIG.
	other := writeConfig(t, "name: other-file\n")
	if o := mustParse(t, []string{"--config", other}, getenv); o.name != "other-file" || o.config != other {
		t.Errorf("--config over SHOAL_CONFIG: name %q config %q", o.name, o.config)
	}
	// An empty environment variable is a value: it clears the file's list.
	if o := mustParse(t, nil, env("SHOAL_CONFIG", cfg, "SHOAL_JOIN", "")); len(o.join) != 0 {
		t.Errorf("SHOAL_JOIN= gave %q, want empty", o.join)
	}
}

func TestYAMLJoinForms(t *testing.T) {
	for _, body := range []string{
		"join: [127.0.0.1:1, 127.0.0.1:2]\n",
		"join:\n  - 127.0.0.1:1\n  - 127.0.0.1:2\n",
		"join: \"127.0.0.1:1, 127.0.0.1:2\"\n",
		"join: 127.0.0.1:1,127.0.0.1:2\n",
	} {
		o := mustParse(t, []string{"--config", writeConfig(t, body)}, env())
		if got := strings.Join(o.join, ","); got != "127.0.0.1:1,127.0.0.1:2" {
			t.Errorf("%q: join = %q", body, got)
		}
	}
	for _, body := range []string{"", "# only a comment\n", "join: []\n", "join:\n", "http: ~\n"} {
		o := mustParse(t, []string{"--config", writeConfig(t, body)}, env())
		if len(o.join) != 0 || o.http != "" {
			t.Errorf("%q: join %q http %q, want both empty", body, o.join, o.http)
		}
	}
}

func TestYAMLIsStrict(t *testing.T) {
	cases := []struct{ body, want string }{
		{"nmae: n1\n", `:1: unknown key "nmae"`},
		{"name: n1\nname: n2\n", `:2: key "name" already set on line 1`},
		{"config: other.yaml\n", `unknown key "config"`},
		{"version: true\n", `unknown key "version"`},
		{"name: {a: 1}\n", "want a plain value"},
		{"name: [a, b]\n", "a list is not allowed here"},
		{"join: [[127.0.0.1:1]]\n", "list items must be plain values"},
		{"- name: n1\n", "want a mapping"},
		{"name: n1\n  bad indent: x\n", "config file"},
		{"partitions: many\n", ":1: partitions: want an integer"},
		{"\n\npartitions: 0\n", ":3: partitions: want 1..65536"},
		{"join: [nonsense]\n", `join: "nonsense": want host:port`},
		{"shutdown-timeout: 30\n", "want a duration"},
		{"gossip: wan\n", "want one of lan, fast"},
		{"log-level: loud\n", "want one of debug, info, warn, error"},
	}
	for _, c := range cases {
		_, err := parseOptions([]string{"--config", writeConfig(t, c.body)}, env())
		if err == nil {
			t.Errorf("%q: no error", c.body)
			continue
		}
		if _, ok := err.(usageError); !ok {
			t.Errorf("%q: error %T is not a usage error", c.body, err)
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %q does not contain %q", c.body, err, c.want)
		}
	}
}

func TestUsageErrorsExit2(t *testing.T) {
	cfg := writeConfig(t, "bogus: 1\n")
	cases := []struct {
		name   string
		args   []string
		getenv func(string) (string, bool)
		want   string
	}{
		{"unknown flag", []string{"--nope"}, env(), "flag provided but not defined: -nope"},
		{"positional argument", []string{"extra"}, env(), `unexpected argument "extra"`},
		{"bad partitions", []string{"--partitions", "0"}, env(), "want 1..65536"},
		{"bad address", []string{"--bind", "localhost"}, env(), "want host:port"},
		{"bad port", []string{"--addr", "127.0.0.1:99999"}, env(), `bad port "99999"`},
		{"bad duration", []string{"--shutdown-timeout", "0s"}, env(), "want a positive duration"},
		{"bad size", []string{"--max-key-size", "2TiB"}, env(), "want a size"},
		{"bad log format", []string{"--log-format", "xml"}, env(), "want one of text, json"},
		{"missing config file", []string{"--config", filepath.Join(t.TempDir(), "missing.yaml")}, env(), "no such file"},
		{"unknown yaml key", []string{"--config", cfg}, env(), `unknown key "bogus"`},
		{"bad env value", nil, env("SHOAL_PARTITIONS", "x"), `SHOAL_PARTITIONS="x": want an integer`},
		{"bad env join", nil, env("SHOAL_JOIN", "a,b"), "SHOAL_JOIN"},
		{"zone too long for gossip metadata", []string{"--bind", "127.0.0.1:0", "--addr", "127.0.0.1:0", "--zone", strings.Repeat("z", 600)}, env(), "metadata"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := gridnode(c.args, c.getenv, &stdout, &stderr)
			if code != 2 {
				t.Fatalf("exit code %d, want 2; stderr:\n%s", code, stderr.String())
			}
			msg := stderr.String()
			if !strings.HasPrefix(msg, "gridnode: ") || !strings.Contains(msg, c.want) {
				t.Errorf("stderr %q, want a gridnode: line containing %q", msg, c.want)
			}
			if strings.Count(msg, "\n") != 1 {
				t.Errorf("stderr has %d lines, want 1:\n%s", strings.Count(msg, "\n"), msg)
			}
		})
	}
}

func TestHelpAndVersionExit0(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"--help"}, {"--version"}, {"--version", "--nope-after-version-is-still-a-parse-error"}} {
		var stdout, stderr bytes.Buffer
		code := gridnode(args, env(), &stdout, &stderr)
		wantCode := 0
		if len(args) == 2 {
			wantCode = 2
		}
		if code != wantCode {
			t.Errorf("%q: exit code %d, want %d (stderr %q)", args, code, wantCode, stderr.String())
		}
		if wantCode == 0 && stdout.Len() == 0 {
			t.Errorf("%q: nothing printed", args)
		}
	}
	var stdout bytes.Buffer
	gridnode([]string{"-h"}, env(), &stdout, &bytes.Buffer{})
	for _, want := range []string{"--probe-interval", "SHOAL_PROBE_INTERVAL", "-max-value-size bytes", "(default 127.0.0.1:7946)"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("usage does not mention %q:\n%s", want, stdout.String())
		}
	}
}

func TestGridConfig(t *testing.T) {
	o := mustParse(t, []string{"--gossip", "fast", "--suspicion-mult", "7", "--max-value-size", "64MiB", "--zone", "z1", "--partitions", "13"}, env())
	c := o.gridConfig(nil)
	g := grid.FastGossip()
	g.SuspicionMult = 7
	if c.Gossip != g {
		t.Errorf("gossip %+v, want fast with suspicion-mult 7: %+v", c.Gossip, g)
	}
	if c.Limits.MaxValueSize != 64<<20 || c.Limits.MaxFrameSize < 2*(64<<20)+c.Limits.MaxKeySize {
		t.Errorf("limits %+v cannot carry a 64 MiB value and aux operand", c.Limits)
	}
	if c.Zone != "z1" || c.PartitionCount != 13 || c.ShutdownTimeout != 30*time.Second {
		t.Errorf("config %+v", c)
	}
	if d := mustParse(t, nil, env()).gridConfig(nil); d.Gossip != grid.LANGossip() || d.Limits != wire.DefaultLimits() {
		t.Errorf("default gossip %+v limits %+v, want LAN and default limits", d.Gossip, d.Limits)
	}
}

func TestConnLimitFlags(t *testing.T) {
	o := mustParse(t, []string{"--max-conns", "500", "--max-conns-per-addr", "50", "--max-in-flight", "8",
		"--handshake-timeout", "2s", "--idle-timeout", "45s", "--max-name-size", "1KiB"}, env())
	c := o.gridConfig(nil)
	want := grid.ConnLimits{MaxConns: 500, MaxConnsPerAddr: 50, MaxInFlight: 8, HandshakeTimeout: 2 * time.Second, IdleTimeout: 45 * time.Second}
	if c.Conns != want || c.Limits.MaxNameSize != 1024 {
		t.Errorf("conns %+v name limit %d, want %+v and 1024", c.Conns, c.Limits.MaxNameSize, want)
	}
	// The environment sets them too, and an idle timeout of 0 turns it off.
	o = mustParse(t, nil, env("SHOAL_IDLE_TIMEOUT", "0", "SHOAL_MAX_CONNS_PER_ADDR", "7"))
	if c := o.gridConfig(nil).Conns; c.IdleTimeout >= 0 || c.MaxConnsPerAddr != 7 {
		t.Errorf("from the environment: %+v", c)
	}
	if _, err := parseOptions([]string{"--max-in-flight", "0"}, env()); err == nil {
		t.Error("--max-in-flight 0 accepted")
	}
	if c := mustParse(t, nil, env()).gridConfig(nil).Conns; c != (grid.ConnLimits{MaxConns: grid.DefaultMaxConns, MaxConnsPerAddr: grid.DefaultMaxConnsPerAddr,
		MaxInFlight: grid.DefaultMaxInFlight, HandshakeTimeout: grid.DefaultHandshakeTimeout, IdleTimeout: grid.DefaultIdleTimeout}) {
		t.Errorf("defaults: %+v", c)
	}
}

func TestAdvertiseDataAddr(t *testing.T) {
	cases := []struct {
		o    options
		want string
	}{
		{options{addr: "127.0.0.1:5701"}, ""},
		{options{addr: "10.0.0.1:5701", advertiseAddr: "1.2.3.4:5701"}, "1.2.3.4:5701"},
		{options{addr: "0.0.0.0:5701", advertise: "10.9.8.7:7946"}, "10.9.8.7:5701"},
		{options{addr: "[::]:5701", advertise: "10.9.8.7:7946"}, "10.9.8.7:5701"},
		{options{addr: ":5701", advertise: "10.9.8.7:7946"}, "10.9.8.7:5701"},
		{options{addr: "0.0.0.0:0", advertise: "10.9.8.7:7946"}, ""},
	}
	for _, c := range cases {
		if got := c.o.advertiseDataAddr(); got != c.want {
			t.Errorf("addr %q advertise %q advertise-addr %q: got %q, want %q", c.o.addr, c.o.advertise, c.o.advertiseAddr, got, c.want)
		}
	}
	// Without --advertise, a wildcard address becomes a private address of
	// this machine, if it has one.
	if got := (options{addr: "0.0.0.0:5701"}).advertiseDataAddr(); got != "" && !strings.HasSuffix(got, ":5701") {
		t.Errorf("wildcard data address advertised as %q", got)
	}
}

func TestParseSize(t *testing.T) {
	good := map[string]int{"1": 1, "1024": 1024, "64KiB": 64 << 10, "16 MiB": 16 << 20, "1GiB": 1 << 30, "10B": 10}
	for s, want := range good {
		if got, err := parseSize(s); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "0", "-1", "1.5MiB", "2GiB", "1MB", "x"} {
		if n, err := parseSize(s); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", s, n)
		}
	}
	for _, n := range []int{1, 1000, 1 << 10, 3 << 20, 1 << 30} {
		if got, err := parseSize(formatSize(n)); err != nil || got != n {
			t.Errorf("round trip of %d via %q: %d, %v", n, formatSize(n), got, err)
		}
	}
}

func TestLogger(t *testing.T) {
	var b bytes.Buffer
	o := mustParse(t, []string{"--log-format", "json", "--log-level", "warn"}, env())
	log := o.newLogger(&b)
	log.Info("hidden")
	log.Warn("shown", "k", "v")
	if got := b.String(); strings.Contains(got, "hidden") || !strings.Contains(got, `"msg":"shown"`) {
		t.Errorf("json warn logger wrote %q", got)
	}
}
