package maps

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"
	"unsafe"

	"github.com/shoalgrid/shoal/op"
)

// checkPolicy verifies the access bookkeeping of tracked maps: one meta per
// entry whose key aliases the entry's blob, heaps ordered with current
// positions, nothing tracked for other maps.
func checkPolicy(t *testing.T, s *state) {
	t.Helper()
	checkInvariants(t, s)
	for name, tab := range s.maps {
		p := tab.pol
		if p == nil {
			if tab.rule.tracked() {
				t.Fatalf("%s: tracked map without bookkeeping", name)
			}
			continue
		}
		if len(p.metas) != len(tab.entries) {
			t.Fatalf("%s: %d metas for %d entries", name, len(p.metas), len(tab.entries))
		}
		for k, m := range p.metas {
			b, ok := tab.entries[k]
			if !ok || m.key != k || m.gone {
				t.Fatalf("%s/%s: meta without entry", name, k)
			}
			if _, hn := b.header(); len(k) > 0 && unsafe.StringData(m.key) != (*byte)(unsafe.Add(unsafe.Pointer(b.p), hn+tsLen)) {
				t.Fatalf("%s/%s: meta key does not alias the blob", name, k)
			}
		}
		for _, h := range []struct {
			items []*meta
			pos   func(*meta) int
			less  func(a, b *meta) bool
		}{
			{p.byAccess.Items, func(m *meta) int { return m.ai }, byAccessLess},
			{p.byPrio.Items, func(m *meta) int { return m.pi }, byPrioLess},
		} {
			for i, m := range h.items {
				if idx := h.pos(m); idx != i {
					t.Fatalf("%s: heap position %d recorded as %d", name, i, idx)
				}
				if i > 0 && h.less(m, h.items[(i-1)/2]) {
					t.Fatalf("%s: heap out of order at %d", name, i)
				}
			}
		}
		if p.usesAccess() && p.byAccess.Len() != len(p.metas) || p.usesPrio() && p.byPrio.Len() != len(p.metas) {
			t.Fatalf("%s: heaps hold %d/%d of %d", name, p.byAccess.Len(), p.byPrio.Len(), len(p.metas))
		}
	}
}

// exec runs req on s as the owner (owner true) or a backup at now and
// returns the response and the effects it recorded.
func exec(s *state, owner bool, now time.Time, req *op.Request) (*op.Response, []op.Effect) {
	var x op.Exec
	x.Reset(now, s.partition, owner, req)
	r := s.Execute(&x, req)
	return r, append([]op.Effect(nil), x.Effects()...)
}

// pair is an owner and a backup fed the owner's replicated records, as the
// member core does: mutations whose response is OK, as Execute left them.
type pair struct {
	owner, backup *state
	timers        []op.Effect
	fired         int        // OpTimer records sent
	events        []rawEvent // emitted by the owner, decoded
}

func newPair(rules ...Rule) *pair {
	return &pair{owner: ruleState(rules...), backup: ruleState(rules...)}
}

func (p *pair) do(t *testing.T, now time.Time, req op.Request) *op.Response {
	t.Helper()
	r, effects := exec(p.owner, true, now, &req)
	for _, e := range effects {
		switch e.Kind {
		case op.EffectTimer:
			p.timers = append(p.timers, e)
		case op.EffectEmit:
			ev, err := decodeEvent(e.Payload)
			if err != nil {
				t.Fatalf("owner emitted a malformed event: %v", err)
			}
			p.events = append(p.events, ev)
		}
	}
	if (Service{}).Mutates(req.Op) && r.Code == op.OK {
		if br, _ := exec(p.backup, false, now, &req); br.Code != op.OK {
			t.Fatalf("backup replay of op %d: %v %s", req.Op, br.Code, br.Msg)
		}
	}
	return r
}

