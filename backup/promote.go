package backup

// Position is how far a replica's history of a partition goes: the
// sequence and term of the last mutation it applied (Replica.Seq/Term).
type Position struct {
	Seq, Term uint64
	// NoTerm: the member did not report a term (an older build).
	NoTerm bool
}

// Behind reports whether history a ranks below history b for promotion.
// The term ranks first: a replica that applied a mutation of a newer
// owner holds that owner's history, which includes everything acknowledged
// before it became owner; the same sequence alone says nothing (after a
// failover an asynchronous backup can hold records of the deposed owner
// that the new owner never saw, under the numbers the new owner gives its
// own writes). When either side has no term, only sequences compare.
func (a Position) Behind(b Position) bool {
	if a.NoTerm || b.NoTerm || a.Term == b.Term {
		return a.Seq < b.Seq
	}
	return a.Term < b.Term
}

// Candidate is one replica of a partition whose owner is gone, as its
// member reported it.
type Candidate struct {
	Name string
	// Reported is false when the member did not answer in time: it may be
	// the only one holding what was acknowledged.
	Reported bool
	// Holds is false when the member answered that it holds no replica
	// of the partition (it dropped it, or has not been given one yet).
	Holds bool
	// Partial is true when the replica was added to the partition and has
	// not yet received the owner's copy (nor confirmed by a probe that it
	// holds the owner's history): it may lack writes that were
	// acknowledged before it was added, which only the owner and the
	// backups of that time hold.
	Partial bool
	Pos     Position
}

// Promote picks the replica to make owner when the owner is gone: a
// complete replica before a partial one (Candidate.Partial), then the one
// whose history ranks highest (Position.Behind; synchronous backups hold
// every acknowledged write), the target owner want on a tie, else the
// first. It returns best = -1 and missing, the index of a replica that did
// not report, when one did not: choosing without it could lose what only
// it holds. best = -1 with missing = -1 means no replica is left (the
// partition is lost). A partial best means no complete replica is left:
// the caller decides whether to wait for the departed ones or to promote
// it, knowing that writes may be lost. When some candidates reported no
// term, all of them compare by sequence alone (mixed builds during an
// upgrade).
func Promote(cands []Candidate, want string) (best, missing int) {
	noTerm := false
	for i, c := range cands {
		if !c.Reported {
			return -1, i
		}
		noTerm = noTerm || (c.Holds && c.Pos.NoTerm)
	}
	best = -1
	var bp Position
	bestPartial := false
	for i, c := range cands {
		if !c.Holds {
			continue
		}
		p := c.Pos
		p.NoTerm = p.NoTerm || noTerm
		switch {
		case best < 0,
			bestPartial && !c.Partial,
			bestPartial == c.Partial && (bp.Behind(p) || (!p.Behind(bp) && c.Name == want)):
			best, bp, bestPartial = i, p, c.Partial
		}
	}
	return best, -1
}
