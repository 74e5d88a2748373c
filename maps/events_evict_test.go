package maps

import (
	"testing"
	"time"

	"github.com/shoalgrid/shoal/op"
)

// TestEventsEvictionAndIdle: evictions and max-idle expiries are
// replicated decisions, so their events are numbered like writes, and a
// backup keeps the same numbering.
func TestEventsEvictionAndIdle(t *testing.T) {
	owner := ruleState(Rule{Pattern: "c*", MaxEntries: 2, Eviction: EvictLRU}, Rule{Pattern: "s*", MaxIdle: 10 * time.Second})
	backup := ruleState(Rule{Pattern: "c*", MaxEntries: 2, Eviction: EvictLRU}, Rule{Pattern: "s*", MaxIdle: 10 * time.Second})
	var timers []op.Effect
	var evs []rawEvent
	do := func(now time.Time, req op.Request) {
		t.Helper()
		var x op.Exec
		x.Reset(now, owner.partition, true, &req)
		r := owner.Execute(&x, &req)
		for _, e := range x.Effects() {
			switch e.Kind {
			case op.EffectTimer:
				timers = append(timers, e)
			case op.EffectEmit:
				ev, err := decodeEvent(e.Payload)
				if err != nil {
					t.Fatal(err)
				}
				evs = append(evs, ev)
			}
		}
		if (Service{}).Mutates(req.Op) && r.Code == op.OK {
			var bx op.Exec
			bx.Reset(now, backup.partition, false, &req)
			backup.Execute(&bx, &req)
		}
		for name, rec := range owner.listen {
			if b := backup.listen[name]; b == nil || b.seq != rec.seq {
				t.Fatalf("map %s: owner at %d, backup at %+v", name, rec.seq, b)
			}
		}
	}
	do(t0, listenReq("cache", 7, 1, false))
	do(t0, listenReq("sessions", 7, 1, false))
	for i, k := range []string{"a", "b", "c"} {
		do(ms(i), put("cache", k, "v", 0))
	}
	want := []struct {
		kind eventKind
		key  string
	}{{evAdded, "a"}, {evAdded, "b"}, {evEvicted, "a"}, {evAdded, "c"}}
	if len(evs) != len(want) {
		t.Fatalf("cache events %+v", evs)
	}
	for i, w := range want {
		if evs[i].kind != w.kind || evs[i].key != w.key || evs[i].seq != uint64(i+1) || evs[i].unnumbered {
			t.Fatalf("cache event %d = %+v, want %v %s seq %d", i, evs[i], w.kind, w.key, i+1)
		}
	}
	evs = nil
	do(t0, put("sessions", "s", "v", 0))
	at := t0.Add(10 * time.Second)
	for _, e := range timers {
		if e.Name == "sessions" && !e.At.After(at) {
			do(at, op.Request{Op: op.OpTimer, Name: e.Name, Key: e.Key, Num: e.At.UnixNano()})
		}
	}
	if len(evs) != 2 || evs[1].kind != evExpired || evs[1].key != "s" || evs[1].seq != 2 || evs[1].unnumbered {
		t.Fatalf("sessions events %+v, want added then a numbered expiry", evs)
	}
}