// fire sends OpTimer for every timer due by now, as the core's timer loop.
func (p *pair) fire(t *testing.T, now time.Time) {
	t.Helper()
	due := p.timers[:0:0]
	rest := p.timers[:0:0]
	for _, e := range p.timers {
		if !e.At.After(now) {
			due = append(due, e)
		} else {
			rest = append(rest, e)
		}
	}
	p.timers = rest
	for _, e := range due {
		p.fired++
		p.do(t, now, op.Request{Op: op.OpTimer, Name: e.Name, Key: e.Key, Num: e.At.UnixNano()})
	}
}

func (p *pair) same(t *testing.T, now time.Time) {
	t.Helper()
	checkPolicy(t, p.owner)
	checkPolicy(t, p.backup)
	a, _ := p.owner.Snapshot(now)
	b, _ := p.backup.Snapshot(now)
	if !bytes.Equal(a, b) {
		t.Fatalf("backup differs from owner at %v:\nowner  %x\nbackup %x", now.Sub(t0), a, b)
	}
}

func size(s *state, now time.Time, name string) int64 {
	return s.Apply(now, &op.Request{Op: OpSize, Name: name}).Num
}

// TestEvictLRU fills a map with max-entries and policy lru far past its
// bound: no write is refused, the map never holds more than its bound, and
// the entry evicted is the least recently used one, reads included once
// the owner flushed them.
func TestEvictLRU(t *testing.T) {
	p := newPair(Rule{Pattern: "c*", MaxEntries: 50, Eviction: EvictLRU})
	for i := range 1000 {
		now := ms(i)
		if r := p.do(t, now, put("cache", "k"+strconv.Itoa(i), "v", 0)); r.Code != op.OK {
			t.Fatalf("put %d refused: %v %s", i, r.Code, r.Msg)
		}
		if n := size(p.owner, now, "cache"); n > 50 {
			t.Fatalf("after %d puts the map holds %d > 50", i+1, n)
		}
	}
	if n := size(p.owner, ms(1000), "cache"); n != 50 {
		t.Fatalf("size %d, want 50", n)
	}
	// k950 is the oldest; read it, flush, and it survives the next put
	// while k951 goes.
	if r := p.do(t, ms(1001), keyed(OpGet, "cache", "k950")); !r.Found {
		t.Fatal("k950 missing")
	}
	if len(p.timers) == 0 {
		t.Fatal("a read of a tracked map armed no flush timer")
	}
	p.fire(t, ms(1001).Add(time.Second))
	p.do(t, ms(2002), put("cache", "new", "v", 0))
	if !p.owner.Apply(ms(2002), ptr(keyed(OpGet, "cache", "k950"))).Found || p.owner.Apply(ms(2002), ptr(keyed(OpGet, "cache", "k951"))).Found {
		t.Fatal("lru evicted the wrong entry")
	}
	if p.owner.dropped[dropEvicted] != 951 {
		t.Fatalf("evicted %d, want 951", p.owner.dropped[dropEvicted])
	}
	p.same(t, ms(2002))
}

// TestEvictLFU: with policy lfu the frequently used entries stay and a new
// entry competes through the map's age.
func TestEvictLFU(t *testing.T) {
	p := newPair(Rule{Pattern: "c*", MaxEntries: 3, Eviction: EvictLFU})
	p.do(t, ms(0), put("c", "hot", "1", 0))
	for i := range 5 {
		p.do(t, ms(1+i), put("c", "hot", "1", 0)) // 6 uses
	}
	p.do(t, ms(10), put("c", "warm", "1", 0))
	p.do(t, ms(11), keyed(OpGet, "c", "warm"))
	p.do(t, ms(12), keyed(OpGet, "c", "warm"))
	p.fire(t, ms(2000)) // warm: 3 uses
	p.do(t, ms(2001), put("c", "cold", "1", 0))
	p.do(t, ms(2002), put("c", "new", "1", 0)) // evicts cold (1 use)
	for key, want := range map[string]bool{"hot": true, "warm": true, "cold": false, "new": true} {
		if got := p.owner.Apply(ms(2003), ptr(keyed(OpContains, "c", key))).Found; got != want {
			t.Errorf("%s present %v, want %v", key, got, want)
		}
	}
	// The age is now 1 (cold's priority): new entries start at 2, so
	// "new" (priority 2) goes before warm (3) and hot (6).
	p.do(t, ms(2004), put("c", "newer", "1", 0))
	if p.owner.Apply(ms(2005), ptr(keyed(OpContains, "c", "new"))).Found {
		t.Error("lfu kept the least used entry")
	}
	p.same(t, ms(2005))
}

