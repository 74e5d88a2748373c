package queues

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/shoalgrid/shoal/op"
)

// The queue codecs are plain uvarint/length-prefixed binary: every length
// is checked against the bytes that remain before anything is allocated, so
// a peer's bytes can never make the decoder allocate more than they hold or
// recurse.

var errShort = errors.New("truncated input")

func appendUvarint(b []byte, v uint64) []byte { return binary.AppendUvarint(b, v) }

func appendBytes(b, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

// reader decodes what the append functions wrote.
type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errShort
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errShort
		return 0
	}
	r.b = r.b[n:]
	return v
}

// count reads a count of elements that each take at least min bytes, so a
// lying count fails before any allocation.
func (r *reader) count(min int) int {
	n := r.uvarint()
	if r.err == nil && n > uint64(len(r.b)/min) {
		r.err = fmt.Errorf("count %d exceeds the %d bytes left", n, len(r.b))
		return 0
	}
	return int(n)
}

func (r *reader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.err = errShort
		return nil
	}
	p := make([]byte, n)
	copy(p, r.b)
	r.b = r.b[n:]
	return p
}

func (r *reader) byte() byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) == 0 {
		r.err = errShort
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) done() error {
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%d trailing bytes", len(r.b))
	}
	return r.err
}

// encodeItems encodes a batch of items (OfferAll, Drain).
func encodeItems(items [][]byte) []byte {
	n := binary.MaxVarintLen64
	for _, it := range items {
		n += len(it) + binary.MaxVarintLen64
	}
	b := make([]byte, 0, n)
	b = appendUvarint(b, uint64(len(items)))
	for _, it := range items {
		b = appendBytes(b, it)
	}
	return b
}

// decodeItems decodes encodeItems' output, refusing more than max items.
func decodeItems(b []byte, max int) ([][]byte, error) {
	r := reader{b: b}
	n := r.count(1)
	if r.err == nil && n > max {
		return nil, fmt.Errorf("%d items: more than the batch limit of %d", n, max)
	}
	out := make([][]byte, 0, n)
	for i := 0; i < n && r.err == nil; i++ {
		out = append(out, r.bytes())
	}
	if err := r.done(); err != nil {
		return nil, err
	}
	return out, nil
}

// encodeDelivery encodes a Take's answer: the delivery count and the item.
func encodeDelivery(count uint32, data []byte) []byte {
	b := make([]byte, 0, binary.MaxVarintLen32+len(data))
	b = appendUvarint(b, uint64(count))
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
	b = appendUvarint(b, uint64(len(names)))
	for _, name := range names {
		q := s.queues[name]
		b = appendBytes(b, []byte(name))
		b = appendUvarint(b, q.nextID)
		b = appendUvarint(b, uint64(q.ready.len()))
		for i := 0; i < q.ready.len(); i++ {
			it := q.ready.at(i)
			b = appendUvarint(b, uint64(it.count))
			b = appendBytes(b, it.data)
		}
		ids := make([]uint64, 0, len(q.inflight))
		for id := range q.inflight {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		b = appendUvarint(b, uint64(len(ids)))
		for _, id := range ids {
			d := q.inflight[id]
			b = appendUvarint(b, d.id)
			b = appendUvarint(b, uint64(d.it.count))
			b = appendBytes(b, d.it.data)
			b = appendUvarint(b, d.session)
			b = binary.AppendVarint(b, d.deadline)
		}
		for _, ws := range [][]waiter{q.takers, q.offerers} {
			b = appendUvarint(b, uint64(len(ws)))
			for _, w := range ws {
				b = appendUvarint(b, w.call.Origin)
				b = appendUvarint(b, w.call.Seq)
				b = append(b, w.op)
				b = binary.AppendVarint(b, w.vis)
				b = appendUvarint(b, w.session)
				b = appendBytes(b, w.data)
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
	r := reader{b: snap[1:]}
	queues := map[string]*queue{}
	total := 0
	nq := r.count(3)
	for i := 0; i < nq && r.err == nil; i++ {
		name := string(r.bytes())
		q := &queue{name: name, rule: s.rule(name), inflight: map[uint64]*delivery{}}
		q.nextID = r.uvarint()
		nr := r.count(2)
		for j := 0; j < nr && r.err == nil; j++ {
			c := r.uvarint()
			q.ready.pushBack(item{count: uint32(c), data: r.bytes()})
		}
		nf := r.count(5)
		for j := 0; j < nf && r.err == nil; j++ {
			d := &delivery{id: r.uvarint()}
			d.it.count = uint32(r.uvarint())
			d.it.data = r.bytes()
			d.session = r.uvarint()
			d.deadline = r.varint()
			if r.err == nil && (d.id == 0 || d.id > q.nextID || q.inflight[d.id] != nil) {
				r.err = fmt.Errorf("queue %q: bad delivery id %d", trunc(name), d.id)
			}
			q.inflight[d.id] = d
		}
		for k := 0; k < 2 && r.err == nil; k++ {
			nw := r.count(6)
			ws := make([]waiter, 0, nw)
			for j := 0; j < nw && r.err == nil; j++ {
				var w waiter
				w.call.Origin = r.uvarint()
				w.call.Seq = r.uvarint()
				w.op = r.byte()
				w.vis = r.varint()
				w.session = r.uvarint()
				w.data = r.bytes()
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
		if r.err == nil && queues[name] != nil {
			r.err = fmt.Errorf("queue %q twice", trunc(name))
		}
		queues[name] = q
		total += q.size()
	}
	if err := r.done(); err != nil {
		return fmt.Errorf("%w: queue snapshot: %v", op.ErrBadRequest, err)
	}
	s.queues, s.n = queues, total
	return nil
}
