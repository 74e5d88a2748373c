package grid

import (
	"context"
	"time"

	"github.com/shoalgrid/shoal/op"
)

// ForgetMembersForTest makes m's membership view lose members names at
// once, as if its failure detector had declared them dead (a false
// suspicion under CPU starvation: they are alive and their data ports
// answer), and starts a coordinator round.
func (m *Member) ForgetMembersForTest(names ...string) {
	m.viewMu.Lock()
	for _, n := range names {
		delete(m.view, n)
	}
	m.viewMu.Unlock()
	m.refreshQuorum()
	if m.coord != nil {
		m.coord.trigger()
	}
}

// CoordinatorRoundsForTest returns how many coordinator rounds m has run.
func (m *Member) CoordinatorRoundsForTest() uint64 { return m.coord.rounds.Load() }

// EmptyReplicaForTest makes m's replica of partition p what a backup just
// added to it holds before the owner's copy arrives: no data, position
// zero, partial.
func (m *Member) EmptyReplicaForTest(p int32) {
	s := m.slots[p]
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.states {
		s.states[i] = nil
	}
	s.seq, s.term = 0, 0
	s.partial = true
	s.dedup.Reset()
}

// FailMembersForTest is ForgetMembersForTest that also records the
// failure detector's verdict (as MemberFailed does) and returns what m
// knew of the members, for RestoreMembersForTest.
func (m *Member) FailMembersForTest(names ...string) []MemberInfo {
	var out []MemberInfo
	m.viewMu.Lock()
	for _, n := range names {
		if mi, ok := m.view[n]; ok {
			out = append(out, mi)
		}
	}
	m.viewMu.Unlock()
	m.failedMu.Lock()
	for _, mi := range out {
		m.failed[mi.Name] = failedNode{addr: mi.Addr, since: time.Now()}
	}
	m.failedMu.Unlock()
	m.ForgetMembersForTest(names...)
	return out
}

// RestoreMembersForTest puts members back into m's view, as if gossip had
// seen them again, and starts a coordinator round.
func (m *Member) RestoreMembersForTest(infos ...MemberInfo) {
	m.viewMu.Lock()
	for _, mi := range infos {
		m.view[mi.Name] = mi
	}
	m.viewMu.Unlock()
	m.failedMu.Lock()
	for _, mi := range infos {
		delete(m.failed, mi.Name)
	}
	m.failedMu.Unlock()
	m.refreshQuorum()
	if m.coord != nil {
		m.coord.trigger()
	}
}

// AfterCollectForTest makes m's coordinator call f (in its round) each
// time it has collected replica positions to promote partitions.
func (m *Member) AfterCollectForTest(f func(promote []int32)) { m.coord.testAfterCollect.Store(&f) }

// PingForTest sends m's ping to member to (a quorum lease ping if lease).
func (m *Member) PingForTest(ctx context.Context, to *Member, lease bool) error {
	req := &op.Request{Service: sysService, Op: sysPing, Partition: -1}
	if lease {
		req.Num = pingLease
	}
	_, err := m.peers.call(ctx, to.Name(), to.Addr(), req)
	return err
}
