package main

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/op"
)

// fakeKV is an in-memory kvStore that counts calls and can fail or cancel
// on demand, so the generator is tested without a cluster.
type fakeKV struct {
	mu         sync.Mutex
	data       map[string][]byte
	putsPerKey map[string]int
	gets, puts atomic.Int64
	// failPut, when set, makes puts of matching keys fail.
	failPut func(key string) bool
	// after, when set, is called with the running call count.
	after func(n int64)
}

func newFakeKV() *fakeKV {
	return &fakeKV{data: map[string][]byte{}, putsPerKey: map[string]int{}}
}

func (f *fakeKV) tick() {
	if f.after != nil {
		f.after(f.gets.Load() + f.puts.Load())
	}
}

func (f *fakeKV) Get(ctx context.Context, key string) ([]byte, bool, error) {
	f.gets.Add(1)
	defer f.tick()
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.data[key]
	return v, ok, nil
}

func (f *fakeKV) Put(ctx context.Context, key string, value []byte, _ ...maps.Option) error {
	f.puts.Add(1)
	defer f.tick()
	if err := ctx.Err(); err != nil {
		return err
	}
	if f.failPut != nil && f.failPut(key) {
		return op.Errorf(op.CodeUnavailable, "injected failure for %s", key)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.data[key] = value
	f.putsPerKey[key]++
	return nil
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func cfg(requests int64, get, put int) benchConfig {
	return benchConfig{Clients: 8, Requests: requests, Keys: 1000, ValueSize: 10,
		GetWeight: get, PutWeight: put, OpTimeout: time.Second, Seed: 42}
}

func TestRunIssuesExactlyRequests(t *testing.T) {
	kv := newFakeKV()
	res := newLoadGen(kv, cfg(10007, 1, 1)).Run(testCtx(t))
	if res.Ops != 10007 || res.Gets+res.Puts != res.Ops || res.Errors != 0 || res.Interrupted {
		t.Fatalf("result %+v", res)
	}
	if kv.gets.Load() != res.Gets || kv.puts.Load() != res.Puts {
		t.Errorf("store saw %d gets %d puts, result says %d %d", kv.gets.Load(), kv.puts.Load(), res.Gets, res.Puts)
	}
	if res.Latency.count() != uint64(res.Ops) {
		t.Errorf("%d latencies for %d ops", res.Latency.count(), res.Ops)
	}
	if res.Misses == 0 || res.Misses > res.Gets {
		t.Errorf("misses %d of %d gets", res.Misses, res.Gets)
	}
}

func TestRunRatio(t *testing.T) {
	for _, tc := range []struct {
		get, put int
		wantGets float64 // fraction
	}{
		{1, 0, 1}, {0, 1, 0}, {3, 1, 0.75}, {1, 9, 0.1},
	} {
		kv := newFakeKV()
		res := newLoadGen(kv, cfg(20000, tc.get, tc.put)).Run(testCtx(t))
		frac := float64(res.Gets) / float64(res.Ops)
		if res.Ops != 20000 || frac < tc.wantGets-0.02 || frac > tc.wantGets+0.02 {
			t.Errorf("ratio %d:%d: %d gets of %d ops", tc.get, tc.put, res.Gets, res.Ops)
		}
		if tc.put == 0 && kv.puts.Load() != 0 || tc.get == 0 && kv.gets.Load() != 0 {
			t.Errorf("ratio %d:%d: store saw %d gets %d puts", tc.get, tc.put, kv.gets.Load(), kv.puts.Load())
		}
	}
}

func TestRunCountsErrors(t *testing.T) {
	kv := newFakeKV()
	kv.failPut = func(k string) bool { return strings.HasSuffix(k, "7") }
	res := newLoadGen(kv, cfg(5000, 0, 1)).Run(testCtx(t))
	if res.Ops != 5000 || res.Errors == 0 || res.Errors == res.Ops {
		t.Fatalf("result %+v", res)
	}
	if !errors.Is(res.FirstErr, op.ErrUnavailable) {
		t.Errorf("first error %v", res.FirstErr)
	}
	if res.Latency.count() != uint64(res.Ops-res.Errors) {
		t.Errorf("%d latencies, want %d (successes only)", res.Latency.count(), res.Ops-res.Errors)
	}
}

func TestRunDuration(t *testing.T) {
	c := cfg(0, 1, 1)
	c.Duration = 100 * time.Millisecond
	res := newLoadGen(newFakeKV(), c).Run(testCtx(t))
	if res.Ops == 0 || res.Elapsed < c.Duration || res.Interrupted || res.Errors != 0 {
		t.Fatalf("result %+v", res)
	}
}

func TestRunInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	kv := newFakeKV()
	kv.after = func(n int64) {
		if n == 1000 {
			cancel()
		}
	}
	res := newLoadGen(kv, cfg(1_000_000, 1, 1)).Run(ctx)
	if !res.Interrupted || res.Ops >= 1_000_000 || res.Errors != 0 {
		t.Fatalf("result %+v", res)
	}
}

func TestPrefillPutsEveryKeyOnce(t *testing.T) {
	kv := newFakeKV()
	g := newLoadGen(kv, cfg(100, 1, 0))
	pr := g.Prefill(testCtx(t))
	if pr.Keys != 1000 || pr.Errors != 0 || pr.Interrupted {
		t.Fatalf("prefill %+v", pr)
	}
	if len(kv.putsPerKey) != 1000 {
		t.Fatalf("%d keys written", len(kv.putsPerKey))
	}
	for k, n := range kv.putsPerKey {
		if n != 1 {
			t.Errorf("key %s put %d times", k, n)
		}
	}
	// The following gets all hit, and the progress counters restart.
	res := g.Run(testCtx(t))
	if res.Misses != 0 || res.Gets != 100 {
		t.Errorf("after prefill: %+v", res)
	}
	if ops, errs := g.Progress(); ops != 100 || errs != 0 {
		t.Errorf("progress %d/%d", ops, errs)
	}
}

func TestParseRatio(t *testing.T) {
	for s, want := range map[string][2]int{"1:1": {1, 1}, "9:1": {9, 1}, "0:1": {0, 1}, " 1 : 0 ": {1, 0}} {
		g, p, err := parseRatio(s)
		if err != nil || g != want[0] || p != want[1] {
			t.Errorf("%q = %d:%d %v", s, g, p, err)
		}
	}
	for _, s := range []string{"", "1", "a:b", "-1:2", "0:0", "1:2:3"} {
		if _, _, err := parseRatio(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}

func TestBenchReport(t *testing.T) {
	h := &histogram{}
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	r := benchReport(benchResult{Ops: 1000, Gets: 600, Puts: 400, Elapsed: 2 * time.Second, Latency: h},
		benchConfig{Clients: 3, ValueSize: 7})
	if r.OpsPerSec != 500 || r.Seconds != 2 || r.Clients != 3 || r.ValueSize != 7 || r.Gets != 600 || r.Puts != 400 {
		t.Errorf("report %+v", r)
	}
	for _, c := range []struct{ got, want float64 }{{r.P50, 0.5}, {r.P90, 0.9}, {r.P99, 0.99}, {r.P999, 0.999}} {
		if c.got < c.want*0.99 || c.got > c.want*1.01 {
			t.Errorf("percentile %v ms, want %v", c.got, c.want)
		}
	}
}

func TestProgressLine(t *testing.T) {
	if got := progressLine("bench", 1200, 3, 2400.4); got != "bench: 1200 ops, 2400 ops/s, 3 errors" {
		t.Errorf("progress line %q", got)
	}
	// Off a terminal nothing is written.
	var b strings.Builder
	stop := startProgress(&b, false, "x", func() (int64, int64) { return 0, 0 })
	stop()
	if b.Len() != 0 {
		t.Errorf("wrote %q", b.String())
	}
}
