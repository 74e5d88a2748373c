package replicated

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/internal/varbin"
	"github.com/shoalgrid/shoal/op"
)

var t0 = time.Unix(1_800_000_000, 0)

func newRep(name string) *Replica {
	return Service{}.NewReplica(name).(*Replica)
}

func apply(r *Replica, now time.Time, o uint8, name, key, value string) (*op.Response, []byte, []Event) {
	var x op.Exec
	req := &op.Request{Service: Name, Name: name, Op: o, Key: key}
	if value != "" || o == OpPut {
		req.Value = []byte(value)
	}
	x.Reset(now, -1, true, req)
	resp, delta := r.Apply(&x, req)
	return resp, delta, events(&x)
}

func merge(t testing.TB, r *Replica, now time.Time, msg []byte) []Event {
	t.Helper()
	var x op.Exec
	x.Reset(now, -1, false, nil)
	if err := r.Merge(&x, msg); err != nil {
		t.Fatalf("merge: %v", err)
	}
	return events(&x)
}

func events(x *op.Exec) []Event {
	var out []Event
	for _, e := range x.Effects() {
		if e.Kind != op.EffectEmit {
			continue
		}
		ev, err := DecodeEvent(e.Payload)
		if err != nil {
			panic(err)
		}
		out = append(out, ev)
	}
	return out
}

// pull is one anti-entropy exchange: a pulls what b has that differs.
func pull(t testing.TB, a, b *Replica, now time.Time) {
	t.Helper()
	for range 100 {
		msg, more, err := b.Diff(now, a.Digest(now), 1<<10)
		if err != nil {
			t.Fatal(err)
		}
		if msg != nil {
			merge(t, a, now, msg)
		}
		if !more {
			return
		}
	}
	t.Fatal("pull did not finish")
}

func get(t testing.TB, r *Replica, name, key string) (string, bool) {
	resp, _, _ := apply(r, t0, OpGet, name, key, "")
	if !resp.Found {
		return "", false
	}
	_, v, err := decodeEntry(resp.Value)
	if err != nil {
		t.Fatal(err)
	}
	return string(v), true
}

func dump(t testing.TB, r *Replica, name string) string {
	resp, _, _ := apply(r, t0, OpEntries, name, "", "")
	es, err := decodeEntries(resp.Value)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	for _, e := range es {
		fmt.Fprintf(&b, "%s=%s@%d/%s ", e.Key, e.Value, e.Version.Time, e.Version.Origin)
	}
	return b.String()
}

func TestPutGetDeleteLocal(t *testing.T) {
	r := newRep("a")
	resp, delta, evs := apply(r, t0, OpPut, "cfg", "k", "v1")
	if resp.Code != op.OK || resp.Found || delta == nil || len(evs) != 1 || evs[0].Type != Added {
		t.Fatalf("first put: %+v delta %v events %+v", resp, delta != nil, evs)
	}
	if _, _, evs = apply(r, t0, OpPut, "cfg", "k", "v2"); len(evs) != 1 || evs[0].Type != Updated || string(evs[0].Value) != "v2" {
		t.Fatalf("second put events %+v", evs)
	}
	if v, ok := get(t, r, "cfg", "k"); !ok || v != "v2" {
		t.Fatalf("get = %q %v", v, ok)
	}
	resp, delta, evs = apply(r, t0, OpDelete, "cfg", "k", "")
	if !resp.Found || delta == nil || len(evs) != 1 || evs[0].Type != Removed || string(evs[0].Value) != "v2" {
		t.Fatalf("delete: %+v events %+v", resp, evs)
	}
	if _, ok := get(t, r, "cfg", "k"); ok {
		t.Fatal("deleted key still there")
	}
	// Deleting an absent key still writes a marker (it must beat older
	// writes on their way), but fires no event.
	resp, delta, evs = apply(r, t0, OpDelete, "cfg", "nope", "")
	if resp.Found || delta == nil || len(evs) != 0 {
		t.Fatalf("delete absent: %+v delta %v events %+v", resp, delta != nil, evs)
	}
	if r.Len() != 0 {
		t.Fatalf("Len = %d", r.Len())
	}
	if resp, _, _ := apply(r, t0, 99, "cfg", "", ""); !errors.Is(resp.Err(), op.ErrUnknownOp) {
		t.Fatalf("unknown op: %v", resp.Err())
	}
}

