// Package mapstest is the conformance suite for maps: the same tests run
// against any op.Invoker (embedded members, remote clients), so both modes
// are held to one behaviour.
package mapstest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/op"
)

// Run runs the suite. invokers must return at least two invokers attached to
// the same cluster (through different members where possible); each subtest
// uses its own map name.
func Run(t *testing.T, invokers func(t *testing.T) []op.Invoker) {
	invs := invokers(t)
	if len(invs) < 2 {
		t.Fatal("mapstest: need at least two invokers")
	}
	a, b := invs[0], invs[len(invs)-1]
	ctx := func(t *testing.T) context.Context {
		c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		t.Cleanup(cancel)
		return c
	}

	t.Run("PutGetDelete", func(t *testing.T) {
		ctx := ctx(t)
		ma, mb := maps.New(a, "pgd"), maps.New(b, "pgd")
		if err := ma.Put(ctx, "k", []byte("v1")); err != nil {
			t.Fatal(err)
		}
		v, ok, err := mb.Get(ctx, "k")
		if err != nil || !ok || string(v) != "v1" {
			t.Fatalf("get = %q %v %v", v, ok, err)
		}
		if ok, err := mb.Contains(ctx, "k"); err != nil || !ok {
			t.Fatalf("contains = %v %v", ok, err)
		}
		existed, err := mb.Delete(ctx, "k")
		if err != nil || !existed {
			t.Fatalf("delete = %v %v", existed, err)
		}
		if _, ok, err := ma.Get(ctx, "k"); err != nil || ok {
			t.Fatalf("get after delete = %v %v", ok, err)
		}
		if existed, err := ma.Delete(ctx, "k"); err != nil || existed {
			t.Fatalf("second delete = %v %v", existed, err)
		}
	})

	t.Run("Incr", func(t *testing.T) {
		ctx := ctx(t)
		ma, mb := maps.New(a, "incr"), maps.New(b, "incr")
		var wg sync.WaitGroup
		for _, m := range []*maps.Map{ma, mb} {
			wg.Go(func() {
				for range 50 {
					if _, err := m.Incr(ctx, "n", 1); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		if n, err := ma.Incr(ctx, "n", 0); err != nil || n != 100 {
			t.Fatalf("counter = %d %v, want 100", n, err)
		}
		if err := ma.Put(ctx, "s", []byte("text")); err != nil {
			t.Fatal(err)
		}
		if _, err := mb.Incr(ctx, "s", 1); !errors.Is(err, op.ErrWrongType) {
			t.Fatalf("incr of text = %v", err)
		}
	})

	t.Run("EmptyKeyAndValue", func(t *testing.T) {
		ctx := ctx(t)
		m := maps.New(a, "empty")
		if err := m.Put(ctx, "", nil); err != nil {
			t.Fatal(err)
		}
		v, ok, err := maps.New(b, "empty").Get(ctx, "")
		if err != nil || !ok || len(v) != 0 {
			t.Fatalf("get = %q %v %v", v, ok, err)
		}
	})

	t.Run("CallerBuffersAreNotAliased", func(t *testing.T) {
		ctx := ctx(t)
		m := maps.New(a, "alias")
		buf := []byte("original")
		if err := m.Put(ctx, "k", buf); err != nil {
			t.Fatal(err)
		}
		copy(buf, "mutated!")
		v, _, _ := m.Get(ctx, "k")
		copy(v, "mutated!")
		v2, _, err := m.Get(ctx, "k")
		if err != nil || string(v2) != "original" {
			t.Fatalf("stored value changed through a caller's buffer: %q %v", v2, err)
		}
	})

	t.Run("ConditionalOps", func(t *testing.T) {
		ctx := ctx(t)
		m := maps.New(a, "cond")
		existing, stored, err := m.PutIfAbsent(ctx, "k", []byte("a"))
		if err != nil || !stored || existing != nil {
			t.Fatalf("put-if-absent on absent = %q %v %v", existing, stored, err)
		}
		existing, stored, err = maps.New(b, "cond").PutIfAbsent(ctx, "k", []byte("b"))
		if err != nil || stored || string(existing) != "a" {
			t.Fatalf("put-if-absent on present = %q %v %v", existing, stored, err)
		}
		if ok, err := m.Replace(ctx, "absent", []byte("x")); err != nil || ok {
			t.Fatalf("replace absent = %v %v", ok, err)
		}
		if ok, err := m.Replace(ctx, "k", []byte("c")); err != nil || !ok {
			t.Fatalf("replace present = %v %v", ok, err)
		}
		if ok, err := m.CompareAndSwap(ctx, "k", []byte("wrong"), []byte("d")); err != nil || ok {
			t.Fatalf("cas with wrong old = %v %v", ok, err)
		}
		if ok, err := m.CompareAndSwap(ctx, "k", []byte("c"), []byte("d")); err != nil || !ok {
			t.Fatalf("cas = %v %v", ok, err)
		}
		if ok, err := m.CompareAndSwap(ctx, "absent", nil, []byte("d")); err != nil || ok {
			t.Fatalf("cas on absent = %v %v", ok, err)
		}
		v, _, _ := m.Get(ctx, "k")
		if string(v) != "d" {
			t.Fatalf("value = %q, want d", v)
		}
	})

	t.Run("ConcurrentCASCountsExactly", func(t *testing.T) {
		ctx := ctx(t)
		const workers, incs = 8, 25
		if err := maps.New(a, "ctr").Put(ctx, "n", []byte("0")); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				m := maps.New(invs[w%len(invs)], "ctr")
				for range incs {
					for {
						v, _, err := m.Get(ctx, "n")
						if err != nil {
							errs <- err
							return
						}
						var n int
						fmt.Sscan(string(v), &n)
						ok, err := m.CompareAndSwap(ctx, "n", v, []byte(fmt.Sprint(n+1)))
						if err != nil {
							errs <- err
							return
						}
						if ok {
							break
						}
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		v, _, _ := maps.New(b, "ctr").Get(ctx, "n")
		if string(v) != fmt.Sprint(workers*incs) {
			t.Fatalf("counter = %s, want %d", v, workers*incs)
		}
	})

	t.Run("TTL", func(t *testing.T) {
		ctx := ctx(t)
		m := maps.New(a, "ttl")
		if err := m.Put(ctx, "short", []byte("x"), maps.WithTTL(50*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		if err := m.Put(ctx, "long", []byte("y"), maps.WithTTL(time.Hour)); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, ok, err := maps.New(b, "ttl").Get(ctx, "short")
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("entry with 50ms TTL still present after 10s")
			}
			time.Sleep(10 * time.Millisecond) // polling for expiry, not synchronisation
		}
		if _, ok, _ := m.Get(ctx, "long"); !ok {
			t.Fatal("entry with 1h TTL expired")
		}
		if n, err := m.Size(ctx); err != nil || n != 1 {
			t.Fatalf("size = %d %v, want 1", n, err)
		}
	})

	t.Run("ManyKeysSizeKeysRangeClear", func(t *testing.T) {
		ctx := ctx(t)
		const n = 10000
		ma := maps.New(a, "many")
		var want []string
		for i := range n {
			k := fmt.Sprintf("key-%05d", i)
			want = append(want, k)
			if err := ma.Put(ctx, k, []byte(k)); err != nil {
				t.Fatal(err)
			}
		}
		for _, inv := range invs {
			m := maps.New(inv, "many")
			size, err := m.Size(ctx)
			if err != nil || size != n {
				t.Fatalf("size = %d %v, want %d", size, err, n)
			}
		}
		mb := maps.New(b, "many")
		keys, err := mb.Keys(ctx)
		if err != nil || !slices.Equal(keys, want) {
			t.Fatalf("keys: %d keys, err %v", len(keys), err)
		}
		seen := 0
		err = mb.Range(ctx, func(k string, v []byte) bool {
			if !bytes.Equal([]byte(k), v) {
				t.Errorf("range: %q = %q", k, v)
			}
			seen++
			return true
		})
		if err != nil || seen != n {
			t.Fatalf("range saw %d, err %v", seen, err)
		}
		stopped := 0
		_ = mb.Range(ctx, func(string, []byte) bool { stopped++; return stopped < 10 })
		if stopped != 10 {
			t.Fatalf("range did not stop early: %d", stopped)
		}
		if err := mb.Clear(ctx); err != nil {
			t.Fatal(err)
		}
		if size, err := ma.Size(ctx); err != nil || size != 0 {
			t.Fatalf("size after clear = %d %v", size, err)
		}
	})

	t.Run("BatchCalls", func(t *testing.T) {
		ctx := ctx(t)
		const n = 3000
		ca := &countingInvoker{Invoker: a}
		ma, mb := maps.New(ca, "batch"), maps.New(b, "batch")
		want := map[string][]byte{"nil": nil, "empty": {}}
		var keys []string
		parts := map[int32]bool{}
		for i := range n {
			k := fmt.Sprintf("b-%05d", i)
			want[k] = []byte("v" + k)
		}
		for k := range want {
			keys = append(keys, k)
			parts[a.PartitionOf(k)] = true
		}
		if err := ma.PutAll(ctx, want); err != nil {
			t.Fatal(err)
		}
		// One request per partition holding keys, not one per key.
		if got := ca.calls.Load(); got != int64(len(parts)) {
			t.Fatalf("put-all of %d entries sent %d requests, want one per partition (%d)", len(want), got, len(parts))
		}
		if size, err := mb.Size(ctx); err != nil || size != len(want) {
			t.Fatalf("size after put-all = %d %v, want %d", size, err, len(want))
		}
		ca.calls.Store(0)
		got, err := ma.GetAll(ctx, append(keys, "absent-1", "absent-2", keys[0]))
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("get-all returned %d entries, want %d", len(got), len(want))
		}
		for k, v := range want {
			g, ok := got[k]
			if !ok || !bytes.Equal(g, v) || (g == nil) != (v == nil) {
				t.Fatalf("get-all[%q] = %q (present %v), want %q", k, g, ok, v)
			}
		}
		if calls := ca.calls.Load(); calls > int64(len(parts))+2 {
			t.Fatalf("get-all sent %d requests for %d partitions", calls, len(parts))
		}
		if v, ok, err := mb.Get(ctx, "b-00042"); err != nil || !ok || string(v) != "vb-00042" {
			t.Fatalf("get after put-all = %q %v %v", v, ok, err)
		}
		if got, err := mb.GetAll(ctx, nil); err != nil || len(got) != 0 {
			t.Fatalf("get-all of no keys = %v %v", got, err)
		}
		if err := mb.PutAll(ctx, nil); err != nil {
			t.Fatalf("put-all of nothing: %v", err)
		}
		deleted, err := mb.DeleteAll(ctx, append(keys[:n/2:n/2], "absent-1"))
		if err != nil || deleted != n/2 {
			t.Fatalf("delete-all = %d %v, want %d", deleted, err, n/2)
		}
		if size, err := ma.Size(ctx); err != nil || size != len(want)-n/2 {
			t.Fatalf("size after delete-all = %d %v, want %d", size, err, len(want)-n/2)
		}
		left, err := mb.GetAll(ctx, keys)
		if err != nil || len(left) != len(want)-n/2 {
			t.Fatalf("get-all after delete-all: %d entries, %v", len(left), err)
		}
		for _, k := range keys[:n/2] {
			if _, ok := left[k]; ok {
				t.Fatalf("%q survived delete-all", k)
			}
		}
		if _, err := (*maps.Map)(nil).GetAll(ctx, keys); !errors.Is(err, op.ErrBadRequest) {
			t.Fatalf("get-all on a nil map: %v", err)
		}
	})

	t.Run("MapsAreIndependent", func(t *testing.T) {
		ctx := ctx(t)
		if err := maps.New(a, "one").Put(ctx, "k", []byte("1")); err != nil {
			t.Fatal(err)
		}
		if _, ok, err := maps.New(b, "two").Get(ctx, "k"); err != nil || ok {
			t.Fatalf("key leaked across maps: %v %v", ok, err)
		}
	})

	t.Run("Typed", func(t *testing.T) {
		ctx := ctx(t)
		type user struct {
			Name string
			Age  int
		}
		ta := maps.NewTyped[user](a, "users")
		if err := ta.Put(ctx, "u1", user{"ann", 41}); err != nil {
			t.Fatal(err)
		}
		u, ok, err := maps.NewTyped[user](b, "users").Get(ctx, "u1")
		if err != nil || !ok || u != (user{"ann", 41}) {
			t.Fatalf("typed get = %+v %v %v", u, ok, err)
		}
		if err := maps.New(a, "users").Put(ctx, "raw", []byte{0xc1}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := ta.Get(ctx, "raw"); !errors.Is(err, op.ErrWrongType) {
			t.Fatalf("typed get of raw bytes: %v, want ErrWrongType", err)
		}
	})

	t.Run("Paging", func(t *testing.T) {
		ctx := ctx(t)
		const n, size = 1000, 10
		entries := map[string][]byte{}
		perPart := map[int32]int{}
		for i := range n {
			k := fmt.Sprintf("p-%04d", i)
			entries[k] = []byte(k)
			perPart[a.PartitionOf(k)]++
		}
		if err := maps.New(a, "paging").PutAll(ctx, entries); err != nil {
			t.Fatal(err)
		}
		wantCalls := 0
		for _, c := range perPart {
			wantCalls += (c + size - 1) / size
		}
		cb := &countingInvoker{Invoker: b}
		mb := maps.New(cb, "paging")
		seen := map[string]int{}
		err := mb.Range(ctx, func(k string, v []byte) bool {
			seen[k]++
			if string(v) != k {
				t.Errorf("range: %q = %q", k, v)
			}
			return true
		}, maps.PageSize(size))
		if err != nil || len(seen) != n {
			t.Fatalf("range saw %d keys: %v", len(seen), err)
		}
		for k, c := range seen {
			if c != 1 {
				t.Fatalf("%q seen %d times", k, c)
			}
		}
		if got := cb.calls.Load(); got != int64(wantCalls) {
			t.Fatalf("range took %d page requests, want %d (pages of %d)", got, wantCalls, size)
		}
		cb.calls.Store(0)
		keys := 0
		if err := mb.RangeKeys(ctx, func(string) bool { keys++; return true }, maps.PageSize(size)); err != nil || keys != n {
			t.Fatalf("range-keys saw %d: %v", keys, err)
		}
		if got := cb.calls.Load(); got != int64(wantCalls) {
			t.Fatalf("range-keys took %d page requests, want %d", got, wantCalls)
		}
	})

	t.Run("ListenExactlyOnce", func(t *testing.T) { listenExactlyOnce(t, ctx(t), invs) })
	t.Run("ListenExpiredExactlyOnce", func(t *testing.T) { listenExpiredExactlyOnce(t, ctx(t), invs) })

	t.Run("Errors", func(t *testing.T) {
		ctx := ctx(t)
		m := maps.New(a, "errs")
		if err := m.Put(ctx, string(make([]byte, 1<<20)), []byte("v")); !errors.Is(err, op.ErrTooLarge) {
			t.Fatalf("huge key: %v, want ErrTooLarge", err)
		}
		if err := m.Put(ctx, "k", make([]byte, 64<<20)); !errors.Is(err, op.ErrTooLarge) {
			t.Fatalf("huge value: %v, want ErrTooLarge", err)
		}
		if err := m.Put(ctx, "k", []byte("v"), maps.WithTTL(-time.Second)); err != nil {
			t.Fatalf("negative TTL means no expiry: %v", err)
		}
		if _, err := a.Invoke(ctx, &op.Request{Service: "nope", Partition: -1}); !errors.Is(err, op.ErrUnknownService) {
			t.Fatalf("unknown service: %v", err)
		}
		if _, err := a.Invoke(ctx, &op.Request{Service: maps.ServiceName, Name: "errs", Op: 200, Partition: -1}); !errors.Is(err, op.ErrUnknownOp) {
			t.Fatalf("unknown op: %v", err)
		}
		expired, cancel := context.WithTimeout(ctx, -time.Second)
		defer cancel()
		if err := m.Put(expired, "k", []byte("v")); !errors.Is(err, op.ErrTimeout) {
			t.Fatalf("expired context: %v, want ErrTimeout", err)
		}
	})
}

// countingInvoker counts the requests sent through Invoke.
type countingInvoker struct {
	op.Invoker
	calls atomic.Int64
}

func (c *countingInvoker) Invoke(ctx context.Context, req *op.Request) (*op.Response, error) {
	c.calls.Add(1)
	return c.Invoker.Invoke(ctx, req)
}

// recorder collects one listener's events.
type recorder struct {
	mu     sync.Mutex
	byKey  map[string][]string
	n      int
	lost   int
	repeat int
	ch     chan struct{}
}

func newRecorder() *recorder {
	return &recorder{byKey: map[string][]string{}, ch: make(chan struct{}, 1)}
}

func (r *recorder) on(ev maps.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case ev.Kind == maps.EventLost:
		r.lost++
	case ev.Repeat:
		r.repeat++
	}
	if ev.Kind != maps.EventLost {
		r.byKey[ev.Key] = append(r.byKey[ev.Key], fmt.Sprintf("%s:%s", ev.Kind, ev.Value))
		r.n++
	}
	select {
	case r.ch <- struct{}{}:
	default:
	}
}

// wait waits until cond holds on the recorded events.
func (r *recorder) wait(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	for {
		r.mu.Lock()
		ok := cond()
		n := r.n
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.ch:
		case <-ctx.Done():
			r.mu.Lock()
			var bad []string
			for k, evs := range r.byKey {
				if len(evs) != 4 {
					bad = append(bad, fmt.Sprintf("%s=%q", k, evs))
				}
			}
			r.mu.Unlock()
			t.Fatalf("%s: timed out with %d events; %d lost, %d repeats; keys with other than 4: %v", what, n, r.lost, r.repeat, bad)
		}
	}
}

// listenExactlyOnce: listeners on every invoker (all keys with values, one
// key, keys only) see every acknowledged change exactly once, in each
// key's order, while writers on two invokers change their own keys.
func listenExactlyOnce(t *testing.T, ctx context.Context, invs []op.Invoker) {
	const name, writers, keys = "listen", 2, 40
	type listener struct {
		rec    *recorder
		key    string
		values bool
	}
	var ls []listener
	for i, inv := range invs {
		for _, kind := range []int{0, 1, 2} {
			l := listener{rec: newRecorder(), values: kind != 2}
			opts := []maps.ListenOption{}
			if kind != 2 {
				opts = append(opts, maps.WithValues())
			}
			if kind == 1 {
				l.key = fmt.Sprintf("w%d-k%d", i%writers, i)
				opts = append(opts, maps.ForKey(l.key))
			}
			stop, err := maps.New(inv, name).Listen(ctx, l.rec.on, opts...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(stop)
			ls = append(ls, l)
		}
	}
	// Each key: added v1, updated v2, removed, added end (the last event
	// every listener must see: per-partition order puts any duplicate of
	// an earlier event before it).
	var wg sync.WaitGroup
	for w := range writers {
		m := maps.New(invs[w*(len(invs)-1)], name)
		wg.Go(func() {
			for k := range keys {
				key := fmt.Sprintf("w%d-k%d", w, k)
				for _, step := range []func() error{
					func() error { return m.Put(ctx, key, []byte("v1")) },
					func() error { return m.Put(ctx, key, []byte("v2")) },
					func() error { _, err := m.Delete(ctx, key); return err },
					func() error { _, _, err := m.PutIfAbsent(ctx, key, []byte("end")); return err },
				} {
					if err := step(); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	want := func(values bool) []string {
		if !values {
			return []string{"added:", "updated:", "removed:", "added:"}
		}
		return []string{"added:v1", "updated:v2", "removed:v2", "added:end"}
	}
	for i, l := range ls {
		var expect []string
		if l.key != "" {
			expect = []string{l.key}
		} else {
			for w := range writers {
				for k := range keys {
					expect = append(expect, fmt.Sprintf("w%d-k%d", w, k))
				}
			}
		}
		l.rec.wait(ctx, t, fmt.Sprintf("listener %d", i), func() bool {
			for _, k := range expect {
				evs := l.rec.byKey[k]
				if len(evs) == 0 || !strings.HasPrefix(evs[len(evs)-1], "added:") || len(evs) < 4 {
					return false
				}
			}
			return true
		})
		l.rec.mu.Lock()
		for _, k := range expect {
			if got := l.rec.byKey[k]; !slices.Equal(got, want(l.values)) {
				t.Errorf("listener %d key %s: %q, want %q", i, k, got, want(l.values))
			}
		}
		if l.rec.n != 4*len(expect) || len(l.rec.byKey) != len(expect) || l.rec.lost != 0 || l.rec.repeat != 0 {
			t.Errorf("listener %d: %d events on %d keys, %d lost, %d repeats; want %d on %d, none lost or repeated",
				i, l.rec.n, len(l.rec.byKey), l.rec.lost, l.rec.repeat, 4*len(expect), len(expect))
		}
		l.rec.mu.Unlock()
	}
}

// listenExpiredExactlyOnce: a listener on every invoker sees exactly one
// expired event (numbered: none lost or repeated) for every entry whose
// TTL passes, though nobody reads or writes the keys after their write
// (the owner's expiry records remove them), and the entries read as absent.
func listenExpiredExactlyOnce(t *testing.T, ctx context.Context, invs []op.Invoker) {
	const name, keys = "listen-ttl", 60
	var recs []*recorder
	for _, inv := range invs {
		r := newRecorder()
		stop, err := maps.New(inv, name).Listen(ctx, r.on, maps.WithValues())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(stop)
		recs = append(recs, r)
	}
	for k := range keys {
		m := maps.New(invs[k%len(invs)], name)
		ttl := time.Duration(20+k%5*20) * time.Millisecond
		if err := m.Put(ctx, fmt.Sprintf("k%d", k), []byte("v"), maps.WithTTL(ttl)); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"added:v", "expired:v"}
	for i, r := range recs {
		r.wait(ctx, t, fmt.Sprintf("listener %d", i), func() bool {
			for k := range keys {
				if len(r.byKey[fmt.Sprintf("k%d", k)]) < 2 {
					return false
				}
			}
			return true
		})
		r.mu.Lock()
		for k := range keys {
			if got := r.byKey[fmt.Sprintf("k%d", k)]; !slices.Equal(got, want) {
				t.Errorf("listener %d key k%d: %q, want %q", i, k, got, want)
			}
		}
		if r.n != 2*keys || r.lost != 0 || r.repeat != 0 {
			t.Errorf("listener %d: %d events, %d lost, %d repeats; want %d, none lost or repeated", i, r.n, r.lost, r.repeat, 2*keys)
		}
		r.mu.Unlock()
	}
	m := maps.New(invs[0], name)
	for k := range keys {
		if _, ok, err := m.Get(ctx, fmt.Sprintf("k%d", k)); err != nil || ok {
			t.Fatalf("k%d after its expired event: present %v, %v", k, ok, err)
		}
	}
	if n, err := m.Size(ctx); err != nil || n != 0 {
		t.Fatalf("size = %d %v, want 0", n, err)
	}
}
