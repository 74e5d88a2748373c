package maps

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"
	"unsafe"

	"github.com/shoalgrid/shoal/op"
)

var t0 = time.Unix(1_700_000_000, 0)

func ms(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }

func newTestState() *state { return Service{}.NewState(3).(*state) }

// step is one request at a time offset (ms after t0) and the response fields
// it must produce. keys/entries, when set, are compared decoded.
type step struct {
	at      int
	req     op.Request
	code    op.Code
	found   bool
	value   []byte
	num     int64
	keys    []string
	entries []kv
}

func put(name, key, value string, ttl int64) op.Request {
	return op.Request{Op: OpPut, Name: name, Key: key, Value: []byte(value), Num: ttl}
}

func keyed(code uint8, name, key string) op.Request {
	return op.Request{Op: code, Name: name, Key: key}
}

func runSteps(t *testing.T, s *state, steps []step) {
	t.Helper()
	for i, st := range steps {
		req := st.req
		resp := s.Apply(ms(st.at), &req)
		ctx := fmt.Sprintf("step %d (op %d key %q at %dms)", i, req.Op, req.Key, st.at)
		if resp.Code != st.code {
			t.Fatalf("%s: code %v (%s), want %v", ctx, resp.Code, resp.Msg, st.code)
		}
		if resp.Found != st.found {
			t.Fatalf("%s: found %v, want %v", ctx, resp.Found, st.found)
		}
		if resp.Num != st.num {
			t.Fatalf("%s: num %d, want %d", ctx, resp.Num, st.num)
		}
		switch {
		case st.keys != nil:
			got, err := decodeKeys(resp.Value)
			if err != nil {
				t.Fatalf("%s: %v", ctx, err)
			}
			slices.Sort(got)
			if !slices.Equal(got, st.keys) {
				t.Fatalf("%s: keys %q, want %q", ctx, got, st.keys)
			}
		case st.entries != nil:
			got, err := decodeEntries(resp.Value)
			if err != nil {
				t.Fatalf("%s: %v", ctx, err)
			}
			if !equalKVs(got, st.entries) {
				t.Fatalf("%s: entries %v, want %v", ctx, got, st.entries)
			}
		case !bytes.Equal(resp.Value, st.value):
			t.Fatalf("%s: value %q, want %q", ctx, resp.Value, st.value)
		}
		checkInvariants(t, s)
	}
}

func equalKVs(a, b []kv) bool {
	return slices.EqualFunc(a, b, func(x, y kv) bool { return x.key == y.key && bytes.Equal(x.value, y.value) })
}

// checkInvariants verifies the bookkeeping a test cannot see through Apply:
// counters, heap order and back-pointers, no empty tables, and the memory
// layout: every stored key string (in entries, exps and the expiries)
// aliases the key bytes of the entry's current blob, so no old blob or
// request buffer is kept alive.
func checkInvariants(t *testing.T, s *state) {
	t.Helper()
	n, ttl := 0, 0
	for name, tab := range s.maps {
		if tab.name != name {
			t.Fatalf("table %q filed under %q", tab.name, name)
		}
		if len(tab.entries) == 0 {
			t.Fatalf("empty table %q kept", name)
		}
		if tab.exps != nil && len(tab.exps) == 0 {
			t.Fatalf("table %q keeps an empty expiry map", name)
		}
		for k, b := range tab.entries {
			if b.p == nil {
				t.Fatalf("%s/%s: nil blob", name, k)
			}
			if _, hn := b.header(); len(k) > 0 && unsafe.StringData(k) != (*byte)(unsafe.Add(unsafe.Pointer(b.p), hn+tsLen)) {
				t.Fatalf("%s/%s: key does not alias its blob", name, k)
			}
		}
		for k, x := range tab.exps {
			b, ok := tab.entries[k]
			if !ok {
				t.Fatalf("expiry of %s/%s has no entry", name, k)
			}
			if x.tab != tab || x.key != k {
				t.Fatalf("expiry of %s/%s points at %s/%s", name, k, x.tab.name, x.key)
			}
			if _, hn := b.header(); len(k) > 0 {
				want := (*byte)(unsafe.Add(unsafe.Pointer(b.p), hn+tsLen))
				if unsafe.StringData(k) != want || unsafe.StringData(x.key) != want {
					t.Fatalf("expiry of %s/%s: key does not alias the current blob", name, k)
				}
			}
			if x.idx < 0 || x.idx >= s.exp.Len() || s.exp.Items[x.idx] != x {
				t.Fatalf("expiry of %s/%s has stale index %d", name, k, x.idx)
			}
		}
		n += len(tab.entries)
		ttl += len(tab.exps)
	}
	if n != s.n {
		t.Fatalf("entry count %d, want %d", s.n, n)
	}
	if ttl != s.exp.Len() {
		t.Fatalf("heap holds %d, tables have %d TTL entries", s.exp.Len(), ttl)
	}
	for i := 1; i < s.exp.Len(); i++ {
		if s.exp.Items[i].at < s.exp.Items[(i-1)/2].at {
			t.Fatalf("heap order broken at %d", i)
		}
	}
}

