package grid

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/shoalgrid/shoal/backup"
	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/partition"
	"github.com/shoalgrid/shoal/quorum"
	"github.com/shoalgrid/shoal/sysop"
)

// coordinator publishes partition tables. Only the oldest live member acts
// on it; every member runs the loop so that the next-oldest takes over when
// the coordinator leaves or dies. One goroutine runs the loop, so plans and
// publications never overlap.
type coordinator struct {
	m     *Member
	kick  chan struct{}
	dirty atomic.Bool // membership changed since the current plan started

	active bool // this member coordinated in the previous round
	// maxSeen is the newest table version a member reported when it
	// refused a publication (after a healed split, the other side's
	// members may be ahead); the next table is published above it.
	maxSeen atomic.Uint64
	// force makes the next round publish a new version even if nothing
	// changed.
	force atomic.Bool
	// rounds counts the rounds run (tests wait for one to pass).
	rounds atomic.Uint64

	// cancelRound cancels the round in progress: a membership change makes
	// its waits (hand-offs to a member that just died) pointless.
	roundMu     sync.Mutex
	cancelRound context.CancelFunc

	terms termState
	// voteTransport, when set, carries vote requests instead of the
	// member's connections (internal tests without a network).
	voteTransport func(context.Context, MemberInfo, *op.Request) (*op.Response, error)
	// testAfterCollect, if set (tests), runs after a round collected the
	// replica positions for the promotion of partitions promote.
	testAfterCollect atomic.Pointer[func(promote []int32)]
}

func newCoordinator(m *Member) *coordinator {
	return &coordinator{m: m, kick: make(chan struct{}, 1)}
}

