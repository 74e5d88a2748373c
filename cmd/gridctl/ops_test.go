package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/client"
	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/grid/gridtest"
	"github.com/shoalgrid/shoal/maps"
)

// opsSubtests run against TestCluster's cluster (addrs are its data
// addresses): the environment, --json everywhere, key quoting, clipping
// of oversized keys, and the README's example.
func opsSubtests(t *testing.T, addrs []string) {
	addr := "--addr=" + strings.Join(addrs, ",")

	t.Run("SHOAL_ADDR", func(t *testing.T) {
		env := map[string]string{"SHOAL_ADDR": strings.Join(addrs, ",")}
		r := gridctlEnv(t, env, nil, "status", "--json").expect(t, 0)
		if !strings.Contains(r.stdout, addrs[0]) {
			t.Errorf("status via SHOAL_ADDR: %s", r.stdout)
		}
		// --addr wins over the environment.
		bad := map[string]string{"SHOAL_ADDR": "127.0.0.1:1"}
		gridctlEnv(t, bad, nil, "map", "size", "m", addr).expect(t, 1-1)
		r = gridctlEnv(t, bad, nil, "map", "size", "m").expect(t, 1)
		if !strings.Contains(r.stderr, "127.0.0.1:1") {
			t.Errorf("stderr %q does not name SHOAL_ADDR's address", r.stderr)
		}
		// SHOAL_CLUSTER is read too: a wrong one is refused.
		r = gridctlEnv(t, map[string]string{"SHOAL_CLUSTER": "other"}, nil, "status", addr).expect(t, 1)
		if !strings.Contains(r.stderr, `not "other"`) {
			t.Errorf("stderr %q", r.stderr)
		}
		r = gridctlEnv(t, map[string]string{"SHOAL_TIMEOUT": "soon"}, nil, "status", addr).expect(t, 2)
		if !strings.Contains(r.stderr, "SHOAL_TIMEOUT") {
			t.Errorf("stderr %q", r.stderr)
		}
	})

	t.Run("json everywhere", func(t *testing.T) {
		type doc = map[string]any
		parse := func(r result) doc {
			t.Helper()
			var d doc
			if err := json.Unmarshal([]byte(r.stdout), &d); err != nil || strings.Count(r.stdout, "\n") != 1 {
				t.Fatalf("not one JSON line: %q (%v)", r.stdout, err)
			}
			return d
		}
		if d := parse(gridctl(t, nil, "map", "put", "j", "k", "v1", addr, "--json").expect(t, 0)); d["stored"] != true || d["key"] != "k" {
			t.Errorf("put: %v", d)
		}
		if d := parse(gridctl(t, nil, "map", "get", "j", "k", addr, "--json").expect(t, 0)); d["value"] != "v1" || d["found"] != true {
			t.Errorf("get: %v", d)
		}
		gridctl(t, strings.NewReader("\xff\x00"), "map", "put", "j", "bin", "-", addr).expect(t, 0)
		if d := parse(gridctl(t, nil, "map", "get", "j", "bin", addr, "--json").expect(t, 0)); d["value_base64"] != "/wA=" {
			t.Errorf("get binary: %v", d)
		}
		if d := parse(gridctl(t, nil, "map", "get", "j", "nokey", addr, "--json").expect(t, 1)); d["found"] != false {
			t.Errorf("get missing: %v", d)
		}
		if d := parse(gridctl(t, nil, "map", "size", "j", addr, "--json").expect(t, 0)); d["size"] != 2.0 {
			t.Errorf("size: %v", d)
		}
		if d := parse(gridctl(t, nil, "map", "keys", "j", addr, "--json").expect(t, 0)); !slices.Equal(toStrings(d["keys"]), []string{"bin", "k"}) {
			t.Errorf("keys: %v", d)
		}
		if d := parse(gridctl(t, nil, "--json", "map", "delete", "j", "k", addr).expect(t, 0)); d["found"] != true {
			t.Errorf("delete: %v", d)
		}
		if d := parse(gridctl(t, nil, "--json", "version").expect(t, 0)); d["version"] == nil {
			t.Errorf("version: %v", d)
		}
	})

	t.Run("keys quoted", func(t *testing.T) {
		evil := "two\nlines\x1b[2J"
		for _, k := range []string{"plain key", evil, `"quoted"`, "\xff"} {
			gridctl(t, nil, "map", "put", "q", k, "v", addr).expect(t, 0)
		}
		r := gridctl(t, nil, "map", "keys", "q", addr).expect(t, 0)
		// Sorted by the keys themselves; 0xff sorts last.
		want := "\"\\\"quoted\\\"\"\nplain key\n\"two\\nlines\\x1b[2J\"\n\"\\xff\"\n"
		if r.stdout != want {
			t.Errorf("keys = %q, want %q", r.stdout, want)
		}
		r = gridctl(t, nil, "map", "keys", "q", addr, "--raw").expect(t, 0)
		if !strings.Contains(r.stdout, evil+"\n") {
			t.Errorf("--raw keys = %q", r.stdout)
		}
	})

	t.Run("oversized key not echoed", func(t *testing.T) {
		for _, n := range []int{40000, 30000} {
			key := strings.Repeat("k", n)
			r := gridctl(t, nil, "map", "get", "m", key, addr).expect(t, 1)
			if len(r.stderr) > 300 || !strings.Contains(r.stderr, "bytes") || strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("%d-byte key: stderr is %d bytes: %.200q", n, len(r.stderr), r.stderr)
			}
		}
	})

	t.Run("README example", func(t *testing.T) {
		// The README's gridctl line stores what its Go example reads with
		// maps.NewTyped[User].
		readme, err := os.ReadFile("../../README.md")
		if err != nil {
			t.Fatal(err)
		}
		var line string
		sc := bufio.NewScanner(strings.NewReader(string(readme)))
		for sc.Scan() {
			if l := strings.TrimSpace(sc.Text()); strings.Contains(l, "gridctl map put users alice") {
				line = l
			}
		}
		args := shellWords(t, strings.TrimPrefix(line, "go run ./cmd/gridctl "))
		if len(args) == 0 {
			t.Fatal("README has no `gridctl map put users alice` line")
		}
		gridctl(t, nil, append(args, addr)...).expect(t, 0)
		m := regexp.MustCompile("type User struct \\{ Age int `msgpack:\"age\"` \\}").FindString(string(readme))
		if m == "" {
			t.Fatal("README does not define type User as this test does")
		}
		type User struct {
			Age int `msgpack:"age"`
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := client.Dial(ctx, client.Config{Addrs: addrs})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		u, found, err := maps.NewTyped[User](c, "users").Get(ctx, "alice")
		if err != nil || !found || u.Age != 30 {
			t.Fatalf("NewTyped[User].Get = %+v, %v, %v", u, found, err)
		}
		r := gridctl(t, nil, "map", "get", "users", "alice", "--msgpack", addr).expect(t, 0)
		if r.stdout != "{\"age\":30}\n" {
			t.Errorf("get --msgpack = %q", r.stdout)
		}
	})
}

