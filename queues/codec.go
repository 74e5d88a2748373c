package queues

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/shoalgrid/shoal/internal/varbin"
	"github.com/shoalgrid/shoal/op"
)

// The queue codecs are plain uvarint/length-prefixed binary, read with
// internal/varbin's Reader: every length is checked against the bytes that
// remain before anything is allocated, so a peer's bytes can never make the
// decoder allocate more than they hold or recurse.

// copied reads a length-prefixed byte string into memory of its own: the
// state keeps items and waiter values long after the request or snapshot
// they came in is gone.
func copied(r *varbin.Reader) []byte { return bytes.Clone(r.Bytes()) }

// encodeItems encodes a batch of items (OfferAll, Drain).
func encodeItems(items [][]byte) []byte {
	n := binary.MaxVarintLen64
	for _, it := range items {
		n += len(it) + binary.MaxVarintLen64
	}
	b := make([]byte, 0, n)
	b = binary.AppendUvarint(b, uint64(len(items)))
	for _, it := range items {
		b = varbin.AppendBytes(b, it)
	}
	return b
}

// decodeItems decodes encodeItems' output, refusing more than max items.
func decodeItems(b []byte, max int) ([][]byte, error) {
	r := varbin.NewReader(b)
	n := r.Count(1)
	if r.Err() == nil && n > max {
		return nil, fmt.Errorf("%d items: more than the batch limit of %d", n, max)
	}
	out := make([][]byte, 0, n)
	for i := 0; i < n && r.Err() == nil; i++ {
		out = append(out, copied(&r))
	}
	if err := r.Done(); err != nil {
		return nil, err
	}
	return out, nil
}

// encodeDelivery encodes a Take's answer: the delivery count and the item.
func encodeDelivery(count uint32, data []byte) []byte {
	b := make([]byte, 0, binary.MaxVarintLen32+len(data))
	b = binary.AppendUvarint(b, uint64(count))
	return append(b, data...)
}

func decodeDelivery(b []byte) (count uint32, data []byte, err error) {
	c, n := binary.Uvarint(b)
	if n <= 0 || c > 1<<32-1 {
		return 0, nil, fmt.Errorf("%w: bad delivery encoding", op.ErrBadRequest)
	}
	return uint32(c), b[n:], nil
}

const snapshotVersion = 1

// Snapshot encodes every queue of the partition: ready items, in-flight
// deliveries, waiters and delivery counters (op.State).
func (s *state) Snapshot(time.Time) ([]byte, error) {
	names := make([]string, 0, len(s.queues))
	for name := range s.queues {
		names = append(names, name)
	}
	slices.Sort(names)
	b := []byte{snapshotVersion}
	b = binary.AppendUvarint(b, uint64(len(names)))
	for _, name := range names {
		q := s.queues[name]
		b = varbin.AppendString(b, name)
		b = binary.AppendUvarint(b, q.nextID)
		b = binary.AppendUvarint(b, uint64(q.ready.len()))
		for i := 0; i < q.ready.len(); i++ {
			it := q.ready.at(i)
			b = binary.AppendUvarint(b, uint64(it.count))
			b = varbin.AppendBytes(b, it.data)
		}
		ids := make([]uint64, 0, len(q.inflight))
		for id := range q.inflight {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		b = binary.AppendUvarint(b, uint64(len(ids)))
		for _, id := range ids {
			d := q.inflight[id]
			b = binary.AppendUvarint(b, d.id)
			b = binary.AppendUvarint(b, uint64(d.it.count))
			b = varbin.AppendBytes(b, d.it.data)
			b = binary.AppendUvarint(b, d.session)
			b = binary.AppendVarint(b, d.deadline)
		}
		for _, ws := range [][]waiter{q.takers, q.offerers} {
			b = binary.AppendUvarint(b, uint64(len(ws)))
			for _, w := range ws {
				b = binary.AppendUvarint(b, w.call.Origin)
				b = binary.AppendUvarint(b, w.call.Seq)
				b = append(b, w.op)
				b = binary.AppendVarint(b, w.vis)
				b = binary.AppendUvarint(b, w.session)
				b = varbin.AppendBytes(b, w.data)
			}
		}
	}
	return b, nil
}

// Restore replaces the state with a snapshot (op.State).
func (s *state) Restore(_ time.Time, snap []byte) error {
	if len(snap) == 0 || snap[0] != snapshotVersion {
		return fmt.Errorf("%w: queue snapshot: unknown version", op.ErrBadRequest)
	}
	r := varbin.NewReader(snap[1:])
	queues := map[string]*queue{}
	total := 0
	nq := r.Count(3)
	for i := 0; i < nq && r.Err() == nil; i++ {
		name := string(r.Bytes())
		q := &queue{name: name, rule: s.rule(name), inflight: map[uint64]*delivery{}}
		q.nextID = r.Uvarint()
		nr := r.Count(2)
		for j := 0; j < nr && r.Err() == nil; j++ {
			c := r.Uvarint()
			q.ready.pushBack(item{count: uint32(c), data: copied(&r)})
		}
		nf := r.Count(5)
		for j := 0; j < nf && r.Err() == nil; j++ {
			d := &delivery{id: r.Uvarint()}
			d.it.count = uint32(r.Uvarint())
			d.it.data = copied(&r)
			d.session = r.Uvarint()
			d.deadline = r.Varint()
			if r.Err() == nil && (d.id == 0 || d.id > q.nextID || q.inflight[d.id] != nil) {
				r.Fail(fmt.Errorf("queue %q: bad delivery id %d", trunc(name), d.id))
			}
			q.inflight[d.id] = d
		}
		for k := 0; k < 2 && r.Err() == nil; k++ {
			nw := r.Count(6)
			ws := make([]waiter, 0, nw)
			for j := 0; j < nw && r.Err() == nil; j++ {
				var w waiter
				w.call.Origin = r.Uvarint()
				w.call.Seq = r.Uvarint()
				w.op = r.Byte()
				w.vis = r.Varint()
				w.session = r.Uvarint()
				w.data = copied(&r)
				ws = append(ws, w)
			}
			if len(ws) == 0 {
				ws = nil
			}
			if k == 0 {
				q.takers = ws
			} else {
				q.offerers = ws
			}
		}
		if r.Err() == nil && queues[name] != nil {
			r.Fail(fmt.Errorf("queue %q twice", trunc(name)))
		}
		queues[name] = q
		total += q.size()
	}
	if err := r.Done(); err != nil {
		return fmt.Errorf("%w: queue snapshot: %v", op.ErrBadRequest, err)
	}
	s.queues, s.n = queues, total
	return nil
}