func TestStateOps(t *testing.T) {
	const m = "m"
	tests := []struct {
		name  string
		steps []step
	}{
		{"put", []step{
			{req: put(m, "a", "1", 0)},
			{req: put(m, "a", "2", 0), found: true},
			{req: keyed(OpGet, m, "a"), found: true, value: []byte("2")},
			{req: put(m, "", "empty key", 0)},
			{req: keyed(OpGet, m, ""), found: true, value: []byte("empty key")},
		}},
		{"get", []step{
			{req: keyed(OpGet, m, "a")},
			{req: put(m, "a", "1", 0)},
			{req: keyed(OpGet, m, "a"), found: true, value: []byte("1")},
			{req: keyed(OpGet, "other", "a")},
			{req: keyed(OpGet, m, "b")},
		}},
		{"delete", []step{
			{req: keyed(OpDelete, m, "a")},
			{req: put(m, "a", "1", 0)},
			{req: keyed(OpDelete, m, "a"), found: true},
			{req: keyed(OpDelete, m, "a")},
			{req: keyed(OpGet, m, "a")},
		}},
		{"put if absent", []step{
			{req: op.Request{Op: OpPutIfAbsent, Name: m, Key: "a", Value: []byte("1")}, found: true},
			{req: op.Request{Op: OpPutIfAbsent, Name: m, Key: "a", Value: []byte("2")}, value: []byte("1")},
			{req: keyed(OpGet, m, "a"), found: true, value: []byte("1")},
		}},
		{"replace", []step{
			{req: op.Request{Op: OpReplace, Name: m, Key: "a", Value: []byte("1")}},
			{req: keyed(OpContains, m, "a")},
			{req: put(m, "a", "1", 0)},
			{req: op.Request{Op: OpReplace, Name: m, Key: "a", Value: []byte("2")}, found: true},
			{req: keyed(OpGet, m, "a"), found: true, value: []byte("2")},
		}},
		{"compare and swap", []step{
			{req: op.Request{Op: OpCompareAndSwap, Name: m, Key: "a", Aux: nil, Value: []byte("1")}},
			{req: keyed(OpContains, m, "a")},
			{req: put(m, "a", "1", 0)},
			{req: op.Request{Op: OpCompareAndSwap, Name: m, Key: "a", Aux: []byte("x"), Value: []byte("2")}},
			{req: op.Request{Op: OpCompareAndSwap, Name: m, Key: "a", Aux: []byte("1"), Value: []byte("2")}, found: true},
			{req: keyed(OpGet, m, "a"), found: true, value: []byte("2")},
			{req: op.Request{Op: OpPut, Name: m, Key: "e"}},
			{req: op.Request{Op: OpCompareAndSwap, Name: m, Key: "e", Aux: []byte{}, Value: []byte("3")}, found: true},
		}},
		{"contains", []step{
			{req: keyed(OpContains, m, "a")},
			{req: put(m, "a", "1", 0)},
			{req: keyed(OpContains, m, "a"), found: true},
			{req: keyed(OpContains, "other", "a")},
		}},
		{"size", []step{
			{req: keyed(OpSize, m, "")},
			{req: put(m, "a", "1", 0)},
			{req: put(m, "b", "1", 0)},
			{req: put("other", "a", "1", 0)},
			{req: keyed(OpSize, m, ""), num: 2},
			{req: keyed(OpSize, "other", ""), num: 1},
		}},
		{"keys", []step{
			{req: keyed(OpKeys, m, ""), keys: []string{}},
			{req: put(m, "b", "1", 0)},
			{req: put(m, "a", "1", 0)},
			{req: put("other", "c", "1", 0)},
			{req: keyed(OpKeys, m, ""), keys: []string{"a", "b"}},
		}},
		{"entries", []step{
			{req: keyed(OpEntries, m, ""), entries: []kv{}},
			{req: put(m, "b", "2", 0)},
			{req: put(m, "a", "1", 0)},
			{req: op.Request{Op: OpPut, Name: m, Key: "c"}},
			{req: put("other", "c", "1", 0)},
			{req: keyed(OpEntries, m, ""), entries: []kv{{"a", []byte("1")}, {"b", []byte("2")}, {"c", nil}}},
		}},
		{"clear", []step{
			{req: keyed(OpClear, m, "")},
			{req: put(m, "a", "1", 0)},
			{req: put(m, "b", "1", 5)},
			{req: put("other", "a", "1", 0)},
			{req: keyed(OpClear, m, ""), num: 2},
			{req: keyed(OpSize, m, "")},
			{req: keyed(OpGet, "other", "a"), found: true, value: []byte("1")},
		}},
		{"nil value is a value", []step{
			{req: op.Request{Op: OpPut, Name: m, Key: "a"}},
			{req: keyed(OpContains, m, "a"), found: true},
			{req: keyed(OpGet, m, "a"), found: true},
			{req: op.Request{Op: OpPutIfAbsent, Name: m, Key: "a", Value: []byte("x")}},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			runSteps(t, newTestState(), tc.steps)
		})
	}
}