// TestEvictNoneRefuses keeps today's behaviour for policy none.
func TestEvictNoneRefuses(t *testing.T) {
	s := ruleState(Rule{Pattern: "m", MaxEntries: 1, Eviction: EvictNone})
	s.Apply(t0, ptr(put("m", "a", "1", 0)))
	if r := s.Apply(t0, ptr(put("m", "b", "1", 0))); r.Code != op.CodeMapFull {
		t.Fatalf("put into a full map: %+v", r)
	}
	if s.Evicts("m") || s.Apply(t0, &op.Request{Op: op.OpEvict, Name: "m", Num: 5}).Num != 0 {
		t.Fatal("policy none evicted")
	}
	// With max-idle too, a refusal records no effect (the core would
	// replicate a failed call that did).
	s = ruleState(Rule{Pattern: "m", MaxEntries: 1, MaxIdle: time.Minute})
	if _, fx := exec(s, true, t0, ptr(put("m", "a", "1", 0))); len(fx) != 1 {
		t.Fatalf("first write armed %d timers, want 1", len(fx))
	}
	s.maps["m"].pol.timerAt = 0 // as if the timer were lost
	if r, fx := exec(s, true, t0, ptr(put("m", "b", "1", 0))); r.Code != op.CodeMapFull || len(fx) != 0 {
		t.Fatalf("refused write: %+v with %d effects", r, len(fx))
	}
}

