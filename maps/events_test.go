package maps

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/op"
)

// execEvents runs req on s as the owner (or a backup) at time now and returns
// the response and the decoded events it emitted.
func execEvents(t *testing.T, s *state, owner bool, now time.Time, req op.Request) (*op.Response, []rawEvent) {
	t.Helper()
	var x op.Exec
	x.Reset(now, s.partition, owner, &req)
	resp := s.Execute(&x, &req)
	var evs []rawEvent
	for _, e := range x.Effects() {
		if e.Kind == op.EffectTimer {
			continue // expiry timers of listened maps (expiry_test.go)
		}
		if e.Kind != op.EffectEmit {
			t.Fatalf("unexpected effect %v", e.Kind)
		}
		if e.Name != req.Name && req.Name != "" {
			t.Fatalf("event about %q from a request on %q", e.Name, req.Name)
		}
		ev, err := decodeEvent(e.Payload)
		if err != nil {
			t.Fatalf("decode event: %v", err)
		}
		evs = append(evs, ev)
	}
	return resp, evs
}

func listenReq(name string, session, id uint64, values bool) op.Request {
	r := op.Request{Op: OpListen, Name: name, Origin: session, Num: int64(id)}
	if values {
		r.Aux = []byte{listenFlagValues}
	}
	return r
}

type evWant struct {
	kind  eventKind
	key   string
	value string // "-" for no value
	seq   uint64
}

func checkEvents(t *testing.T, what string, got []rawEvent, want ...evWant) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d events %+v, want %d", what, len(got), got, len(want))
	}
	for i, w := range want {
		g := got[i]
		v := "-"
		if g.hasValue {
			v = string(g.value)
		}
		if g.unnumbered != (w.kind&evUnnumbered != 0) {
			t.Fatalf("%s: event %d numbered=%v", what, i, !g.unnumbered)
		}
		if g.kind != w.kind&^evUnnumbered || g.key != w.key || v != w.value || g.seq != w.seq || g.partition != 3 {
			t.Fatalf("%s: event %d = kind %d key %q value %q seq %d p%d, want %+v", what, i, g.kind, g.key, v, g.seq, g.partition, w)
		}
	}
}

