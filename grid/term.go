package grid

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/partition"
)

// Coordinator terms. Two members can believe they coordinate at once when
// their gossip views disagree (one sees the oldest member dead, the oldest
// sees everyone), each with a majority in its own view. Before it
// publishes, a coordinator therefore wins a term: a majority of the
// expected members (the table's voters) grant it, and a member grants each
// term once, only to the candidate it believes is the coordinator. The
// term is the high half of every table version it publishes (see
// partition.TermOf), so two coordinators never publish the same version,
// and a member that granted a term refuses the tables of older terms: the
// deposed coordinator's publications reach only members that did not vote
// for its successor, and are replaced by the successor's newer versions.
//
// Promises live in memory. A restarted member has forgotten them, so it
// grants nothing until it follows a table again, and then only terms above
// that table's (see grantTerm).

// votes is a member's voter state.
type votes struct {
	mu       sync.Mutex
	promised uint64 // the highest term granted
	to       string // the candidate it was granted to
}

// promisedTerm returns the highest term this member granted.
func (m *Member) promisedTerm() uint64 {
	m.votes.mu.Lock()
	defer m.votes.mu.Unlock()
	return m.votes.promised
}

// grantTerm decides a candidate's request for term. candVersion is the
// version of the candidate's table. It returns whether the term is
// granted, the highest term promised and this member's table version.
func (m *Member) grantTerm(term uint64, candidate string, candVersion uint64) (bool, uint64, uint64) {
	m.votes.mu.Lock()
	defer m.votes.mu.Unlock()
	v := &m.votes
	cur := m.tableVersion()
	switch {
	case term == 0 || candidate == "":
	case term == v.promised && candidate == v.to:
		return true, v.promised, cur // the same candidate asking again
	case term <= v.promised:
	case term <= partition.TermOf(cur):
		// A table of this term or a later one exists already.
	case (cur == 0) != (candVersion == 0):
		// A member without a table may have restarted and forgotten a
		// promise (it grants again once it follows a table, and then
		// only above that table's term); a candidate without one must
		// first learn the cluster's.
	case candVersion < cur:
		// The candidate would continue from an older table than this
		// member's (it learns ours from the answer).
	default:
		if c, ok := m.coordinatorInfo(); !ok || c.Name != candidate {
			break
		}
		v.promised, v.to = term, candidate
		return true, term, cur
	}
	return false, v.promised, cur
}

// errNoTerm ends a round whose campaign for a coordinator term failed:
// the members do not agree yet on who coordinates (the next round, at
// most republishEvery away, tries again).
var errNoTerm = errors.New("coordinator term not granted")

// termState is the coordinator's side of terms. term is read and written
// by the coordinator's loop only; the atomics are also written by its
// publications.
type termState struct {
	term uint64 // the term this member won (0: none)
	// wonLive is the most voters visible since it won term.
	wonLive int
	// unelected is set while it coordinates without a term (quorum rules
	// off, no majority visible).
	unelected bool
	// above is a term the next publication must be above: a member
	// reported a promise to another candidate or holds a different table
	// of the same version.
	above atomic.Uint64
}

// sendVote sends a vote request to member to (tests replace it to join
// members built without a network).
func (c *coordinator) sendVote(ctx context.Context, to MemberInfo, req *op.Request) (*op.Response, error) {
	if c.voteTransport != nil {
		return c.voteTransport(ctx, to, req)
	}
	return c.m.peers.call(ctx, to.Name, to.Addr, req)
}

// noteAhead records that a member follows table version v.
func (c *coordinator) noteAhead(v uint64) {
	for {
		seen := c.maxSeen.Load()
		if v <= seen || c.maxSeen.CompareAndSwap(seen, v) {
			return
		}
	}
}

// raiseAbove records that publications need a term above t.
func (c *coordinator) raiseAbove(t uint64) {
	for {
		cur := c.terms.above.Load()
		if t <= cur || c.terms.above.CompareAndSwap(cur, t) {
			return
		}
	}
}

// newestVersion is the newest table version this coordinator knows of:
// its own table's or one a member reported.
func (c *coordinator) newestVersion() uint64 {
	v := c.maxSeen.Load()
	if t := c.m.Table(); t != nil {
		v = max(v, t.Version)
	}
	return v
}

// needsTerm reports whether the coordinator must campaign before it
// publishes: it has no term, a newer term exists, its term ran out of
// numbers, or fewer voters are live than when it won (a side that lost
// members moves to a new term, so after a heal its tables rank above those
// a smaller side published meanwhile). A coordinator without a term
// because it sees no majority (quorum rules off) campaigns once it sees
// one again.
func (c *coordinator) needsTerm() bool {
	if c.terms.unelected {
		return c.m.QuorumView().OK
	}
	t := c.terms.term
	base := c.newestVersion()
	live := c.m.QuorumView().Live
	if t != 0 && live > c.terms.wonLive {
		c.terms.wonLive = live // members joined since it won
	}
	return t == 0 || t <= c.terms.above.Load() || t < partition.TermOf(base) ||
		(t == partition.TermOf(base) && partition.SeqOf(base) >= partition.MaxSeq) ||
		live < c.terms.wonLive
}

