package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/shoalgrid/shoal/grid/gridtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, gridtest.LeakOptions()...) }

// result is what one in-process gridctl invocation produced.
type result struct {
	code           int
	stdout, stderr string
	elapsed        time.Duration
}

// gridctl runs the command line in-process with stdin, under a deadline so
// a hang fails the test instead of stalling it.
func gridctl(t *testing.T, stdin io.Reader, args ...string) result {
	t.Helper()
	return gridctlEnv(t, nil, stdin, args...)
}

// gridctlEnv is gridctl with environment variables: only those in envs are
// visible to the command, never the test process's own.
func gridctlEnv(t *testing.T, envs map[string]string, stdin io.Reader, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	var out, errOut bytes.Buffer
	start := time.Now()
	getenv := func(k string) (string, bool) { v, ok := envs[k]; return v, ok }
	code := run(ctx, args, stdin, &out, &errOut, getenv)
	return result{code: code, stdout: out.String(), stderr: errOut.String(), elapsed: time.Since(start)}
}

// expect fails the test unless r exited with code.
func (r result) expect(t *testing.T, code int) result {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit code %d, want %d\nstdout: %q\nstderr: %q", r.code, code, r.stdout, r.stderr)
	}
	return r
}

// jsonKeys returns the sorted top-level keys of a JSON object.
func jsonKeys(t *testing.T, s string) []string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("not one JSON object: %v\n%s", err, s)
	}
	return slices.Sorted(maps.Keys(m))
}