func TestStateTTL(t *testing.T) {
	const m = "m"
	tests := []struct {
		name  string
		steps []step
	}{
		{"expires at deadline", []step{
			{at: 0, req: put(m, "a", "1", 100)},
			{at: 99, req: keyed(OpGet, m, "a"), found: true, value: []byte("1")},
			{at: 99, req: keyed(OpSize, m, ""), num: 1},
			{at: 100, req: keyed(OpGet, m, "a")},
			{at: 100, req: keyed(OpSize, m, "")},
		}},
		{"expired behaves as absent", []step{
			{at: 0, req: put(m, "a", "1", 10)},
			{at: 0, req: put(m, "b", "1", 10)},
			{at: 0, req: put(m, "c", "1", 10)},
			{at: 0, req: put(m, "d", "1", 10)},
			{at: 0, req: put(m, "k", "keep", 0)},
			{at: 20, req: keyed(OpContains, m, "a")},
			{at: 20, req: keyed(OpDelete, m, "b")},
			{at: 20, req: op.Request{Op: OpReplace, Name: m, Key: "c", Value: []byte("2")}},
			{at: 20, req: op.Request{Op: OpCompareAndSwap, Name: m, Key: "d", Aux: []byte("1"), Value: []byte("2")}},
			{at: 20, req: keyed(OpKeys, m, ""), keys: []string{"k"}},
			{at: 20, req: keyed(OpEntries, m, ""), entries: []kv{{"k", []byte("keep")}}},
			{at: 20, req: keyed(OpSize, m, ""), num: 1},
			{at: 20, req: put(m, "a", "new", 0)}, // found false: it had expired
			{at: 20, req: op.Request{Op: OpPutIfAbsent, Name: m, Key: "d", Value: []byte("x")}, found: true},
			{at: 20, req: keyed(OpClear, m, ""), num: 3},
		}},
		{"overwrite without TTL clears it", []step{
			{at: 0, req: put(m, "a", "1", 10)},
			{at: 5, req: put(m, "a", "2", 0), found: true},
			{at: 1000, req: keyed(OpGet, m, "a"), found: true, value: []byte("2")},
		}},
		{"overwrite with TTL moves it", []step{
			{at: 0, req: put(m, "a", "1", 10)},
			{at: 0, req: put(m, "b", "1", 20)},
			{at: 5, req: put(m, "a", "2", 100), found: true},
			{at: 50, req: keyed(OpGet, m, "a"), found: true, value: []byte("2")},
			{at: 50, req: keyed(OpGet, m, "b")},
			{at: 105, req: keyed(OpGet, m, "a")},
		}},
		{"write ops set TTL", []step{
			{at: 0, req: op.Request{Op: OpPutIfAbsent, Name: m, Key: "a", Value: []byte("1"), Num: 10}, found: true},
			{at: 0, req: put(m, "b", "1", 0)},
			{at: 0, req: op.Request{Op: OpReplace, Name: m, Key: "b", Value: []byte("2"), Num: 10}, found: true},
			{at: 0, req: put(m, "c", "1", 0)},
			{at: 0, req: op.Request{Op: OpCompareAndSwap, Name: m, Key: "c", Aux: []byte("1"), Value: []byte("2"), Num: 10}, found: true},
			{at: 9, req: keyed(OpSize, m, ""), num: 3},
			{at: 10, req: keyed(OpSize, m, "")},
		}},
		{"size counts only this map's expired", []step{
			{at: 0, req: put(m, "a", "1", 10)},
			{at: 0, req: put(m, "b", "1", 100)},
			{at: 0, req: put(m, "c", "1", 0)},
			{at: 0, req: put("other", "a", "1", 5)},
			{at: 50, req: keyed(OpSize, m, ""), num: 2},
			{at: 50, req: keyed(OpSize, "other", "")},
		}},
		{"huge TTL saturates", []step{
			{at: 0, req: put(m, "a", "1", math.MaxInt64)},
			{at: 1 << 40, req: keyed(OpGet, m, "a"), found: true, value: []byte("1")},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			runSteps(t, newTestState(), tc.steps)
		})
	}
}

func TestStateErrors(t *testing.T) {
	s := newTestState()
	runSteps(t, s, []step{{req: put("m", "a", "1", 0)}})
	for _, code := range []uint8{OpPut, OpPutIfAbsent, OpReplace, OpCompareAndSwap} {
		req := op.Request{Op: code, Name: "m", Key: "a", Value: []byte("2"), Aux: []byte("1"), Num: -1}
		resp := s.Apply(t0, &req)
		if resp.Code != op.CodeBadRequest {
			t.Errorf("op %d with negative TTL: code %v, want bad request", code, resp.Code)
		}
	}
	runSteps(t, s, []step{{req: keyed(OpGet, "m", "a"), found: true, value: []byte("1")}})

	for _, code := range []uint8{0, opEnd, 200, 255} {
		resp := s.Apply(t0, &op.Request{Op: code, Name: "m"})
		want := fmt.Sprintf("map: unknown operation %d", code)
		if resp.Code != op.CodeUnknownOp || resp.Msg != want {
			t.Errorf("op %d: %v %q, want unknown op %q", code, resp.Code, resp.Msg, want)
		}
		if err := resp.Err(); !errors.Is(err, op.ErrUnknownOp) {
			t.Errorf("op %d: err %v", code, err)
		}
	}
	if resp := s.Apply(t0, &op.Request{Op: OpGet, Key: "a"}); resp.Code != op.CodeBadRequest {
		t.Errorf("empty name: %v", resp.Code)
	}
	if resp := s.Apply(t0, nil); resp.Code != op.CodeBadRequest {
		t.Errorf("nil request: %v", resp.Code)
	}
}

