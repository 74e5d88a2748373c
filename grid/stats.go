package grid

import (
	"sync/atomic"
)

// Stats is a point-in-time view of a member, for health checks, metrics and
// status commands.
type Stats struct {
	// Name is the member's name.
	Name string `json:"name"`
	// Addr is its data address.
	Addr string `json:"addr"`
	// Coordinator is true when this member publishes tables.
	Coordinator bool `json:"coordinator"`
	// TableVersion is the version of the table it follows (0 = none yet).
	TableVersion uint64 `json:"table_version"`
	// Members is the number of live members it sees.
	Members int `json:"member_count"`
	// PartitionsOwned is how many partitions it owns.
	PartitionsOwned int `json:"partitions_owned"`
	// PartitionsBackup is how many partitions it holds a backup of.
	PartitionsBackup int `json:"partitions_backup"`
	// UnsyncedBackups counts backups of its owned partitions that are not
	// in sync (being copied, or cut off and waiting for a copy).
	UnsyncedBackups int `json:"unsynced_backups"`
	// Entries is the number of entries in its owned partitions.
	Entries int `json:"entries"`
	// Ready is true once it follows a table that includes it.
	Ready bool `json:"ready"`
	// Leaving is true while a graceful shutdown hands partitions over.
	Leaving bool `json:"leaving"`
	// Fenced is true while the member refuses owner operations after a
	// pause, until it has confirmed the table with the coordinator.
	Fenced bool `json:"fenced"`
	// Quorum is false while this member sees fewer than a majority of the
	// cluster's expected size (with every quorum rule off: always true).
	Quorum bool `json:"quorum"`
	// QuorumVisible is how many members of its table it sees (itself
	// included), QuorumNeeded how many a majority is, and ExpectedSize the
	// cluster's expected size it counts against.
	QuorumVisible int `json:"quorum_visible"`
	QuorumNeeded  int `json:"quorum_needed"`
	ExpectedSize  int `json:"expected_size"`
	// TableBackups is the number of backups per partition this member's
	// configuration asks for.
	TableBackups int `json:"table_backups"`
	// RequestsServed counts requests executed on this member's partitions.
	RequestsServed uint64 `json:"requests_served"`
	// BackupRecords counts mutations replayed here as a backup.
	BackupRecords uint64 `json:"backup_records"`
	// MigrationsOut counts partition copies this member sent to others.
	MigrationsOut uint64 `json:"migrations_out"`
	// MigrationBytesOut counts the bytes of partition copies it sent.
	MigrationBytesOut uint64 `json:"migration_bytes_out"`
	// MigrationsIn counts partition copies this member received.
	MigrationsIn uint64 `json:"migrations_in"`
	// MergeDiscarded counts entries this member discarded because it owned
	// their partitions on the losing side of a split (or while declared
	// dead): the winning side's values were kept.
	MergeDiscarded uint64 `json:"merge_discarded"`
	// MergeStored counts entries from the losing side that merge policies
	// (put-if-absent, pass-through) wrote into the winning side.
	MergeStored uint64 `json:"merge_stored"`
}

type counters struct {
	served        atomic.Uint64
	records       atomic.Uint64
	migrationsOut atomic.Uint64
	migrationsIn  atomic.Uint64
	bytesOut      atomic.Uint64
	// mergeDiscarded counts entries discarded when this member lost
	// partitions without a hand-over (see slot.adopt).
	mergeDiscarded atomic.Uint64
	// mergeStored counts entries of the losing side that a merge policy
	// wrote into the winning side's owners.
	mergeStored atomic.Uint64
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

		MigrationBytesOut: m.counters.bytesOut.Load(),
	}
	q := m.QuorumView()
	s.Quorum, s.QuorumVisible, s.QuorumNeeded, s.ExpectedSize = m.HasQuorum(), q.Live, q.Need, q.Expected
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
				if !tg.synced {
					s.UnsyncedBackups++
				}
			}
			sl.mu.Unlock()
		}
	}
	return s
}