// nextVersion returns the version of the next table this coordinator
// publishes: the next number in its term, above every version it knows
// of. It reports false when its term is not enough (a newer term exists).
// A coordinator without a term (quorum rules off, no majority visible)
// numbers on from the newest version it knows, as Shoal did before terms:
// its side of a split serves on its own, and at the heal the tables of a
// side with a majority, which moved to a new term, rank above its own.
func (c *coordinator) nextVersion() (uint64, bool) {
	base := c.newestVersion()
	if c.terms.unelected {
		// Never a newer term: a side with a majority may be winning it.
		if partition.SeqOf(base) >= partition.MaxSeq {
			return 0, false
		}
		return base + 1, true
	}
	t := c.terms.term
	switch bt := partition.TermOf(base); {
	case t == 0 || t <= c.terms.above.Load() || bt > t:
		return 0, false
	case bt < t:
		return partition.VersionOf(t, 1), true
	case partition.SeqOf(base) >= partition.MaxSeq:
		return 0, false
	}
	return base + 1, true
}

// campaign asks the voters for a term above every term this member knows
// of, and makes it the coordinator's term when a majority of the expected
// size grants it (before the first table: a majority of the members it
// sees). Without a majority of the expected size visible — possible only
// with every quorum rule off, otherwise the member does not coordinate at
// all — it coordinates without a term (see nextVersion).
func (c *coordinator) campaign(ctx context.Context) error {
	m := c.m
	c.terms.term, c.terms.unelected = 0, false
	cur := m.Table()
	curVersion := uint64(0)
	live := m.Members()
	isLive := map[string]MemberInfo{}
	for _, mi := range live {
		isLive[mi.Name] = mi
	}
	var voters []string
	need := len(live)/2 + 1
	qv := m.QuorumView()
	if cur != nil {
		curVersion = cur.Version
		voters = votersOf(cur)
		if !qv.OK && m.quorum.rules.Any() {
			// The quorum was lost since the round began: this member
			// must not coordinate at all.
			return errNotCoordinator
		}
		if !qv.OK {
			c.terms.unelected = true
			m.log.Info("coordinating without a term: no majority of the expected size is visible (quorum rules off)", "quorum", qv.String())
			return nil
		}
		need = qv.Need
	} else {
		voters = make([]string, 0, len(live))
		for _, mi := range live {
			voters = append(voters, mi.Name)
		}
	}
	term := max(partition.TermOf(c.newestVersion()), c.terms.above.Load(), m.promisedTerm()) + 1
	m.votes.mu.Lock()
	prevPromised, prevTo := m.votes.promised, m.votes.to
	m.votes.mu.Unlock()

	type answer struct {
		name         string
		granted      bool
		promised, tv uint64
		err          error
	}
	answers := make(chan answer, len(voters))
	asked := 0
	for _, n := range voters {
		mi, ok := isLive[n]
		if !ok {
			continue
		}
		asked++
		if n == m.cfg.Name {
			g, pr, tv := m.grantTerm(term, m.cfg.Name, curVersion)
			answers <- answer{name: n, granted: g, promised: pr, tv: tv}
			continue
		}
		if !m.spawn(func() {
			ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			resp, err := c.sendVote(ctx, mi, &op.Request{Service: sysService, Op: sysVote, Partition: -1, Key: m.cfg.Name, Num: int64(term), TableVersion: curVersion})
			if err != nil {
				answers <- answer{name: n, err: err}
				return
			}
			answers <- answer{name: n, granted: resp.Found, promised: uint64(resp.Num), tv: resp.TableVersion}
		}) {
			return m.errClosed()
		}
	}
	granted := 0
	var refused []string
	var ahead answer // the refusal with the newest table
	for range asked {
		a := <-answers
		switch {
		case a.err != nil:
			refused = append(refused, a.name+": "+a.err.Error())
		case a.granted:
			granted++
		default:
			refused = append(refused, a.name)
			if a.promised >= term {
				c.raiseAbove(a.promised)
			}
			if a.tv > ahead.tv {
				ahead = a
			}
		}
	}
	if ahead.tv > curVersion {
		// A voter follows a newer table: the next round learns it and
		// continues from it (see step).
		c.noteAhead(ahead.tv)
		c.force.Store(true)
		c.poke()
	}
	if granted < need {
		// This member gives up the term: its promise to itself is void
		// (it will not publish in it), so it does not keep refusing the
		// tables of the term it had (the coordinator of a side without a
		// majority goes on with them) nor stand in the way of another
		// candidate for that term.
		m.votes.mu.Lock()
		if m.votes.promised == term && m.votes.to == m.cfg.Name {
			m.votes.promised, m.votes.to = prevPromised, prevTo
		}
		m.votes.mu.Unlock()
		return fmt.Errorf("%w: term %d: %d of %d voters granted it, %d needed (refused: %v)", errNoTerm, term, granted, asked, need, refused)
	}
	c.terms.term, c.terms.wonLive = term, qv.Live
	if cur == nil {
		c.terms.wonLive = len(live) // the first table's voters
	}
	m.log.Info("coordinator term won", "term", term, "grants", granted, "needed", need)
	return nil
}