func TestStateSweep(t *testing.T) {
	s := newTestState()
	if n := s.Sweep(t0, 100); n != 0 {
		t.Fatalf("empty sweep removed %d", n)
	}
	for i := range 10 {
		s.Apply(t0, ptr(put("m", fmt.Sprint("t", i), "v", int64(10+i))))
	}
	for i := range 5 {
		s.Apply(t0, ptr(put("m", fmt.Sprint("k", i), "v", 0)))
	}
	for i := range 3 {
		s.Apply(t0, ptr(put(fmt.Sprint("gone", i), "x", "v", 1)))
	}
	checkInvariants(t, s)
	if got := s.Len(); got != 18 {
		t.Fatalf("Len %d, want 18", got)
	}
	if n := s.Sweep(ms(0), 100); n != 0 {
		t.Fatalf("early sweep removed %d", n)
	}
	// At 14ms: the 3 one-ms maps and t0..t4 have expired.
	if got := s.Apply(ms(14), ptr(keyed(OpSize, "m", ""))).Num; got != 10 {
		t.Fatalf("size %d, want 10", got)
	}
	if got := s.Len(); got != 10 {
		t.Fatalf("Len %d, want 10", got)
	}
	if n := s.Sweep(ms(14), 2); n != 2 {
		t.Fatalf("sweep removed %d, want 2", n)
	}
	if n := s.Sweep(ms(14), 0); n != 0 {
		t.Fatalf("sweep max 0 removed %d", n)
	}
	if n := s.Sweep(ms(14), 100); n != 6 {
		t.Fatalf("sweep removed %d, want 6", n)
	}
	checkInvariants(t, s)
	if len(s.maps) != 1 {
		t.Fatalf("%d maps left, want only m", len(s.maps))
	}
	if s.n != 10 || s.Len() != 10 {
		t.Fatalf("n %d Len %d, want 10", s.n, s.Len())
	}
	if n := s.Sweep(ms(1000), 100); n != 5 {
		t.Fatalf("final sweep removed %d, want 5", n)
	}
	if s.exp.Len() != 0 || s.Len() != 5 {
		t.Fatalf("heap %d Len %d", s.exp.Len(), s.Len())
	}
	checkInvariants(t, s)
}

func ptr(r op.Request) *op.Request { return &r }

func TestStateSnapshotRestore(t *testing.T) {
	s := newTestState()
	for i := range 20 {
		s.Apply(t0, ptr(put("a", fmt.Sprint("k", i), fmt.Sprint("v", i), 0)))
		s.Apply(t0, ptr(put("b", fmt.Sprint("k", i), fmt.Sprint("v", i), int64(1000+i))))
	}
	s.Apply(t0, ptr(put("gone", "k", "v", 1)))
	s.Apply(t0, &op.Request{Op: OpPut, Name: "a", Key: "nil"})
	s.Apply(t0, &op.Request{Op: OpPut, Name: "a", Key: "empty", Value: []byte{}})

	snap, err := s.Snapshot(ms(5))
	if err != nil {
		t.Fatal(err)
	}
	again, _ := s.Snapshot(ms(5))
	if !bytes.Equal(snap, again) {
		t.Fatal("snapshot not deterministic")
	}

	r := newTestState()
	r.Apply(t0, ptr(put("stale", "x", "y", 0))) // Restore replaces
	if err := r.Restore(ms(5), snap); err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, r)
	if r.Len() != 42 {
		t.Fatalf("Len %d, want 42", r.Len())
	}
	runSteps(t, r, []step{
		{at: 5, req: keyed(OpContains, "stale", "x")},
		{at: 5, req: keyed(OpContains, "gone", "k")},
		{at: 5, req: keyed(OpGet, "a", "nil"), found: true},
		{at: 5, req: keyed(OpGet, "a", "empty"), found: true, value: []byte{}},
		{at: 5, req: keyed(OpGet, "a", "k7"), found: true, value: []byte("v7")},
		{at: 1004, req: keyed(OpSize, "b", ""), num: 15},
	})
	if v := r.Apply(ms(5), ptr(keyed(OpGet, "a", "empty"))).Value; v == nil {
		t.Fatal("empty value restored as nil")
	}
	snap2, _ := r.Snapshot(ms(5))
	if !bytes.Equal(snap2, snap) {
		t.Fatal("restore then snapshot differs")
	}

	// Restoring later drops what expired in transit, keeping expiry absolute.
	late := newTestState()
	if err := late.Restore(ms(1010), snap); err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, late)
	if late.Len() != 22+9 {
		t.Fatalf("late Len %d, want 31", late.Len())
	}

	empty, err := newTestState().Snapshot(t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := late.Restore(t0, empty); err != nil || late.Len() != 0 || len(late.maps) != 0 {
		t.Fatalf("restore empty: %v, Len %d", err, late.Len())
	}
}

