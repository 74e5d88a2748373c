package locks

import (
	"errors"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/op"
)

// TestMergeRevokesAndRaisesTokens: after a heal the grants made on the
// losing side are revoked and the winning side's counter moves above every
// token issued there, even when the losing owner's clock ran ahead (its
// tokens are at least its clock in microseconds).
func TestMergeRevokesAndRaisesTokens(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	ahead := now.Add(time.Hour) // the losing side's owner clock
	lock := func(s *state, at time.Time, name string, session uint64) int64 {
		t.Helper()
		r := s.Apply(at, &op.Request{Op: OpTryLock, Name: name, Key: name, Value: []byte("o"), Origin: session, CallSeq: 1})
		if !r.Found {
			t.Fatalf("trylock %s: %+v", name, r)
		}
		return r.Num
	}
	loser := newState(5)
	lost := lock(loser, ahead, "L", 1)
	lock(loser, ahead, "free", 1)
	if r := loser.Apply(ahead, &op.Request{Op: OpUnlock, Name: "free", Key: "free", Value: []byte("o"), Origin: 1, CallSeq: 2}); r.Code != 0 {
		t.Fatalf("unlock: %+v", r)
	}
	snap, err := loser.Snapshot(ahead)
	if err != nil {
		t.Fatal(err)
	}
	names, err := Service{}.MergeNames(snap, now)
	if err != nil || len(names) != 1 || names["L"] != 1 {
		t.Fatalf("MergeNames = %v, %v (want the held lock only)", names, err)
	}

	winner := newState(5)
	held := lock(winner, now, "L", 2) // granted on the winning side during the split
	if held >= lost {
		t.Fatalf("the scenario needs the winner's token %d below the loser's %d", held, lost)
	}
	r := winner.Apply(now, &op.Request{Op: OpMerge, Name: "L", Key: "L", Value: snap, Num: op.MergeRevoke})
	if r.Code != 0 || r.Num != 1 {
		t.Fatalf("merge: %+v", r)
	}
	// The winner's holder keeps the lock; the loser's grant is gone.
	st := winner.Apply(now, &op.Request{Op: OpStatus, Name: "L", Key: "L"})
	if !st.Found || st.Num != held {
		t.Fatalf("status after the merge: %+v, want held with token %d", st, held)
	}
	if next := lock(winner, now, "M", 3); next <= lost {
		t.Fatalf("token %d granted after the merge, not above the losing side's %d", next, lost)
	}

	// A partition whose locks were all released still carries its counter.
	empty := newState(6)
	lock(empty, ahead, "x", 1)
	empty.Apply(ahead, &op.Request{Op: OpUnlock, Name: "x", Key: "x", Value: []byte("o"), Origin: 1, CallSeq: 2})
	snap2, _ := empty.Snapshot(ahead)
	names, err = Service{}.MergeNames(snap2, now)
	if err != nil || len(names) != 1 || names[""] != 0 {
		t.Fatalf("MergeNames of a partition without locks = %v, %v", names, err)
	}
	w2 := newState(6)
	if r := w2.Apply(now, &op.Request{Op: OpMerge, Value: snap2, Num: op.MergeRevoke}); r.Code != 0 || r.Num != 0 {
		t.Fatalf("counter-only merge: %+v", r)
	}
	if next := lock(w2, now, "y", 3); next <= empty.last {
		t.Fatalf("token %d not above %d", next, empty.last)
	}
	for _, bad := range []*op.Request{
		{Op: OpMerge, Name: "L", Value: snap, Num: op.MergeAppend},
		{Op: OpMerge, Name: "L", Value: []byte{0xff}, Num: op.MergeRevoke},
	} {
		if r := winner.Apply(now, bad); !errors.Is(r.Err(), op.ErrBadRequest) {
			t.Errorf("bad merge: %+v", r)
		}
	}
}