// TestEvictBackupsEqualOwner runs random mixes of writes, reads, deletes,
// TTLs, flushes, memory-guard evictions and owner-only sweeps against an
// owner and a backup that replays its records: after every step both hold
// the same snapshot, and every map stays within its bound. A failover
// (the backup promoted, a fresh backup restored from its snapshot) keeps
// both properties. In the listened cases map "a" has a listener (its TTL
// expiry is the owner's records', expiry.go), "b" has none, and the
// backup's sweeper runs too.
func TestEvictBackupsEqualOwner(t *testing.T) {
	type tcase struct {
		rule     Rule
		listened bool
	}
	for _, tc := range []tcase{
		{Rule{Pattern: "*", MaxEntries: 20, Eviction: EvictLRU}, false},
		{Rule{Pattern: "*", MaxEntries: 20, Eviction: EvictLFU}, false},
		{Rule{Pattern: "*", MaxEntries: 20, Eviction: EvictLRU, MaxIdle: 300 * time.Millisecond}, false},
		{Rule{Pattern: "*", MaxEntries: 20, Eviction: EvictLFU, MaxIdle: 300 * time.Millisecond}, false},
		{Rule{Pattern: "*", MaxIdle: 200 * time.Millisecond}, false},
		{Rule{Pattern: "*"}, true},
		{Rule{Pattern: "*", MaxEntries: 20, Eviction: EvictLRU, MaxIdle: 300 * time.Millisecond}, true},
		{Rule{Pattern: "*", MaxEntries: 20, Eviction: EvictLFU}, true},
	} {
		rule := tc.rule
		t.Run(fmt.Sprintf("%s-idle%v-listened%v", rule.Eviction, rule.MaxIdle, tc.listened), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(7, uint64(rule.MaxIdle)+uint64(len(rule.Eviction))))
			p := newPair(rule)
			now := t0
			if tc.listened {
				p.do(t, now, listenReq("a", 1, 1, true))
			}
			for i := range 4000 {
				now = now.Add(time.Duration(rng.IntN(5)) * time.Millisecond)
				name := []string{"a", "b"}[rng.IntN(2)]
				key := "k" + strconv.Itoa(rng.IntN(60))
				switch r := rng.IntN(20); {
				case r < 7:
					p.do(t, now, op.Request{Op: OpPut, Name: name, Key: key, Value: []byte{byte(i)}, Num: int64(rng.IntN(2) * rng.IntN(400))})
				case r < 11:
					p.do(t, now, keyed(OpGet, name, key))
				case r < 12:
					p.do(t, now, keyed(OpDelete, name, key))
				case r < 13:
					p.do(t, now, op.Request{Op: OpIncr, Name: name, Key: "n" + key, Num: 1})
				case r < 14:
					p.do(t, now, op.Request{Op: OpPutIfAbsent, Name: name, Key: key, Value: []byte("x")})
				case r < 15:
					p.do(t, now, op.Request{Op: op.OpEvict, Name: name, Num: 2})
				case r < 16:
					// The owner's sweeper runs on its own clock: not replicated.
					p.owner.Sweep(now, rng.IntN(5))
					if tc.listened {
						// So does the backup's, ahead of the owner's records.
						p.backup.Sweep(now, rng.IntN(5))
					}
				case r < 17 && i%500 == 0:
					p.do(t, now, keyed(OpClear, name, ""))
				case r < 17:
					es := []kv{{key: key, value: []byte("1")}, {key: key + "x", value: []byte("2")}}
					p.do(t, now, op.Request{Op: OpPutAll, Name: name, Value: encodeEntries(es)})
				default:
					p.fire(t, now)
				}
				p.same(t, now)
				if rule.MaxEntries > 0 {
					for _, n := range []string{"a", "b"} {
						if c := size(p.owner, now, n); c > int64(rule.MaxEntries) {
							t.Fatalf("step %d: map %s holds %d > %d", i, n, c, rule.MaxEntries)
						}
					}
				}
				if i == 2000 {
					// Failover: the backup becomes owner (BecameOwner re-arms
					// its timers), a new backup starts from its snapshot.
					snap, _ := p.backup.Snapshot(now)
					nb := ruleState(rule)
					if err := nb.Restore(now, snap); err != nil {
						t.Fatal(err)
					}
					var x op.Exec
					x.Reset(now, 0, true, nil)
					p.backup.BecameOwner(&x)
					p.owner, p.backup, p.timers = p.backup, nb, nil
					for _, e := range x.Effects() {
						p.timers = append(p.timers, e)
					}
					p.same(t, now)
				}
			}
			if tc.listened {
				if p.owner.listen["a"] == nil || p.owner.listen["a"].seq == 0 || p.owner.dropped[dropExpired] == 0 {
					t.Fatal("no listened TTL expiry happened: the test did not test it")
				}
			}
			if rule.Eviction != "" && p.owner.dropped[dropEvicted] == 0 {
				t.Fatal("nothing was evicted: the test did not test eviction")
			}
			if rule.MaxIdle > 0 && p.owner.dropped[dropIdle] == 0 {
				t.Fatal("nothing expired idle: the test did not test max-idle")
			}
		})
	}
}

