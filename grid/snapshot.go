package grid

import (
	"context"
	"fmt"
	"time"

	"github.com/shoalgrid/shoal/backup"
	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/partition"
)

// snapshotLocked encodes the partition; s.mu must be held. It returns the
// bytes and the number of entries.
func (s *slot) snapshotLocked(m *Member) ([]byte, int, error) {
	now := time.Now()
	var names []string
	var blobs [][]byte
	n := 0
	for i, st := range s.states {
		if st == nil || st.Len() == 0 {
			continue
		}
		b, err := st.Snapshot(now)
		if err != nil {
			return nil, 0, fmt.Errorf("%w: snapshot of %s in partition %d: %v", op.ErrInternal, m.services[i].Name(), s.id, err)
		}
		names = append(names, m.services[i].Name())
		blobs = append(blobs, b)
		n += st.Len()
	}
	data, err := backup.EncodeSnapshot(names, blobs, s.dedup.Records())
	if err != nil {
		return nil, 0, fmt.Errorf("partition %d: %w", s.id, err)
	}
	return data, n, nil
}

// waitSynced waits until every backup of partition p (owned here) holds
// every mutation.
func (m *Member) waitSynced(ctx context.Context, p int32) error {
	if p < 0 || int(p) >= len(m.slots) {
		return op.Errorf(op.CodeBadRequest, "partition %d out of range", p)
	}
	s := m.slots[p]
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if s.role != 0 {
			return op.Errorf(op.CodeWrongOwner, "%s does not own partition %d", m.cfg.Name, p)
		}
		var lag *target
		for _, tg := range s.targets {
			if !tg.prog.Holds(s.seq) {
				lag = tg
				break
			}
		}
		if lag == nil {
			return nil
		}
		if !lag.prog.Streaming() {
			m.scheduleResync(p, lag.name)
		}
		if lag.handoff == nil {
			lag.handoff = make(chan struct{})
		}
		ch := lag.handoff
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
		}
		s.mu.Lock()
		if ctx.Err() != nil {
			return fmt.Errorf("partition %d backups not in sync: %w", p, op.FromContext(ctx))
		}
	}
}

// pullLater fetches the coordinator's table in the background when a peer
// showed that a newer one exists.
func (m *Member) pullLater(version uint64) {
	if m.tableVersion() >= version || !m.pulling.CompareAndSwap(false, true) {
		return
	}
	m.spawn(func() {
		defer m.pulling.Store(false)
		c, ok := m.coordinatorInfo()
		if !ok || c.Name == m.cfg.Name {
			return
		}
		m.pullTable(m.ctx, partition.Member{Name: c.Name, Addr: c.Addr})
	})
}

func (m *Member) pullFromResponse(resp *op.Response, from string) {
	if t, err := partition.Unmarshal(resp.Value); err == nil {
		m.adopt(t, from)
	}
}

// PartitionLost reports partitions whose every replica was lost: they were
// started again empty at table Version.
type PartitionLost struct {
	Partitions []int32
	Version    uint64
}

// emitLost logs and delivers a partition-lost event.
func (m *Member) emitLost(t *partition.Table) {
	ev := Event{Type: PartitionsLost, Lost: &PartitionLost{Partitions: t.Lost, Version: t.Version}, Time: time.Now()}
	m.log.Error("partitions lost", "partitions", t.Lost, "version", t.Version)
	m.subsMu.Lock()
	defer m.subsMu.Unlock()
	for ch := range m.subs {
		select {
		case ch <- ev:
		default:
		}
	}
}