// TestStateEventsEveryChange: every change of a listened map's live
// entries gives one event on the owner, numbered consecutively, and none
// on a backup, which keeps the same numbering.
func TestStateEventsEveryChange(t *testing.T) {
	owner, backup := newTestState(), newTestState()
	both := func(at int, req op.Request) (*op.Response, []rawEvent) {
		t.Helper()
		resp, evs := execEvents(t, owner, true, ms(at), req)
		bresp, bevs := execEvents(t, backup, false, ms(at), req)
		if resp.Code != bresp.Code || resp.Found != bresp.Found || resp.Num != bresp.Num {
			t.Fatalf("op %d: owner %+v, backup %+v", req.Op, resp, bresp)
		}
		if len(bevs) != 0 {
			t.Fatalf("op %d: the backup emitted %d events", req.Op, len(bevs))
		}
		return resp, evs
	}
	// Nothing is emitted before anyone listens.
	if _, evs := both(0, put("m", "a", "0", 0)); len(evs) != 0 {
		t.Fatalf("unlistened map emitted %d events", len(evs))
	}
	resp, _ := both(1, listenReq("m", 7, 1, true))
	if !resp.Found || resp.Num != 0 {
		t.Fatalf("listen = %+v", resp)
	}
	_, evs := both(2, put("m", "a", "1", 0))
	checkEvents(t, "put existing", evs, evWant{evUpdated, "a", "1", 1})
	_, evs = both(3, put("m", "b", "2", 0))
	checkEvents(t, "put new", evs, evWant{evAdded, "b", "2", 2})
	_, evs = both(4, op.Request{Op: OpPutIfAbsent, Name: "m", Key: "b", Value: []byte("x")})
	checkEvents(t, "put-if-absent refused", evs)
	_, evs = both(5, op.Request{Op: OpPutIfAbsent, Name: "m", Key: "c", Value: []byte("3")})
	checkEvents(t, "put-if-absent", evs, evWant{evAdded, "c", "3", 3})
	_, evs = both(6, op.Request{Op: OpReplace, Name: "m", Key: "c", Value: []byte("4")})
	checkEvents(t, "replace", evs, evWant{evUpdated, "c", "4", 4})
	_, evs = both(7, op.Request{Op: OpCompareAndSwap, Name: "m", Key: "c", Aux: []byte("nope"), Value: []byte("5")})
	checkEvents(t, "cas refused", evs)
	_, evs = both(8, op.Request{Op: OpCompareAndSwap, Name: "m", Key: "c", Aux: []byte("4"), Value: []byte("5")})
	checkEvents(t, "cas", evs, evWant{evUpdated, "c", "5", 5})
	_, evs = both(9, op.Request{Op: OpIncr, Name: "m", Key: "n", Num: 2})
	checkEvents(t, "incr new", evs, evWant{evAdded, "n", "2", 6})
	_, evs = both(10, op.Request{Op: OpIncr, Name: "m", Key: "n", Num: 3})
	checkEvents(t, "incr", evs, evWant{evUpdated, "n", "5", 7})
	_, evs = both(11, keyed(OpDelete, "m", "a"))
	checkEvents(t, "delete", evs, evWant{evRemoved, "a", "1", 8})
	_, evs = both(12, keyed(OpDelete, "m", "a"))
	checkEvents(t, "delete absent", evs)
	_, evs = both(13, op.Request{Op: OpPutAll, Name: "m", Value: encodeEntries([]kv{{"b", []byte("6")}, {"d", nil}})})
	checkEvents(t, "put-all", evs, evWant{evUpdated, "b", "6", 9}, evWant{evAdded, "d", "", 10})
	_, evs = both(14, op.Request{Op: OpDeleteAll, Name: "m", Value: encodeKeys([]string{"d", "zz"})})
	checkEvents(t, "delete-all", evs, evWant{evRemoved, "d", "", 11})
	// Another map of the partition is not listened: no events, no numbers.
	if _, evs := both(15, put("other", "a", "1", 0)); len(evs) != 0 {
		t.Fatalf("unlistened map emitted %d events", len(evs))
	}
	_, evs = both(16, op.Request{Op: OpClear, Name: "m"})
	checkEvents(t, "clear", evs, evWant{evRemoved, "b", "6", 12}, evWant{evRemoved, "c", "5", 13}, evWant{evRemoved, "n", "5", 14})

	// A snapshot carries the records: a restored state (a new owner after
	// a migration) continues the numbering.
	snap, err := backup.Snapshot(ms(17))
	if err != nil {
		t.Fatal(err)
	}
	moved := newTestState()
	if err := moved.Restore(ms(17), snap); err != nil {
		t.Fatal(err)
	}
	_, evs = execEvents(t, moved, true, ms(18), put("m", "e", "7", 0))
	checkEvents(t, "after restore", evs, evWant{evAdded, "e", "7", 15})
	if moved.listen["m"].epoch != owner.listen["m"].epoch {
		t.Fatal("restore changed the epoch")
	}
}