// TestMaxIdle: an entry expires when neither read nor written for max-idle,
// on the owner and on the backup alike; a read flushed to the backup keeps
// it, and after a failover the new owner expires it on its own timer (the
// owner's reads of the last flush interval are lost with it: the entry
// may go up to one flush interval early).
func TestMaxIdle(t *testing.T) {
	rule := Rule{Pattern: "s*", MaxIdle: 10 * time.Second}
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	p := newPair(rule)
	p.do(t, at(0), put("sessions", "a", "1", 0))
	p.do(t, at(0), put("sessions", "b", "1", 0))
	p.do(t, at(0), put("other", "c", "1", 0)) // no rule: never idle
	if len(p.timers) != 1 || !p.timers[0].At.Equal(at(10*time.Second)) {
		t.Fatalf("timers %+v, want one at the idle deadline", p.timers)
	}
	p.do(t, at(4*time.Second), keyed(OpGet, "sessions", "a"))
	p.fire(t, at(6*time.Second)) // the flush, 1s (max-idle/8, at most 1s) after the read
	p.fire(t, at(10*time.Second))
	// present looks without reading (a read on the owner counts as an
	// access; backups serve no reads).
	present := func(s *state, now time.Time, key string) bool {
		tab := s.maps["sessions"]
		return tab != nil && tab.entries[key].p != nil && !tab.expired(now.UnixNano(), key)
	}
	for _, s := range []*state{p.owner, p.backup} {
		if present(s, at(10*time.Second), "b") || !present(s, at(10*time.Second), "a") {
			t.Fatal("after 10s: b (idle) should be gone, a (read at 4s) kept")
		}
	}
	p.fire(t, at(13*time.Second))
	p.same(t, at(13*time.Second))
	// A read at 13.5s is not flushed yet when the owner fails at 13.9s:
	// the new owner knows of the read at 4s only (a's deadline is 14s) and
	// expires a on its first timer, one flush interval (1s) after it
	// became owner, where the old owner would have kept it until 23.5s.
	p.do(t, at(13*time.Second+500*time.Millisecond), keyed(OpGet, "sessions", "a"))
	var x op.Exec
	promoted := at(13*time.Second + 900*time.Millisecond)
	x.Reset(promoted, 0, true, nil)
	p.backup.BecameOwner(&x)
	effects := x.Effects()
	if first := promoted.Add(time.Second); len(effects) != 1 || effects[0].Kind != op.EffectTimer || !effects[0].At.Equal(first) {
		t.Fatalf("new owner armed %+v, want a timer at %v", effects, first.Sub(t0))
	}
	if r, _ := exec(p.backup, true, effects[0].At, &op.Request{Op: op.OpTimer, Name: "sessions", Num: effects[0].At.UnixNano()}); r.Num != 1 {
		t.Fatalf("new owner's timer expired %d entries, want 1", r.Num)
	}
	if present(p.backup, effects[0].At, "a") {
		t.Fatal("a survived on the new owner")
	}
	// On the old owner (had it stayed), the flushed read keeps a.
	p.fire(t, at(14*time.Second))
	if !present(p.owner, at(20*time.Second), "a") {
		t.Fatal("the owner expired an entry it read 6.5s ago")
	}
	if !p.backup.Apply(at(time.Hour), ptr(keyed(OpContains, "other", "c"))).Found {
		t.Fatal("a map without max-idle lost an entry")
	}
}

// TestMergeLatest: after a healed split, per key the later write wins,
// whichever side it was written on; equal timestamps go to the larger
// value, so both orders of merging agree.
func TestMergeLatest(t *testing.T) {
	loser, winner := newState(3), newState(3)
	apply := func(s *state, at time.Time, key, val string) {
		s.Apply(at, &op.Request{Op: OpPut, Name: "m", Key: key, Value: []byte(val)})
	}
	apply(winner, ms(1), "older-on-loser", "winner")
	apply(loser, ms(0), "older-on-loser", "loser")
	apply(winner, ms(0), "newer-on-loser", "winner")
	apply(loser, ms(2), "newer-on-loser", "loser")
	apply(winner, ms(5), "tie", "a")
	apply(loser, ms(5), "tie", "b")
	apply(loser, ms(5), "only-loser", "loser")
	snap, _ := loser.Snapshot(ms(6))
	r := winner.Apply(ms(6), &op.Request{Op: OpMerge, Name: "m", Value: snap, Num: MergeLatest})
	if r.Code != op.OK || r.Num != 3 {
		t.Fatalf("merge = %+v, want 3 stored", r)
	}
	want := map[string]string{"older-on-loser": "winner", "newer-on-loser": "loser", "only-loser": "loser"}
	for k, v := range want {
		if g := winner.Apply(ms(7), ptr(keyed(OpGet, "m", k))); string(g.Value) != v {
			t.Errorf("%s = %q, want %q", k, g.Value, v)
		}
	}
	// "tie" was stamped ms(5) on both sides: the larger value, b, wins.
	if wts, lts := tsOf(t, winner, "tie"), tsOf(t, loser, "tie"); wts != lts || wts != ms(5).UnixNano() {
		t.Fatalf("tie stamped %d and %d, want both %d", wts, lts, ms(5).UnixNano())
	}
	if g := winner.Apply(ms(7), ptr(keyed(OpGet, "m", "tie"))); string(g.Value) != "b" {
		t.Errorf("tie = %q, want the larger value b", g.Value)
	}
	// The merged entries keep their stamps and advance the clock: a write
	// after the merge is later than all of them.
	apply(winner, ms(0), "after", "x") // a clock that went back
	if tsOf(t, winner, "after") <= tsOf(t, winner, "newer-on-loser") {
		t.Error("a write after the merge is not stamped after the merged entries")
	}
	// Exact ties go to the larger value on either side.
	x, y := newState(1), newState(1)
	apply(x, ms(9), "k", "small")
	apply(y, ms(9), "k", "large")
	sx, _ := x.Snapshot(ms(9))
	sy, _ := y.Snapshot(ms(9))
	x.Apply(ms(10), &op.Request{Op: OpMerge, Name: "m", Value: sy, Num: MergeLatest})
	y.Apply(ms(10), &op.Request{Op: OpMerge, Name: "m", Value: sx, Num: MergeLatest})
	gx := x.Apply(ms(10), ptr(keyed(OpGet, "m", "k")))
	gy := y.Apply(ms(10), ptr(keyed(OpGet, "m", "k")))
	if string(gx.Value) != "small" || string(gy.Value) != "small" {
		t.Errorf("tie resolved to %q and %q, want small on both (bytes.Compare)", gx.Value, gy.Value)
	}
}