// TestConflictRule: the newer hybrid time wins; equal times go to the
// greater member name; the winner is the same whichever order the writes
// arrive in.
func TestConflictRule(t *testing.T) {
	a, b := newRep("a"), newRep("b")
	_, da, _ := apply(a, t0, OpPut, "m", "k", "from-a")
	_, db, _ := apply(b, t0, OpPut, "m", "k", "from-b") // same wall time
	merge(t, a, t0, db)
	merge(t, b, t0, da)
	for _, r := range []*Replica{a, b} {
		if v, _ := get(t, r, "m", "k"); v != "from-b" {
			t.Fatalf("%s: equal times: got %q, want the greater origin's write", r.member, v)
		}
	}
	// b's clock is an hour behind, but b has seen a's write: its next write
	// still gets a later version and wins.
	_, da, _ = apply(a, t0.Add(time.Second), OpPut, "m", "k", "a-later")
	merge(t, b, t0, da)
	_, db, _ = apply(b, t0.Add(-time.Hour), OpPut, "m", "k", "b-after-seeing-a")
	merge(t, a, t0, db)
	for _, r := range []*Replica{a, b} {
		if v, _ := get(t, r, "m", "k"); v != "b-after-seeing-a" {
			t.Fatalf("%s: got %q: a write made after seeing another must win over it", r.member, v)
		}
	}
	// Equal versions (a restarted member reusing a time): the same one
	// wins on both sides.
	x, y := &entry{ver: Version{5, "a"}, value: []byte("x")}, &entry{ver: Version{5, "a"}, value: []byte("y")}
	if wins(x, y) == wins(y, x) {
		t.Fatal("equal versions: wins is not antisymmetric")
	}
	d := &entry{ver: Version{5, "a"}, deleted: true}
	if !wins(d, x) || wins(x, d) {
		t.Fatal("equal versions: a deletion must win")
	}
}