func toStrings(v any) []string {
	var out []string
	l, _ := v.([]any)
	for _, e := range l {
		s, _ := e.(string)
		out = append(out, s)
	}
	return out
}

// shellWords splits a README command line: words separated by spaces,
// single quotes kept together.
func shellWords(t *testing.T, s string) []string {
	t.Helper()
	var out []string
	var cur strings.Builder
	in, any := false, false
	for _, r := range s {
		switch {
		case r == '\'':
			in, any = !in, true
		case r == ' ' && !in:
			if any {
				out = append(out, cur.String())
			}
			cur.Reset()
			any = false
		default:
			cur.WriteRune(r)
			any = true
		}
	}
	if in {
		t.Fatalf("unbalanced quote in %q", s)
	}
	if any {
		out = append(out, cur.String())
	}
	return out
}

func TestBadPortIsAUsageErrorAtOnce(t *testing.T) {
	r := gridctl(t, nil, "--addr", "host:99999", "--timeout", "20s", "status").expect(t, 2)
	if r.elapsed > time.Second || !strings.Contains(r.stderr, "99999") {
		t.Errorf("took %v, stderr %q", r.elapsed, r.stderr)
	}
}

func TestHTTPPortIsNotADataPort(t *testing.T) {
	// An HTTP server that, like gridnode's, waits for a request line.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	hostport := strings.TrimPrefix(srv.URL, "http://")
	r := gridctl(t, nil, "status", "--addr", hostport, "--timeout", "20s").expect(t, 1)
	if r.elapsed > 5*time.Second {
		t.Errorf("took %v with --timeout 20s", r.elapsed)
	}
	if !strings.Contains(r.stderr, "not a Shoal data port") || strings.Contains(r.stderr, "too large") {
		t.Errorf("stderr %q", r.stderr)
	}
	// With a short --timeout the answer still comes within it.
	r = gridctl(t, nil, "status", "--addr", hostport, "--timeout", "600ms").expect(t, 1)
	if r.elapsed > 600*time.Millisecond+300*time.Millisecond {
		t.Errorf("took %v with --timeout 600ms: %q", r.elapsed, r.stderr)
	}
	if !strings.Contains(r.stderr, "not a Shoal data port") {
		t.Errorf("stderr %q", r.stderr)
	}
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"version"}} {
		r := gridctl(t, nil, args...).expect(t, 0)
		if !regexp.MustCompile(`^gridctl \S+ go\S+\n$`).MatchString(r.stdout) {
			t.Errorf("%v: %q", args, r.stdout)
		}
	}
}