// poke wakes the loop for a new round without disturbing the round in
// progress (a leaving member asking again, a forced republication). It
// never blocks.
func (c *coordinator) poke() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// trigger tells the loop that membership changed: the round in progress is
// cancelled (its waits may concern a member that is gone) and a new one
// starts. It never blocks.
func (c *coordinator) trigger() {
	c.dirty.Store(true)
	c.roundMu.Lock()
	if c.cancelRound != nil {
		c.cancelRound()
	}
	c.roundMu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// handoffTimeout bounds one partition hand-over (the wait for the new
// owner to hold every mutation).
const handoffTimeout = 15 * time.Second

// republishEvery is how often the coordinator pushes its current table to
// every member, so that a member that missed a publication catches up.
const republishEvery = time.Second

func (c *coordinator) run() {
	defer c.m.wg.Done()
	tick := time.NewTicker(republishEvery)
	defer tick.Stop()
	for {
		periodic := false
		select {
		case <-c.m.ctx.Done():
			return
		case <-c.kick:
		case <-tick.C:
			periodic = true
		}
		if c.m.ml == nil || !c.m.IsCoordinator() {
			c.active = false
			continue
		}
		if !c.m.mayCoordinate() {
			// Without a majority this side must not promote, publish or
			// take partitions over: the other side may be serving them.
			// Coming back, the member learns the newest table first.
			c.active = false
			continue
		}
		c.dirty.Store(false)
		ctx, cancel := context.WithCancel(c.m.ctx)
		c.roundMu.Lock()
		c.cancelRound = cancel
		c.roundMu.Unlock()
		err := c.step(ctx)
		c.rounds.Add(1)
		// Whether the round was cancelled (a membership change), read
		// before cancel below makes it so for every round.
		cancelled := ctx.Err() != nil
		c.roundMu.Lock()
		c.cancelRound = nil
		c.roundMu.Unlock()
		cancel()
		switch {
		case err == nil:
		case errors.Is(err, errNotCoordinator) || errors.Is(err, errStaleRound) || errors.Is(err, errNoTerm):
			c.m.log.Info("coordinator round abandoned", "err", err)
		case cancelled:
		default:
			// The next tick (at most republishEvery away) tries again.
			c.m.log.Warn("coordinator round failed", "err", err)
		}
		if periodic {
			if t := c.m.Table(); t != nil {
				c.publishRemote(t)
			}
		}
	}
}

// step brings the table one round closer to the target for the current
// members, in phases that each publish a new version:
//
//  1. replicas on members that are gone are dropped; a partition whose
//     owner is gone is taken over by its most up-to-date backup
//     (promotion), or, with no replica left, starts again empty (lost);
//  2. target replicas missing from a partition are added as extra backups,
//     which the owner copies the partition to (resync);
//  3. a partition whose owner is not the target owner is handed to it:
//     the owner freezes the partition until the target holds every
//     mutation, then the new table makes it the owner (no write lost or
//     applied twice);
//  4. once the target backups are in sync, replicas beyond the target are
//     removed.
func (c *coordinator) step(ctx context.Context) error {
	m := c.m
	takeover := c.force.Swap(false)
	if !c.active {
		c.active = true
		takeover = true
		c.terms.term, c.terms.unelected = 0, false // a term from an earlier stint may be outdated
		c.learnNewestTable()
	}
	// askedAll is set when every live member gave its table after one
	// reported a newer version than ours.
	askedAll := false
	if t := m.Table(); t != nil && c.maxSeen.Load() > t.Version {
		// A member refused our publication because it follows a newer
		// table: another member coordinated while this one was starved
		// or cut off (declared dead, its partitions promoted to their
		// backups, writes acknowledged there since). Continue from that
		// table, never from ours: republishing our older layout above it
		// would make owners of the members that dropped those partitions
		// since (empty copies that then overwrite their backups) and
		// demote the promoted owners, losing what they acknowledged.
		askedAll = c.learnNewestTable()
	}
	live := m.Members()
	if len(live) == 0 {
		return nil
	}
	var targetMembers, liveMembers []partition.Member
	liveByName := map[string]partition.Member{}
	for _, mi := range live {
		pm := mi.partitionMember()
		liveByName[mi.Name] = pm
		liveMembers = append(liveMembers, pm)
		if !mi.Leaving {
			targetMembers = append(targetMembers, pm)
		}
	}
	if len(targetMembers) == 0 {
		return nil // everyone is leaving; nobody can take partitions
	}
	target, err := partition.Assign(targetMembers, m.cfg.PartitionCount, m.backups.table, m.cfg.Placement)
	if err != nil {
		return fmt.Errorf("assign partitions: %w", err)
	}
	cur := m.Table()
	if cur != nil && c.maxSeen.Load() > cur.Version && !askedAll {
		// (When every live member answered and none follows that table
		// any more, its member is gone: publish above it.)
		return fmt.Errorf("a member follows table %d, newer than this member's %d, which could not be fetched yet: no table is published until it is", c.maxSeen.Load(), cur.Version)
	}
	if c.needsTerm() {
		if err := c.campaign(ctx); err != nil {
			return err
		}
		if m.Table() != cur {
			return fmt.Errorf("%w: a newer table arrived during the campaign", errStaleRound)
		}
	}
	if cur == nil {
		t := target.WithVersion(1)
		t.Voters = quorum.NextVoters(nil, memberNames(liveMembers), m.leftGracefully)
		first, ok := c.publish(t)
		if !ok {
			return fmt.Errorf("%w: first table refused locally", errStaleRound)
		}
		m.log.Info("first partition table published", "version", partition.VersionString(first.Version), "members", len(targetMembers), "backups", m.backups.table)
		return nil
	}
	count := cur.Count
	liveNames := make([]string, 0, len(live))
	for _, mi := range live {
		liveNames = append(liveNames, mi.Name)
	}
	prevVoters := cur.Voters
	if len(prevVoters) == 0 {
		prevVoters = memberNames(cur.Members)
	}
	voters := quorum.NextVoters(prevVoters, liveNames, m.leftGracefully)
	replicas := make([][]string, count)
	for p := range replicas {
		replicas[p] = cur.ReplicaNames(int32(p))
	}
	commit := func(lost []int32) error {
		if err := c.mayPublish(ctx, cur); err != nil {
			return err
		}
		next, err := partition.New(cur.Version+1, count, liveMembers, replicas)
		if err != nil {
			return fmt.Errorf("%w: build table: %v", op.ErrInternal, err)
		}
		next.Lost = lost
		next.Voters = voters
		pub, ok := c.publish(next)
		if !ok {
			return fmt.Errorf("%w: table %d refused locally", errStaleRound, next.Version)
		}
		cur = pub
		return nil
	}

	if stale := c.staleVerdicts(cur, liveByName); len(stale) > 0 {
		return fmt.Errorf("members %v answer over their data connections though this member's failure detector declared them dead before it regained its quorum: waiting for gossip to see them again", stale)
	}

	// Phase 1: members that are gone.
	var promote []int32
	changed := takeover || !sameMembers(cur, &partition.Table{Members: sortedMembers(liveMembers)}) || !slices.Equal(voters, cur.Voters)
	for p, names := range replicas {
		kept := names[:0:0]
		for _, n := range names {
			if _, ok := liveByName[n]; ok {
				kept = append(kept, n)
			}
		}
		if len(kept) != len(names) {
			changed = true
			if len(names) > 0 {
				if _, ok := liveByName[names[0]]; !ok {
					promote = append(promote, int32(p))
				}
			}
		}
		replicas[p] = kept
	}
	var lost, incomplete []int32
	promoted := 0
	if len(promote) > 0 {
		seqs := c.collectSeqs(live, cur.Version, promote)
		if f := c.testAfterCollect.Load(); f != nil {
			(*f)(promote)
		}
		var silent []string
		for _, p := range promote {
			want, _ := target.Owner(p)
			best, bestPos, missing := choosePromotion(replicas[p], seqs, p, want.Name)
			if m.log.Enabled(context.Background(), slog.LevelDebug) {
				var cands []string
				for _, n := range replicas[p] {
					if sq, ok := seqs[n]; ok {
						cands = append(cands, fmt.Sprintf("%s=%d/%d", n, int64(sq[p].Seq), sq[p].Term))
					} else {
						cands = append(cands, n+"=?")
					}
				}
				m.log.Debug("promotion", "partition", p, "from_version", cur.Version, "candidates", cands, "chosen", best, "seq", bestPos.Seq, "term", bestPos.Term)
			}
			if missing != "" {
				silent = append(silent, missing)
				continue
			}
			if best == "" {
				replicas[p] = []string{want.Name}
				lost = append(lost, p)
				continue
			}
			if bestPos.partial {
				// Only backups still waiting for their copy are left:
				// what was acknowledged before they were added is held
				// by departed members alone.
				incomplete = append(incomplete, p)
			}
			rest := []string{best}
			for _, n := range replicas[p] {
				if n != best {
					rest = append(rest, n)
				}
			}
			replicas[p] = rest
			promoted++
		}
		if len(silent) == 0 && len(lost)+len(incomplete) > 0 {
			gone := append(slices.Clone(lost), incomplete...)
			if holders := c.departedHolders(cur, gone, live); len(holders) > 0 {
				// The failure detector declared members dead that still
				// answer over their data connections (their gossip was
				// starved: CPU load, a long GC pause; or this member
				// declared them dead while it was cut off itself and
				// has not seen them again yet) and hold these
				// partitions, their acknowledged writes included:
				// starting the partitions empty, or from a backup that
				// has not received its copy, would lose them (the
				// members drop their copies as orphaned when they come
				// back). Wait until they rejoin or stop answering. The
				// replicas sealed above take nothing from their owner
				// until a newer table: the next round publishes one
				// whatever it finds.
				c.force.Store(true)
				return fmt.Errorf("no promotion: partitions %v would start empty or incomplete while departed members %v holding them still answer", gone, holders)
			}
		}
		if len(silent) > 0 {
			// A live replica that did not answer may be the only one
			// holding the acknowledged writes: promoting another (a new
			// backup still waiting for its copy) or starting the
			// partition empty would lose them. Wait for its answer (the
			// next round is at most republishEvery away).
			slices.Sort(silent)
			c.force.Store(true) // lift the seals (see above)
			return fmt.Errorf("no promotion: replica sequences unavailable from %v", slices.Compact(silent))
		}
	}
	if changed {
		// A partition promoted from a partial backup lost what only its
		// departed replicas held: it is reported lost too.
		reported := append(slices.Clone(lost), incomplete...)
		slices.Sort(reported)
		if err := commit(reported); err != nil {
			return err
		}
		// Logged once published: a round abandoned at commit decided
		// nothing.
		if promoted > 0 {
			m.log.Info("backups promoted to owners", "partitions", promoted, "version", cur.Version)
		}
		if len(lost) > 0 {
			m.log.Error("partitions lost: every replica is gone; they start again empty", "partitions", lost, "version", cur.Version)
		}
		if len(incomplete) > 0 {
			m.log.Error("partitions lost in part: only backups that had not received their copy were left; writes acknowledged before they were added are gone", "partitions", incomplete, "version", cur.Version)
		}
	}

	// Phase 2: add missing target replicas.
	added := 0
	for p := range replicas {
		for _, n := range target.ReplicaNames(int32(p)) {
			if !slices.Contains(replicas[p], n) {
				replicas[p] = append(replicas[p], n)
				added++
			}
		}
	}
	if added > 0 {
		m.log.Info("adding replicas", "replicas", added)
		if err := commit(nil); err != nil {
			return err
		}
	}
	if c.dirty.Load() {
		return nil
	}

	// Phase 3: hand partitions to their target owners.
	var moves []partition.Move
	for p := range replicas {
		want, _ := target.Owner(int32(p))
		if replicas[p][0] != want.Name {
			moves = append(moves, partition.Move{Partition: int32(p), From: replicas[p][0], To: want.Name})
		}
	}
	start := time.Now()
	handed := 0
	batch := 4 * m.cfg.MigrationParallelism
	for len(moves) > 0 {
		if ctx.Err() != nil || c.dirty.Load() {
			return nil
		}
		n := min(batch, len(moves))
		ok, err := c.runMoves(ctx, moves[:n], func(ctx context.Context, mv partition.Move) error {
			return c.call(ctx, liveByName[mv.From], &op.Request{Service: sysService, Op: sysHandoff, Partition: mv.Partition, Key: mv.To, Num: 1})
		})
		moves = moves[n:]
		for _, mv := range ok {
			next := []string{mv.To}
			for _, r := range replicas[mv.Partition] {
				if r != mv.To {
					next = append(next, r)
				}
			}
			replicas[mv.Partition] = next
		}
		handed += len(ok)
		if len(ok) > 0 {
			if cerr := commit(nil); cerr != nil {
				return cerr
			}
		}
		if err != nil {
			return err
		}
	}
	if handed > 0 {
		m.log.Info("partitions handed to new owners", "partitions", handed, "took", time.Since(start).Round(time.Millisecond), "version", cur.Version)
	}

	// Phase 4: trim replicas beyond the target once the target backups
	// are in sync.
	var trims []partition.Move
	for p := range replicas {
		if !slices.Equal(replicas[p], target.ReplicaNames(int32(p))) {
			trims = append(trims, partition.Move{Partition: int32(p), From: replicas[p][0]})
		}
	}
	for len(trims) > 0 {
		if ctx.Err() != nil || c.dirty.Load() {
			return nil
		}
		n := min(4*batch, len(trims))
		ok, err := c.runMoves(ctx, trims[:n], func(ctx context.Context, mv partition.Move) error {
			return c.call(ctx, liveByName[mv.From], &op.Request{Service: sysService, Op: sysHandoff, Partition: mv.Partition})
		})
		trims = trims[n:]
		for _, mv := range ok {
			replicas[mv.Partition] = target.ReplicaNames(mv.Partition)
		}
		if len(ok) > 0 {
			if cerr := commit(nil); cerr != nil {
				return cerr
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// choosePromotion picks the replica of partition p to promote when its
// owner is gone, by backup.Promote: the one with the longest history, the
// target owner on a tie. pos are the positions the live members reported
// (Seq noReplica where they hold no replica). It returns missing, and no
// choice, when a replica did not report: it may be the one holding what
// was acknowledged. best is "" when no replica is left (the partition is
// lost).
func choosePromotion(replicas []string, pos map[string][]replicaPos, p int32, want string) (best string, bestPos replicaPos, missing string) {
	cands := make([]backup.Candidate, len(replicas))
	for i, n := range replicas {
		cands[i].Name = n
		ps, ok := pos[n]
		if !ok {
			continue
		}
		cands[i].Reported = true
		cands[i].Holds = ps[p].Seq != noReplica
		cands[i].Pos = ps[p].Position
		cands[i].Partial = ps[p].partial
	}
	i, miss := backup.Promote(cands, want)
	switch {
	case miss >= 0:
		return "", replicaPos{}, replicas[miss]
	case i < 0:
		return "", replicaPos{}, ""
	}
	return replicas[i], replicaPos{cands[i].Pos, cands[i].Partial}, ""
}

// staleVerdictWindow is how long after regaining its quorum a member
// double-checks the failure verdicts it reached before (see
// staleVerdicts).
const staleVerdictWindow = 10 * time.Second

// staleVerdicts returns the members of table cur that this member's
// failure detector declared dead before it last regained its quorum, and
// that answer a ping over their data connections. A member back from the
// minority side of a cut declared the majority's members dead during the
// cut and meets them again one by one after the heal (and stale "dead"
// gossip reaches it then too): removing a live owner from the table on
// such a verdict moves its partitions away and makes it discard its copies
// as orphaned. Within staleVerdictWindow of the regain, such verdicts are
// checked first; after it, or for verdicts reached since, the failure
// detector is trusted as usual (no extra delay for a real failover).
func (c *coordinator) staleVerdicts(cur *partition.Table, live map[string]partition.Member) []string {
	m := c.m
	at := m.quorum.regainedAt.Load()
	if at == 0 || m.mono(time.Now())-at > int64(staleVerdictWindow) {
		return nil
	}
	var suspects []partition.Member
	m.failedMu.Lock()
	for _, mb := range cur.Members {
		if _, ok := live[mb.Name]; ok {
			continue
		}
		if f, ok := m.failed[mb.Name]; ok && m.mono(f.since) < at {
			suspects = append(suspects, mb)
		}
	}
	m.failedMu.Unlock()
	var (
		mu    sync.Mutex
		stale []string
		g     errgroup.Group
	)
	for _, mb := range suspects {
		g.Go(func() error {
			ctx, cancel := context.WithTimeout(m.ctx, time.Second)
			defer cancel()
			if _, err := m.peers.call(ctx, mb.Name, mb.Addr, &op.Request{Service: sysService, Op: sysPing, Partition: -1}); err == nil {
				mu.Lock()
				stale = append(stale, mb.Name)
				mu.Unlock()
			}
			return nil
		})
	}
	_ = g.Wait()
	slices.Sort(stale)
	return stale
}

// departedHolders asks the members that held replicas of the partitions
// about to be declared lost, and are gone from the membership, for their
// replication positions, and returns those that answer holding one of
// them: alive despite the failure detector. A crashed member refuses the
// connection at once; one cut off does not answer within the timeout:
// both are really unreachable, and the partitions are lost to this side.
func (c *coordinator) departedHolders(cur *partition.Table, lost []int32, live []MemberInfo) []string {
	m := c.m
	isLive := map[string]bool{}
	for _, mi := range live {
		isLive[mi.Name] = true
	}
	byMember := map[string][]int32{}
	for _, p := range lost {
		for _, n := range cur.ReplicaNames(p) {
			if !isLive[n] {
				byMember[n] = append(byMember[n], p)
			}
		}
	}
	var (
		mu      sync.Mutex
		holders []string
		g       errgroup.Group
	)
	for n, parts := range byMember {
		mb, ok := cur.Member(n)
		if !ok {
			continue
		}
		g.Go(func() error {
			ctx, cancel := context.WithTimeout(m.ctx, 2*time.Second)
			defer cancel()
			resp, err := m.peers.call(ctx, n, mb.Addr, &op.Request{Service: sysService, Op: sysReplicaSeqs, Partition: -1})
			if err != nil {
				return nil // unreachable: really gone from this side
			}
			b := resp.Value
			if len(b) != 8*m.cfg.PartitionCount {
				return nil
			}
			for _, p := range parts {
				if binary.BigEndian.Uint64(b[8*int(p):]) != noReplica {
					mu.Lock()
					holders = append(holders, n)
					mu.Unlock()
					break
				}
			}
			return nil
		})
	}
	_ = g.Wait()
	slices.Sort(holders)
	return holders
}

// call sends a system request to member to, or runs it here when to is
// this member.
func (c *coordinator) call(ctx context.Context, to partition.Member, req *op.Request) error {
	m := c.m
	if to.Name == m.cfg.Name {
		if req.Op == sysHandoff {
			if req.Num == 1 {
				return m.handoff(ctx, req.Partition, req.Key)
			}
			return m.waitSynced(ctx, req.Partition)
		}
		return fmt.Errorf("%w: local system op %d", op.ErrInternal, req.Op)
	}
	_, err := m.peers.call(ctx, to.Name, to.Addr, req)
	return err
}

// runMoves executes f for each move, MigrationParallelism at a time, and returns
// the moves that succeeded.
func (c *coordinator) runMoves(round context.Context, moves []partition.Move, f func(context.Context, partition.Move) error) ([]partition.Move, error) {
	m := c.m
	results := make([]error, len(moves))
	var g errgroup.Group
	g.SetLimit(m.cfg.MigrationParallelism)
	for i, mv := range moves {
		g.Go(func() error {
			ctx, cancel := context.WithTimeout(round, handoffTimeout)
			defer cancel()
			results[i] = f(ctx, mv)
			return nil
		})
	}
	_ = g.Wait()
	var ok []partition.Move
	var errs []error
	for i, mv := range moves {
		if results[i] != nil {
			errs = append(errs, fmt.Errorf("partition %d %s->%s: %w", mv.Partition, mv.From, mv.To, results[i]))
			continue
		}
		ok = append(ok, mv)
	}
	return ok, errors.Join(errs...)
}

// replicaPos is what a member reported about its replica of a partition:
// its position, and whether it is a partial backup (slot.partial).
type replicaPos struct {
	backup.Position
	partial bool
}

// collectSeqs asks every live member for the position (sequence and term)
// of the last mutation it applied to each partition, and whether its
// replica is partial.
//
// The replicas of partitions seal (those whose owner departed) are sealed
// at table version as they report: an owner that the failure detector
// declared dead while it is alive cannot get a write acknowledged by one
// of them after its position was read, which the promotion of another
// replica with the same position would lose.
func (c *coordinator) collectSeqs(live []MemberInfo, version uint64, seal []int32) map[string][]replicaPos {
	m := c.m
	out := map[string][]replicaPos{}
	sealReq := encodeSeal(version, seal)
	sealSet := make(map[int32]bool, len(seal))
	for _, p := range seal {
		sealSet[p] = true
	}
	var mu sync.Mutex
	var g errgroup.Group
	for _, mi := range live {
		g.Go(func() error {
			var b []byte
			if mi.Name == m.cfg.Name {
				b = m.replicaSeqs(seqsWithState, version, sealSet)
			} else {
				ctx, cancel := context.WithTimeout(m.ctx, 2*time.Second)
				defer cancel()
				resp, err := m.peers.call(ctx, mi.Name, mi.Addr, &op.Request{Service: sysService, Op: sysReplicaSeqs, Partition: -1, Num: seqsWithState, Value: sealReq})
				if err != nil {
					m.log.Warn("replica sequences unavailable", "peer", mi.Name, "err", err)
					return nil
				}
				b = resp.Value
			}
			n := m.cfg.PartitionCount
			pos := make([]replicaPos, n)
			switch len(b) {
			case 17 * n:
				for i := range pos {
					pos[i].Position = backup.Position{Seq: binary.BigEndian.Uint64(b[17*i:]), Term: binary.BigEndian.Uint64(b[17*i+8:])}
					pos[i].partial = b[17*i+16]&seqPartial != 0
				}
			case 8 * n:
				// An older build: sequences only.
				for i := range pos {
					pos[i].Position = backup.Position{Seq: binary.BigEndian.Uint64(b[8*i:]), NoTerm: true}
				}
			default:
				return nil
			}
			mu.Lock()
			out[mi.Name] = pos
			mu.Unlock()
			return nil
		})
	}
	_ = g.Wait()
	return out
}

func sortedMembers(ms []partition.Member) []partition.Member {
	out := slices.Clone(ms)
	slices.SortFunc(out, func(a, b partition.Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// learnNewestTable asks every live member for its table when this member
// becomes coordinator, so it continues from the newest version anyone has
// (the previous coordinator may have published one we missed). It reports
// whether every live member answered.
func (c *coordinator) learnNewestTable() bool {
	m := c.m
	var g errgroup.Group
	var missed atomic.Bool
	for _, mi := range m.Members() {
		if mi.Name == m.cfg.Name {
			continue
		}
		g.Go(func() error {
			if !m.pullTable(m.ctx, partition.Member{Name: mi.Name, Addr: mi.Addr}) {
				missed.Store(true)
			}
			return nil
		})
	}
	_ = g.Wait()
	return !missed.Load()
}

// mayPublish reports why a round that built on table cur must not publish
// the table it derived from it, or nil. The round may have taken long
// (hand-offs, sequences from slow members): it publishes only while this
// member still coordinates (the oldest it sees, with a majority), the
// membership did not change during the round (trigger cancels ctx and sets
// dirty), and this member still follows cur. Another member may have
// coordinated meanwhile (this one looked dead to it): a table derived from
// an older one must not replace its newer one. A membership change makes
// the round's decisions moot: the members it counted as live, the replicas
// it promoted or declared lost. Seen under load: a round that began with a
// majority went on after the member lost it, promoted itself from its own
// sequences only (99 partitions) and declared 80 others lost (every other
// replica "gone"), a table the others would have adopted, emptying those
// partitions.
func (c *coordinator) mayPublish(ctx context.Context, cur *partition.Table) error {
	m := c.m
	if !m.IsCoordinator() || !m.mayCoordinate() {
		return errNotCoordinator
	}
	if ctx.Err() != nil || c.dirty.Load() {
		return fmt.Errorf("%w: membership changed during the round", errStaleRound)
	}
	if now := m.Table(); now != cur {
		return fmt.Errorf("%w: table %d arrived while the round built on table %d", errStaleRound, now.Version, cur.Version)
	}
	return nil
}

// errNotCoordinator and errStaleRound end a round that must not publish:
// this member stopped coordinating, or a newer table arrived meanwhile.
var (
	errNotCoordinator = errors.New("no longer the coordinator")
	errStaleRound     = errors.New("round built on an old table")
)

// publish adopts t locally, then pushes it to every member. It returns the
// table as published: its version is the next one of this coordinator's
// term, above any version a member reported, so that members that are
// ahead accept it. It reports false, and pushes nothing, when this member
// refuses t itself (it adopted a newer table meanwhile) or its term is
// outdated.
func (c *coordinator) publish(t *partition.Table) (*partition.Table, bool) {
	v, ok := c.nextVersion()
	if !ok {
		return t, false
	}
	t = t.WithVersion(v)
	if cur := c.m.Table(); cur != nil && cur.Epoch != 0 {
		t.Epoch = cur.Epoch
	} else if t.Epoch == 0 {
		t.Epoch = rand.Uint64() | 1
	}
	if !c.m.adopt(t, c.m.cfg.Name) {
		return t, false
	}
	c.publishRemote(t)
	return t, true
}

func (c *coordinator) publishRemote(t *partition.Table) {
	m := c.m
	b, err := t.Marshal()
	if err != nil {
		m.log.Error("encode table", "err", err)
		return
	}
	term := c.terms.term
	var g errgroup.Group
	for _, mi := range m.Members() {
		if mi.Name == m.cfg.Name {
			continue
		}
		g.Go(func() error {
			ctx, cancel := context.WithTimeout(m.ctx, 2*time.Second)
			defer cancel()
			resp, err := m.peers.call(ctx, mi.Name, mi.Addr, &op.Request{Service: sysService, Op: sysPublish, Partition: -1, Value: b})
			if err == nil && (uint64(resp.Num) > term || resp.Found) {
				// The peer promised a newer term to another candidate, or
				// holds another table of this version: win a new term.
				c.raiseAbove(max(uint64(resp.Num), partition.TermOf(t.Version)))
				c.force.Store(true)
				c.poke()
			}
			if err != nil {
				m.log.Debug("publish table", "peer", mi.Name, "version", t.Version, "err", err)
				return nil
			}
			if resp.TableVersion > t.Version {
				// The peer follows a newer table from another coordinator
				// (a healed split): outbid it in the next round.
				for {
					seen := c.maxSeen.Load()
					if resp.TableVersion <= seen || c.maxSeen.CompareAndSwap(seen, resp.TableVersion) {
						break
					}
				}
				c.force.Store(true)
				c.poke()
			}
			return nil
		})
	}
	_ = g.Wait()
}

// adopt makes t this member's table if it is newer than the current one.
// Slots are updated before the table pointer, so a request stamped with the
// new version is refused (stale) until every slot reflects it.
func (m *Member) adopt(t *partition.Table, from string) bool {
	if t == nil || t.Count != m.cfg.PartitionCount {
		if t != nil {
			m.log.Error("table with wrong partition count refused", "from", from, "count", t.Count)
		}
		return false
	}
	m.tableMu.Lock()
	defer m.tableMu.Unlock()
	cur := m.table.Load()
	if cur != nil && t.Version <= cur.Version {
		return false
	}
	if partition.TermOf(t.Version) < m.promisedTerm() {
		// This member granted a newer coordinator term: t comes from a
		// deposed coordinator.
		return false
	}
	dropped, orphaned, orphanedParts := 0, 0, 0
	var resync []resyncJob
	var orphans []orphan
	for p, s := range m.slots {
		d, o, snaps, names := s.adopt(m, t)
		dropped += d
		if snaps != nil {
			orphans = append(orphans, orphan{int32(p), snaps})
		}
		if o > 0 {
			orphaned += o
			orphanedParts++
		}
		for _, n := range names {
			resync = append(resync, resyncJob{int32(p), n})
		}
	}
	m.table.Store(t)
	if m.events != nil { // nil in tests that build a bare Member
		m.events.publish(sysService, sysop.TableStream, binary.BigEndian.AppendUint64(nil, t.Version))
	}
	m.refreshQuorum()
	close(m.tableCond)
	m.tableCond = make(chan struct{})
	for _, j := range resync {
		m.scheduleResync(j.p, j.name)
	}

	names := make([]string, len(t.Members))
	for i, mb := range t.Members {
		names[i] = mb.Name
	}
	m.log.Info("partition table adopted", "version", t.Version, "from", from, "members", names,
		"owned", len(t.Owned(m.cfg.Name)), "backups", len(t.BackedUp(m.cfg.Name)))
	if dropped > 0 {
		m.log.Info("dropped entries of partitions no longer held here", "entries", dropped)
	}
	if orphaned > 0 {
		// This member owned partitions that the cluster gave to others
		// without a hand-over: it was declared gone (the losing side of a
		// network cut, or a long pause). The winning side's values are
		// kept; what was written here since is discarded.
		m.counters.mergeDiscarded.Add(uint64(orphaned))
		m.log.Warn("merge after a split: dropped the entries of partitions this member owned on the losing side (the winning side's values are kept, except where a merge policy says otherwise)",
			"partitions", orphanedParts, "entries", orphaned, "to_merge", len(orphans), "version", t.Version, "from", from)
	}
	if orphaned > 0 || len(orphans) > 0 {
		version := t.Version
		m.spawn(func() { m.mergeOrphans(version, orphanedParts, orphaned, orphans) })
	}
	if len(t.Lost) > 0 {
		m.emitLost(t)
	}
	return true
}

// sameTable reports whether two tables have the same layout and voters.
func sameTable(a, b *partition.Table) bool {
	return a.Equal(b) && slices.Equal(a.Voters, b.Voters) && slices.Equal(a.Lost, b.Lost)
}

func sameMembers(a, b *partition.Table) bool {
	return slices.Equal(a.Members, b.Members)
}

func memberNames(ms []partition.Member) []string {
	out := make([]string, len(ms))
	for i, mb := range ms {
		out[i] = mb.Name
	}
	return out
}
