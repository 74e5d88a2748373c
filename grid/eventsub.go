package grid

import (
	"context"
	"sync"
	"time"

	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/sysop"
	"github.com/shoalgrid/shoal/wire"
)

// What a member tracks per remote connection: the calls parked for
// requests that arrived on it (so a cancel frame or the connection's end
// cancels them) and the event subscriptions registered through it.
type connState struct {
	parked map[uint64]*parkedCall
	subs   map[uint64]func()
	// cancels end the forwarded (unrouted) requests in flight.
	cancels map[uint64]context.CancelFunc
}

// connTable holds the per-connection state of a member.
type connTable struct {
	mu    sync.Mutex
	conns map[*wire.Conn]*connState
}

// entry returns c's state, creating it (and a goroutine that cleans up when
// c closes); nil when the member is closing.
func (m *Member) connEntry(c *wire.Conn) *connState {
	m.connTab.mu.Lock()
	defer m.connTab.mu.Unlock()
	cs := m.connTab.conns[c]
	if cs != nil {
		return cs
	}
	cs = &connState{parked: map[uint64]*parkedCall{}, subs: map[uint64]func(){}, cancels: map[uint64]context.CancelFunc{}}
	if !m.spawn(func() { m.watchConn(c) }) {
		return nil
	}
	m.connTab.conns[c] = cs
	return cs
}

// watchConn waits for c to close, then cancels the calls parked for it
// (replicated OpCancelWait: a closing connection ends the wait, and the
// caller's invoker re-sends the call if it still wants it) and drops its
// subscriptions.
func (m *Member) watchConn(c *wire.Conn) {
	select {
	case <-c.Done():
	case <-m.ctx.Done():
	}
	m.connTab.mu.Lock()
	cs := m.connTab.conns[c]
	delete(m.connTab.conns, c)
	var parked []*parkedCall
	var subs []func()
	if cs != nil {
		// A parked call's responder removes it from cs.parked under the
		// lock, concurrently: iterate over copies.
		for _, pc := range cs.parked {
			parked = append(parked, pc)
		}
		for _, remove := range cs.subs {
			subs = append(subs, remove)
		}
	}
	m.connTab.mu.Unlock()
	if cs == nil {
		return
	}
	for _, pc := range parked {
		if m.ctx.Err() == nil {
			m.cancelParked(pc, op.CodeCanceled)
		}
	}
	for _, remove := range subs {
		remove()
	}
}

// attachRemote attaches the responder of a call parked for request id of
// c, and remembers it for cancel frames.
func (m *Member) attachRemote(c *wire.Conn, id uint64, pc *parkedCall) {
	m.connTab.mu.Lock()
	cs := m.connTab.conns[c]
	m.connTab.mu.Unlock()
	if cs == nil {
		cs = m.connEntry(c)
	}
	if cs != nil {
		m.connTab.mu.Lock()
		cs.parked[id] = pc
		m.connTab.mu.Unlock()
	}
	pc.attach(func(resp *op.Response) {
		if cs != nil {
			m.connTab.mu.Lock()
			if cs.parked[id] == pc {
				delete(cs.parked, id)
			}
			m.connTab.mu.Unlock()
		}
		c.Respond(id, resp)
	})
}

// HandleCancel implements wire.CancelHandler: the caller of request id on
// c gave up; a call parked for it is canceled (replicated OpCancelWait).
func (m *Member) HandleCancel(c *wire.Conn, id uint64) {
	m.connTab.mu.Lock()
	var pc *parkedCall
	if cs := m.connTab.conns[c]; cs != nil {
		pc = cs.parked[id]
	}
	var cancel context.CancelFunc
	if cs := m.connTab.conns[c]; cs != nil {
		cancel = cs.cancels[id]
	}
	m.connTab.mu.Unlock()
	if pc != nil {
		m.cancelParked(pc, op.CodeCanceled)
	}
	if cancel != nil {
		cancel()
	}
}

