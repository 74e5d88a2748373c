package maps

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoalgrid/shoal/op"
)

// EventKind says what happened to an entry.
type EventKind uint8

// Event kinds.
const (
	// EventAdded: a key that was absent got a value (Put, PutIfAbsent,
	// Incr, PutAll, a merge).
	EventAdded EventKind = EventKind(evAdded)
	// EventUpdated: a live key got a new value (Put, Replace,
	// CompareAndSwap, Incr, PutAll, a merge).
	EventUpdated EventKind = EventKind(evUpdated)
	// EventRemoved: a live key was removed (Delete, DeleteAll, Clear).
	EventRemoved EventKind = EventKind(evRemoved)
	// EventExpired: a key's TTL or max-idle ended. Both are decided by
	// the owner while the map is listened: see Map.Listen.
	EventExpired EventKind = EventKind(evExpired)
	// EventEvicted: an eviction policy removed a live key to make room
	// (max-entries or the member's memory guard).
	EventEvicted EventKind = EventKind(evEvicted)
	// EventLost (16: kinds from 16 up are not changes) is not a change: events of partition Partition were lost
	// before the next one (Missed of them, numbered from Seq; Missed 0
	// means an unknown number: the partition's numbering restarted). The
	// map may hold changes the listener has not seen: re-read what
	// matters. Key-filtered listeners get it too.
	EventLost EventKind = 16
)

// String names the kind.
func (k EventKind) String() string {
	switch k {
	case EventAdded:
		return "added"
	case EventUpdated:
		return "updated"
	case EventRemoved:
		return "removed"
	case EventExpired:
		return "expired"
	case EventEvicted:
		return "evicted"
	case EventLost:
		return "lost"
	}
	return fmt.Sprintf("event(%d)", uint8(k))
}

// Event is one change of a map entry as its partition's owner applied it.
type Event struct {
	Kind EventKind
	Key  string
	// Value is the new value (added, updated) or the last value (removed,
	// expired), when the listener asked for values (WithValues); nil
	// otherwise. The listener owns it.
	Value []byte
	// Partition is the partition of Key; Seq numbers the map's changes
	// in that partition (changes take consecutive numbers; an expired
	// event found by a write before the owner's expiry record carries the
	// number of the change before it).
	Partition int32
	Seq       uint64
	// Missed is set on EventLost: how many numbered events were lost.
	Missed uint64
	// Repeat reports that Seq is not above the last number seen from the
	// partition: the event was delivered before, or the partition's new
	// owner lacked changes whose events were already delivered (it was
	// promoted from a backup that had not received them: an asynchronous
	// backup, or none).
	Repeat bool
}

// ListenOption adjusts a listener.
type ListenOption func(*listenOptions)

type listenOptions struct {
	key     string
	keyed   bool
	values  bool
	refresh time.Duration
}

// ForKey makes the listener see only the events of key (and EventLost).
// Filtering happens in the listener: the owner still sends every event of
// the map.
func ForKey(key string) ListenOption {
	return func(o *listenOptions) { o.key, o.keyed = key, true }
}

// WithValues puts the entries' values into the events. Without it events
// carry keys only (and the owner sends values only while some listener
// of the map asked for them).
func WithValues() ListenOption {
	return func(o *listenOptions) { o.values = true }
}

// WithListenRefresh sets how often the listener renews its registration
// on every partition (default and at most 10s, a third of the 30s lease a
// registration holds on the owner): renewing keeps it, and re-creates it
// after the listener was paused for longer than the lease or a partition
// lost all its copies; a renewal costs one small replicated write per
// partition.
func WithListenRefresh(d time.Duration) ListenOption {
	return func(o *listenOptions) { o.refresh = d }
}

// ErrNoEvents is returned by Listen when the invoker does not deliver
// structure events.
var ErrNoEvents = fmt.Errorf("%w: the invoker does not deliver structure events", op.ErrBadRequest)