// TestStateEventsValuesAndListeners: values travel only while a listener
// wants them; registrations end by unlisten or when their lease passes
// (judged at the next change or registration), records end with the last
// registration, and a new record starts a new epoch.
func TestStateEventsValuesAndListeners(t *testing.T) {
	s := newTestState()
	sec := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Second) }
	execEvents(t, s, true, ms(0), listenReq("m", 7, 1, false))
	_, evs := execEvents(t, s, true, ms(1), put("m", "a", "1", 0))
	checkEvents(t, "keys only", evs, evWant{evAdded, "a", "-", 1})
	execEvents(t, s, true, ms(2), listenReq("m", 8, 1, true))
	_, evs = execEvents(t, s, true, ms(3), put("m", "a", "2", 0))
	checkEvents(t, "with values", evs, evWant{evUpdated, "a", "2", 2})
	// Registering again renews and changes nothing else.
	if resp, _ := execEvents(t, s, true, ms(4), listenReq("m", 8, 1, true)); resp.Found || resp.Num != 2 {
		t.Fatalf("refresh = %+v", resp)
	}
	if s.listen["m"].values != 1 || len(s.listen["m"].subs) != 2 {
		t.Fatalf("record = %+v", s.listen["m"])
	}
	// Listener 7 renews at 20s; listener 8's lease (from 4ms) passes at
	// 30.004s: the next change no longer carries values.
	execEvents(t, s, true, sec(20), listenReq("m", 7, 1, false))
	_, evs = execEvents(t, s, true, sec(31), put("m", "a", "3", 0))
	checkEvents(t, "lease of 8 passed", evs, evWant{evUpdated, "a", "-", 3})
	if len(s.listen["m"].subs) != 1 {
		t.Fatalf("registrations after the lease: %v", s.listen["m"].subs)
	}
	if resp, _ := execEvents(t, s, true, sec(32), op.Request{Op: OpUnlisten, Name: "m", Origin: 7, Num: 2}); resp.Found {
		t.Fatal("unlisten of an unknown listener found it")
	}
	if resp, _ := execEvents(t, s, true, sec(32), op.Request{Op: OpUnlisten, Name: "m", Origin: 7, Num: 1}); !resp.Found {
		t.Fatal("unlisten did not find the listener")
	}
	if s.listen != nil {
		t.Fatalf("records left: %v", s.listen)
	}
	if _, evs := execEvents(t, s, true, sec(33), put("m", "a", "4", 0)); len(evs) != 0 {
		t.Fatal("events after the last listener left")
	}
	resp, _ := execEvents(t, s, true, sec(34), listenReq("m", 7, 1, false))
	if ep, _ := uvarint(resp.Value); int64(ep) != sec(34).UnixNano() || resp.Num != 0 {
		t.Fatalf("new record: epoch %d seq %d", ep, resp.Num)
	}
	// A record whose every lease passed ends at the next change.
	if _, evs := execEvents(t, s, true, sec(65), put("m", "a", "5", 0)); len(evs) != 0 || s.listen != nil {
		t.Fatalf("after every lease passed: %d events, records %v", len(evs), s.listen)
	}
	// Anonymous or id-less registrations are refused.
	if resp, _ := execEvents(t, s, true, sec(66), listenReq("m", 0, 1, false)); resp.Code != op.CodeBadRequest {
		t.Fatalf("anonymous listen = %+v", resp)
	}
	if resp, _ := execEvents(t, s, true, sec(66), listenReq("m", 7, 0, false)); resp.Code != op.CodeBadRequest {
		t.Fatalf("listen without id = %+v", resp)
	}
	// Len counts registrations so that the core snapshots the state.
	execEvents(t, s, true, sec(67), listenReq("m", 7, 1, false))
	execEvents(t, s, true, sec(67), keyed(OpDelete, "m", "a"))
	if s.Len() != 1 {
		t.Fatalf("Len = %d, want 1 (one registration)", s.Len())
	}
}