// TestRandomConvergence: writes and deletes on random members with skewed
// clocks; deltas are delivered late, out of order, twice, or not at all;
// after anti-entropy between every pair every member holds the same maps,
// and each key holds its greatest-version write.
func TestRandomConvergence(t *testing.T) {
	for seed := range uint64(30) {
		rng := rand.New(rand.NewPCG(seed, 7))
		names := []string{"a", "b", "c", "d"}
		reps := make([]*Replica, len(names))
		skew := make([]time.Duration, len(names))
		for i, n := range names {
			reps[i] = newRep(n)
			skew[i] = time.Duration(rng.IntN(2000)-1000) * time.Millisecond
		}
		type pending struct {
			to  int
			msg []byte
		}
		var queue []pending
		type write struct {
			ver     Version
			deleted bool
			value   string
		}
		best := map[string]write{}
		now := t0
		for step := range 400 {
			now = now.Add(time.Duration(rng.IntN(3)) * time.Millisecond)
			i := rng.IntN(len(reps))
			key := fmt.Sprintf("k%d", rng.IntN(12))
			mapName := fmt.Sprintf("m%d", rng.IntN(2))
			o, val := OpPut, fmt.Sprintf("v%d", step)
			if rng.IntN(4) == 0 {
				o, val = OpDelete, ""
			}
			resp, delta, _ := apply(reps[i], now.Add(skew[i]), o, mapName, key, val)
			if resp.Code != op.OK {
				t.Fatal(resp.Err())
			}
			w := write{ver: Version{resp.Num, names[i]}, deleted: o == OpDelete, value: val}
			if b, ok := best[mapName+"/"+key]; !ok || w.ver.Compare(b.ver) > 0 {
				best[mapName+"/"+key] = w
			}
			for j := range reps {
				if j == i || rng.IntN(5) == 0 { // lost
					continue
				}
				queue = append(queue, pending{j, delta})
				if rng.IntN(10) == 0 {
					queue = append(queue, pending{j, delta}) // duplicated
				}
			}
			// Deliver a random part of the queue, in random order.
			rng.Shuffle(len(queue), func(a, b int) { queue[a], queue[b] = queue[b], queue[a] })
			k := rng.IntN(len(queue) + 1)
			for _, p := range queue[:k] {
				merge(t, reps[p.to], now.Add(skew[p.to]), p.msg)
			}
			queue = queue[k:]
		}
		for i := range reps {
			for j := range reps {
				if i != j {
					pull(t, reps[i], reps[j], now)
				}
			}
		}
		for _, m := range []string{"m0", "m1"} {
			want := dump(t, reps[0], m)
			for _, r := range reps[1:] {
				if got := dump(t, r, m); got != want {
					t.Fatalf("seed %d: map %s: %s holds %s, a holds %s", seed, m, r.member, got, want)
				}
			}
		}
		if !bytes.Equal(reps[0].Digest(now), reps[3].Digest(now)) {
			t.Fatalf("seed %d: digests differ", seed)
		}
		for mk, w := range best {
			mapName, key := mk[:2], mk[3:]
			v, ok := get(t, reps[1], mapName, key)
			if w.deleted == ok || (ok && v != w.value) {
				t.Fatalf("seed %d: %s = %q (%v), want the greatest version's write %+v", seed, mk, v, ok, w)
			}
		}
	}
}

// TestTombstoneGC: a deletion marker beats older writes until its TTL
// ends, then Sweep forgets it; a marker older than its TTL is not stored.
func TestTombstoneGC(t *testing.T) {
	svc := Service{TombstoneTTL: time.Minute}
	a, b := svc.NewReplica("a").(*Replica), svc.NewReplica("b").(*Replica)
	_, put, _ := apply(a, t0, OpPut, "m", "k", "v")
	_, del, _ := apply(a, t0.Add(time.Second), OpDelete, "m", "k", "")
	// b gets the delete first, then the older put: the marker wins.
	merge(t, b, t0.Add(2*time.Second), del)
	merge(t, b, t0.Add(2*time.Second), put)
	if _, ok := get(t, b, "m", "k"); ok {
		t.Fatal("an older put overtook the deletion marker")
	}
	if n := b.Sweep(t0.Add(30 * time.Second)); n != 0 {
		t.Fatalf("swept %d markers before their TTL", n)
	}
	if n := b.Sweep(t0.Add(2 * time.Minute)); n != 1 {
		t.Fatalf("swept %d markers after their TTL, want 1", n)
	}
	if len(b.maps) != 0 {
		t.Fatalf("empty map kept: %v", b.maps)
	}
	// A marker merged after its TTL is not stored.
	c := svc.NewReplica("c").(*Replica)
	merge(t, c, t0.Add(2*time.Minute), del)
	if len(c.maps) != 0 {
		t.Fatal("a marker past its TTL was stored")
	}
	// The documented price: a member that still holds the key and was cut
	// off longer than the TTL brings it back.
	merge(t, c, t0.Add(2*time.Minute), put)
	pull(t, b, c, t0.Add(2*time.Minute))
	if _, ok := get(t, b, "m", "k"); !ok {
		t.Fatal("expected the documented resurrection after the TTL")
	}
}

func TestEventsOnMerge(t *testing.T) {
	a, b := newRep("a"), newRep("b")
	_, d1, _ := apply(a, t0, OpPut, "m", "k", "1")
	_, d2, _ := apply(a, t0, OpPut, "m", "k", "2")
	_, d3, _ := apply(a, t0, OpDelete, "m", "k", "")
	var got []string
	for _, d := range [][]byte{d1, d2, d2, d1, d3} {
		for _, ev := range merge(t, b, t0, d) {
			got = append(got, ev.Type.String()+":"+string(ev.Value))
		}
	}
	if want := []string{"added:1", "updated:2", "removed:2"}; !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v (duplicates and older deltas fire nothing)", got, want)
	}
}

