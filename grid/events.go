package grid

import (
	"sync"
	"sync/atomic"
)

// Structure events (op.Exec.Emit): an owner publishes an event about
// structure (service, name) once the mutation that emitted it is held by
// its synchronous backups. Subscribers register on every member (an
// embedded subscription on its own member and through its member
// connections; a client on every member it is connected to), so the event
// reaches them whichever member owns the structure now.
//
// Delivery is at most once and best effort: in order per structure and
// subscription while the owner stays the same, dropped (and counted) when
// a subscriber's queue of eventQueue events is full, and lost while a
// subscription is being re-established after a failover or a reconnect.
// Structures that need more keep the information in their state and let
// subscribers read it (events are hints to re-read).

// eventQueue bounds the events queued for one subscriber.
const eventQueue = 256

type eventKey struct{ service, name string }

// eventSub is one subscription: a bounded queue drained by a goroutine
// owned by the member.
type eventSub struct {
	key     eventKey
	deliver func(payload []byte)
	ch      chan []byte
	stop    chan struct{}
	once    sync.Once
}

// eventHub holds a member's subscriptions.
type eventHub struct {
	m       *Member
	mu      sync.Mutex
	subs    map[eventKey]map[*eventSub]struct{}
	dropped atomic.Uint64
}

func newEventHub(m *Member) *eventHub {
	return &eventHub{m: m, subs: map[eventKey]map[*eventSub]struct{}{}}
}

func (h *eventHub) has(service, name string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs[eventKey{service, name}]) > 0
}

// publish queues payload for every subscriber of (service, name). It never
// blocks (it may run under a partition lock).
func (h *eventHub) publish(service, name string, payload []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs[eventKey{service, name}] {
		select {
		case s.ch <- payload:
		default:
			h.dropped.Add(1)
		}
	}
}

// add registers deliver for events of (service, name) and returns the
// function that removes it. deliver runs on a goroutine of the
// subscription, one event at a time.
func (h *eventHub) add(service, name string, deliver func([]byte)) func() {
	_, remove := h.addSub(service, name, deliver)
	return remove
}

// addSub is add, also returning the subscription (whose queue takes
// events that arrive from other members).
func (h *eventHub) addSub(service, name string, deliver func([]byte)) (*eventSub, func()) {
	s := &eventSub{key: eventKey{service, name}, deliver: deliver, ch: make(chan []byte, eventQueue), stop: make(chan struct{})}
	h.mu.Lock()
	set := h.subs[s.key]
	if set == nil {
		set = map[*eventSub]struct{}{}
		h.subs[s.key] = set
	}
	set[s] = struct{}{}
	h.mu.Unlock()
	remove := func() {
		s.once.Do(func() {
			h.mu.Lock()
			delete(h.subs[s.key], s)
			if len(h.subs[s.key]) == 0 {
				delete(h.subs, s.key)
			}
			h.mu.Unlock()
			close(s.stop)
		})
	}
	if !h.m.spawn(func() { s.run(h.m) }) {
		remove()
	}
	return s, remove
}

func (s *eventSub) run(m *Member) {
	for {
		select {
		case <-s.stop:
			return
		case <-m.ctx.Done():
			return
		case p := <-s.ch:
			s.deliver(p)
		}
	}
}
