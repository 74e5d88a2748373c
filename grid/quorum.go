package grid

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/partition"
	"github.com/shoalgrid/shoal/quorum"
)

// The split-brain guard (see package quorum and docs/quorum.md).
//
// Membership: a member counts the live members of its table (members that
// joined but that no table includes yet do not count, so that new members
// joining a cut-off minority cannot give it a majority) against the
// table's expected size, less the members that left gracefully since.
// Without a majority it does not coordinate (no promotion, no table, no
// ownership taken), and operations on protected structures fail with
// op.ErrQuorum.
//
// Lease: between a network cut and the failure detector declaring the
// other side dead, membership still shows everyone. The owner therefore
// also requires to have heard (a ping answered over the data connection)
// from enough members within the lease, which is shorter than the fastest
// failure detection: by the time the majority promotes backups of a
// cut-off owner, that owner has stopped serving protected structures.

// peerLease is what this member last heard from one peer.
type peerLease struct {
	name, addr string
	// heard is when the last answered ping was sent, in nanoseconds since
	// the member started (monotonic).
	heard    atomic.Int64
	inflight atomic.Bool
}

// quorumView is the membership side of the guard, recomputed when the
// membership or the table changes.
type quorumView struct {
	view quorum.View
	// peers are the live members of the table other than this one.
	peers []*peerLease
	// table is false before the first table: nothing is guarded then.
	table bool
}

// quorumState is the member's guard state.
type quorumState struct {
	rules *quorum.Rules
	lease time.Duration

	view atomic.Pointer[quorumView]
	// ok is the cluster-level state (majority by membership) for readiness,
	// metrics and events.
	ok atomic.Bool
	// regainedAt is when ok last turned true after being false, in
	// nanoseconds since the member started (0: never lost).
	regainedAt atomic.Int64

	mu     sync.Mutex // serialises refresh
	leases map[string]*peerLease
	// left holds members that left gracefully (until they rejoin).
	left map[string]bool
}

// leaseFor returns the owner lease for the gossip timings: the suspicion
// timeout memberlist never goes below (SuspicionMult probe intervals), so
// that the lease of a cut-off owner ends before the other side can declare
// it dead and promote its backups.
func leaseFor(g GossipConfig) time.Duration {
	return time.Duration(g.SuspicionMult) * g.ProbeInterval
}

func newQuorumState(cfg Config) *quorumState {
	rules, _ := quorum.NewRules(*cfg.Quorum, cfg.StructureQuorum) // validated by withDefaults
	q := &quorumState{rules: rules, lease: leaseFor(cfg.Gossip), leases: map[string]*peerLease{}, left: map[string]bool{}}
	q.ok.Store(true)
	q.view.Store(&quorumView{})
	return q
}

// mono returns the monotonic time since the member started.
func (m *Member) mono(t time.Time) int64 { return int64(t.Sub(m.started)) }

// noteLeft records a graceful leave (or forgets one when the member
// rejoins).
func (m *Member) noteLeft(name string, left bool) {
	q := m.quorum
	q.mu.Lock()
	if left {
		q.left[name] = true
	} else {
		delete(q.left, name)
	}
	q.mu.Unlock()
}

// leftGracefully reports whether member name left gracefully (and has not
// come back).
func (m *Member) leftGracefully(name string) bool {
	q := m.quorum
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.left[name]
}

// refreshQuorum recomputes the guard's view after a membership or table
// change, and logs and emits the transitions of the cluster quorum.
func (m *Member) refreshQuorum() {
	q := m.quorum
	t := m.Table()
	live := map[string]bool{}
	liveAddr := map[string]string{}
	for _, mi := range m.Members() {
		live[mi.Name] = true
		liveAddr[mi.Name] = mi.Addr
	}
	live[m.cfg.Name] = true
	q.mu.Lock()
	defer q.mu.Unlock()
	v := &quorumView{}
	if t != nil {
		voters := t.Voters
		if len(voters) == 0 {
			voters = memberNames(t.Members) // a table from before voters
		}
		v.table = true
		liveNames := make([]string, 0, len(live))
		for n := range live {
			liveNames = append(liveNames, n)
		}
		v.view = quorum.ViewOf(voters, liveNames, func(n string) bool { return q.left[n] })
		for _, n := range voters {
			if !live[n] || n == m.cfg.Name {
				continue
			}
			// The gossip view has the address of a voter that came
			// back after a crash (the table may still have its old one).
			addr := liveAddr[n]
			pl := q.leases[n]
			if pl == nil || pl.addr != addr {
				pl = &peerLease{name: n, addr: addr}
				q.leases[n] = pl
			}
			v.peers = append(v.peers, pl)
		}
	}
	for name := range q.leases {
		if !slices.ContainsFunc(v.peers, func(pl *peerLease) bool { return pl.name == name }) {
			delete(q.leases, name)
		}
	}
	q.view.Store(v)
	ok := !v.table || !q.rules.Any() || quorum.Check(quorum.Rule{Mode: quorum.Majority}, v.view).OK
	if q.ok.Swap(ok) == ok {
		return
	}
	d := quorum.Check(quorum.Rule{Mode: quorum.Majority}, v.view)
	typ := QuorumRegained
	if ok {
		q.regainedAt.Store(m.mono(time.Now()))
		m.log.Info("quorum regained: serving protected structures again", "quorum", d.String())
	} else {
		typ = QuorumLost
		m.log.Error("quorum lost: protected structures refuse operations, this member does not coordinate", "quorum", d.String())
	}
	m.emitEvent(Event{Type: typ, Quorum: &d, Time: time.Now()})
}

