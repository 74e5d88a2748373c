package main

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/grid/gridtest"
)

// signalWriter is a goroutine-safe buffer that closes ready once written
// text contains want.
type signalWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	want  string
	ready chan struct{}
	once  sync.Once
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, err := w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.want) {
		w.once.Do(func() { close(w.ready) })
	}
	return n, err
}

func sortedLines(s string) []string {
	ls := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	slices.Sort(ls)
	return ls
}

func TestMapStreamCommands(t *testing.T) {
	cl := gridtest.New(t, 3)
	var addrs []string
	for _, m := range cl.Live() {
		addrs = append(addrs, m.Addr())
	}
	addr := "--addr=" + strings.Join(addrs, ",")

	t.Run("batch", func(t *testing.T) {
		gridctl(t, nil, "map", "putall", "b", "k1", "v1", "k2", "v2", addr).expect(t, 0)
		gridctl(t, strings.NewReader("k3\tv3\nk4\tv\t4\n"), "map", "putall", "b", addr, "--ttl", "1h").expect(t, 0)
		r := gridctl(t, nil, "map", "getall", "b", "k4", "k1", "nope", "k1", addr).expect(t, 0)
		if r.stdout != "k4\t\"v\\t4\"\nk1\tv1\n" {
			t.Errorf("getall = %q", r.stdout)
		}
		r = gridctl(t, strings.NewReader("k2\nk3\n"), "map", "getall", "b", addr, "--json").expect(t, 0)
		if got := sortedLines(r.stdout); !slices.Equal(got, []string{`{"key":"k2","value":"v2"}`, `{"key":"k3","value":"v3"}`}) {
			t.Errorf("getall --json = %q", got)
		}
		r = gridctl(t, nil, "map", "entries", "b", addr).expect(t, 0)
		if got := sortedLines(r.stdout); !slices.Equal(got, []string{"k1\tv1", "k2\tv2", "k3\tv3", "k4\t\"v\\t4\""}) {
			t.Errorf("entries = %q", got)
		}
		r = gridctl(t, nil, "map", "keys", "b", "--unsorted", addr).expect(t, 0)
		if got := sortedLines(r.stdout); !slices.Equal(got, []string{"k1", "k2", "k3", "k4"}) {
			t.Errorf("keys --unsorted = %q", got)
		}
		r = gridctl(t, strings.NewReader("k1\nk3\nzz\n"), "map", "deleteall", "b", addr, "--json").expect(t, 0)
		if strings.TrimSpace(r.stdout) != `{"deleted":2,"map":"b"}` {
			t.Errorf("deleteall = %q", r.stdout)
		}
		if r := gridctl(t, nil, "map", "size", "b", addr).expect(t, 0); r.stdout != "2\n" {
			t.Errorf("size after deleteall = %q", r.stdout)
		}
		gridctl(t, nil, "map", "putall", "b", "k1", addr).expect(t, 2)
		gridctl(t, strings.NewReader("no tab\n"), "map", "putall", "b", addr).expect(t, 1)
		gridctl(t, nil, "map", "get", "b", "k1", "--unsorted", addr).expect(t, 2)
		gridctl(t, nil, "map", "entries", "b", "--count", "1", addr).expect(t, 2)
	})

	t.Run("listen", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		stderr := &signalWriter{want: "listening to map", ready: make(chan struct{})}
		var stdout bytes.Buffer
		done := make(chan int, 1)
		go func() {
			done <- run(ctx, []string{"map", "listen", "ev", "--values", "--count", "3", "--json", addr}, strings.NewReader(""), &stdout, stderr, func(string) (string, bool) { return "", false })
		}()
		select {
		case <-stderr.ready:
		case code := <-done:
			t.Fatalf("listen exited %d before listening: %s", code, stderr.buf.String())
		case <-ctx.Done():
			t.Fatal("listen never registered")
		}
		gridctl(t, nil, "map", "put", "ev", "a", "1", addr).expect(t, 0)
		gridctl(t, nil, "map", "put", "ev", "a", "2", addr).expect(t, 0)
		gridctl(t, nil, "map", "delete", "ev", "a", addr).expect(t, 0)
		var code int
		select {
		case code = <-done:
		case <-ctx.Done():
			t.Fatal("listen did not exit after 3 events")
		}
		if code != 0 {
			t.Fatalf("listen exited %d: %s", code, stderr.buf.String())
		}
		var kinds, values []string
		var seqs []float64
		for _, l := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
			var d map[string]any
			if err := json.Unmarshal([]byte(l), &d); err != nil {
				t.Fatalf("line %q: %v", l, err)
			}
			if d["key"] != "a" {
				t.Errorf("event %v", d)
			}
			kinds = append(kinds, d["kind"].(string))
			values = append(values, d["value"].(string))
			seqs = append(seqs, d["seq"].(float64))
		}
		if !slices.Equal(kinds, []string{"added", "updated", "removed"}) || !slices.Equal(values, []string{"1", "2", "2"}) ||
			len(seqs) != 3 || seqs[1] != seqs[0]+1 || seqs[2] != seqs[1]+1 {
			t.Errorf("events: %v %v %v", kinds, values, seqs)
		}
	})
}