func tsOf(t *testing.T, s *state, key string) int64 {
	t.Helper()
	tab := s.maps["m"]
	if tab == nil {
		t.Fatalf("no map m")
	}
	return tab.entries[key].ts()
}

// FuzzDecodeReads: hostile flush payloads fail cleanly or decode to
// something that round-trips.
func FuzzDecodeReads(f *testing.F) {
	f.Add(encodeReads([]read{{key: "a", at: 5, count: 2}, {key: "", at: -1, count: 0}}))
	f.Add([]byte{0x91, 0x93, 0xa1, 0x61})
	f.Add([]byte{0xdd, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		rs, err := decodeReads(b)
		if err != nil {
			return
		}
		again, err := decodeReads(encodeReads(rs))
		if err != nil || len(again) != len(rs) {
			t.Fatalf("round trip: %v", err)
		}
		// Applying them to a tracked state must not break it.
		s := ruleState(Rule{Pattern: "*", MaxIdle: time.Second, Eviction: EvictLFU, MaxEntries: 2})
		s.Apply(t0, ptr(put("m", "a", "1", 0)))
		s.Apply(t0, &op.Request{Op: op.OpTimer, Name: "m", Value: b})
		var x op.Exec
		x.Reset(t0, 0, false, nil)
		s.Execute(&x, &op.Request{Op: op.OpTimer, Name: "m", Value: b})
		checkPolicy(t, s)
	})
}

// FuzzRestoreTracked restores hostile snapshots into a state whose maps
// are tracked (max-idle, lfu): it fails cleanly or yields consistent
// bookkeeping that snapshots to a stable form.
func FuzzRestoreTracked(f *testing.F) {
	rule := Rule{Pattern: "*", MaxIdle: time.Second, Eviction: EvictLFU, MaxEntries: 3}
	s := ruleState(rule)
	for i := range 5 {
		s.Apply(ms(i), ptr(put("m", strconv.Itoa(i), "v", int64(i*10))))
	}
	s.Apply(ms(6), ptr(keyed(OpGet, "m", "4")))
	s.Apply(ms(7), &op.Request{Op: op.OpTimer, Name: "m"})
	snap, _ := s.Snapshot(ms(7))
	f.Add(snap)
	f.Fuzz(func(t *testing.T, b []byte) {
		s := ruleState(rule)
		if err := s.Restore(t0, b); err != nil {
			return
		}
		checkPolicy(t, s)
		snap, _ := s.Snapshot(t0)
		r := ruleState(rule)
		if err := r.Restore(t0, snap); err != nil {
			t.Fatalf("restore of own snapshot: %v", err)
		}
		checkPolicy(t, r)
		if snap2, _ := r.Snapshot(t0); !bytes.Equal(snap, snap2) {
			t.Fatal("snapshot not stable")
		}
		// It keeps working: writes evict within the bound.
		for i := range 5 {
			r.Apply(ms(i), ptr(put("m", "w"+strconv.Itoa(i), "v", 0)))
		}
		checkPolicy(t, r)
	})
}