// TestStateEventsExpired: the owner's write path that meets a stored
// expired entry emits an unnumbered expired event before the write's own;
// an entry nobody writes stays stored through sweeps and reads (absent to
// them) until the owner's expiry record removes it with a numbered event.
func TestStateEventsExpired(t *testing.T) {
	owner, backup := newTestState(), newTestState()
	for _, s := range []*state{owner, backup} {
		execEvents(t, s, s == owner, ms(0), listenReq("m", 7, 1, true))
		execEvents(t, s, s == owner, ms(0), put("m", "a", "1", 10))
		execEvents(t, s, s == owner, ms(0), put("m", "b", "1", 10))
	}
	_, evs := execEvents(t, owner, true, ms(20), put("m", "a", "2", 0))
	checkEvents(t, "write after expiry", evs, evWant{evExpired | evUnnumbered, "a", "1", 2}, evWant{evAdded, "a", "2", 3})
	_, bevs := execEvents(t, backup, false, ms(20), put("m", "a", "2", 0))
	if len(bevs) != 0 || backup.listen["m"].seq != 3 {
		t.Fatalf("backup: %d events, seq %d", len(bevs), backup.listen["m"].seq)
	}
	for _, s := range []*state{owner, backup} {
		if n := s.Sweep(ms(20), 10); n != 0 {
			t.Fatalf("sweep removed %d entries of a listened map", n)
		}
		if r := s.Apply(ms(20), ptr(keyed(OpGet, "m", "b"))); r.Found {
			t.Fatal("an expired entry was read")
		}
		if s.maps["m"].entries["b"].p == nil {
			t.Fatal("a read removed an expired entry of a listened map")
		}
	}
	timer := op.Request{Op: op.OpTimer, Name: "m", Key: ttlTimerKey, Num: ms(100).UnixNano()}
	_, fx := exec(owner, true, ms(100), &timer) // sets timer.Value
	evs = nil
	for _, e := range fx {
		if e.Kind == op.EffectEmit {
			ev, err := decodeEvent(e.Payload)
			if err != nil {
				t.Fatal(err)
			}
			evs = append(evs, ev)
		}
	}
	checkEvents(t, "expiry record", evs, evWant{evExpired, "b", "1", 4})
	// The backup replays the owner's record (its Value names the keys).
	if _, bevs = execEvents(t, backup, false, ms(100), timer); len(bevs) != 0 || backup.listen["m"].seq != 4 || backup.maps["m"].entries["b"].p != nil {
		t.Fatalf("backup replay: %d events, seq %d", len(bevs), backup.listen["m"].seq)
	}
	_, evs = execEvents(t, owner, true, ms(101), put("m", "b", "2", 0))
	checkEvents(t, "write after the record", evs, evWant{evAdded, "b", "2", 5})
}

func uvarint(b []byte) (uint64, int) {
	var v uint64
	for i, c := range b {
		v |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			return v, i + 1
		}
	}
	return 0, 0
}

// TestEventCodecRoundTrip covers every kind with and without values.
func TestEventCodecRoundTrip(t *testing.T) {
	for _, k := range []eventKind{evAdded, evUpdated, evRemoved, evExpired, evExpired | evUnnumbered} {
		for _, v := range [][]byte{nil, {}, []byte("value"), bytes.Repeat([]byte{1}, 300)} {
			for _, with := range []bool{false, true} {
				b := encodeEvent(k, 270, 1<<62, 1<<40, "key\x00é", v, with)
				e, err := decodeEvent(b)
				if err != nil {
					t.Fatal(err)
				}
				if e.kind != k&^evUnnumbered || e.unnumbered != (k&evUnnumbered != 0) || e.partition != 270 || e.epoch != 1<<62 || e.seq != 1<<40 || e.key != "key\x00é" || e.hasValue != with {
					t.Fatalf("round trip = %+v", e)
				}
				if with && (!bytes.Equal(e.value, v) || (v == nil) != (e.value == nil)) {
					t.Fatalf("value %q, want %q", e.value, v)
				}
			}
		}
	}
	for _, bad := range [][]byte{nil, {0}, {9}, {1}, {1, 0x80}, {1, 1, 1, 1, 5, 'a'}, {0x81, 1, 1, 1, 1, 'a', 5, 'b'}, {1, 1, 1, 1, 0, 'x'}} {
		if _, err := decodeEvent(bad); err == nil {
			t.Fatalf("decodeEvent(%v) accepted", bad)
		}
	}
}

func FuzzDecodeEvent(f *testing.F) {
	f.Add(encodeEvent(evAdded, 1, 2, 3, "k", []byte("v"), true))
	f.Add(encodeEvent(evRemoved, 0, 0, 0, "", nil, false))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeEvent(b)
		if err != nil {
			return
		}
		k := e.kind
		if e.unnumbered {
			k |= evUnnumbered
		}
		again := encodeEvent(k, e.partition, e.epoch, e.seq, e.key, e.value, e.hasValue)
		if e2, err := decodeEvent(again); err != nil || e2.key != e.key || e2.seq != e.seq || !bytes.Equal(e2.value, e.value) {
			t.Fatalf("re-encode: %+v %v", e2, err)
		}
	})
}

