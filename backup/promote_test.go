package backup

import "testing"

func TestPromote(t *testing.T) {
	at := func(name string, seq, term uint64) Candidate {
		return Candidate{Name: name, Reported: true, Holds: true, Pos: Position{Seq: seq, Term: term}}
	}
	old := func(name string, seq uint64) Candidate {
		return Candidate{Name: name, Reported: true, Holds: true, Pos: Position{Seq: seq, NoTerm: true}}
	}
	partial := func(name string, seq, term uint64) Candidate {
		c := at(name, seq, term)
		c.Partial = true
		return c
	}
	none := func(name string) Candidate { return Candidate{Name: name, Reported: true} }
	silent := func(name string) Candidate { return Candidate{Name: name} }
	for _, c := range []struct {
		name          string
		cands         []Candidate
		want          string
		best, missing int
	}{
		{"most mutations", []Candidate{at("b", 0, 0), at("a", 40, 3)}, "b", 1, -1},
		{"tie goes to the target owner", []Candidate{at("a", 40, 3), at("c", 40, 3)}, "c", 1, -1},
		{"tie without the target owner: first", []Candidate{at("a", 40, 3), at("c", 40, 3)}, "z", 0, -1},
		{"no replica left: lost", nil, "a", -1, -1},
		{"only members without a replica: lost", []Candidate{none("x")}, "a", -1, -1},
		{"silent in-sync backup: wait, not the empty new one", []Candidate{at("b", 0, 0), silent("s")}, "b", -1, 1},
		{"silent sole replica: wait, not lost", []Candidate{silent("s")}, "a", -1, 0},
		{"a member without a replica does not count", []Candidate{none("x"), at("a", 1, 1)}, "x", 1, -1},
		// After a failover at version 7 the new owner's sync backup d
		// holds its write 102 (term 7); the async backup c still holds
		// the deposed owner's 101..102 (term 5), not yet recopied. The
		// sequence alone ties (and would pick the target owner c, losing
		// an acknowledged write); the term does not.
		{"newer term beats the same sequence", []Candidate{at("c", 102, 5), at("d", 102, 7)}, "c", 1, -1},
		{"newer term beats a higher sequence", []Candidate{at("c", 150, 5), at("d", 102, 7)}, "c", 1, -1},
		{"same term: the longer history", []Candidate{at("c", 103, 7), at("d", 102, 7)}, "d", 0, -1},
		{"an older member without terms: sequences only", []Candidate{at("c", 150, 5), old("d", 102)}, "", 0, -1},
		{"an older member without terms: tie to the target", []Candidate{at("c", 102, 5), old("d", 102)}, "d", 1, -1},
		// A backup added after the owner's promotion and still waiting for
		// its copy holds only the writes made since (here none): the
		// complete replica wins whatever the positions, even the target
		// owner's tie.
		{"complete beats partial", []Candidate{partial("n", 0, 0), at("c", 40, 3)}, "n", 1, -1},
		{"complete beats a partial with a longer history", []Candidate{at("c", 40, 3), partial("n", 90, 9)}, "n", 0, -1},
		{"only partial replicas: the best of them", []Candidate{partial("n", 3, 9), partial("m", 5, 9)}, "", 1, -1},
		{"only a partial replica: chosen, the caller decides", []Candidate{none("x"), partial("n", 0, 0)}, "", 1, -1},
	} {
		best, missing := Promote(c.cands, c.want)
		if best != c.best || missing != c.missing {
			t.Errorf("%s: Promote = %d, missing %d; want %d, missing %d", c.name, best, missing, c.best, c.missing)
		}
	}
}

func TestPositionBehind(t *testing.T) {
	for _, c := range []struct {
		a, b Position
		want bool
	}{
		{Position{1, 1, false}, Position{2, 1, false}, true},
		{Position{2, 1, false}, Position{1, 1, false}, false},
		{Position{9, 1, false}, Position{1, 2, false}, true},
		{Position{1, 2, false}, Position{9, 1, false}, false},
		{Position{5, 5, false}, Position{5, 5, false}, false},
		{Position{1, 2, true}, Position{9, 1, false}, true},
	} {
		if got := c.a.Behind(c.b); got != c.want {
			t.Errorf("%+v.Behind(%+v) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}
