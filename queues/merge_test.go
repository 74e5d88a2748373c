package queues

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/op"
)

func offerTo(t *testing.T, s *state, name string, items ...string) {
	t.Helper()
	for _, it := range items {
		if r := s.Apply(t0, &op.Request{Op: OpOffer, Name: name, Key: name, Value: []byte(it)}); r.Code != 0 {
			t.Fatalf("offer %s: %s", it, r.Msg)
		}
	}
}

// TestMergeAppends: the items a queue held on the losing side of a split
// (in flight first, then ready, in order) are appended after the winning
// side's, past the capacity, and only for the named queue.
func TestMergeAppends(t *testing.T) {
	svc := Service{Rules: []Rule{{Pattern: "jobs", Capacity: 3}}}
	loser := svc.NewState(3).(*state)
	offerTo(t, loser, "jobs", "l1", "l2", "l3")
	offerTo(t, loser, "other", "o1")
	// l1 is in flight on the losing side (taken, never acknowledged).
	if r := loser.Apply(t0, &op.Request{Op: OpTake, Name: "jobs", Key: "jobs", Origin: 9}); !r.Found {
		t.Fatalf("take: %+v", r)
	}
	snap, err := loser.Snapshot(t0)
	if err != nil {
		t.Fatal(err)
	}
	names, err := svc.MergeNames(snap, t0)
	if err != nil || names["jobs"] != 3 || names["other"] != 1 || len(names) != 2 {
		t.Fatalf("MergeNames = %v, %v", names, err)
	}

	winner := svc.NewState(3).(*state)
	offerTo(t, winner, "jobs", "w1", "w2")
	r := winner.Apply(t0, &op.Request{Op: OpMerge, Name: "jobs", Key: "jobs", Value: snap, Num: op.MergeAppend})
	if r.Code != 0 || r.Num != 3 {
		t.Fatalf("merge: %+v", r)
	}
	var got []string
	for {
		r := winner.Apply(t0, &op.Request{Op: OpPoll, Name: "jobs", Key: "jobs"})
		if !r.Found {
			break
		}
		got = append(got, string(r.Value))
	}
	if want := []string{"w1", "w2", "l1", "l2", "l3"}; !slices.Equal(got, want) {
		t.Fatalf("after the merge the queue holds %v, want %v", got, want)
	}
	if r := winner.Apply(t0, &op.Request{Op: OpLen, Name: "other", Key: "other"}); r.Num != 0 {
		t.Fatalf("another queue was merged too: %d items", r.Num)
	}
	for _, bad := range []*op.Request{
		{Op: OpMerge, Name: "jobs", Value: snap, Num: op.MergePutIfAbsent},
		{Op: OpMerge, Name: "jobs", Value: []byte{0xff, 1}, Num: op.MergeAppend},
	} {
		if r := winner.Apply(t0, bad); !errors.Is(r.Err(), op.ErrBadRequest) {
			t.Errorf("merge %d of %d bytes: %+v, want ErrBadRequest", bad.Num, len(bad.Value), r)
		}
	}
	// A merged item wakes a waiting taker.
	w := svc.NewState(3).(*state)
	var x op.Exec
	take := &op.Request{Op: OpPollWait, Name: "jobs", Key: "jobs", Origin: 4, CallSeq: 1, Timeout: time.Minute}
	x.Reset(t0, 3, true, take)
	w.Execute(&x, take)
	merge := &op.Request{Op: OpMerge, Name: "jobs", Key: "jobs", Value: snap, Num: op.MergeAppend}
	x.Reset(t0, 3, true, merge)
	w.Execute(&x, merge)
	woke := false
	for _, e := range x.Effects() {
		woke = woke || e.Kind == op.EffectComplete
	}
	if !woke {
		t.Fatal("the merge did not complete the parked poll")
	}
}