func TestStateRestoreGarbage(t *testing.T) {
	good, _ := func() ([]byte, error) {
		s := newTestState()
		s.Apply(t0, ptr(put("m", "k", "v", 0)))
		return s.Snapshot(t0)
	}()
	garbage := [][]byte{
		nil,
		{},
		{0xc1},
		[]byte("hello"),
		good[:len(good)-1],
		append(slices.Clone(good), 0),
		{0x92, 0x02, 0x80},       // version 2
		{0x93, 0x01, 0x80, 0x00}, // 3 fields
		{0x92, 0x01, 0xdf, 0xff, 0xff, 0xff, 0xff},                                         // forged map count
		{0x92, 0x01, 0x81, 0xa0, 0x90},                                                     // empty map name
		{0x92, 0x01, 0x81, 0xa1, 'm', 0x91, 0x92, 0xa1, 'k', 0xc0},                         // entry with 2 fields
		{0x92, 0x01, 0x81, 0xa1, 'm', 0x91, 0x93, 0xa1, 'k', 0xc6, 0xff, 0xff, 0xff, 0xff}, // forged bin
		{0x92, 0x01, 0x81, 0xa1, 'm', 0x91, 0x93, 0xa1, 'k', 0xc0, 0xa1, 'x'},              // expiry not an int
	}
	for i, b := range garbage {
		s := newTestState()
		s.Apply(t0, ptr(put("keep", "k", "v", 0)))
		if err := s.Restore(t0, b); err == nil {
			t.Errorf("garbage %d (% x): restore succeeded", i, b)
		}
		if s.Len() != 1 {
			t.Errorf("garbage %d: failed restore changed the state", i)
		}
	}
}

// TestStateModel drives a state with random operations and random clock
// steps and compares every answer with a naive model.
func TestStateModel(t *testing.T) {
	type mentry struct {
		value []byte
		at    int64
	}
	rng := rand.New(rand.NewPCG(1, 2))
	s := newTestState()
	model := map[string]map[string]mentry{}
	now := t0.UnixNano()
	live := func(name, key string) (mentry, bool) {
		e, ok := model[name][key]
		if ok && e.at != 0 && e.at <= now {
			return mentry{}, false
		}
		return e, ok
	}
	set := func(name, key string, v []byte, ttl int64) {
		if model[name] == nil {
			model[name] = map[string]mentry{}
		}
		var at int64
		if ttl > 0 {
			at = now + ttl*int64(time.Millisecond)
		}
		model[name][key] = mentry{v, at}
	}
	names := []string{"a", "b", "c"}
	for i := range 20000 {
		now += int64(rng.IntN(3)) * int64(time.Millisecond)
		name := names[rng.IntN(len(names))]
		key := fmt.Sprint(rng.IntN(30))
		val := []byte(fmt.Sprint(rng.IntN(4)))
		var ttl int64
		if rng.IntN(2) == 0 {
			ttl = int64(1 + rng.IntN(20))
		}
		code := uint8(1 + rng.IntN(int(opEnd)-1))
		if code == OpMerge {
			code = OpGet // OpMerge is the member core's (TestMerge)
		}
		if rng.IntN(50) == 0 {
			if n := s.Sweep(time.Unix(0, now), rng.IntN(5)); n < 0 {
				t.Fatal("negative sweep")
			}
			checkInvariants(t, s)
			continue
		}
		req := op.Request{Op: code, Name: name, Key: key, Value: val, Aux: []byte(fmt.Sprint(rng.IntN(4))), Num: ttl}
		// Batch operations take 0 to 4 keys (maybe repeated) in Value.
		var batch []kv
		if code == OpGetAll || code == OpPutAll || code == OpDeleteAll {
			var ks []string
			for range rng.IntN(5) {
				k := fmt.Sprint(rng.IntN(30))
				ks = append(ks, k)
				batch = append(batch, kv{key: k, value: []byte(fmt.Sprint(rng.IntN(4)))})
			}
			req.Key = ""
			if code == OpPutAll {
				req.Value = encodeEntries(batch)
			} else {
				req.Value = encodeKeys(ks)
			}
		}
		resp := s.Apply(time.Unix(0, now), &req)
		cur, ok := live(name, key)
		var want op.Response
		switch code {
		case OpGetAll:
			var es []kv
			for _, e := range batch {
				if m, ok := live(name, e.key); ok {
					es = append(es, kv{key: e.key, value: m.value})
				}
			}
			want.Value = encodeEntries(es)
		case OpPutAll:
			for _, e := range batch {
				set(name, e.key, e.value, ttl)
			}
			want.Num = int64(len(batch))
		case OpDeleteAll:
			for _, e := range batch {
				if _, ok := live(name, e.key); ok {
					want.Num++
					delete(model[name], e.key)
				}
			}
		case OpPut:
			want.Found = ok
			set(name, key, val, ttl)
		case OpGet:
			want.Found, want.Value = ok, cur.value
		case OpDelete:
			want.Found = ok
			delete(model[name], key)
		case OpPutIfAbsent:
			want.Found = !ok
			if ok {
				want.Value = cur.value
			} else {
				set(name, key, val, ttl)
			}
		case OpReplace:
			want.Found = ok
			if ok {
				set(name, key, val, ttl)
			}
		case OpCompareAndSwap:
			want.Found = ok && bytes.Equal(cur.value, req.Aux)
			if want.Found {
				set(name, key, val, ttl)
			}
		case OpContains:
			want.Found = ok
		case OpIncr:
			// Values are small decimals; Num is the delta. The TTL stays.
			var n int64
			if ok {
				n, _ = strconv.ParseInt(string(cur.value), 10, 64)
			}
			want.Found, want.Num = ok, n+req.Num
			e := mentry{value: []byte(strconv.FormatInt(n+req.Num, 10)), at: cur.at}
			if model[name] == nil {
				model[name] = map[string]mentry{}
			}
			model[name][key] = e
		case OpSize, OpClear, OpKeys, OpEntries:
			var ks []string
			for k := range model[name] {
				if _, ok := live(name, k); ok {
					ks = append(ks, k)
				}
			}
			slices.Sort(ks)
			switch code {
			case OpSize:
				want.Num = int64(len(ks))
			case OpClear:
				want.Num = int64(len(ks))
				delete(model, name)
			case OpKeys:
				got, err := decodeKeys(resp.Value)
				slices.Sort(got)
				if err != nil || !slices.Equal(got, ks) {
					t.Fatalf("step %d: keys %q, want %q (%v)", i, got, ks, err)
				}
				want.Value = resp.Value
			case OpEntries:
				got, err := decodeEntries(resp.Value)
				if err != nil || len(got) != len(ks) {
					t.Fatalf("step %d: entries %v, want keys %q (%v)", i, got, ks, err)
				}
				for j, e := range got {
					m, _ := live(name, ks[j])
					if e.key != ks[j] || !bytes.Equal(e.value, m.value) {
						t.Fatalf("step %d: entry %d = %v", i, j, e)
					}
				}
				want.Value = resp.Value
			}
		}
		if resp.Code != op.OK || resp.Found != want.Found || resp.Num != want.Num || !bytes.Equal(resp.Value, want.Value) {
			t.Fatalf("step %d: op %d %s/%s: got %+v, want %+v", i, code, name, key, *resp, want)
		}
		if i%100 == 0 {
			checkInvariants(t, s)
			wantLen := 0
			for n, m := range model {
				for k := range m {
					if _, ok := live(n, k); ok {
						wantLen++
					}
				}
			}
			if got := s.Len(); got != wantLen {
				t.Fatalf("step %d: Len %d, want %d", i, got, wantLen)
			}
		}
	}
}

