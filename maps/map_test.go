package maps

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/op"
)

// fakeClock is a settable time source for the local invoker.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(t0.UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Add(d time.Duration) { c.ns.Add(int64(d)) }
func newTestMap(t *testing.T) (*Map, *localInvoker) {
	t.Helper()
	inv := newLocalInvoker(7)
	return New(inv, "m"), inv
}

func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func TestMapBasic(t *testing.T) {
	ctx := context.Background()
	m, _ := newTestMap(t)
	if m.Name() != "m" {
		t.Fatalf("Name %q", m.Name())
	}
	if v, ok, err := m.Get(ctx, "a"); v != nil || ok || err != nil {
		t.Fatalf("Get missing = %q, %v, %v", v, ok, err)
	}
	if err := m.Put(ctx, "a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := m.Get(ctx, "a"); string(v) != "1" || !ok || err != nil {
		t.Fatalf("Get = %q, %v, %v", v, ok, err)
	}
	if ok := must[bool](t)(m.Contains(ctx, "a")); !ok {
		t.Fatal("Contains false")
	}
	if err := m.Put(ctx, "a", nil); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := m.Get(ctx, "a"); len(v) != 0 || !ok || err != nil {
		t.Fatalf("Get nil value = %q, %v, %v", v, ok, err)
	}
	if ok := must[bool](t)(m.Delete(ctx, "a")); !ok {
		t.Fatal("Delete of present key false")
	}
	if ok := must[bool](t)(m.Delete(ctx, "a")); ok {
		t.Fatal("Delete of absent key true")
	}
	if ok := must[bool](t)(m.Contains(ctx, "a")); ok {
		t.Fatal("Contains after delete")
	}
	// Another name is another map.
	if ok := must[bool](t)(New(m.inv, "other").Contains(ctx, "a")); ok {
		t.Fatal("maps share entries")
	}
}

func TestMapConditionalWrites(t *testing.T) {
	ctx := context.Background()
	m, _ := newTestMap(t)

	if existing, stored, err := m.PutIfAbsent(ctx, "k", []byte("1")); existing != nil || !stored || err != nil {
		t.Fatalf("PutIfAbsent on absent = %q, %v, %v", existing, stored, err)
	}
	if existing, stored, err := m.PutIfAbsent(ctx, "k", []byte("2")); string(existing) != "1" || stored || err != nil {
		t.Fatalf("PutIfAbsent on present = %q, %v, %v", existing, stored, err)
	}

	if ok := must[bool](t)(m.Replace(ctx, "nope", []byte("x"))); ok {
		t.Fatal("Replace of absent key")
	}
	if ok := must[bool](t)(m.Contains(ctx, "nope")); ok {
		t.Fatal("Replace created a key")
	}
	if ok := must[bool](t)(m.Replace(ctx, "k", []byte("2"))); !ok {
		t.Fatal("Replace of present key failed")
	}

	if ok := must[bool](t)(m.CompareAndSwap(ctx, "k", []byte("1"), []byte("3"))); ok {
		t.Fatal("CAS with stale old swapped")
	}
	if ok := must[bool](t)(m.CompareAndSwap(ctx, "k", []byte("2"), []byte("3"))); !ok {
		t.Fatal("CAS with current old failed")
	}
	if ok := must[bool](t)(m.CompareAndSwap(ctx, "absent", nil, []byte("3"))); ok {
		t.Fatal("CAS on absent key swapped")
	}
	if v, _, _ := m.Get(ctx, "k"); string(v) != "3" {
		t.Fatalf("value %q, want 3", v)
	}
}