func TestCompletion(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish"} {
		r := gridctl(t, nil, "completion", sh).expect(t, 0)
		for _, w := range []string{"status", "map", "bench", "--addr", "--json", "keys"} {
			if sh == "fish" {
				w = strings.TrimPrefix(w, "--")
			}
			if !strings.Contains(r.stdout, w) {
				t.Errorf("%s completion lacks %q", sh, w)
			}
		}
	}
	// Every command and flag in the help is completed.
	for _, f := range strings.Fields(completionGlobalFlags + " " + completionMapFlags + " " + completionBenchFlags) {
		if f != "--help" && !strings.Contains(topHelp+mapHelp+benchHelp, f) {
			t.Errorf("completion offers %s, which no help mentions", f)
		}
	}
	for _, c := range strings.Fields(completionCommands) {
		if !strings.Contains(topHelp, "\n  "+c) {
			t.Errorf("completion offers command %s, which the help lacks", c)
		}
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash to run the script")
	}
	script := gridctl(t, nil, "completion", "bash").expect(t, 0).stdout
	complete := func(words ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		quoted := make([]string, len(words))
		for i, w := range words {
			quoted[i] = "'" + w + "'"
		}
		prog := script + "\nCOMP_WORDS=(" + strings.Join(quoted, " ") + ")\nCOMP_CWORD=$((${#COMP_WORDS[@]}-1))\n_gridctl\necho \"${COMPREPLY[*]}\"\n"
		out, err := exec.CommandContext(ctx, bash, "--norc", "--noprofile", "-c", prog).CombinedOutput()
		if err != nil {
			t.Fatalf("bash: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	for _, tc := range []struct {
		words []string
		want  string
	}{
		{[]string{"gridctl", "st"}, "status"},
		{[]string{"gridctl", "map", "k"}, "keys"},
		{[]string{"gridctl", "--addr", "h:1", "map", "d"}, "delete deleteall"},
		{[]string{"gridctl", "bench", "--val"}, "--value-size"},
		{[]string{"gridctl", "completion", "z"}, "zsh"},
		{[]string{"gridctl", "map", "put", "--t"}, "--timeout --token-file --tls-ca --tls-cert --tls-key --ttl"},
		{[]string{"gridctl", "queue", "o"}, "offer"},
		{[]string{"gridctl", "lock", "--l"}, "--lease"},
	} {
		if got := complete(tc.words...); got != tc.want {
			t.Errorf("complete %q = %q, want %q", tc.words, got, tc.want)
		}
	}
}

func TestBenchFailsWhenOperationsFail(t *testing.T) {
	// Members accept values up to 1000 bytes; gridctl's own limit is far
	// larger, so every put reaches the member and is refused there.
	cl := gridtest.New(t, 1, gridtest.WithConfig(func(c *grid.Config) { c.Limits.MaxValueSize = 1000 }))
	addr := "--addr=" + cl.Member(0).Addr()
	r := gridctl(t, nil, "bench", addr, "--requests", "200", "--clients", "2", "--value-size", "2000", "--json").expect(t, 1)
	var b benchJSON
	if err := json.Unmarshal([]byte(r.stdout), &b); err != nil {
		t.Fatalf("report still printed as JSON: %v (%q)", err, r.stdout)
	}
	if b.Errors == 0 || b.Ops != 200 {
		t.Errorf("report %+v", b)
	}
	if !strings.Contains(r.stderr, "operations failed") || !strings.Contains(r.stderr, "too large") || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("stderr %q", r.stderr)
	}
	// Gets only: nothing fails, exit 0.
	gridctl(t, nil, "bench", addr, "--requests", "100", "--clients", "2", "--ratio", "1:0", "--json").expect(t, 0)
}
