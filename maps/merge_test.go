package maps

import (
	"testing"
	"time"

	"github.com/shoalgrid/shoal/op"
)

// TestMerge merges a losing side's snapshot into a winning side's state by
// each policy: put-if-absent keeps the winner's values and adds the keys it
// lacks, pass-through lets the loser's values win; other maps in the
// snapshot and expired entries are left out.
func TestMerge(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	apply := func(s *state, o uint8, name, key, val string, num int64) *op.Response {
		return s.Apply(now, &op.Request{Service: ServiceName, Op: o, Name: name, Key: key, Value: []byte(val), Num: num})
	}
	loser := newState(3)
	apply(loser, OpPut, "m", "both", "loser", 0)
	apply(loser, OpPut, "m", "only-loser", "loser", 0)
	apply(loser, OpPut, "m", "ttl", "loser", 60_000)
	apply(loser, OpPut, "other", "x", "loser", 0)
	snap, err := loser.Snapshot(now)
	if err != nil {
		t.Fatal(err)
	}
	names, err := SnapshotMaps(snap, now)
	if err != nil || names["m"] != 3 || names["other"] != 1 || len(names) != 2 {
		t.Fatalf("SnapshotMaps = %v, %v", names, err)
	}
	for _, c := range []struct {
		policy     int64
		stored     int64
		both, only string
	}{
		{MergePutIfAbsent, 2, "winner", "loser"},
		{MergePassThrough, 3, "loser", "loser"},
	} {
		winner := newState(3)
		apply(winner, OpPut, "m", "both", "winner", 0)
		apply(winner, OpPut, "m", "only-winner", "winner", 0)
		r := apply(winner, OpMerge, "m", "", string(snap), c.policy)
		if r.Code != op.OK || r.Num != c.stored {
			t.Fatalf("policy %d: merge = %+v, want %d stored", c.policy, r, c.stored)
		}
		for key, want := range map[string]string{"both": c.both, "only-loser": c.only, "only-winner": "winner", "ttl": "loser"} {
			if g := apply(winner, OpGet, "m", key, "", 0); !g.Found || string(g.Value) != want {
				t.Errorf("policy %d: %s = %q (found %v), want %q", c.policy, key, g.Value, g.Found, want)
			}
		}
		if g := apply(winner, OpGet, "other", "x", "", 0); g.Found {
			t.Errorf("policy %d: a map not named was merged", c.policy)
		}
		// The TTL survives as an absolute expiry.
		later := now.Add(2 * time.Minute)
		if g := winner.Apply(later, &op.Request{Service: ServiceName, Op: OpGet, Name: "m", Key: "ttl"}); g.Found {
			t.Errorf("policy %d: merged entry outlived its TTL", c.policy)
		}
	}
	w := newState(3)
	if r := apply(w, OpMerge, "m", "", string(snap), 9); r.Code != op.CodeBadRequest {
		t.Errorf("unknown policy: %+v", r)
	}
	if r := apply(w, OpMerge, "m", "", "garbage", MergePutIfAbsent); r.Code != op.CodeBadRequest {
		t.Errorf("bad snapshot: %+v", r)
	}
	if !(Service{}).Mutates(OpMerge) {
		t.Error("OpMerge must be replicated")
	}
}
