package grid

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
