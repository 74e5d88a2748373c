package grid

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/internal/mpsafe"
	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/partition"
	"github.com/shoalgrid/shoal/wire"
)

// snapshot is a full copy of one partition on one member: every service's
// state and the request-identity table.
type snapshot struct {
	services map[string][]byte
	dedup    []dedupRecord
}

// snapshotLocked encodes the partition; s.mu must be held. It returns the
// bytes and the number of entries.
func (s *slot) snapshotLocked(m *Member) ([]byte, int, error) {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
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
	recs := s.dedup.records()
	err := enc.EncodeArrayLen(len(names))
	for i := range names {
		err = errorsJoin(err, enc.EncodeString(names[i]), enc.EncodeBytes(blobs[i]))
	}
	err = errorsJoin(err, enc.EncodeArrayLen(len(recs)))
	for _, r := range recs {
		err = errorsJoin(err, enc.EncodeArrayLen(9), enc.EncodeUint(r.Origin), enc.EncodeUint(r.Call), enc.EncodeUint(r.Seq), enc.EncodeInt(r.At),
			enc.EncodeUint(uint64(r.Code)), enc.EncodeString(r.Msg), enc.EncodeBool(r.Found), enc.EncodeBytes(r.Value), enc.EncodeInt(r.Num))
	}
	if err != nil {
		return nil, 0, fmt.Errorf("%w: encode partition %d: %v", op.ErrInternal, s.id, err)
	}
	return buf.Bytes(), n, nil
}

func errorsJoin(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// decodeSnapshot reads a snapshot without trusting its length prefixes
// beyond the bytes present.
func decodeSnapshot(b []byte) (*snapshot, error) {
	bad := func(what string, err error) error {
		return fmt.Errorf("%w: partition snapshot: %s: %v", op.ErrBadRequest, what, err)
	}
	if err := mpsafe.Check(b, wire.MaxDepth); err != nil {
		return nil, fmt.Errorf("%w: partition snapshot: %w", op.ErrBadRequest, err)
	}
	dec := msgpack.NewDecoder(bytes.NewReader(b))
	n, err := dec.DecodeArrayLen()
	if err != nil || n < 0 || n > len(b) {
		return nil, bad("services", err)
	}
	snap := &snapshot{services: map[string][]byte{}}
	for range n {
		name, err := dec.DecodeString()
		if err != nil {
			return nil, bad("service name", err)
		}
		blob, err := dec.DecodeBytes()
		if err != nil {
			return nil, bad("service state", err)
		}
		snap.services[name] = blob
	}
	n, err = dec.DecodeArrayLen()
	if err != nil || n < 0 || n > len(b) {
		return nil, bad("identities", err)
	}
	for range n {
		var r dedupRecord
		var code uint64
		l, err := dec.DecodeArrayLen()
		if err == nil && l != 9 {
			err = fmt.Errorf("%d fields", l)
		}
		if err == nil {
			r.Origin, err = dec.DecodeUint64()
		}
		if err == nil {
			r.Call, err = dec.DecodeUint64()
		}
		if err == nil {
			r.Seq, err = dec.DecodeUint64()
		}
		if err == nil {
			r.At, err = dec.DecodeInt64()
		}
		if err == nil {
			code, err = dec.DecodeUint64()
			r.Code = uint16(code)
		}
		if err == nil {
			r.Msg, err = dec.DecodeString()
		}
		if err == nil {
			r.Found, err = dec.DecodeBool()
		}
		if err == nil {
			r.Value, err = dec.DecodeBytes()
		}
		if err == nil {
			r.Num, err = dec.DecodeInt64()
		}
		if err != nil {
			return nil, bad("identity", err)
		}
		snap.dedup = append(snap.dedup, r)
	}
	return snap, nil
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
			if !(tg.synced && tg.acked >= s.seq) {
				lag = tg
				break
			}
		}
		if lag == nil {
			return nil
		}
		if !lag.streaming {
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
