package grid

import (
	"testing"
	"time"

	"github.com/shoalgrid/shoal/op"
)

func TestDedupTableKeepsRecentEntriesWithinBounds(t *testing.T) {
	var d dedupTable
	now := time.Unix(1000, 0)
	const n = 3*dedupGen + 17
	for i := range uint64(n) {
		d.put(7, i, i+1, &op.Response{Found: i%2 == 0, Num: int64(i), TableVersion: 9}, now)
	}
	if d.len() > 2*dedupGen {
		t.Fatalf("holds %d entries, bound is %d", d.len(), 2*dedupGen)
	}
	// The newest dedupGen entries are always there, with their responses.
	for i := uint64(n - dedupGen); i < n; i++ {
		r, seq, ok := d.get(7, i)
		if !ok || seq != i+1 || r.Num != int64(i) || r.Found != (i%2 == 0) || r.TableVersion != 0 {
			t.Fatalf("entry %d: %+v seq %d found %v", i, r, seq, ok)
		}
	}
	if _, _, ok := d.get(7, 0); ok {
		t.Error("the oldest entry survived 3 generations")
	}
	if _, _, ok := d.get(8, n-1); ok {
		t.Error("an entry of another origin was found")
	}

	// The common answers are coded in the entry; others kept whole.
	d.put(9, 1, 1, &op.Response{Found: true, TableVersion: 4}, now)
	d.put(9, 2, 2, &op.Response{}, now)
	d.put(9, 3, 3, &op.Response{Code: op.CodeWrongType, Msg: "m", Value: []byte("v")}, now)
	for call, want := range map[uint64]op.Response{1: {Found: true}, 2: {}, 3: {Code: op.CodeWrongType, Msg: "m", Value: []byte("v")}} {
		if r, seq, ok := d.get(9, call); !ok || seq != call || r.Found != want.Found || r.Code != want.Code || r.Msg != want.Msg || string(r.Value) != string(want.Value) || r.TableVersion != 0 {
			t.Errorf("call %d: %+v seq %d found %v, want %+v", call, r, seq, ok, want)
		}
	}

	// A snapshot round trip keeps every entry.
	var e dedupTable
	e.load(d.records())
	if e.len() != d.len() {
		t.Fatalf("loaded %d entries from %d", e.len(), d.len())
	}
	for i := uint64(n - dedupGen); i < n; i++ {
		if _, seq, ok := e.get(7, i); !ok || seq != i+1 {
			t.Fatalf("entry %d lost in the snapshot round trip", i)
		}
	}

	// Re-putting an entry (a record replayed twice) keeps one copy.
	before := d.len()
	d.put(7, n-1, n, &op.Response{}, now)
	if d.len() != before {
		t.Errorf("re-put changed the size from %d to %d", before, d.len())
	}

	// Expiry releases everything once the newest entry is old enough.
	d.expire(now.Add(dedupRetention / 2))
	if d.len() == 0 {
		t.Fatal("expired entries younger than the retention")
	}
	d.expire(now.Add(dedupRetention + time.Second))
	if d.len() != 0 || d.cur.entries != nil || d.prev.entries != nil {
		t.Errorf("after the retention %d entries are left", d.len())
	}
}
