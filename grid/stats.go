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
	Members int `json:"members"`
	// PartitionsOwned is how many partitions it owns.
	PartitionsOwned int `json:"partitions_owned"`
	// Entries is the number of entries in its owned partitions.
	Entries int `json:"entries"`
	// Ready is true once it follows a table that includes it.
	Ready bool `json:"ready"`
	// Leaving is true while a graceful shutdown hands partitions over.
	Leaving bool `json:"leaving"`
	// RequestsServed counts requests executed on this member's partitions.
	RequestsServed uint64 `json:"requests_served"`
	// MigrationsOut counts partitions this member handed to others.
	MigrationsOut uint64 `json:"migrations_out"`
	// MigrationsIn counts partitions this member received.
	MigrationsIn uint64 `json:"migrations_in"`
}

type counters struct {
	served        atomic.Uint64
	migrationsOut atomic.Uint64
	migrationsIn  atomic.Uint64
}

// Stats returns the member's current statistics.
func (m *Member) Stats() Stats {
	s := Stats{
		Name:           m.cfg.Name,
		Addr:           m.dataAddr,
		Coordinator:    m.IsCoordinator(),
		Members:        len(m.Members()),
		Leaving:        m.leaving.Load(),
		RequestsServed: m.counters.served.Load(),
		MigrationsOut:  m.counters.migrationsOut.Load(),
		MigrationsIn:   m.counters.migrationsIn.Load(),
	}
	if t := m.Table(); t != nil {
		s.TableVersion = t.Version
		_, s.Ready = t.Member(m.cfg.Name)
		owned := t.Owned(m.cfg.Name)
		s.PartitionsOwned = len(owned)
		for _, p := range owned {
			s.Entries += m.slots[p].entries()
		}
	}
	return s
}