// trackCancel lets a cancel frame for request id of c call cancel; the
// returned function forgets it.
func (m *Member) trackCancel(c *wire.Conn, id uint64, cancel context.CancelFunc) func() {
	if c.Peer().Caps&wire.CapCancel == 0 {
		return func() {}
	}
	cs := m.connEntry(c)
	if cs == nil {
		return func() {}
	}
	m.connTab.mu.Lock()
	cs.cancels[id] = cancel
	m.connTab.mu.Unlock()
	return func() {
		m.connTab.mu.Lock()
		delete(cs.cancels, id)
		m.connTab.mu.Unlock()
	}
}

// subscribeRemote registers subscription sub of the peer on c for events
// of (service, name): the owner of the structure sends them on c.
func (m *Member) subscribeRemote(c *wire.Conn, req *op.Request) *op.Response {
	if c.Peer().Caps&wire.CapEvents == 0 {
		return &op.Response{Code: op.CodeBadRequest, Msg: "peer does not accept events"}
	}
	cs := m.connEntry(c)
	if cs == nil {
		return errResponse(m.errClosed(), 0)
	}
	sub := uint64(req.Num)
	remove := m.events.add(req.Key, req.Name, func(p []byte) {
		if err := c.SendEvent(sub, p); err != nil {
			m.log.Debug("event not sent", "sub", sub, "err", err)
		}
	})
	m.connTab.mu.Lock()
	old := cs.subs[sub]
	cs.subs[sub] = remove
	m.connTab.mu.Unlock()
	if old != nil {
		old()
	}
	return &op.Response{TableVersion: m.tableVersion()}
}

func (m *Member) unsubscribeRemote(c *wire.Conn, req *op.Request) *op.Response {
	m.connTab.mu.Lock()
	var remove func()
	if cs := m.connTab.conns[c]; cs != nil {
		remove = cs.subs[uint64(req.Num)]
		delete(cs.subs, uint64(req.Num))
	}
	m.connTab.mu.Unlock()
	if remove != nil {
		remove()
	}
	return &op.Response{TableVersion: m.tableVersion()}
}

// SubscribeEvents calls fn with the payload of every event that structure
// name of service emits (op.Exec.Emit), on one goroutine of the
// subscription, in order per owner. Delivery is at most once: events are
// dropped when fn falls behind (a queue of 256), and lost while the
// subscription is being registered with a member that just joined or
// reconnected. The returned function ends the subscription.
//
// The system stream sysop.MergeStream of service sysop.Service carries
// the merge reports members emit after a healed split
// (sysop.DecodeMergeReport).
//
// It returns once the subscription is registered with the members that
// answered before ctx ended; the others are retried in the background.
func (m *Member) SubscribeEvents(ctx context.Context, service, name string, fn func(payload []byte)) (func(), error) {
	if m.closed.Load() {
		return nil, m.errClosed()
	}
	if service == "" || (service[0] == '_' && !sysop.SystemStream(service, name)) {
		return nil, op.Errorf(op.CodeUnknownService, "service %q", service)
	}
	// Events of partitions this member owns come from its own hub; the
	// other members send theirs to the registration on their connection
	// (the shared subscriber registry, internal/evsub), and they join the
	// same queue.
	es, remove := m.events.addSub(service, name, fn)
	id := m.lsubs.Add(service, name, func(p []byte) bool {
		select {
		case es.ch <- p:
		default:
			m.events.dropped.Add(1)
		}
		return true
	})
	m.lsubs.Sync(ctx, m.Table())
	var once sync.Once
	return func() {
		once.Do(func() {
			remove()
			m.lsubs.Remove(id)
		})
	}, nil
}

// subsLoop keeps embedded subscriptions registered as members join and
// connections are replaced.
func (m *Member) subsLoop() {
	defer m.wg.Done()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-tick.C:
		}
		if m.lsubs.Len() > 0 {
			m.lsubs.Sync(m.ctx, m.Table())
		}
	}
}
