package locks

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/shoalgrid/shoal/internal/varbin"
	"github.com/shoalgrid/shoal/op"
)

// Payload codecs of the lock service, over encoding/binary varints and
// internal/varbin's Reader: a decoder checks every declared count and length
// against the bytes actually left, so a forged length fails instead of
// allocating, and fails on trailing bytes.

// Codec versions tag each layout so a future one can be told apart during a
// rolling upgrade.
const (
	snapshotVersion = 1
	statusVersion   = 1
	eventVersion    = 1
)

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
	b := binary.AppendUvarint(make([]byte, 0, 16), uint64(a.limit))
	if a.attempt != 0 {
		b = binary.AppendUvarint(b, a.attempt)
	}
	return b
}

func decodeArgs(b []byte) (args, error) {
	var a args
	if len(b) == 0 {
		return a, nil
	}
	r := varbin.NewReader(b)
	l := r.Uvarint()
	if r.Err() == nil && l > maxHolds {
		r.Fail(fmt.Errorf("reentrancy limit %d (maximum %d)", l, maxHolds))
	}
	a.limit = uint32(l)
	if r.Err() == nil && r.Len() > 0 {
		a.attempt = r.Uvarint()
	}
	if err := r.Done(); err != nil {
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
	b := append(make([]byte, 0, 64+len(st.Name)+len(st.Holder.Owner)), statusVersion)
	b = varbin.AppendString(b, st.Name)
	b = varbin.AppendBool(b, st.Held)
	b = varbin.AppendBool(b, st.Mine)
	b = varbin.AppendBool(b, st.LeaseEnded)
	b = binary.AppendUvarint(b, st.Holder.Session)
	b = varbin.AppendString(b, st.Holder.Owner)
	b = binary.AppendUvarint(b, st.Token)
	b = binary.AppendUvarint(b, uint64(st.Count))
	var lease int64
	if !st.LeaseEnd.IsZero() {
		lease = st.LeaseEnd.UnixNano()
	}
	b = binary.AppendVarint(b, lease)
	b = binary.AppendUvarint(b, uint64(st.Waiters))
	b = binary.AppendUvarint(b, uint64(len(st.Queue)))
	for _, h := range st.Queue {
		b = binary.AppendUvarint(b, h.Session)
		b = varbin.AppendString(b, h.Owner)
	}
	return b
}

func decodeStatus(b []byte) (Status, error) {
	var st Status
	r := varbin.NewReader(b)
	if v := r.Byte(); r.Err() == nil && v != statusVersion {
		return st, fmt.Errorf("locks: unsupported status version %d", v)
	}
	st.Name = r.String(maxName)
	st.Held = r.Bool()
	st.Mine = r.Bool()
	st.LeaseEnded = r.Bool()
	st.Holder.Session = r.Uvarint()
	st.Holder.Owner = r.String(MaxOwnerLen)
	st.Token = r.Uvarint()
	st.Count = int(min(r.Uvarint(), maxHolds))
	if lease := r.Varint(); lease != 0 {
		st.LeaseEnd = time.Unix(0, lease)
	}
	st.Waiters = int(min(r.Uvarint(), 1<<40))
	n := r.Count(2)
	for range n {
		st.Queue = append(st.Queue, Holder{Session: r.Uvarint(), Owner: r.String(MaxOwnerLen)})
	}
	if err := r.Done(); err != nil {
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
	b := append(make([]byte, 0, 24+len(e.owner)), eventVersion, byte(e.kind))
	b = binary.AppendUvarint(b, e.session)
	b = varbin.AppendString(b, e.owner)
	b = binary.AppendVarint(b, e.token)
	return b
}

func decodeEvent(b []byte) (event, error) {
	var e event
	r := varbin.NewReader(b)
	if v := r.Byte(); r.Err() == nil && v != eventVersion {
		return e, fmt.Errorf("locks: unsupported event version %d", v)
	}
	e.kind = eventKind(r.Byte())
	if r.Err() == nil && (e.kind == 0 || e.kind >= eventEnd) {
		r.Fail(fmt.Errorf("unknown event kind %d", e.kind))
	}
	e.session = r.Uvarint()
	e.owner = r.String(MaxOwnerLen)
	e.token = r.Varint()
	if err := r.Done(); err != nil {
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
	b := append(make([]byte, 0, size), snapshotVersion)
	b = binary.AppendVarint(b, s.last)
	b = binary.AppendUvarint(b, uint64(len(names)))
	for _, name := range names {
		l := s.locks[name]
		b = varbin.AppendString(b, name)
		b = varbin.AppendBool(b, l.held)
		if l.held {
			b = binary.AppendUvarint(b, l.h.session)
			b = varbin.AppendString(b, l.h.owner)
			b = binary.AppendVarint(b, l.h.token)
			b = binary.AppendUvarint(b, uint64(l.h.count))
			b = binary.AppendVarint(b, l.h.lease)
			b = binary.AppendUvarint(b, l.h.call.Origin)
			b = binary.AppendUvarint(b, l.h.call.Seq)
			b = binary.AppendUvarint(b, l.h.attempt)
		}
		b = binary.AppendUvarint(b, uint64(len(l.waiters)))
		for _, x := range l.waiters {
			b = binary.AppendUvarint(b, x.call.Origin)
			b = binary.AppendUvarint(b, x.call.Seq)
			b = varbin.AppendString(b, x.owner)
			b = binary.AppendVarint(b, x.leaseMS)
			b = binary.AppendUvarint(b, uint64(x.limit))
			b = binary.AppendUvarint(b, x.attempt)
			b = binary.AppendVarint(b, x.deadline)
		}
	}
	return b
}

// decodeSnapshot loads a snapshot into the empty state into, checking the
// state's invariants (no duplicate names, no waiters on a free lock,
// positive tokens and counts not above the counter).
func decodeSnapshot(b []byte, into *state) error {
	r := varbin.NewReader(b)
	if v := r.Byte(); r.Err() == nil && v != snapshotVersion {
		return fmt.Errorf("unsupported snapshot version %d", v)
	}
	into.last = r.Varint()
	if r.Err() == nil && into.last < 0 {
		r.Fail(fmt.Errorf("negative token counter %d", into.last))
	}
	n := r.Count(3)
	for range n {
		if r.Err() != nil {
			break
		}
		l := &lock{name: r.String(maxName)}
		l.held = r.Bool()
		if l.held {
			l.h.session = r.Uvarint()
			l.h.owner = r.String(MaxOwnerLen)
			l.h.token = r.Varint()
			c := r.Uvarint()
			l.h.lease = r.Varint()
			l.h.call = op.CallID{Origin: r.Uvarint(), Seq: r.Uvarint()}
			l.h.attempt = r.Uvarint()
			switch {
			case r.Err() != nil:
			case l.h.token <= 0 || l.h.token > into.last:
				r.Fail(fmt.Errorf("lock %q: token %d outside 1..%d", l.name, l.h.token, into.last))
			case c == 0 || c > maxHolds:
				r.Fail(fmt.Errorf("lock %q: hold count %d", l.name, c))
			}
			l.h.count = uint32(c)
		}
		nw := r.Count(7)
		for range nw {
			x := waiter{call: op.CallID{Origin: r.Uvarint(), Seq: r.Uvarint()}, owner: r.String(MaxOwnerLen), leaseMS: r.Varint()}
			lim := r.Uvarint()
			if r.Err() == nil && lim > maxHolds {
				r.Fail(fmt.Errorf("lock %q: waiter limit %d", l.name, lim))
			}
			x.limit = uint32(lim)
			x.attempt = r.Uvarint()
			x.deadline = r.Varint()
			if r.Err() != nil {
				break
			}
			l.waiters = append(l.waiters, x)
		}
		switch {
		case r.Err() != nil:
		case l.name == "":
			r.Fail(errors.New("empty lock name"))
		case into.locks[l.name] != nil:
			r.Fail(fmt.Errorf("lock %q twice", l.name))
		case !l.held:
			r.Fail(fmt.Errorf("lock %q is stored but not held", l.name))
		}
		into.locks[l.name] = l
	}
	return r.Done()
}
