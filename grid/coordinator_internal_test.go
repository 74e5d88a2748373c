package grid

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/backup"
	"github.com/shoalgrid/shoal/partition"
	"github.com/shoalgrid/shoal/quorum"
)

// TestChoosePromotion: the coordinator's reports reach backup.Promote (its
// table test has the ranking): a member that reported noReplica holds none,
// a live replica that did not report blocks the choice, because it may be
// the only one holding what was acknowledged (under CPU load the in-sync
// backup can miss the 2 s deadline while a new backup, still waiting for
// its copy, answers 0), the term ranks before the sequence, and a partial
// backup (added, its copy not received yet) comes after complete ones.
func TestChoosePromotion(t *testing.T) {
	const p = 1
	at := func(seq, term uint64) replicaPos { return replicaPos{Position: backup.Position{Seq: seq, Term: term}} }
	pos := map[string][]replicaPos{
		"a": {{}, at(40, 3)},
		"b": {{}, {}}, // a backup at an empty history
		"c": {{}, at(40, 3)},
		"d": {{}, at(12, 9)},
		"n": {{}, {partial: true}}, // a new backup that has not received its copy
		"x": {{}, at(noReplica, 0)},
	}
	for _, c := range []struct {
		name          string
		replicas      []string
		want          string
		best, missing string
		bestSeq       uint64
		partial       bool
	}{
		{"most mutations", []string{"b", "a"}, "b", "a", "", 40, false},
		{"tie goes to the target owner", []string{"a", "c"}, "c", "c", "", 40, false},
		{"tie without the target owner: first", []string{"a", "c"}, "z", "a", "", 40, false},
		{"newer term", []string{"a", "d"}, "a", "d", "", 12, false},
		{"no replica left: lost", nil, "a", "", "", 0, false},
		{"only members without a replica: lost", []string{"x"}, "a", "", "", 0, false},
		{"silent in-sync backup: wait, not the empty new one", []string{"b", "silent"}, "b", "", "silent", 0, false},
		{"silent sole replica: wait, not lost", []string{"silent"}, "a", "", "silent", 0, false},
		{"a complete empty history beats a partial replica", []string{"n", "b"}, "n", "b", "", 0, false},
		{"only a partial replica: chosen, marked partial", []string{"x", "n"}, "n", "n", "", 0, true},
	} {
		best, bestPos, missing := choosePromotion(c.replicas, pos, p, c.want)
		if best != c.best || bestPos.Seq != c.bestSeq || missing != c.missing || bestPos.partial != c.partial {
			t.Errorf("%s: choosePromotion(%v) = %q, %+v, missing %q; want %q, %d (partial %v), missing %q",
				c.name, c.replicas, best, bestPos, missing, c.best, c.bestSeq, c.partial, c.missing)
		}
	}
}

// TestMayPublish: a round publishes what it derived from table cur only
// while this member still coordinates (oldest visible, with a majority),
// no membership change happened during the round and cur is still its
// table.
func TestMayPublish(t *testing.T) {
	cfg, err := Config{Name: "m1", Quorum: &quorum.Rule{Mode: quorum.Majority}}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	m := &Member{cfg: cfg, quorum: newQuorumState(cfg), view: map[string]MemberInfo{}}
	c := newCoordinator(m)
	m.coord = c
	start := time.Now()
	m.view["m1"] = MemberInfo{Name: "m1", Started: start}
	m.view["m2"] = MemberInfo{Name: "m2", Started: start.Add(time.Second)}
	cur := &partition.Table{Version: 7}
	m.table.Store(cur)
	ctx := context.Background()
	if err := c.mayPublish(ctx, cur); err != nil {
		t.Fatalf("coordinator with a majority, nothing changed: %v", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	for _, tc := range []struct {
		name  string
		setup func() (undo func())
		ctx   context.Context
		want  error
	}{
		{"membership changed during the round", func() func() {
			c.dirty.Store(true)
			return func() { c.dirty.Store(false) }
		}, ctx, errStaleRound},
		{"round cancelled", func() func() { return func() {} }, cancelled, errStaleRound},
		{"a newer table arrived", func() func() {
			m.table.Store(&partition.Table{Version: 9})
			return func() { m.table.Store(cur) }
		}, ctx, errStaleRound},
		{"an older member is back", func() func() {
			m.view["m0"] = MemberInfo{Name: "m0", Started: start.Add(-time.Second)}
			return func() { delete(m.view, "m0") }
		}, ctx, errNotCoordinator},
		{"majority lost", func() func() {
			m.quorum.ok.Store(false)
			return func() { m.quorum.ok.Store(true) }
		}, ctx, errNotCoordinator},
	} {
		undo := tc.setup()
		if err := c.mayPublish(tc.ctx, cur); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
		undo()
	}
}