// TestDefaultTTLReplicated: a map rule's default TTL is applied on the
// owner and replayed alike on the backup, and a new owner restored from a
// snapshot expires the entry at the same instant.
func TestDefaultTTLReplicated(t *testing.T) {
	rule := Rule{Pattern: "tokens", DefaultTTL: time.Second}
	p := newPair(rule)
	p.do(t, ms(0), put("tokens", "a", "1", 0))   // default TTL: expires at 1s
	p.do(t, ms(500), put("tokens", "b", "1", 0)) // at 1.5s
	p.do(t, ms(600), put("tokens", "c", "1", 0)) // an explicit TTL wins
	p.do(t, ms(600), put("tokens", "c", "1", 5000))
	p.same(t, ms(600))
	snap, _ := p.backup.Snapshot(ms(700))
	promoted := ruleState(rule)
	if err := promoted.Restore(ms(700), snap); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*state{p.owner, p.backup, promoted} {
		for _, c := range []struct {
			at   int
			want int64
		}{{999, 3}, {1000, 2}, {1500, 1}, {5599, 1}, {5600, 0}} {
			if n := size(s, ms(c.at), "tokens"); n != c.want {
				t.Fatalf("at %dms: %d entries, want %d", c.at, n, c.want)
			}
		}
	}
}

// TestMaxIdleBatchesExpiry: entries that turn idle one after the other go
// in few timer records (at most one per flush interval), each at most one
// interval late, and the backup drops the same.
func TestMaxIdleBatchesExpiry(t *testing.T) {
	p := newPair(Rule{Pattern: "*", MaxIdle: 8 * time.Second}) // flush interval 1s
	for i := range 1000 {
		p.do(t, ms(i), put("m", strconv.Itoa(i), "v", 0)) // idle from 8s+i ms
	}
	for now := ms(0); now.Before(ms(12_000)); now = now.Add(10 * time.Millisecond) {
		p.fire(t, now)
		if n := size(p.owner, now, "m"); now.Before(ms(8_000)) && n != 1000 {
			t.Fatalf("at %v: %d entries, none was idle yet", now.Sub(t0), n)
		}
		if now.After(ms(10_000)) && size(p.owner, now, "m") != 0 {
			t.Fatalf("at %v: entries idle since 9s still there", now.Sub(t0))
		}
	}
	p.same(t, ms(12_000))
	if p.fired > 3 || p.owner.dropped[dropIdle] != 1000 {
		t.Fatalf("%d timer records expired %d entries; want at most 3 for 1000", p.fired, p.owner.dropped[dropIdle])
	}
	t.Logf("1000 entries idle over 1s: %d records", p.fired)
}

// TestMergeIntoEvictingMap: a merge after a split into a map with an
// eviction policy keeps the map within its bound.
func TestMergeIntoEvictingMap(t *testing.T) {
	rule := Rule{Pattern: "m", MaxEntries: 5, Eviction: EvictLRU}
	loser, winner := ruleState(rule), ruleState(rule)
	for i := range 5 {
		loser.Apply(ms(i), ptr(put("m", "l"+strconv.Itoa(i), "v", 0)))
		winner.Apply(ms(i), ptr(put("m", "w"+strconv.Itoa(i), "v", 0)))
	}
	snap, _ := loser.Snapshot(ms(10))
	r := winner.Apply(ms(10), &op.Request{Op: OpMerge, Name: "m", Value: snap, Num: MergePutIfAbsent})
	if r.Code != op.OK || r.Num != 5 {
		t.Fatalf("merge = %+v", r)
	}
	if n := size(winner, ms(10), "m"); n != 5 {
		t.Fatalf("after the merge the map holds %d, bound 5", n)
	}
	checkPolicy(t, winner)
}