// TestStateListenSnapshotRoundTrip: records survive a snapshot exactly,
// and a snapshot without records keeps the layout without them.
func TestStateListenSnapshotRoundTrip(t *testing.T) {
	s := newTestState()
	plain, _ := s.Snapshot(t0)
	if plain[0] != 0x94 {
		t.Fatalf("snapshot without listeners starts %#x, want a 4-array (version 2)", plain[0])
	}
	for i := range 5 {
		execEvents(t, s, true, ms(i), listenReq("m"+strconv.Itoa(i%2), uint64(i+1), uint64(i+10), i%3 == 0))
	}
	execEvents(t, s, true, ms(9), put("m0", "k", "v", 0))
	snap, err := s.Snapshot(ms(10))
	if err != nil {
		t.Fatal(err)
	}
	r := newTestState()
	if err := r.Restore(ms(10), snap); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(r.listen["m0"].subs, r.listen["m1"].subs) != fmt.Sprint(s.listen["m0"].subs, s.listen["m1"].subs) ||
		r.listen["m0"].seq != 1 || r.listen["m0"].values != s.listen["m0"].values || r.listen["m1"].values != s.listen["m1"].values {
		t.Fatalf("restored %+v %+v, want %+v %+v", r.listen["m0"], r.listen["m1"], s.listen["m0"], s.listen["m1"])
	}
	again, _ := r.Snapshot(ms(10))
	if !bytes.Equal(again, snap) {
		t.Fatal("snapshot of the restored state differs")
	}
	// Truncations never decode.
	for i := range len(snap) - 1 {
		if err := newTestState().Restore(ms(10), snap[:i]); err == nil {
			t.Fatalf("truncated snapshot (%d of %d bytes) restored", i, len(snap))
		}
	}
}

// TestStateExecuteNoListenerAllocs: with nobody listening, Execute costs
// what Apply costs (the entry's blob, nothing for events).
func TestStateExecuteNoListenerAllocs(t *testing.T) {
	s := newTestState()
	req := op.Request{Op: OpPut, Name: "m", Key: "k", Value: []byte("v")}
	get := op.Request{Op: OpGet, Name: "m", Key: "k"}
	var x op.Exec
	put := testing.AllocsPerRun(100, func() {
		x.Reset(t0, 3, true, &req)
		s.Execute(&x, &req)
	})
	read := testing.AllocsPerRun(100, func() {
		x.Reset(t0, 3, true, &get)
		s.Execute(&x, &get)
	})
	apply := testing.AllocsPerRun(100, func() { s.Apply(t0, &req) })
	if put > apply || read > 1 {
		t.Fatalf("Execute allocates %v per put (Apply %v), %v per get", put, apply, read)
	}
}

