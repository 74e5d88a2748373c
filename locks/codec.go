package locks

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/shoalgrid/shoal/op"
)

// Payload codecs of the lock service, hand-written over encoding/binary
// varints (structure packages import only op and the standard library). A
// decoder checks every declared count and length against the bytes actually
// left, so a forged length fails instead of allocating, and fails on
// trailing bytes.

// Codec versions tag each layout so a future one can be told apart during a
// rolling upgrade.
const (
	snapshotVersion = 1
	statusVersion   = 1
	eventVersion    = 1
)

type writer struct{ b []byte }

func (w *writer) byte(c byte)     { w.b = append(w.b, c) }
func (w *writer) uint(v uint64)   { w.b = binary.AppendUvarint(w.b, v) }
func (w *writer) int(v int64)     { w.b = binary.AppendVarint(w.b, v) }
func (w *writer) string(s string) { w.uint(uint64(len(s))); w.b = append(w.b, s...) }
func (w *writer) bool(v bool) {
	if v {
		w.byte(1)
	} else {
		w.byte(0)
	}
}

type reader struct {
	b   []byte
	err error
}

var errShort = errors.New("truncated payload")

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

func (r *reader) byte() byte {
	if r.err != nil || len(r.b) == 0 {
		r.fail(errShort)
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) uint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail(errors.New("bad unsigned varint"))
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) int() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail(errors.New("bad varint"))
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bool() bool {
	switch r.byte() {
	case 0:
		return false
	case 1:
		return true
	}
	r.fail(errors.New("bad boolean"))
	return false
}

// count reads a collection length; every element takes at least min bytes,
// so a larger count than the bytes left is a lie.
func (r *reader) count(min int) int {
	n := r.uint()
	if r.err == nil && n > uint64(len(r.b)/min) {
		r.fail(fmt.Errorf("count %d exceeds payload", n))
		return 0
	}
	return int(n)
}

