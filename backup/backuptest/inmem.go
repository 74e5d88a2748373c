// Package backuptest connects a partition owner's side of replication to a
// backup's side in memory, for tests: Inmem is a backup.Transport whose
// messages reach a backup.Handler only when the test delivers them, so a
// test decides exactly what arrives, what is lost, what waits and when the
// connection breaks, with no goroutine and no timing.
package backuptest

import (
	"bytes"
	"context"
	"fmt"
	"sync"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/backup"
	"github.com/shoalgrid/shoal/op"
)

// Kind is what a queued message is.
type Kind uint8

// Kinds.
const (
	Record Kind = iota + 1
	Probe
	Chunk
)

// String names the kind.
func (k Kind) String() string {
	switch k {
	case Record:
		return "record"
	case Probe:
		return "probe"
	case Chunk:
		return "chunk"
	}
	return "unknown"
}

type message struct {
	kind  Kind
	rec   []byte // the record as backup.EncodeRecord wrote it
	probe backup.Probe
	chunk backup.Chunk
	done  backup.Done
}

// Inmem is a backup.Transport to one backup.Handler, standing for one
// connection. Sent messages queue in order; Deliver hands the first one to
// the handler and its answer to the sender's Done, Drop loses it, and
// Disconnect fails everything queued, as a closed connection does. Records
// cross it encoded (backup.EncodeRecord, Decoder.Record), so a test also
// runs the record codec, and nothing a sender passes is kept.
//
// Sending never calls the handler or a Done: like a real transport it only
// enqueues, so an owner may send under its own lock. Deliver, Drop and
// Disconnect call them on the test's goroutine, with no lock of Inmem held.
// Safe for concurrent use.
type Inmem struct {
	h backup.Handler

	mu     sync.Mutex
	queue  []message
	closed bool
	onSend func()
}

// NewInmem returns a connected transport to h.
func NewInmem(h backup.Handler) *Inmem { return &Inmem{h: h} }

var _ backup.Transport = (*Inmem)(nil)

func (t *Inmem) send(ctx context.Context, m message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return backup.ErrDisconnected
	}
	t.queue = append(t.queue, m)
	f := t.onSend
	t.mu.Unlock()
	if f != nil {
		f()
	}
	return nil
}

// OnSend makes f run after every message queued (on the sender's
// goroutine, maybe under the sender's locks: f must not block or call
// back into the sender), so a test that delivers from a goroutine of its
// own knows when there is something to deliver.
func (t *Inmem) OnSend(f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.onSend = f
}

// Record queues the record r.
func (t *Inmem) Record(ctx context.Context, r *backup.Record, done backup.Done) error {
	var buf bytes.Buffer
	if err := backup.EncodeRecord(msgpack.NewEncoder(&buf), r); err != nil {
		return fmt.Errorf("%w: encode record: %v", op.ErrInternal, err)
	}
	return t.send(ctx, message{kind: Record, rec: buf.Bytes(), done: done})
}

// Probe queues the probe p.
func (t *Inmem) Probe(ctx context.Context, p backup.Probe, done backup.Done) error {
	return t.send(ctx, message{kind: Probe, probe: p, done: done})
}

// Chunk queues the chunk c (its data copied).
func (t *Inmem) Chunk(ctx context.Context, c backup.Chunk, done backup.Done) error {
	c.Data = bytes.Clone(c.Data)
	return t.send(ctx, message{kind: Chunk, chunk: c, done: done})
}

// Pending is the number of queued messages.
func (t *Inmem) Pending() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.queue)
}

// Next is the kind of the first queued message; ok is false when none is
// queued.
func (t *Inmem) Next() (k Kind, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.queue) == 0 {
		return 0, false
	}
	return t.queue[0].kind, true
}

func (t *Inmem) pop() (message, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.queue) == 0 {
		return message{}, false
	}
	m := t.queue[0]
	t.queue[0] = message{}
	t.queue = t.queue[1:]
	return m, true
}

// Deliver hands the first queued message to the handler and the handler's
// answer to the message's Done; it reports false when nothing was queued.
func (t *Inmem) Deliver() bool {
	m, ok := t.pop()
	if !ok {
		return false
	}
	m.done(t.handle(m), nil)
	return true
}

// DeliverLosingReply hands the first queued message to the handler but
// loses the answer (the backup applied it; the owner never hears so). It
// returns the lost answer; ok is false when nothing was queued.
func (t *Inmem) DeliverLosingReply() (resp *op.Response, ok bool) {
	m, ok := t.pop()
	if !ok {
		return nil, false
	}
	return t.handle(m), true
}

// DeliverAll delivers until the queue is empty (also what the Done calls
// send meanwhile) and returns how many messages it delivered.
func (t *Inmem) DeliverAll() int {
	n := 0
	for t.Deliver() {
		n++
	}
	return n
}

// Drop loses the first queued message: neither the handler nor its Done
// sees it. It reports false when nothing was queued.
func (t *Inmem) Drop() bool {
	_, ok := t.pop()
	return ok
}

// Disconnect closes the transport: every queued message's Done gets
// backup.ErrDisconnected, in order, and later sends return it.
func (t *Inmem) Disconnect() {
	t.mu.Lock()
	t.closed = true
	q := t.queue
	t.queue = nil
	t.mu.Unlock()
	for _, m := range q {
		m.done(nil, backup.ErrDisconnected)
	}
}

func (t *Inmem) handle(m message) *op.Response {
	switch m.kind {
	case Record:
		r, err := backup.NewDecoder().Record(m.rec)
		if err != nil {
			return &op.Response{Code: op.CodeBadRequest, Msg: err.Error()}
		}
		return t.h.HandleRecord(&r)
	case Probe:
		return t.h.HandleProbe(m.probe)
	default:
		return t.h.HandleChunk(m.chunk)
	}
}
