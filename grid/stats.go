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
	// ConnsOpen is the number of connections accepted on the data port
	// and not yet closed, handshakes included (see Config.Conns).
	ConnsOpen int `json:"conns_open"`
	// ConnsRefused counts connections closed at once for being over
	// Config.Conns' limits.
	ConnsRefused uint64 `json:"conns_refused"`
}

type counters struct {
	served        atomic.Uint64
	records       atomic.Uint64
	migrationsOut atomic.Uint64
	migrationsIn  atomic.Uint64
	bytesOut      atomic.Uint64
	refused       atomic.Uint64
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

		MigrationBytesOut: m.counters.bytesOut.Load(),
		ConnsRefused:      m.counters.refused.Load(),
	}
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
				if !tg.synced {
					s.UnsyncedBackups++
				}
			}
			sl.mu.Unlock()
		}
	}
	return s
}
