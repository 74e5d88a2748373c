package grid

import (
	"time"

	"github.com/shoalgrid/shoal/backup"
	"github.com/shoalgrid/shoal/partition"
)

// AdoptTableForTest makes m follow t as if a coordinator had published it
// (tests build the tables another coordinator would have published).
func (m *Member) AdoptTableForTest(t *partition.Table) bool { return m.adopt(t, "test") }

// PeerAheadForTest tells m's coordinator what its periodic publication
// learns when a member refuses it because that member follows table
// version v, and starts a round.
func (m *Member) PeerAheadForTest(v uint64) {
	c := m.coord
	for {
		seen := c.maxSeen.Load()
		if v <= seen || c.maxSeen.CompareAndSwap(seen, v) {
			break
		}
	}
	c.force.Store(true)
	c.poke()
}

// StateSnapshotForTest returns the snapshot at now of service's state in
// partition p on m, and whether m holds a replica of p (owner or backup)
// with that state.
func (m *Member) StateSnapshotForTest(p int32, service string, now time.Time) ([]byte, bool) {
	svc, ok := m.svcIndex[service]
	if !ok {
		return nil, false
	}
	s := m.slots[p]
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.role < 0 || s.states[svc] == nil {
		return nil, false
	}
	b, err := s.states[svc].Snapshot(now)
	return b, err == nil
}

// SendLegacyRecordsForTest makes m ship backup records as sysBackup
// requests, as it does to a member without wire.CapRecords.
func (m *Member) SendLegacyRecordsForTest(on bool) { m.legacyRecords.Store(on) }

// MergeOrphansForTest merges snapshots (by service name, per partition)
// into the winning side's owners as if this member had owned those
// partitions on the losing side of a split, holding entries entries, and
// emits the merge report. It returns when the merge is done.
func (m *Member) MergeOrphansForTest(version uint64, entries int, snaps map[int32]map[string][]byte) {
	var orphans []orphan
	for p, bySvc := range snaps {
		o := orphan{p: p, snaps: map[int][]byte{}}
		for name, b := range bySvc {
			o.snaps[m.svcIndex[name]] = b
		}
		orphans = append(orphans, o)
	}
	m.mergeOrphans(version, len(snaps), entries, orphans)
}

// UseBackupTransportForTest makes m open the links of its later
// probe-or-copy rounds to backups with dial instead of member connections
// (nil: member connections again), and breaks every stream it feeds as an
// owner, so that each backup gets a new round through dial.
func (m *Member) UseBackupTransportForTest(dial func(p int32, backup string) backup.Transport) {
	if dial == nil {
		m.backupDial.Store(nil)
	} else {
		m.backupDial.Store(&dial)
	}
	for _, s := range m.slots {
		s.mu.Lock()
		if s.role == 0 {
			for _, tg := range s.targets {
				tg.prog.Broken()
				m.scheduleResync(s.id, tg.name)
			}
		}
		s.mu.Unlock()
	}
}

// BackupHandlerForTest is m's backup side: what it does with a record,
// probe or copy chunk from an owner.
func (m *Member) BackupHandlerForTest() backup.Handler { return m.backupSide() }
