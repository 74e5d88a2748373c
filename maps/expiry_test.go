package maps

import (
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/op"
)

// TestListenedTTLExpiryEvents drives a listened map through random writes
// with and without TTLs, reads, deletes, owner and backup sweeps and the
// owner's timers, with a controllable clock, against an owner and a
// backup that replays its records, and a failover half-way (the backup
// promoted, a new backup restored from a snapshot, which leaves expired
// entries out). Every entry whose TTL passes gives exactly one expired
// event (also those nobody touches again), every numbered event follows
// the previous one (none lost, none repeated, across the failover too),
// reads see TTL semantics unchanged, and owner and backup stay equal.
func TestListenedTTLExpiryEvents(t *testing.T) {
	rng := rand.New(rand.NewPCG(12, 34))
	p := newPair()
	now := t0
	p.do(t, now, listenReq("m", 1, 1, true))
	live := map[string]int64{} // key -> expiry (0: none) of the entry the model holds
	wantExpired := map[string]int{}
	failedOver := -1 // index of the first event of the new owner
	expire := func() {
		for k, at := range live {
			if at != 0 && at <= now.UnixNano() {
				wantExpired[k]++
				delete(live, k)
			}
		}
	}
	for i := range 3000 {
		now = now.Add(time.Duration(rng.IntN(5)) * time.Millisecond)
		expire()
		key := "k" + strconv.Itoa(rng.IntN(80))
		switch r := rng.IntN(16); {
		case r < 6:
			ttl := int64(0)
			if rng.IntN(4) != 0 {
				ttl = int64(1 + rng.IntN(300))
			}
			p.do(t, now, put("m", key, "v"+strconv.Itoa(i), ttl))
			live[key] = 0
			if ttl != 0 {
				live[key] = now.UnixNano() + ttl*int64(time.Millisecond)
			}
		case r < 9:
			_, want := live[key]
			if got := p.do(t, now, keyed(OpGet, "m", key)).Found; got != want {
				t.Fatalf("step %d: get %s found %v, want %v", i, key, got, want)
			}
		case r < 10:
			_, want := live[key]
			if got := p.do(t, now, keyed(OpDelete, "m", key)).Found; got != want {
				t.Fatalf("step %d: delete %s found %v, want %v", i, key, got, want)
			}
			delete(live, key)
		case r < 12:
			p.owner.Sweep(now, rng.IntN(8))
			p.backup.Sweep(now, rng.IntN(8))
		default:
			p.fire(t, now)
		}
		if got := size(p.owner, now, "m"); got != int64(len(live)) {
			t.Fatalf("step %d: size %d, want %d", i, got, len(live))
		}
		p.same(t, now)
		if i == 1500 {
			snap, _ := p.backup.Snapshot(now)
			nb := newTestState()
			nb.partition = p.owner.partition
			if err := nb.Restore(now, snap); err != nil {
				t.Fatal(err)
			}
			var x op.Exec
			x.Reset(now, 0, true, nil)
			p.backup.BecameOwner(&x)
			p.owner, p.backup, p.timers = p.backup, nb, append([]op.Effect(nil), x.Effects()...)
			failedOver = len(p.events)
			if len(p.timers) == 0 {
				t.Fatal("the new owner armed no expiry timer")
			}
			p.same(t, now)
		}
	}
	// Nobody touches the map any more: the timers alone expire the rest.
	for range 100 {
		now = now.Add(50 * time.Millisecond)
		p.fire(t, now)
	}
	expire()
	if n := len(p.owner.maps["m"].exps); n != 0 {
		t.Fatalf("%d entries with a TTL still stored after their expiry", n)
	}
	p.same(t, now)

	gotExpired := map[string]int{}
	var seq uint64
	numbered, afterFailover := 0, 0
	for i, ev := range p.events {
		if ev.kind == evExpired {
			gotExpired[ev.key]++
		}
		if ev.unnumbered {
			if ev.kind != evExpired || ev.seq != seq {
				t.Fatalf("event %d: unnumbered kind %d seq %d after %d", i, ev.kind, ev.seq, seq)
			}
			continue
		}
		if ev.seq != seq+1 {
			t.Fatalf("event %d (kind %d, %s): seq %d after %d", i, ev.kind, ev.key, ev.seq, seq)
		}
		seq = ev.seq
		if ev.kind == evExpired {
			numbered++
			if i >= failedOver {
				afterFailover++
			}
		}
	}
	total := 0
	for k, n := range wantExpired {
		total += n
		if gotExpired[k] != n {
			t.Errorf("key %s: %d expired events, want %d", k, gotExpired[k], n)
		}
	}
	for k, n := range gotExpired {
		if wantExpired[k] == 0 {
			t.Errorf("key %s: %d expired events, none expired", k, n)
		}
	}
	if seq != p.owner.listen["m"].seq || seq != p.backup.listen["m"].seq {
		t.Fatalf("last event seq %d, owner %d, backup %d", seq, p.owner.listen["m"].seq, p.backup.listen["m"].seq)
	}
	// Most expiries come from the owner's records (numbered); a write
	// within ttlEvery of an expiry meets some first (unnumbered).
	if total < 300 || numbered < total*3/4 {
		t.Fatalf("%d entries expired, %d through numbered records: the test did not test expiry records", total, numbered)
	}
	if afterFailover < 100 {
		t.Fatalf("the new owner emitted %d numbered expired events", afterFailover)
	}
	t.Logf("%d expired (%d numbered) in %d events, %d timer records", total, numbered, len(p.events), p.fired)
}