func TestLimits(t *testing.T) {
	r := Service{MaxValueBytes: 10, MaxMapBytes: 300}.NewReplica("a").(*Replica)
	if resp, _, _ := apply(r, t0, OpPut, "m", "k", "01234567890"); !errors.Is(resp.Err(), op.ErrTooLarge) {
		t.Fatalf("big value: %v", resp.Err())
	}
	n := 0
	for ; n < 100; n++ {
		resp, _, _ := apply(r, t0, OpPut, "m", fmt.Sprint("k", n), "0123456789")
		if resp.Code != op.OK {
			if !errors.Is(resp.Err(), op.ErrMapFull) {
				t.Fatalf("put %d: %v", n, resp.Err())
			}
			break
		}
	}
	if n == 0 || n == 100 {
		t.Fatalf("map took %d entries", n)
	}
	// Replacing an entry with one of the same size still fits.
	if resp, _, _ := apply(r, t0, OpPut, "m", "k0", "9876543210"); resp.Code != op.OK {
		t.Fatalf("replace in a full map: %v", resp.Err())
	}
	// Another map has its own bound.
	if resp, _, _ := apply(r, t0, OpPut, "other", "k", "v"); resp.Code != op.OK {
		t.Fatal(resp.Err())
	}
}

func TestDiffLimitAndMore(t *testing.T) {
	a, b := newRep("a"), newRep("b")
	for i := range 20 {
		apply(a, t0, OpPut, fmt.Sprint("map", i), "k", string(make([]byte, 200)))
	}
	msg, more, err := a.Diff(t0, b.Digest(t0), 1000)
	if err != nil || !more || len(msg) > 1000+300 {
		t.Fatalf("diff: %d bytes, more %v, err %v", len(msg), more, err)
	}
	pull(t, b, a, t0)
	if !bytes.Equal(a.Digest(t0), b.Digest(t0)) {
		t.Fatal("not converged after pulling in pieces")
	}
	if msg, more, err := a.Diff(t0, b.Digest(t0), 1000); msg != nil || more || err != nil {
		t.Fatalf("equal digests: diff %d bytes, more %v, err %v", len(msg), more, err)
	}
}

func TestCorruptInput(t *testing.T) {
	r := newRep("a")
	_, delta, _ := apply(newRep("b"), t0, OpPut, "m", "k", "v")
	for i := range delta {
		var x op.Exec
		x.Reset(t0, -1, false, nil)
		// (the tag alone is a valid, empty message)
		if err := r.Merge(&x, delta[:i]); err == nil && i != 1 {
			t.Fatalf("truncated delta (%d of %d bytes) accepted", i, len(delta))
		}
	}
	if len(r.maps) != 0 {
		t.Fatal("a corrupt message changed state")
	}
	// The error wraps ErrCorrupt and names the field that failed.
	var x op.Exec
	x.Reset(t0, -1, false, nil)
	if err := r.Merge(&x, delta[:len(delta)-1]); !errors.Is(err, ErrCorrupt) || !errors.Is(err, varbin.ErrTruncated) ||
		!strings.Contains(err.Error(), "value") {
		t.Fatalf("value cut short: %v", err)
	}
	if _, err := DecodeEvent(append(encodeEvent(&Event{Type: Added, Key: "k"}), 0)); !errors.Is(err, ErrCorrupt) ||
		!strings.Contains(err.Error(), "trailing") {
		t.Fatalf("trailing byte: %v", err)
	}
	if _, _, err := r.Diff(t0, []byte{tagDigest, 5, 'a'}, 100); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("corrupt digest: %v", err)
	}
}
