package grid

import (
	"sync/atomic"

	"github.com/shoalgrid/shoal/sysop"
)

// Stats is a point-in-time view of a member, for health checks, metrics and
// status commands (the record members send to clients, see sysop.Stats).
type Stats = sysop.Stats

type counters struct {
	served        atomic.Uint64
	records       atomic.Uint64
	migrationsOut atomic.Uint64
	migrationsIn  atomic.Uint64
	bytesOut      atomic.Uint64
	// mergeDiscarded counts entries discarded when this member lost
	// partitions without a hand-over (see slot.adopt).
	mergeDiscarded atomic.Uint64
	refused        atomic.Uint64
	// mergeStored counts entries of the losing side that a merge policy
	// wrote into the winning side's owners.
	mergeStored atomic.Uint64
	// wideDropped counts replicated-service deltas not delivered to a
	// peer (repaired by anti-entropy); widePulled the bytes anti-entropy
	// pulled.
	wideDropped atomic.Uint64
	widePulled  atomic.Uint64
	// evicted counts entries evicted under the memory guard (op.OpEvict).
	evicted atomic.Uint64
	// mergeReports counts merge reports (heals that dropped partitions
	// this member owned on the losing side).
	mergeReports atomic.Uint64
}

// Stats returns the member's current statistics.
func (m *Member) Stats() Stats {
	s := Stats{
		Name:           m.cfg.Name,
		Addr:           m.dataAddr,
		Coordinator:    m.IsCoordinator(),
		Members:        len(m.Members()),
		Leaving:        m.leaving.Load(),
		Fenced:         m.fenced.Load(),
		TableBackups:   m.backups.table,
		RequestsServed: m.counters.served.Load(),
		BackupRecords:  m.counters.records.Load(),
		MigrationsOut:  m.counters.migrationsOut.Load(),
		MigrationsIn:   m.counters.migrationsIn.Load(),
		MergeDiscarded: m.counters.mergeDiscarded.Load(),
		MergeStored:    m.counters.mergeStored.Load(),
		MergeReports:   m.counters.mergeReports.Load(),

		ReplicatedDropped: m.counters.wideDropped.Load(),
		ReplicatedPulled:  m.counters.widePulled.Load(),

		MigrationBytesOut: m.counters.bytesOut.Load(),
		ConnsRefused:      m.counters.refused.Load(),
	}
	q := m.QuorumView()
	s.Quorum, s.QuorumVisible, s.QuorumNeeded, s.ExpectedSize = m.HasQuorum(), q.Live, q.Need, q.Expected
	m.connsMu.Lock()
	s.ConnsOpen = m.open
	m.connsMu.Unlock()
	if t := m.Table(); t != nil {
		s.TableVersion = t.Version
		_, s.Ready = t.Member(m.cfg.Name)
		owned := t.Owned(m.cfg.Name)
		s.PartitionsOwned = len(owned)
		s.PartitionsBackup = len(t.BackedUp(m.cfg.Name))
		for _, p := range owned {
			sl := m.slots[p]
			s.Entries += sl.entries()
			sl.mu.Lock()
			for _, tg := range sl.targets {
				// Records in flight do not count: a synced backup receives
				// them in order, and no write is acknowledged before it
				// applied them.
				if !tg.prog.Synced() {
					s.UnsyncedBackups++
				}
			}
			sl.mu.Unlock()
		}
	}
	return s
}