// TestListenerNoticesGapsAndRepeats feeds a listener the payloads a
// failover can produce: a skipped number, a restarted numbering and a
// number seen before.
func TestListenerNoticesGapsAndRepeats(t *testing.T) {
	var got []Event
	l := &listener{fn: func(e Event) { got = append(got, e) }, o: listenOptions{values: true}, parts: map[int32]*partTrack{}}
	l.baseline([]*op.Response{{Num: 5, Value: []byte{7}}, {Num: 0, Value: []byte{7}}})
	ev := func(p int32, epoch int64, seq uint64, key string) {
		l.handle(encodeEvent(evUpdated, p, epoch, seq, key, []byte(key), true))
	}
	ev(0, 7, 4, "early") // emitted before the registration: no repeat
	ev(0, 7, 6, "a")
	ev(0, 7, 7, "b")
	ev(0, 7, 10, "c") // 8 and 9 lost
	ev(0, 7, 9, "d")  // a number seen before (a lagging new owner)
	ev(1, 9, 1, "e")  // partition 1's numbering restarted
	ev(1, 9, 2, "f")
	l.handle(encodeEvent(evExpired|evUnnumbered, 1, 9, 2, "g", nil, true)) // unnumbered
	ev(1, 9, 3, "h")
	l.handle([]byte{0xff}) // garbage is ignored
	type w struct {
		kind   EventKind
		key    string
		seq    uint64
		missed uint64
		repeat bool
	}
	want := []w{
		{EventUpdated, "early", 4, 0, false},
		{EventUpdated, "a", 6, 0, false},
		{EventUpdated, "b", 7, 0, false},
		{EventLost, "", 8, 2, false},
		{EventUpdated, "c", 10, 0, false},
		{EventUpdated, "d", 9, 0, true},
		{EventLost, "", 0, 0, false},
		{EventUpdated, "e", 1, 0, false},
		{EventUpdated, "f", 2, 0, false},
		{EventExpired, "g", 2, 0, false},
		{EventUpdated, "h", 3, 0, false},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d events %+v, want %d", len(got), got, len(want))
	}
	for i, g := range got {
		x := w{g.Kind, g.Key, g.Seq, g.Missed, g.Repeat}
		if x != want[i] {
			t.Fatalf("event %d = %+v, want %+v", i, x, want[i])
		}
		if g.Kind == EventUpdated && string(g.Value) != g.Key {
			t.Fatalf("event %d value %q", i, g.Value)
		}
	}
	// A key filter keeps EventLost.
	got = nil
	l.o.keyed, l.o.key = true, "x"
	ev(0, 7, 13, "y")
	if len(got) != 1 || got[0].Kind != EventLost || got[0].Missed != 2 {
		t.Fatalf("keyed listener got %+v", got)
	}
}

// TestListenNeedsEvents: an invoker that cannot deliver events is refused.
func TestListenNeedsEvents(t *testing.T) {
	m := New(newLocalInvoker(3), "m")
	if _, err := m.Listen(t.Context(), func(Event) {}); !errors.Is(err, ErrNoEvents) {
		t.Fatalf("listen = %v, want ErrNoEvents", err)
	}
	if _, err := m.Listen(t.Context(), nil); !errors.Is(err, op.ErrBadRequest) {
		t.Fatalf("nil func = %v", err)
	}
}

// TestListenersBounded: a map takes MaxListeners registrations per
// partition; renewals still pass at the bound, a new one fails with
// op.ErrTooLarge, and one whose lease ended makes room.
func TestListenersBounded(t *testing.T) {
	s := newState(3)
	for i := range MaxListeners {
		if resp, _ := execEvents(t, s, true, ms(0), listenReq("m", 7, uint64(i+1), false)); resp.Code != op.OK || !resp.Found {
			t.Fatalf("listener %d: %+v", i+1, resp)
		}
	}
	resp, _ := execEvents(t, s, true, ms(1), listenReq("m", 7, MaxListeners+1, false))
	if resp.Code != op.CodeTooLarge {
		t.Fatalf("listener past the bound: %+v, want CodeTooLarge", resp)
	}
	if resp, _ := execEvents(t, s, true, ms(1), listenReq("m", 7, 5, false)); resp.Code != op.OK || resp.Found {
		t.Fatalf("renewal at the bound: %+v", resp)
	}
	if resp, _ := execEvents(t, s, true, ms(2), listenReq("other", 7, MaxListeners+1, false)); resp.Code != op.OK {
		t.Fatalf("another map: %+v", resp)
	}
	// Only listener 5 was renewed (at 1 ms): once the others' leases end,
	// new listeners fit again.
	later := ms(int(listenLease / time.Millisecond))
	if resp, _ := execEvents(t, s, true, later, listenReq("m", 7, MaxListeners+1, false)); resp.Code != op.OK || !resp.Found {
		t.Fatalf("after the leases ended: %+v", resp)
	}
	if n := len(s.listen["m"].subs); n != 2 {
		t.Fatalf("%d registrations left, want 2 (the renewed one and the new one)", n)
	}
}