func TestExpireAt(t *testing.T) {
	tests := []struct {
		now, ttl, want int64
		bad            bool
	}{
		{now: 100, ttl: 0, want: 0},
		{now: 100, ttl: 1, want: 100 + 1e6},
		{now: 100, ttl: -1, bad: true},
		{now: 100, ttl: math.MaxInt64, want: math.MaxInt64},
		{now: math.MaxInt64 - 10, ttl: 1, want: math.MaxInt64},
		{now: -5e6, ttl: 1, want: -4e6},
	}
	for _, tc := range tests {
		got, resp := expireAt(tc.now, tc.ttl)
		if (resp != nil) != tc.bad || got != tc.want {
			t.Errorf("expireAt(%d, %d) = %d, %v; want %d, bad %v", tc.now, tc.ttl, got, resp, tc.want, tc.bad)
		}
	}
}

func TestMutatesClassifiesEveryOp(t *testing.T) {
	reads := map[uint8]bool{OpGet: true, OpContains: true, OpSize: true, OpKeys: true, OpEntries: true, OpGetAll: true}
	for o := OpPut; o < opEnd; o++ {
		if got := (Service{}).Mutates(o); got == reads[o] {
			t.Errorf("Mutates(%d) = %v", o, got)
		}
	}
}

// TestBlob stores values around the header's varint boundaries and checks
// they read back exactly, nil and empty kept apart.
func TestBlob(t *testing.T) {
	for _, key := range []string{"", "k", "key:0000001", string(make([]byte, 300))} {
		for _, n := range []int{-1, 0, 1, 100, 125, 126, 127, 128, 200, 16382, 16383, 16384, 70000} {
			var v []byte
			if n >= 0 {
				v = make([]byte, n)
				for i := range v {
					v[i] = byte(i*7 + 3)
				}
			}
			ts := int64(n)*1_000_003 - 1<<40
			b, k := newBlob(key, ts, v)
			if k != key {
				t.Fatalf("key %q, want %q", k, key)
			}
			if b.ts() != ts {
				t.Fatalf("ts %d, want %d", b.ts(), ts)
			}
			h, hn := b.header()
			if hn != uvarintLen(h) {
				t.Fatalf("value len %d: header length %d, want %d", n, hn, uvarintLen(h))
			}
			got := b.value(len(key))
			if (got == nil) != (v == nil) || !bytes.Equal(got, v) || cap(got) != len(got) {
				t.Fatalf("key len %d, value len %d: got len %d nil %v cap %d", len(key), n, len(got), got == nil, cap(got))
			}
		}
	}
	if v := (blob{}).value(3); v != nil {
		t.Fatalf("zero blob value %q", v)
	}
}