func TestMapWholeMapOps(t *testing.T) {
	ctx := context.Background()
	m, inv := newTestMap(t)
	other := New(inv, "other")
	if n := must[int](t)(m.Size(ctx)); n != 0 {
		t.Fatalf("empty Size %d", n)
	}
	if ks := must[[]string](t)(m.Keys(ctx)); len(ks) != 0 {
		t.Fatalf("empty Keys %q", ks)
	}
	var want []string
	parts := map[int32]bool{}
	for i := range 100 {
		k := fmt.Sprintf("key-%03d", i)
		want = append(want, k)
		parts[inv.PartitionOf(k)] = true
		if err := m.Put(ctx, k, []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	if len(parts) < 2 {
		t.Fatal("keys did not spread over partitions")
	}
	if err := other.Put(ctx, "x", nil); err != nil {
		t.Fatal(err)
	}
	if n := must[int](t)(m.Size(ctx)); n != 100 {
		t.Fatalf("Size %d, want 100", n)
	}
	if ks := must[[]string](t)(m.Keys(ctx)); !slices.Equal(ks, want) {
		t.Fatalf("Keys %q", ks)
	}
	if err := m.Clear(ctx); err != nil {
		t.Fatal(err)
	}
	if n := must[int](t)(m.Size(ctx)); n != 0 {
		t.Fatalf("Size after Clear %d", n)
	}
	if n := must[int](t)(other.Size(ctx)); n != 1 {
		t.Fatalf("Clear touched another map: size %d", n)
	}
}

func TestMapRange(t *testing.T) {
	ctx := context.Background()
	m, inv := newTestMap(t)
	if err := m.Range(ctx, func(string, []byte) bool { t.Fatal("called on empty map"); return true }); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for i := range 50 {
		k, v := "k"+strconv.Itoa(i), "v"+strconv.Itoa(i)
		want[k] = v
		if err := m.Put(ctx, k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	got := map[string]string{}
	lastPart := int32(-1)
	err := m.Range(ctx, func(k string, v []byte) bool {
		if _, dup := got[k]; dup {
			t.Fatalf("key %q visited twice", k)
		}
		got[k] = string(v)
		// Partitions are walked in order, one at a time, and fn may use
		// the map meanwhile.
		p := inv.PartitionOf(k)
		if p < lastPart {
			t.Fatalf("partition %d after %d", p, lastPart)
		}
		lastPart = p
		if ok, err := m.Contains(ctx, k); !ok || err != nil {
			t.Fatalf("Contains inside Range: %v, %v", ok, err)
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Range saw %v", got)
	}

	calls := 0
	if err := m.Range(ctx, func(string, []byte) bool { calls++; return calls < 3 }); err != nil || calls != 3 {
		t.Fatalf("early stop: %d calls, %v", calls, err)
	}
	if err := m.Range(ctx, nil); !errors.Is(err, op.ErrBadRequest) {
		t.Fatalf("nil fn: %v", err)
	}
}

func TestMapTTL(t *testing.T) {
	ctx := context.Background()
	m, inv := newTestMap(t)
	clock := newFakeClock()
	inv.now = clock.Now

	must0 := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must0(m.Put(ctx, "short", []byte("1"), WithTTL(1500*time.Microsecond))) // rounds up to 2ms
	must0(m.Put(ctx, "long", []byte("1"), WithTTL(time.Hour)))
	must0(m.Put(ctx, "forever", []byte("1"), WithTTL(0)))
	must0(m.Put(ctx, "negative", []byte("1"), WithTTL(-time.Second)))
	_, _, err := m.PutIfAbsent(ctx, "pia", []byte("1"), WithTTL(time.Millisecond))
	must0(err)

	clock.Add(1999 * time.Microsecond)
	if ok := must[bool](t)(m.Contains(ctx, "short")); !ok {
		t.Fatal("expired before its TTL")
	}
	clock.Add(time.Microsecond)
	if _, ok, _ := m.Get(ctx, "short"); ok {
		t.Fatal("alive after its TTL")
	}
	if n := must[int](t)(m.Size(ctx)); n != 3 {
		t.Fatalf("Size %d, want 3", n)
	}
	if ks := must[[]string](t)(m.Keys(ctx)); !slices.Equal(ks, []string{"forever", "long", "negative"}) {
		t.Fatalf("Keys %q", ks)
	}

	// Replace and CAS carry a TTL too; a plain Put drops it.
	if ok := must[bool](t)(m.Replace(ctx, "forever", []byte("2"), WithTTL(time.Second))); !ok {
		t.Fatal("Replace failed")
	}
	if ok := must[bool](t)(m.CompareAndSwap(ctx, "negative", []byte("1"), []byte("2"), WithTTL(time.Second))); !ok {
		t.Fatal("CAS failed")
	}
	must0(m.Put(ctx, "long", []byte("2")))
	clock.Add(2 * time.Hour)
	if ks := must[[]string](t)(m.Keys(ctx)); !slices.Equal(ks, []string{"long"}) {
		t.Fatalf("Keys after 2h %q", ks)
	}
}

func TestTTLMillis(t *testing.T) {
	tests := []struct {
		opts []Option
		want int64
	}{
		{nil, 0},
		{[]Option{nil}, 0},
		{[]Option{WithTTL(0)}, 0},
		{[]Option{WithTTL(-time.Second)}, 0},
		{[]Option{WithTTL(time.Nanosecond)}, 1},
		{[]Option{WithTTL(time.Millisecond)}, 1},
		{[]Option{WithTTL(time.Millisecond + 1)}, 2},
		{[]Option{WithTTL(time.Minute)}, 60000},
		{[]Option{WithTTL(time.Second), WithTTL(time.Minute)}, 60000},
		{[]Option{WithTTL(math.MaxInt64)}, math.MaxInt64/int64(time.Millisecond) + 1},
	}
	for _, tc := range tests {
		if got := ttlMillis(tc.opts); got != tc.want {
			t.Errorf("ttlMillis = %d, want %d", got, tc.want)
		}
	}
}

// everyCall exercises every Map method once and returns their errors.
func everyCall(ctx context.Context, m *Map) map[string]error {
	errs := map[string]error{}
	errs["Put"] = m.Put(ctx, "k", []byte("v"), WithTTL(time.Second))
	_, _, errs["Get"] = m.Get(ctx, "k")
	_, errs["Delete"] = m.Delete(ctx, "k")
	_, _, errs["PutIfAbsent"] = m.PutIfAbsent(ctx, "k", nil)
	_, errs["Replace"] = m.Replace(ctx, "k", nil)
	_, errs["CompareAndSwap"] = m.CompareAndSwap(ctx, "k", nil, nil)
	_, errs["Contains"] = m.Contains(ctx, "k")
	_, errs["Size"] = m.Size(ctx)
	_, errs["Keys"] = m.Keys(ctx)
	errs["Range"] = m.Range(ctx, func(string, []byte) bool { return true })
	errs["Clear"] = m.Clear(ctx)
	return errs
}

func TestMapValidation(t *testing.T) {
	inv := newLocalInvoker(3)
	for name, m := range map[string]*Map{"nil map": nil, "empty name": New(inv, ""), "nil invoker": New(nil, "m")} {
		for call, err := range everyCall(context.Background(), m) {
			if !errors.Is(err, op.ErrBadRequest) {
				t.Errorf("%s: %s: %v, want bad request", name, call, err)
			}
		}
	}
	var nilMap *Map
	if nilMap.Name() != "" {
		t.Error("nil Map has a name")
	}
}

func TestMapWrapsInvokerErrors(t *testing.T) {
	for _, sentinel := range []error{op.ErrTimeout, op.ErrClosed, op.ErrUnavailable, op.ErrWrongOwner} {
		inv := failInvoker{err: op.Error(op.CodeOf(sentinel), "detail")}
		for call, err := range everyCall(context.Background(), New(inv, "m")) {
			if !errors.Is(err, sentinel) {
				t.Errorf("%s: %v does not wrap %v", call, err, sentinel)
			}
			if !strings.HasPrefix(err.Error(), "maps: ") || !strings.Contains(err.Error(), `"m"`) {
				t.Errorf("%s: error %q lacks context", call, err)
			}
		}
	}
}

func TestMapContext(t *testing.T) {
	m, _ := newTestMap(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for call, err := range everyCall(ctx, m) {
		if !errors.Is(err, op.ErrCanceled) || !errors.Is(err, context.Canceled) {
			t.Errorf("%s: %v, want canceled", call, err)
		}
	}
	ctx, cancel = context.WithDeadline(context.Background(), time.Unix(1, 0))
	defer cancel()
	if err := m.Put(ctx, "k", nil); !errors.Is(err, op.ErrTimeout) {
		t.Errorf("expired deadline: %v", err)
	}
}

// TestMapConcurrent hammers one key with CAS increments from many goroutines;
// with -race it also checks the proxy shares nothing unsafely.
func TestMapConcurrent(t *testing.T) {
	ctx := context.Background()
	m, _ := newTestMap(t)
	const workers, incs = 8, 100
	if _, _, err := m.PutIfAbsent(ctx, "n", []byte("0")); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for range incs {
				for {
					old, _, err := m.Get(ctx, "n")
					if err != nil {
						t.Error(err)
						return
					}
					n, _ := strconv.Atoi(string(old))
					ok, err := m.CompareAndSwap(ctx, "n", old, []byte(strconv.Itoa(n+1)))
					if err != nil {
						t.Error(err)
						return
					}
					if ok {
						break
					}
				}
				_ = m.Put(ctx, fmt.Sprint("w", w), nil)
			}
		})
	}
	wg.Wait()
	if v, _, _ := m.Get(ctx, "n"); string(v) != strconv.Itoa(workers*incs) {
		t.Fatalf("counter %q, want %d", v, workers*incs)
	}
	if n := must[int](t)(m.Size(ctx)); n != workers+1 {
		t.Fatalf("Size %d", n)
	}
}