// Listen calls fn for every change of the map's entries (added, updated,
// removed, expired) until the returned function is called. fn runs on one
// goroutine at a time, in the order of each partition's changes (so in
// the order of each key's changes); it should return quickly.
//
// Delivery guarantee. On a healthy cluster (no member joins, leaves or
// fails, connections stay up, fn keeps up), every change acknowledged
// after Listen returned gives exactly one event to each listener, in
// per-key order. Events are sent by the key's owner once the synchronous
// backups hold the change, and numbered per partition (Event.Seq), so a
// listener sees a loss instead of missing it silently: Listen delivers
// EventLost before the event that revealed a gap. What can be lost: the
// events of changes the owner applied just before it failed (the backup
// promoted in its place holds them, but nobody sends their events), the
// events sent while a listener's subscription is re-registered with a
// member that joined or reconnected, events beyond 256 that fn falls
// behind, and all events of a partition while its registration is
// missing (until the next renewal, see WithListenRefresh); each shows as
// EventLost once the partition's next event arrives. Nothing is repeated
// on a retried write (the owner answers a retry from its retry table
// without applying it again); a partition whose new owner lacks
// acknowledged changes (an asynchronous backup, or none in the
// performance profile) numbers new changes again from an older number,
// which the listener sees as Event.Repeat.
//
// Expired events follow the same guarantee: every entry whose TTL or
// max-idle passes while the map is listened gives exactly one EventExpired
// on a healthy cluster, also when nobody reads or writes the key again.
// While a map is listened its owner decides TTL expiry: expired entries
// read as absent at once (TTL semantics are unchanged), but they leave
// through the owner's replicated expiry records, up to 100ms after their
// expiry, each with a numbered event. A write to the key (or Clear) that
// comes first reclaims the entry itself, and then its expired event
// carries the number of the change before it (a backup may no longer hold
// such an entry, so it cannot take a number of its own). Expiries
// recorded just before an owner fails can be lost like other changes
// (EventLost); the new owner continues expiring the rest.
//
// After stop returns fn is not called again, except for a call already
// running. ctx bounds the registration only. It fails with ErrNoEvents when the
// invoker cannot deliver events, and with op.ErrTooLarge when the map
// already has MaxListeners listeners. On clusters that check client tokens
// the read role on the map is enough.
func (m *Map) Listen(ctx context.Context, fn func(Event), opts ...ListenOption) (stop func(), err error) {
	if err := m.check(); err != nil {
		return nil, fmt.Errorf("maps: listen: %w", err)
	}
	if fn == nil {
		return nil, fmt.Errorf("maps: listen: %w: nil func", op.ErrBadRequest)
	}
	src, ok := m.inv.(op.EventSource)
	if !ok {
		return nil, fmt.Errorf("maps: listen on map %s: %w", op.Quote(m.name), ErrNoEvents)
	}
	o := listenOptions{}
	for _, fn := range opts {
		if fn != nil {
			fn(&o)
		}
	}
	if o.refresh <= 0 || o.refresh > listenLease/3 {
		o.refresh = listenLease / 3
	}
	l := &listener{m: m, fn: fn, o: o, id: rand.Uint64() | 1, parts: map[int32]*partTrack{}}
	unsub, err := src.SubscribeEvents(ctx, ServiceName, m.name, l.handle)
	if err != nil {
		return nil, fmt.Errorf("maps: listen on map %s: %w", op.Quote(m.name), err)
	}
	resps, err := m.inv.InvokeAll(ctx, l.request(OpListen))
	if err != nil {
		unsub()
		l.unlisten()
		return nil, fmt.Errorf("maps: listen on map %s: %w", op.Quote(m.name), err)
	}
	l.baseline(resps)
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go l.refreshLoop(rctx, done)
	var once sync.Once
	return func() {
		once.Do(func() {
			l.stopped.Store(true)
			cancel()
			<-done
			unsub()
			l.unlisten()
		})
	}, nil
}

// Listen is Map.Listen on the typed map; event values stay msgpack bytes
// (decode them with msgpack.Unmarshal into a V).
func (t *Typed[V]) Listen(ctx context.Context, fn func(Event), opts ...ListenOption) (stop func(), err error) {
	return t.Map().Listen(ctx, fn, opts...)
}

// listener is one Listen: its registration and the last event number
// seen per partition.
type listener struct {
	m  *Map
	fn func(Event)
	o  listenOptions
	id uint64

	mu    sync.Mutex
	parts map[int32]*partTrack
	// stopped is set by stop: an event already queued is not delivered.
	stopped atomic.Bool
}

type partTrack struct {
	epoch int64
	seq   uint64
	// fromListen: seq came from the registration's answer and no event
	// followed yet; events numbered up to it were emitted before the
	// registration and are no repeats.
	fromListen bool
}

func (l *listener) request(code uint8) *op.Request {
	req := l.m.request(code, "")
	req.Num = int64(l.id)
	if code == OpListen && l.o.values {
		req.Aux = []byte{listenFlagValues}
	}
	return req
}

// baseline records each partition's number at registration.
func (l *listener) baseline(resps []*op.Response) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for p, r := range resps {
		if r == nil {
			continue
		}
		epoch, n := binary.Uvarint(r.Value)
		if n <= 0 {
			continue
		}
		if l.parts[int32(p)] == nil {
			l.parts[int32(p)] = &partTrack{epoch: int64(epoch), seq: uint64(r.Num), fromListen: true}
		}
	}
}

// handle receives one event payload (on the subscription's goroutine).
func (l *listener) handle(payload []byte) {
	if l.stopped.Load() {
		return
	}
	e, err := decodeEvent(payload)
	if err != nil {
		return // not a map event of this release: nothing to tell
	}
	var lost *Event
	repeat := false
	if !e.unnumbered {
		l.mu.Lock()
		t := l.parts[e.partition]
		switch {
		case t == nil:
			l.parts[e.partition] = &partTrack{epoch: e.epoch, seq: e.seq}
		case t.epoch != e.epoch:
			lost = &Event{Kind: EventLost, Partition: e.partition}
			*t = partTrack{epoch: e.epoch, seq: e.seq}
		case e.seq == t.seq+1:
			t.seq, t.fromListen = e.seq, false
		case e.seq > t.seq+1:
			lost = &Event{Kind: EventLost, Partition: e.partition, Seq: t.seq + 1, Missed: e.seq - t.seq - 1}
			t.seq, t.fromListen = e.seq, false
		default:
			repeat = !t.fromListen
		}
		l.mu.Unlock()
	}
	if lost != nil {
		l.fn(*lost)
	}
	if l.o.keyed && e.key != l.o.key {
		return
	}
	ev := Event{Kind: EventKind(e.kind), Key: e.key, Partition: e.partition, Seq: e.seq, Repeat: repeat}
	if l.o.values && e.hasValue {
		ev.Value = bytes.Clone(e.value)
		if e.value != nil && ev.Value == nil {
			ev.Value = []byte{}
		}
	}
	l.fn(ev)
}

// refreshLoop renews the registration until ctx ends.
func (l *listener) refreshLoop(ctx context.Context, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(l.o.refresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// A failed renewal is retried at the next tick; whatever it
		// missed shows as EventLost.
		_, _ = l.m.inv.InvokeAll(ctx, l.request(OpListen))
	}
}

// unlisten removes the registration, best effort: one that is left
// behind ends with its lease.
func (l *listener) unlisten() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = l.m.inv.InvokeAll(ctx, l.request(OpUnlisten))
}
