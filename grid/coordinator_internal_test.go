package grid

import "testing"

// TestChoosePromotion: the replica with the most mutations is promoted (the
// target owner on a tie); a live replica that did not report its sequences
// blocks the choice, because it may be the only one holding what was
// acknowledged (under CPU load the in-sync backup can miss the 2 s
// deadline while a new backup, still waiting for its copy, answers 0).
func TestChoosePromotion(t *testing.T) {
	const p = 1
	seqs := map[string][]uint64{
		"a": {0, 40},
		"b": {0, 0}, // a new backup that has not received its copy
		"c": {0, 40},
		"x": {0, noReplica},
	}
	for _, c := range []struct {
		name          string
		replicas      []string
		want          string
		best, missing string
		bestSeq       uint64
	}{
		{"most mutations", []string{"b", "a"}, "b", "a", "", 40},
		{"tie goes to the target owner", []string{"a", "c"}, "c", "c", "", 40},
		{"tie without the target owner: first", []string{"a", "c"}, "z", "a", "", 40},
		{"no replica left: lost", nil, "a", "", "", 0},
		{"only members without a replica: lost", []string{"x"}, "a", "", "", 0},
		{"silent in-sync backup: wait, not the empty new one", []string{"b", "silent"}, "b", "", "silent", 0},
		{"silent sole replica: wait, not lost", []string{"silent"}, "a", "", "silent", 0},
	} {
		best, bestSeq, missing := choosePromotion(c.replicas, seqs, p, c.want)
		if best != c.best || bestSeq != c.bestSeq || missing != c.missing {
			t.Errorf("%s: choosePromotion(%v) = %q, %d, missing %q; want %q, %d, missing %q",
				c.name, c.replicas, best, bestSeq, missing, c.best, c.bestSeq, c.missing)
		}
	}
}