// HasQuorum reports whether this member sees a majority of the cluster's
// expected size (always true when every quorum rule is off).
func (m *Member) HasQuorum() bool { return m.quorum.ok.Load() }

// QuorumView returns the member's current quorum decision under the
// majority rule: members visible, needed and expected.
func (m *Member) QuorumView() quorum.Decision {
	return quorum.Check(quorum.Rule{Mode: quorum.Majority}, m.quorum.view.Load().view)
}

// mayCoordinate reports whether this member may coordinate: with a quorum
// rule anywhere, only with a majority of the expected size.
func (m *Member) mayCoordinate() bool {
	return !m.quorum.rules.Any() || m.quorum.ok.Load()
}

// checkQuorum returns a refusal when structure name may not be served now,
// or nil. A missing majority of members fails fast with op.ErrQuorum; a
// majority by membership whose lease has lapsed (a cut not yet detected,
// or pings not answered yet) is refused as retriable, so that invokers
// wait for the failure detector's verdict or the lease's renewal.
func (m *Member) checkQuorum(name string, now time.Time, version uint64) *op.Response {
	return m.quorumRefusal(name, now, version, true)
}

// quorumRefusal is checkQuorum, with the lease checked only if lease is
// set (an invoker checks the membership before routing; the owner checks
// both).
func (m *Member) quorumRefusal(name string, now time.Time, version uint64, lease bool) *op.Response {
	q := m.quorum
	r := q.rules.For(name)
	if r.Mode == quorum.Off {
		return nil
	}
	v := q.view.Load()
	if !v.table {
		return nil
	}
	d := quorum.Check(r, v.view)
	if !d.OK {
		return &op.Response{Code: op.CodeQuorum, Msg: fmt.Sprintf("member %s: structure %q needs a quorum: %s", m.cfg.Name, name, d), TableVersion: version}
	}
	if d.Need <= 1 || !lease {
		return nil
	}
	since := m.mono(now) - int64(q.lease)
	heard := 1
	for _, pl := range v.peers {
		if pl.heard.Load() > since {
			heard++
		}
	}
	if heard >= d.Need {
		return nil
	}
	return &op.Response{Code: op.CodeStaleTable, Msg: fmt.Sprintf("member %s: heard from %d of %d members within the %v lease, %d needed: waiting for the failure detector or the lease",
		m.cfg.Name, heard, d.Expected, q.lease, d.Need), TableVersion: version}
}

// leaseLoop pings the live members of the table over their data
// connections every quarter lease, one ping in flight per peer, and
// renews the lease with each answer. It also refreshes the quorum view
// periodically, as a safety net for missed events.
func (m *Member) leaseLoop() {
	defer m.wg.Done()
	q := m.quorum
	every := max(q.lease/4, 10*time.Millisecond)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-tick.C:
		}
		m.refreshQuorum()
		for _, pl := range q.view.Load().peers {
			if !pl.inflight.CompareAndSwap(false, true) {
				continue
			}
			if !m.spawn(func() { m.ping(pl) }) {
				return
			}
		}
	}
}

// ping asks one peer for its table version; an answer renews its lease.
func (m *Member) ping(pl *peerLease) {
	defer pl.inflight.Store(false)
	ctx, cancel := context.WithTimeout(m.ctx, max(m.quorum.lease, 100*time.Millisecond))
	defer cancel()
	sent := time.Now()
	resp, err := m.peers.call(ctx, pl.name, pl.addr, &op.Request{Service: sysService, Op: sysPing, Partition: -1, Num: pingLease})
	if err != nil {
		return
	}
	if at := m.mono(sent); at > pl.heard.Load() {
		pl.heard.Store(at)
	}
	if resp.TableVersion > m.tableVersion() {
		m.pullTable(ctx, partition.Member{Name: pl.name, Addr: pl.addr})
	}
}

// emit delivers ev to the subscribers, dropping it for the slow ones.
func (m *Member) emitEvent(ev Event) {
	m.subsMu.Lock()
	defer m.subsMu.Unlock()
	for ch := range m.subs {
		select {
		case ch <- ev:
		default:
			m.log.Warn("membership subscriber is too slow, event dropped", "event", ev.Type.String())
		}
	}
}

// leaseAtAck returns an outcome-unknown error when a mutation of structure
// name, applied while the lease held, is acknowledged by its backups only
// after the lease or the quorum was lost: the invoker retries it with its
// identity, which then waits for the quorum (or fails with op.ErrQuorum).
func (m *Member) leaseAtAck(name string) error {
	r := m.checkQuorum(name, time.Now(), 0)
	if r == nil {
		return nil
	}
	return op.Errorf(op.CodeBackupTimeout, "the write was applied but its acknowledgement came after this side lost its quorum lease; outcome unknown (%s)", r.Msg)
}