func (r *reader) string(limit int) string {
	n := r.uint()
	if r.err != nil {
		return ""
	}
	if n > uint64(len(r.b)) {
		r.fail(errShort)
		return ""
	}
	if n > uint64(limit) {
		r.fail(fmt.Errorf("string of %d bytes (limit %d)", n, limit))
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func (r *reader) done() error {
	if r.err == nil && len(r.b) != 0 {
		r.fail(fmt.Errorf("%d trailing bytes", len(r.b)))
	}
	return r.err
}

// maxName bounds a lock name in a payload; the wire's key limit is lower.
const maxName = 1 << 20

// args are the optional arguments of OpLock, OpTryLock and OpAbandon, in
// Request.Aux: uvarint reentrancy limit, then uvarint attempt id. An empty
// Aux means both are 0; the attempt may be left out.
type args struct {
	limit   uint32
	attempt uint64
}

func encodeArgs(a args) []byte {
	if a == (args{}) {
		return nil
	}
	w := writer{b: make([]byte, 0, 16)}
	w.uint(uint64(a.limit))
	if a.attempt != 0 {
		w.uint(a.attempt)
	}
	return w.b
}

func decodeArgs(b []byte) (args, error) {
	var a args
	if len(b) == 0 {
		return a, nil
	}
	r := reader{b: b}
	l := r.uint()
	if r.err == nil && l > maxHolds {
		r.fail(fmt.Errorf("reentrancy limit %d (maximum %d)", l, maxHolds))
	}
	a.limit = uint32(l)
	if r.err == nil && len(r.b) > 0 {
		a.attempt = r.uint()
	}
	if err := r.done(); err != nil {
		return args{}, fmt.Errorf("bad arguments: %w", err)
	}
	return a, nil
}

// Holder identifies who holds or waits for a lock: a session (one per
// client process or member; see op.Request.Origin) and the owner id chosen
// by the caller.
type Holder struct {
	Session uint64
	Owner   string
}

// String formats h as session/owner.
func (h Holder) String() string { return fmt.Sprintf("%016x/%s", h.Session, h.Owner) }

// Status is a snapshot of one lock, as the partition owner saw it.
type Status struct {
	// Name is the lock's name.
	Name string
	// Held reports whether someone holds the lock.
	Held bool
	// Holder is who holds it (zero when not held).
	Holder Holder
	// Token is the holder's fencing token.
	Token uint64
	// Count is the holder's hold count (re-entries + 1).
	Count int
	// LeaseEnd is when the holder's lease ends (zero: no lease).
	LeaseEnd time.Time
	// LeaseEnded reports that the lease ended and the release is pending.
	LeaseEnded bool
	// Mine reports whether the asking handle (its session and owner id)
	// is the holder.
	Mine bool
	// Waiters counts the callers queued for the lock.
	Waiters int
	// Queue lists the first waiters (at most 100) in grant order.
	Queue []Holder
}

// encodeStatus encodes st as the OpStatus payload: version byte, name,
// held, mine, lease ended (booleans), session, owner, token, count, lease
// end (Unix nanos, 0 none), waiter count, listed waiters (session, owner).
func encodeStatus(st *Status) []byte {
	w := writer{b: make([]byte, 0, 64+len(st.Name)+len(st.Holder.Owner))}
	w.byte(statusVersion)
	w.string(st.Name)
	w.bool(st.Held)
	w.bool(st.Mine)
	w.bool(st.LeaseEnded)
	w.uint(st.Holder.Session)
	w.string(st.Holder.Owner)
	w.uint(st.Token)
	w.uint(uint64(st.Count))
	var lease int64
	if !st.LeaseEnd.IsZero() {
		lease = st.LeaseEnd.UnixNano()
	}
	w.int(lease)
	w.uint(uint64(st.Waiters))
	w.uint(uint64(len(st.Queue)))
	for _, h := range st.Queue {
		w.uint(h.Session)
		w.string(h.Owner)
	}
	return w.b
}

func decodeStatus(b []byte) (Status, error) {
	var st Status
	r := reader{b: b}
	if v := r.byte(); r.err == nil && v != statusVersion {
		return st, fmt.Errorf("locks: unsupported status version %d", v)
	}
	st.Name = r.string(maxName)
	st.Held = r.bool()
	st.Mine = r.bool()
	st.LeaseEnded = r.bool()
	st.Holder.Session = r.uint()
	st.Holder.Owner = r.string(MaxOwnerLen)
	st.Token = r.uint()
	st.Count = int(min(r.uint(), maxHolds))
	if lease := r.int(); lease != 0 {
		st.LeaseEnd = time.Unix(0, lease)
	}
	st.Waiters = int(min(r.uint(), 1<<40))
	n := r.count(2)
	for range n {
		st.Queue = append(st.Queue, Holder{Session: r.uint(), Owner: r.string(MaxOwnerLen)})
	}
	if err := r.done(); err != nil {
		return Status{}, fmt.Errorf("locks: decode status: %w", err)
	}
	return st, nil
}

// eventKind says what happened to a lock in an Event.
type eventKind uint8

const (
	eventAcquired     eventKind = iota + 1 // a holder was granted the lock
	eventReleased                          // its holder unlocked it
	eventExpired                           // its holder's lease ended
	eventSessionEnded                      // its holder's session ended
	eventForced                            // an operator force-unlocked it
	eventEnd
)

// event is the payload the state emits (op.Exec.Emit) when a lock changes
// hands: version byte, kind byte, session, owner, token.
type event struct {
	kind    eventKind
	session uint64
	owner   string
	token   int64
}

func encodeEvent(e event) []byte {
	w := writer{b: make([]byte, 0, 24+len(e.owner))}
	w.byte(eventVersion)
	w.byte(byte(e.kind))
	w.uint(e.session)
	w.string(e.owner)
	w.int(e.token)
	return w.b
}

func decodeEvent(b []byte) (event, error) {
	var e event
	r := reader{b: b}
	if v := r.byte(); r.err == nil && v != eventVersion {
		return e, fmt.Errorf("locks: unsupported event version %d", v)
	}
	e.kind = eventKind(r.byte())
	if r.err == nil && (e.kind == 0 || e.kind >= eventEnd) {
		r.fail(fmt.Errorf("unknown event kind %d", e.kind))
	}
	e.session = r.uint()
	e.owner = r.string(MaxOwnerLen)
	e.token = r.int()
	if err := r.done(); err != nil {
		return event{}, fmt.Errorf("locks: decode event: %w", err)
	}
	return e, nil
}

// encodeSnapshot writes the partition as: version byte, last token, lock
// count, then per lock (sorted by name): name, held, [session, owner,
// token, count, lease, call origin, call seq, attempt when held], waiter
// count, then per waiter: origin, seq, owner, lease ms, limit, attempt,
// deadline.
func encodeSnapshot(s *state) []byte {
	names := make([]string, 0, len(s.locks))
	size := 16
	for name, l := range s.locks {
		names = append(names, name)
		size += 64 + len(name) + len(l.h.owner) + 48*len(l.waiters)
	}
	slices.Sort(names)
	w := writer{b: make([]byte, 0, size)}
	w.byte(snapshotVersion)
	w.int(s.last)
	w.uint(uint64(len(names)))
	for _, name := range names {
		l := s.locks[name]
		w.string(name)
		w.bool(l.held)
		if l.held {
			w.uint(l.h.session)
			w.string(l.h.owner)
			w.int(l.h.token)
			w.uint(uint64(l.h.count))
			w.int(l.h.lease)
			w.uint(l.h.call.Origin)
			w.uint(l.h.call.Seq)
			w.uint(l.h.attempt)
		}
		w.uint(uint64(len(l.waiters)))
		for _, x := range l.waiters {
			w.uint(x.call.Origin)
			w.uint(x.call.Seq)
			w.string(x.owner)
			w.int(x.leaseMS)
			w.uint(uint64(x.limit))
			w.uint(x.attempt)
			w.int(x.deadline)
		}
	}
	return w.b
}

// decodeSnapshot loads a snapshot into the empty state into, checking the
// state's invariants (no duplicate names, no waiters on a free lock,
// positive tokens and counts not above the counter).
func decodeSnapshot(b []byte, into *state) error {
	r := reader{b: b}
	if v := r.byte(); r.err == nil && v != snapshotVersion {
		return fmt.Errorf("unsupported snapshot version %d", v)
	}
	into.last = r.int()
	if r.err == nil && into.last < 0 {
		r.fail(fmt.Errorf("negative token counter %d", into.last))
	}
	n := r.count(3)
	for range n {
		if r.err != nil {
			break
		}
		l := &lock{name: r.string(maxName)}
		l.held = r.bool()
		if l.held {
			l.h.session = r.uint()
			l.h.owner = r.string(MaxOwnerLen)
			l.h.token = r.int()
			c := r.uint()
			l.h.lease = r.int()
			l.h.call = op.CallID{Origin: r.uint(), Seq: r.uint()}
			l.h.attempt = r.uint()
			switch {
			case r.err != nil:
			case l.h.token <= 0 || l.h.token > into.last:
				r.fail(fmt.Errorf("lock %q: token %d outside 1..%d", l.name, l.h.token, into.last))
			case c == 0 || c > maxHolds:
				r.fail(fmt.Errorf("lock %q: hold count %d", l.name, c))
			}
			l.h.count = uint32(c)
		}
		nw := r.count(7)
		for range nw {
			x := waiter{call: op.CallID{Origin: r.uint(), Seq: r.uint()}, owner: r.string(MaxOwnerLen), leaseMS: r.int()}
			lim := r.uint()
			if r.err == nil && lim > maxHolds {
				r.fail(fmt.Errorf("lock %q: waiter limit %d", l.name, lim))
			}
			x.limit = uint32(lim)
			x.attempt = r.uint()
			x.deadline = r.int()
			if r.err != nil {
				break
			}
			l.waiters = append(l.waiters, x)
		}
		switch {
		case r.err != nil:
		case l.name == "":
			r.fail(errors.New("empty lock name"))
		case into.locks[l.name] != nil:
			r.fail(fmt.Errorf("lock %q twice", l.name))
		case !l.held:
			r.fail(fmt.Errorf("lock %q is stored but not held", l.name))
		}
		into.locks[l.name] = l
	}
	return r.done()
}