// TestCluster runs every command against one real 3-member in-process
// cluster (starting one takes a while, so the subtests share it).
func TestCluster(t *testing.T) {
	cl := gridtest.New(t, 3)
	var addrs []string
	for _, m := range cl.Live() {
		addrs = append(addrs, m.Addr())
	}
	addr := "--addr=" + strings.Join(addrs, ",")
	one := "--addr=" + addrs[1]

	t.Run("status text", func(t *testing.T) {
		// The cluster is stable, but a backup may still be catching up
		// (the table then lists it as an extra replica): wait for safe.
		var r result
		gridtest.Eventually(t, 10*time.Second, func() (bool, string) {
			r = gridctl(t, nil, "status", addr).expect(t, 0)
			return strings.Contains(r.stdout, "safe: yes"), r.stdout
		})
		if !strings.Contains(r.stdout, "3 members") {
			t.Errorf("summary missing:\n%s", r.stdout)
		}
		for _, name := range []string{"NAME", "m0", "m1", "m2", "QUORUM", "yes (3 of 3 visible, 2 needed)"} {
			if !strings.Contains(r.stdout, name) {
				t.Errorf("status lacks %q:\n%s", name, r.stdout)
			}
		}
		if r.stderr != "" {
			t.Errorf("stderr: %q", r.stderr)
		}
	})

	t.Run("status json", func(t *testing.T) {
		// The global flag before the command must work too.
		r := gridctl(t, nil, one, "status", "--json").expect(t, 0)
		if got, want := jsonKeys(t, r.stdout), []string{"members", "partition_count", "safe", "table_version"}; !slices.Equal(got, want) {
			t.Errorf("keys %v, want %v", got, want)
		}
		var st struct {
			Members []struct {
				Name   string `json:"name"`
				Addr   string `json:"addr"`
				Owned  int    `json:"partitions_owned"`
				Backup *int   `json:"partitions_backup"`
			} `json:"members"`
			TableVersion   uint64 `json:"table_version"`
			PartitionCount int    `json:"partition_count"`
			Safe           bool   `json:"safe"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
			t.Fatal(err)
		}
		if len(st.Members) != 3 || st.PartitionCount != 271 || st.TableVersion == 0 || !st.Safe {
			t.Fatalf("status = %+v", st)
		}
		sum := 0
		for _, m := range st.Members {
			if m.Name == "" || !slices.Contains(addrs, m.Addr) || m.Backup == nil {
				t.Errorf("member %+v", m)
			}
			sum += m.Owned
		}
		if sum != st.PartitionCount {
			t.Errorf("owned partitions sum to %d, want %d", sum, st.PartitionCount)
		}
	})

	t.Run("map round trip", func(t *testing.T) {
		gridctl(t, nil, "map", "put", "m", "k1", "hello", addr).expect(t, 0)
		// Flags before the subcommand, and a binary value from stdin.
		bin := "line one\nline two\x00\xff"
		gridctl(t, strings.NewReader(bin), "map", one, "put", "m", "k2", "-").expect(t, 0)
		if r := gridctl(t, nil, "map", "get", "m", "k1", addr).expect(t, 0); r.stdout != "hello" {
			t.Errorf("get k1 = %q", r.stdout)
		}
		if r := gridctl(t, nil, addr, "map", "get", "m", "k2").expect(t, 0); r.stdout != bin {
			t.Errorf("get k2 = %q, want %q", r.stdout, bin)
		}
		// A value that looks like a flag, after "--".
		gridctl(t, nil, "map", "put", addr, "m", "k3", "--", "-5").expect(t, 0)
		if r := gridctl(t, nil, "map", "get", "m", "k3", addr).expect(t, 0); r.stdout != "-5" {
			t.Errorf("get k3 = %q", r.stdout)
		}
		if r := gridctl(t, nil, "map", "size", "m", addr).expect(t, 0); r.stdout != "3\n" {
			t.Errorf("size = %q", r.stdout)
		}
		if r := gridctl(t, nil, "map", "keys", "m", addr).expect(t, 0); r.stdout != "k1\nk2\nk3\n" {
			t.Errorf("keys = %q", r.stdout)
		}
		gridctl(t, nil, "map", "delete", "m", "k1", addr).expect(t, 0)
		r := gridctl(t, nil, "map", "delete", "m", "k1", addr).expect(t, 1)
		if !strings.Contains(r.stderr, `key "k1" not found in map "m"`) {
			t.Errorf("delete of absent key: stderr %q", r.stderr)
		}
		if r := gridctl(t, nil, "map", "size", "m", addr).expect(t, 0); r.stdout != "2\n" {
			t.Errorf("size after delete = %q", r.stdout)
		}
	})

	t.Run("get missing key", func(t *testing.T) {
		r := gridctl(t, nil, "map", "get", "nomap", "nokey", addr).expect(t, 1)
		if r.stdout != "" {
			t.Errorf("stdout = %q, want nothing", r.stdout)
		}
		if !strings.Contains(r.stderr, `key "nokey" not found in map "nomap"`) || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("stderr = %q", r.stderr)
		}
	})

	t.Run("ttl", func(t *testing.T) {
		gridctl(t, nil, "map", "put", "ttlmap", "k", "v", "--ttl", "100ms", addr).expect(t, 0)
		gridtest.Eventually(t, 10*time.Second, func() (bool, string) {
			r := gridctl(t, nil, "map", "get", "ttlmap", "k", addr)
			return r.code == 1 && r.stdout == "", "entry has not expired: " + r.stdout
		})
		r := gridctl(t, nil, "map", "get", "ttlmap", "k", "--ttl", "1s", addr).expect(t, 2)
		if !strings.Contains(r.stderr, "--ttl applies to map put and putall only") {
			t.Errorf("stderr = %q", r.stderr)
		}
	})

	t.Run("oversized value from stdin", func(t *testing.T) {
		big := bytes.NewReader(make([]byte, 17<<20))
		r := gridctl(t, big, "map", "put", "m", "big", "-", addr).expect(t, 1)
		if !strings.Contains(r.stderr, "too large") {
			t.Errorf("stderr = %q", r.stderr)
		}
		gridctl(t, nil, "map", "get", "m", "big", addr).expect(t, 1)
	})

	t.Run("oversized bench value", func(t *testing.T) {
		r := gridctl(t, nil, "bench", addr, "--value-size", strconv.Itoa(17<<20), "--requests", "10").expect(t, 1)
		if !strings.Contains(r.stderr, "too large") {
			t.Errorf("stderr = %q", r.stderr)
		}
	})

	t.Run("bench json", func(t *testing.T) {
		r := gridctl(t, nil, "bench", addr, "--requests", "2000", "--clients", "4", "--map", "b1", "--json").expect(t, 0)
		want := []string{"clients", "errors", "gets", "ops", "ops_per_sec", "p50_ms", "p90_ms", "p999_ms", "p99_ms", "puts", "seconds", "value_size"}
		if got := jsonKeys(t, r.stdout); !slices.Equal(got, want) {
			t.Errorf("keys %v, want %v", got, want)
		}
		var b benchJSON
		if err := json.Unmarshal([]byte(r.stdout), &b); err != nil {
			t.Fatal(err)
		}
		if b.Ops != 2000 || b.Errors != 0 || b.Gets+b.Puts != 2000 || b.Gets == 0 || b.Puts == 0 ||
			b.Clients != 4 || b.ValueSize != 100 || b.Seconds <= 0 || b.OpsPerSec <= 0 {
			t.Errorf("report %+v", b)
		}
		if !(0 < b.P50 && b.P50 <= b.P90 && b.P90 <= b.P99 && b.P99 <= b.P999) {
			t.Errorf("percentiles not ordered: %+v", b)
		}
		if r.stderr != "" {
			t.Errorf("stderr = %q (no progress off a terminal)", r.stderr)
		}
	})

	t.Run("bench gets only", func(t *testing.T) {
		r := gridctl(t, nil, "bench", addr, "--requests", "500", "--clients", "4", "--map", "b2", "--ratio", "1:0", "--json").expect(t, 0)
		var b benchJSON
		if err := json.Unmarshal([]byte(r.stdout), &b); err != nil {
			t.Fatal(err)
		}
		if b.Ops != 500 || b.Gets != 500 || b.Puts != 0 || b.Errors != 0 {
			t.Errorf("report %+v", b)
		}
		// Nothing was written.
		if r := gridctl(t, nil, "map", "size", "b2", addr).expect(t, 0); r.stdout != "0\n" {
			t.Errorf("size = %q", r.stdout)
		}
	})

	t.Run("bench prefill", func(t *testing.T) {
		r := gridctl(t, nil, "bench", addr, "--requests", "300", "--clients", "8", "--keys", "200",
			"--map", "b3", "--ratio", "1:0", "--prefill").expect(t, 0)
		for _, s := range []string{"ops         300 (gets 300, puts 0, get misses 0)", "p99.9"} {
			if !strings.Contains(r.stdout, s) {
				t.Errorf("report lacks %q:\n%s", s, r.stdout)
			}
		}
		if r := gridctl(t, nil, "map", "size", "b3", addr).expect(t, 0); r.stdout != "200\n" {
			t.Errorf("size after prefill = %q", r.stdout)
		}
	})

	t.Run("bench duration", func(t *testing.T) {
		r := gridctl(t, nil, "bench", addr, "--duration", "200ms", "--clients", "4", "--map", "b4", "--json").expect(t, 0)
		var b benchJSON
		if err := json.Unmarshal([]byte(r.stdout), &b); err != nil {
			t.Fatal(err)
		}
		if b.Ops == 0 || b.Errors != 0 || b.Seconds < 0.2 {
			t.Errorf("report %+v", b)
		}
	})

	t.Run("wrong cluster name", func(t *testing.T) {
		r := gridctl(t, nil, "status", addr, "--cluster", "other", "--timeout", "20s").expect(t, 1)
		if r.elapsed > 5*time.Second {
			t.Errorf("took %v with --timeout 20s", r.elapsed)
		}
		// Written from the user's side: which cluster the member is in,
		// and the flag that fixes it; said at once, not after --timeout.
		want := "belongs to cluster \"shoal\", not \"other\": use --cluster shoal"
		if !strings.Contains(r.stderr, want) || strings.Contains(r.stderr, "this member") || strings.Contains(r.stderr, "peer is") ||
			strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("stderr = %q, want it to contain %q", r.stderr, want)
		}
	})

	opsSubtests(t, addrs)
}

func TestUnreachable(t *testing.T) {
	// A refused connection is final: gridctl says so at once instead of
	// retrying until --timeout, and says it once.
	for _, args := range [][]string{
		{"status", "--addr", "127.0.0.1:1", "--timeout", "20s"},
		{"--addr", "127.0.0.1:1", "--timeout", "20s", "map", "get", "m", "k"},
		{"bench", "--addr", "127.0.0.1:1", "--timeout", "20s"},
	} {
		r := gridctl(t, nil, args...).expect(t, 1)
		if r.elapsed > 3*time.Second {
			t.Errorf("%v took %v", args, r.elapsed)
		}
		if !strings.Contains(r.stderr, "127.0.0.1:1") || !strings.Contains(r.stderr, "nothing answered") ||
			!strings.Contains(r.stderr, "connection refused") || strings.Contains(r.stderr, "unavailable") ||
			strings.Count(r.stderr, "\n") != 1 || r.stdout != "" {
			t.Errorf("%v: stderr %q stdout %q", args, r.stderr, r.stdout)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "no command given"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"map"}, "needs a subcommand"},
		{[]string{"map", "frob", "m"}, `unknown map subcommand "frob"`},
		{[]string{"map", "get", "m"}, "map get needs NAME KEY"},
		{[]string{"map", "put", "m", "k"}, "map put needs NAME KEY VALUE"},
		{[]string{"map", "size"}, "map size needs NAME"},
		{[]string{"map", "keys", "a", "b"}, "map keys needs NAME"},
		{[]string{"map", "listen", "m", "k", "x"}, "map listen needs NAME [KEY], got 3 argument(s)"},
		{[]string{"map", "get", "", "k"}, "map name is empty"},
		{[]string{"rmap"}, "rmap needs a subcommand: put, get, delete, list or len"},
		{[]string{"rmap", "len"}, "rmap len needs NAME, got 0 argument(s)"},
		{[]string{"queue", "offer", "q", "a", "b"}, "queue offer needs NAME [ITEM], got 3 argument(s)"},
		{[]string{"queue", "frob"}, `unknown queue subcommand "frob"`},
		{[]string{"lock", "run", "l"}, "lock run needs NAME -- CMD [ARGS...], got 1 argument(s)"},
		{[]string{"lock", "status", "l", "--lease", "1s"}, "--lease and --wait apply to lock run only"},
		{[]string{"lock", "status", ""}, "lock name is empty"},
		{[]string{"status", "extra"}, "takes no arguments"},
		{[]string{"status", "--bogus"}, "flag provided but not defined"},
		{[]string{"status", "--timeout", "0s"}, "--timeout must be positive"},
		{[]string{"status", "--addr", "nohostport"}, `--addr "nohostport"`},
		{[]string{"status", "--addr", "host:99999"}, `port "99999" is not a number from 1 to 65535`},
		{[]string{"status", "--addr", "host:0"}, `port "0" is not a number`},
		{[]string{"status", "--addr", ":5701"}, "host is empty"},
		{[]string{"map", "keys", "m", "--raw", "--json"}, "not both"},
		{[]string{"map", "size", "m", "--msgpack"}, "--msgpack applies to"},
		{[]string{"completion"}, "needs one shell"},
		{[]string{"completion", "tcsh"}, "unknown shell"},
		{[]string{"version", "x"}, "takes no arguments"},
		{[]string{"bench", "--ratio", "0:0"}, "not both be zero"},
		{[]string{"bench", "--ratio", "x"}, "GETS:PUTS"},
		{[]string{"bench", "--clients", "0"}, "--clients"},
		{[]string{"bench", "--requests", "5", "--duration", "1s"}, "not both"},
		{[]string{"help", "nothing"}, "no help"},
	} {
		r := gridctl(t, nil, tc.args...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stderr, "see gridctl help") ||
			strings.Count(r.stderr, "\n") != 1 || r.stdout != "" {
			t.Errorf("%q: code %d stderr %q stdout %q, want 2 and %q", tc.args, r.code, r.stderr, r.stdout, tc.want)
		}
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}, {"help", "bench"}, {"bench", "-h"}, {"map", "get", "-h"}, {"status", "--help"}} {
		r := gridctl(t, nil, args...).expect(t, 0)
		if !strings.HasPrefix(r.stdout, "Usage: gridctl") || !strings.Contains(r.stdout, "--addr") || r.stderr != "" {
			t.Errorf("%q: stdout %q stderr %q", args, r.stdout, r.stderr)
		}
	}
}

func TestParseInterspersed(t *testing.T) {
	fs := newFlagSet("t")
	ttl := fs.Duration("ttl", 0, "")
	js := fs.Bool("json", false, "")
	pos, err := parseInterspersed(fs, []string{"put", "--ttl", "2s", "m", "-", "--json", "--", "--x", "-y"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"put", "m", "-", "--x", "-y"}; !slices.Equal(pos, want) || *ttl != 2*time.Second || !*js {
		t.Errorf("pos %q ttl %v json %v", pos, *ttl, *js)
	}
}
