package grid

import "github.com/shoalgrid/shoal/partition"

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

// SendLegacyRecordsForTest makes m ship backup records as sysBackup
// requests, as it does to a member without wire.CapRecords.
func (m *Member) SendLegacyRecordsForTest(on bool) { m.legacyRecords.Store(on) }
