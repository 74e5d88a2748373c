package backup

import (
	"testing"
	"time"

	"github.com/shoalgrid/shoal/op"
)

func TestDedupTableKeepsRecentEntriesWithinBounds(t *testing.T) {
	var d Dedup
	now := time.Unix(1000, 0)
	const n = 3*DedupGen + 17
	for i := range uint64(n) {
		d.Put(7, i, i+1, &op.Response{Found: i%2 == 0, Num: int64(i), TableVersion: 9}, now)
	}
	if d.Len() > 2*DedupGen {
		t.Fatalf("holds %d entries, bound is %d", d.Len(), 2*DedupGen)
	}
	// The newest DedupGen entries are always there, with their responses.
	for i := uint64(n - DedupGen); i < n; i++ {
		r, seq, ok := d.Get(7, i)
		if !ok || seq != i+1 || r.Num != int64(i) || r.Found != (i%2 == 0) || r.TableVersion != 0 {
			t.Fatalf("entry %d: %+v seq %d found %v", i, r, seq, ok)
		}
	}
	if _, _, ok := d.Get(7, 0); ok {
		t.Error("the oldest entry survived 3 generations")
	}
	if _, _, ok := d.Get(8, n-1); ok {
		t.Error("an entry of another origin was found")
	}

	// The common answers are coded in the entry; others kept whole.
	d.Put(9, 1, 1, &op.Response{Found: true, TableVersion: 4}, now)
	d.Put(9, 2, 2, &op.Response{}, now)
	d.Put(9, 3, 3, &op.Response{Code: op.CodeWrongType, Msg: "m", Value: []byte("v")}, now)
	for call, want := range map[uint64]op.Response{1: {Found: true}, 2: {}, 3: {Code: op.CodeWrongType, Msg: "m", Value: []byte("v")}} {
		if r, seq, ok := d.Get(9, call); !ok || seq != call || r.Found != want.Found || r.Code != want.Code || r.Msg != want.Msg || string(r.Value) != string(want.Value) || r.TableVersion != 0 {
			t.Errorf("call %d: %+v seq %d found %v, want %+v", call, r, seq, ok, want)
		}
	}

	// A snapshot round trip keeps every entry.
	var e Dedup
	e.Load(d.Records())
	if e.Len() != d.Len() {
		t.Fatalf("loaded %d entries from %d", e.Len(), d.Len())
	}
	for i := uint64(n - DedupGen); i < n; i++ {
		if _, seq, ok := e.Get(7, i); !ok || seq != i+1 {
			t.Fatalf("entry %d lost in the snapshot round trip", i)
		}
	}

	// Re-putting an entry (a record replayed twice) keeps one copy.
	before := d.Len()
	d.Put(7, n-1, n, &op.Response{}, now)
	if d.Len() != before {
		t.Errorf("re-put changed the size from %d to %d", before, d.Len())
	}

	// Expiry releases everything once the newest entry is old enough.
	d.Expire(now.Add(DedupRetention / 2))
	if d.Len() == 0 {
		t.Fatal("expired entries younger than the retention")
	}
	d.Expire(now.Add(DedupRetention + time.Second))
	if d.Len() != 0 || d.cur.entries != nil || d.prev.entries != nil {
		t.Errorf("after the retention %d entries are left", d.Len())
	}
}