// TestStateCopiesAndNeverMutates checks the aliasing contract: the state
// keeps no reference to a request's key or value, and a value it returned
// (which aliases its memory) never changes afterwards, whatever is written.
func TestStateCopiesAndNeverMutates(t *testing.T) {
	s := newTestState()
	key := []byte("key-1")
	val := []byte("value-1")
	req := op.Request{Op: OpPut, Name: "m", Key: unsafe.String(&key[0], len(key)), Value: val}
	s.Apply(t0, &req)
	copy(key, "XXXXX")
	copy(val, "XXXXXXX")
	got := s.Apply(t0, ptr(keyed(OpGet, "m", "key-1")))
	if !got.Found || string(got.Value) != "value-1" {
		t.Fatalf("after the request's buffers changed: %v %q", got.Found, got.Value)
	}
	for i, r := range []op.Request{
		put("m", "key-1", "value-2", 0),
		put("m", "key-1", "value-3", 10),
		{Op: OpCompareAndSwap, Name: "m", Key: "key-1", Aux: []byte("value-3"), Value: []byte("value-4")},
		{Op: OpReplace, Name: "m", Key: "key-1", Value: []byte("value-5"), Num: 20},
		keyed(OpDelete, "m", "key-1"),
		put("m", "key-1", "value-6", 0),
	} {
		s.Apply(t0, &r)
		checkInvariants(t, s)
		if string(got.Value) != "value-1" {
			t.Fatalf("write %d changed an earlier response to %q", i, got.Value)
		}
	}
}

// TestStateFreesOldBlobs checks that an overwritten or deleted entry's blob
// becomes garbage: nothing in the state (map keys, expiries) still points
// into it.
func TestStateFreesOldBlobs(t *testing.T) {
	s := newTestState()
	freed := make(chan string, 8)
	value := bytes.Repeat([]byte("v"), 64) // not a tiny allocation
	track := func(name, key, what string) {
		tab := s.maps[name]
		b := tab.entries[key]
		runtime.AddCleanup(b.p, func(w string) { freed <- w }, what)
	}
	steps := []struct {
		req  op.Request
		what string // the blob stored by req, tracked until freed
	}{
		{op.Request{Op: OpPut, Name: "m", Key: "plain", Value: value}, "plain 1"},
		{op.Request{Op: OpPut, Name: "m", Key: "plain", Value: value}, "plain 2"},
		{op.Request{Op: OpPut, Name: "m", Key: "ttl", Value: value, Num: 1000}, "ttl 1"},
		{op.Request{Op: OpPut, Name: "m", Key: "ttl", Value: value, Num: 2000}, "ttl 2"},
		{op.Request{Op: OpPut, Name: "m", Key: "ttl", Value: value, Num: 3000}, ""},
		{op.Request{Op: OpPut, Name: "m", Key: "drop", Value: value, Num: 1000}, "drop"},
		{op.Request{Op: OpPut, Name: "m", Key: "drop", Value: value}, ""},
		{op.Request{Op: OpPut, Name: "m", Key: "gone", Value: value, Num: 5}, "gone"},
	}
	for _, st := range steps {
		s.Apply(t0, &st.req)
		if st.what != "" {
			track("m", st.req.Key, st.what)
		}
	}
	s.Apply(t0, ptr(keyed(OpDelete, "m", "plain")))
	if n := s.Sweep(ms(10), 10); n != 1 {
		t.Fatalf("sweep removed %d, want 1", n)
	}
	checkInvariants(t, s)
	want := map[string]bool{"plain 1": true, "plain 2": true, "ttl 1": true, "ttl 2": true, "drop": true, "gone": true}
	deadline := time.After(30 * time.Second)
	for len(want) > 0 {
		runtime.GC()
		select {
		case w := <-freed:
			delete(want, w)
		case <-deadline:
			t.Fatalf("blobs never freed: %v", want)
		default:
			runtime.Gosched()
		}
	}
	runtime.KeepAlive(s)
}