// TestListenedTTLExpiryBatches: many entries expiring together take few
// records (at most ttlPerRecord keys each), each entry one numbered event;
// an unlistened map's entries still go by the local sweep.
func TestListenedTTLExpiryBatches(t *testing.T) {
	p := newPair()
	p.do(t, t0, listenReq("m", 1, 1, false))
	const n = 2500
	for i := range n {
		p.do(t, t0.Add(time.Duration(i)*time.Microsecond), put("m", "k"+strconv.Itoa(i), "v", 1000))
		p.do(t, t0, put("other", "k"+strconv.Itoa(i), "v", 1000))
	}
	if len(p.timers) != 1 || !p.timers[0].At.Equal(t0.Add(time.Second)) || p.timers[0].Key != ttlTimerKey {
		t.Fatalf("timers %+v, want one expiry timer at the first expiry", p.timers)
	}
	now := t0.Add(2 * time.Second)
	for _, s := range []*state{p.owner, p.backup} {
		if got := s.Sweep(now, 2*n); got != n {
			t.Fatalf("sweep removed %d, want the %d entries of the unlistened map", got, n)
		}
	}
	for range 10 {
		p.fire(t, now)
	}
	if p.owner.maps["m"] != nil || p.backup.maps["m"] != nil {
		t.Fatal("expired entries of the listened map are left")
	}
	if want := (n + ttlPerRecord - 1) / ttlPerRecord; p.fired != want {
		t.Fatalf("%d records, want %d", p.fired, want)
	}
	if len(p.events) != n+n {
		t.Fatalf("%d events, want %d added and %d expired", len(p.events), n, n)
	}
	for i, ev := range p.events[n:] {
		if ev.kind != evExpired || ev.unnumbered || ev.seq != uint64(n+i+1) || ev.key != "k"+strconv.Itoa(i) {
			t.Fatalf("expired event %d: %+v", i, ev)
		}
	}
	p.same(t, now)
}

// TestListenedTTLExpiryNoListenerLeft: once the last registration's lease
// passed, the map's expired entries go by the local sweep again.
func TestListenedTTLExpiryNoListenerLeft(t *testing.T) {
	p := newPair()
	p.do(t, t0, listenReq("m", 1, 1, false))
	p.do(t, t0, put("m", "a", "v", 10))
	late := t0.Add(listenLease + time.Second)
	p.fire(t, late) // the record's change prunes the lapsed registration
	if p.owner.listen != nil || p.backup.listen != nil {
		t.Fatal("a lapsed registration survived a change of the map")
	}
	p.do(t, late, put("m", "b", "v", 10))
	if len(p.timers) != 0 {
		t.Fatalf("an unlistened map armed %+v", p.timers)
	}
	if got := p.owner.Sweep(late.Add(time.Second), 10); got != 1 {
		t.Fatalf("sweep removed %d, want 1", got)
	}
}

// TestListenedTTLSnapshotKeepsDueEntries: a migration's snapshot carries a
// listened map's expired entries that the owner's record has not removed
// yet, so the new owner still gives their events (numbered after the old
// owner's); an unlistened map's expired entries are still left out.
func TestListenedTTLSnapshotKeepsDueEntries(t *testing.T) {
	p := newPair()
	p.do(t, t0, listenReq("m", 1, 1, true))
	p.do(t, t0, put("m", "a", "1", 10))
	p.do(t, t0, put("other", "b", "1", 10))
	now := ms(50) // a expired; its record is due at 100ms
	snap, err := p.owner.Snapshot(now)
	if err != nil {
		t.Fatal(err)
	}
	moved := newTestState()
	moved.partition = p.owner.partition
	if err := moved.Restore(now, snap); err != nil {
		t.Fatal(err)
	}
	if moved.maps["m"] == nil || moved.maps["m"].entries["a"].p == nil || moved.maps["other"] != nil {
		t.Fatalf("restored maps %v, want m/a kept (due an event) and other dropped", moved.Structures())
	}
	if r := moved.Apply(now, ptr(keyed(OpGet, "m", "a"))); r.Found {
		t.Fatal("an expired entry was read after the move")
	}
	var x op.Exec
	x.Reset(now, 0, true, nil)
	moved.BecameOwner(&x)
	fx := x.Effects()
	if len(fx) != 1 || fx[0].Key != ttlTimerKey {
		t.Fatalf("the new owner armed %+v", fx)
	}
	q := &pair{owner: moved, backup: newTestState(), timers: fx}
	q.backup.partition = moved.partition
	_ = q.backup.Restore(now, snap)
	q.fire(t, fx[0].At)
	if len(q.events) != 1 || q.events[0].kind != evExpired || q.events[0].unnumbered || q.events[0].seq != 2 || q.events[0].key != "a" {
		t.Fatalf("events after the move: %+v, want a's expired event numbered 2", q.events)
	}
	q.same(t, fx[0].At)
}

// TestListenedTTLRecordForLostEntry: a replica that lost an expired entry
// (restored from an older kind of snapshot, a sweep before the map was
// listened) still counts the owner's record, so the numbering stays equal.
func TestListenedTTLRecordForLostEntry(t *testing.T) {
	p := newPair()
	p.do(t, t0, listenReq("m", 1, 1, false))
	p.do(t, t0, put("m", "a", "1", 10))
	p.do(t, t0, put("m", "b", "1", 10))
	tab := p.backup.maps["m"]
	p.backup.remove(tab, "a", tab.exps["a"])
	p.fire(t, ms(200))
	if len(p.events) != 4 || p.owner.listen["m"].seq != 4 || p.backup.listen["m"].seq != 4 {
		t.Fatalf("%d events, owner seq %d, backup seq %d; want 4 alike", len(p.events), p.owner.listen["m"].seq, p.backup.listen["m"].seq)
	}
	p.same(t, ms(200))
}