// TestSnapshotGolden pins the snapshot format: goldenV1 was produced by the
// version 1 layout (no write timestamps), which a member still restores
// during a rolling upgrade; goldenV2 pins version 2 (write timestamps and
// the partition's clock), which must restore to byte-identical snapshots.
func TestSnapshotGolden(t *testing.T) {
	goldenV2, err := hex.DecodeString("" +
		"9402cf17979cfe362a000a83a16d9694a0c409656d707479206b657900cf1797" +
		"9cfe362a000594a161c4013100cf17979cfe362a000094a162c40133cf17979c" +
		"ff9bcabc00cf17979cfe362a000294a3626967c4c83031323334353637383930" +
		"3132333435363738393031323334353637383930313233343536373839303132" +
		"3334353637383930313233343536373839303132333435363738393031323334" +
		"3536373839303132333435363738393031323334353637383930313233343536" +
		"3738393031323334353637383930313233343536373839303132333435363738" +
		"3930313233343536373839303132333435363738393031323334353637383930" +
		"3132333435363738393031323334353637383930313233343536373839cf1797" +
		"9cffd7658600cf17979cfe362a000694a5656d707479c40000cf17979cfe362a" +
		"000494a36e696cc000cf17979cfe362a0003a16e9194a179c4046b65707400cf" +
		"17979cfe362a0008a16f9194a17ac4046e6f6e6500cf17979cfe362a000a80")
	if err != nil {
		t.Fatal(err)
	}
	golden, err := hex.DecodeString("" +
		"920183a16d9693a0c409656d707479206b65790093a161c401310093a162c401" +
		"33cf17979cff9bcabc0093a3626967c4c8303132333435363738393031323334" +
		"3536373839303132333435363738393031323334353637383930313233343536" +
		"3738393031323334353637383930313233343536373839303132333435363738" +
		"3930313233343536373839303132333435363738393031323334353637383930" +
		"3132333435363738393031323334353637383930313233343536373839303132" +
		"3334353637383930313233343536373839303132333435363738393031323334" +
		"35363738393031323334353637383930313233343536373839cf17979cffd765" +
		"860093a5656d707479c4000093a36e696cc000a16e9193a179c4046b65707400" +
		"a16f9193a17ac4046e6f6e6500")
	if err != nil {
		t.Fatal(err)
	}
	s := newTestState()
	big := bytes.Repeat([]byte("0123456789"), 20) // a two-byte blob header
	for _, r := range []op.Request{
		put("m", "a", "1", 0),
		put("m", "b", "2", 5000),
		put("m", "b", "3", 6000),
		{Op: OpPut, Name: "m", Key: "nil"},
		{Op: OpPut, Name: "m", Key: "empty", Value: []byte{}},
		{Op: OpPut, Name: "m", Key: "", Value: []byte("empty key")},
		{Op: OpPut, Name: "m", Key: "big", Value: big, Num: 7000},
		put("n", "x", "gone", 1),
		put("n", "y", "kept", 0),
		put("o", "z", "ttl then none", 100),
		put("o", "z", "none", 0),
	} {
		s.Apply(t0, &r)
	}
	checkInvariants(t, s)
	snap, err := s.Snapshot(ms(10))
	if err != nil || !bytes.Equal(snap, goldenV2) {
		t.Fatalf("snapshot %x (%v), want %x", snap, err, goldenV2)
	}
	r2 := newTestState()
	if err := r2.Restore(ms(10), goldenV2); err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, r2)
	if again, _ := r2.Snapshot(ms(10)); !bytes.Equal(again, goldenV2) {
		t.Fatalf("restored golden snapshots to %x", again)
	}
	r := newTestState()
	if err := r.Restore(ms(10), golden); err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, r)
	if g := r.Apply(ms(10), &op.Request{Op: OpGet, Name: "m", Key: "a"}); !g.Found || r.hlc < ms(10).UnixNano() || r.hlc >= ms(11).UnixNano() {
		t.Fatalf("version 1 entries get stamped at restore: %+v, clock %d", g, r.hlc)
	}
	runSteps(t, r, []step{
		{at: 10, req: keyed(OpGet, "m", "nil"), found: true},
		{at: 10, req: keyed(OpGet, "m", "empty"), found: true, value: []byte{}},
		{at: 10, req: keyed(OpGet, "m", ""), found: true, value: []byte("empty key")},
		{at: 10, req: keyed(OpGet, "m", "big"), found: true, value: big},
		{at: 10, req: keyed(OpGet, "n", "x")},
		{at: 6999, req: keyed(OpSize, "m", ""), num: 5},
		{at: 7000, req: keyed(OpSize, "m", ""), num: 4},
	})
}

func TestIncr(t *testing.T) {
	s := newTestState()
	runSteps(t, s, []step{
		{req: op.Request{Op: OpIncr, Name: "c", Key: "k", Num: 5}, num: 5},
		{req: op.Request{Op: OpIncr, Name: "c", Key: "k", Num: -7}, found: true, num: -2},
		{req: keyed(OpGet, "c", "k"), found: true, value: []byte("-2")},
		{req: put("c", "t", "1", 10)},
		{at: 5, req: op.Request{Op: OpIncr, Name: "c", Key: "t", Num: 1}, found: true, num: 2},
		{at: 10, req: keyed(OpGet, "c", "t")}, // the TTL was kept
		{req: put("c", "s", "x", 0)},
		{req: op.Request{Op: OpIncr, Name: "c", Key: "s", Num: 1}, code: op.CodeWrongType},
		{req: keyed(OpGet, "c", "s"), found: true, value: []byte("x")},
		{req: put("c", "m", "9223372036854775807", 0)},
		{req: op.Request{Op: OpIncr, Name: "c", Key: "m", Num: 1}, code: op.CodeBadRequest},
	})
}

// TestGrowsClassifiesEveryOp: the memory guard refuses exactly the map
// operations that can add or enlarge entries.
func TestGrowsClassifiesEveryOp(t *testing.T) {
	grows := map[uint8]bool{OpPut: true, OpPutIfAbsent: true, OpReplace: true, OpCompareAndSwap: true, OpIncr: true, OpMerge: true, OpPutAll: true}
	for o := OpPut; o < opEnd; o++ {
		if got := (Service{}).Grows(o); got != grows[o] {
			t.Errorf("Grows(%d) = %v", o, got)
		}
	}
	if !(IdemService{}).Grows(OpClaim) || (IdemService{}).Grows(OpRelease) || (IdemService{}).Grows(OpForget) {
		t.Error("idempotency store: only claims grow")
	}
}
