package grid

import (
	"container/heap"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/partition"
	"github.com/shoalgrid/shoal/sysop"
	"github.com/shoalgrid/shoal/wire"
)

// This file carries out the effects that states using the op.Exec seam
// record (see op/exec.go): parked calls, their completion and deadlines,
// replicated timers, and the owner hooks. Only states implementing
// op.Executor take this path (maps do, for their entry events; a map
// write that nobody listens to records no effect here).

// parkedCall is a call a state parked on this member (the owner). It is
// registered in its slot's parked set, under the slot lock, by the Apply
// that parked it; the caller attaches its responder once execute returns
// (a completion that comes first is kept until then).
type parkedCall struct {
	id       op.CallID
	part     int32
	service  string
	name     string
	deadline time.Time

	mu       sync.Mutex
	answered bool
	resp     *op.Response
	// deliver answers a remote caller; nil for a local call, which reads
	// ch instead.
	deliver func(*op.Response)
	ch      chan *op.Response
}

func newParkedCall(req *op.Request, deadline time.Time) *parkedCall {
	return &parkedCall{id: req.Call(), part: req.Partition, service: req.Service, name: req.Name, deadline: deadline, ch: make(chan *op.Response, 1)}
}

// finish answers the call once; later answers are dropped. It may run
// under a slot lock: a remote answer is sent from its own goroutine.
func (pc *parkedCall) finish(resp *op.Response) {
	pc.mu.Lock()
	if pc.answered {
		pc.mu.Unlock()
		return
	}
	pc.answered, pc.resp = true, resp
	deliver := pc.deliver
	pc.mu.Unlock()
	if deliver != nil {
		go deliver(resp)
		return
	}
	pc.ch <- resp // buffered: never blocks (one answer)
}

// attach sets the remote responder; if the call was already answered, it
// answers at once on the caller's goroutine.
func (pc *parkedCall) attach(deliver func(*op.Response)) {
	pc.mu.Lock()
	if pc.answered {
		pc.mu.Unlock()
		deliver(<-pc.ch)
		return
	}
	pc.deliver = deliver
	pc.mu.Unlock()
}

func (pc *parkedCall) done() bool {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return pc.answered
}

// wait blocks a local caller until its parked call is answered. When ctx
// ends first it cancels the call on the owner (a replicated OpCancelWait)
// and returns ctx's error, unless the answer raced the cancel in.
func (m *Member) waitParked(ctx context.Context, pc *parkedCall) (*op.Response, error) {
	select {
	case resp := <-pc.ch:
		return resp, nil
	case <-ctx.Done():
		m.cancelParked(pc, op.CodeCanceled)
		select {
		case resp := <-pc.ch:
			if resp.Code == op.OK {
				return resp, nil
			}
		default:
		}
		return nil, op.FromContext(ctx)
	case <-m.ctx.Done():
		return nil, m.errClosed()
	}
}

// cancelParked ends a parked call that is still waiting: it applies
// OpCancelWait (sequenced and replicated like any mutation, so backups
// drop the waiter too); if the state leaves the call parked, execute
// answers it with code.
func (m *Member) cancelParked(pc *parkedCall, code op.Code) {
	if pc.done() {
		return
	}
	req := &op.Request{Service: pc.service, Name: pc.name, Partition: pc.part, Op: op.OpCancelWait, Origin: pc.id.Origin, CallSeq: pc.id.Seq, Num: int64(code)}
	m.executeLocal(nil, req)
}

// park registers the current call of req as parked on s. s.mu is held.
func (s *slot) park(m *Member, req *op.Request, deadline time.Time) *parkedCall {
	id := req.Call()
	if s.parked == nil {
		s.parked = map[op.CallID]*parkedCall{}
	}
	if old := s.parked[id]; old != nil {
		// The same call again (its caller re-sent it): the new attempt
		// takes over; the old one is not listened to any more.
		old.finish(&op.Response{Code: op.CodeCanceled, Msg: "parked call re-sent"})
	}
	pc := newParkedCall(req, deadline)
	s.parked[id] = pc
	if !deadline.IsZero() {
		m.timers.add(timerItem{at: deadline, pc: pc})
	}
	return pc
}

// completeParked answers the parked call id with resp once the mutation
// seq that completed it is held by the synchronous backups. s.mu is held.
func (s *slot) completeParked(m *Member, id op.CallID, resp op.Response, seq, version uint64) {
	pc := s.parked[id]
	if pc == nil {
		return // not parked here (any more): the retry table answers
	}
	delete(s.parked, id)
	resp.TableVersion = version
	w := s.coverageFor(m, pc.service, pc.name, seq)
	if w == nil {
		pc.finish(&resp)
		return
	}
	w.then(nil, func(_ *wire.Batch, err error) {
		if err != nil {
			pc.finish(errResponse(err, version))
			return
		}
		pc.finish(&resp)
	})
}

// failParked answers every call parked on s with a retriable code (this
// member stops owning the partition, or freezes it for a hand-over): the
// invoker re-sends the call to the new owner, which re-parks it (the
// state replicated the waiter) or answers it from its retry table. s.mu
// is held.
func (s *slot) failParked(code op.Code, why string, version uint64) {
	for id, pc := range s.parked {
		delete(s.parked, id)
		pc.finish(&op.Response{Code: code, Msg: why, TableVersion: version})
	}
}

// executeSeam is execute for states implementing op.Executor: it runs
// Execute with the slot's Exec, replicates the mutation, and carries out
// the recorded effects under the partition lock. A parked call returns a
// nil response and its parkedCall. s.mu is held.
func (s *slot) executeSeam(m *Member, b *wire.Batch, cur *partition.Table, req *op.Request, ex op.Executor, mutates bool, now time.Time) (*op.Response, *ackWait, *parkedCall) {
	x := &s.exec
	x.Reset(now, s.id, true, req)
	resp := ex.Execute(x, req)
	if resp == nil {
		resp = &op.Response{Code: op.CodeInternal, Msg: "state returned no response"}
	}
	if req.Service[0] != '_' {
		m.counters.served.Add(1) // user requests only
	}
	effects := x.Effects()
	parked := x.Parked()
	if parked && req.Origin == 0 {
		// Nobody could be answered later (and the waiter could never be
		// matched again): refuse. The state must not park anonymous calls.
		parked = false
		resp = &op.Response{Code: op.CodeBadRequest, Msg: "a call without identity cannot wait"}
	}
	reserved := req.Op >= op.OpReservedMin
	if !mutates || (resp.Code != op.OK && !parked && len(effects) == 0) {
		// Nothing to replicate; a timer is still armed (a read may need
		// one: maps flush the reads of maps with max-idle or eviction).
		for i := range effects {
			if e := &effects[i]; e.Kind == op.EffectTimer {
				m.timers.add(timerItem{at: e.At, part: s.id, service: req.Service, name: e.Name, key: e.Key})
			}
		}
		resp.TableVersion = cur.Version
		return resp, nil, nil
	}
	s.seq++
	s.term = s.ownerSince
	seq := s.seq
	if req.Origin != 0 && !parked && !reserved {
		s.dedup.put(req.Origin, req.CallSeq, seq, resp, now)
	}
	for i := range effects {
		if e := &effects[i]; e.Kind == op.EffectComplete && e.Resp != nil && e.Call.Origin != 0 {
			s.dedup.put(e.Call.Origin, e.Call.Seq, seq, e.Resp, now)
		}
	}
	var w *ackWait
	if len(s.targets) > 0 {
		need := min(m.syncBackups(req.Service, req.Name), len(s.targets))
		if need > 0 && !parked {
			w = newAckWait(need, now.Add(m.cfg.BackupTimeout))
			s.waits = append(s.waits, w)
		}
		m.replicate(s, b, cur.Version, now, req, w, need)
	}
	var pc *parkedCall
	for i := range effects {
		e := &effects[i]
		switch e.Kind {
		case op.EffectPark:
			if parked {
				pc = s.park(m, req, e.At)
			}
		case op.EffectComplete:
			if e.Resp != nil {
				s.completeParked(m, e.Call, *e.Resp, seq, cur.Version)
			}
		case op.EffectEmit:
			m.emit(s, req.Service, e.Name, e.Payload, seq, cur.Version)
		case op.EffectTimer:
			m.timers.add(timerItem{at: e.At, part: s.id, service: req.Service, name: e.Name, key: e.Key})
		}
	}
	if req.Op == op.OpCancelWait {
		// The state left the call parked (or never knew it): the core
		// answers it with the code the cancel carries.
		code := op.Code(req.Num)
		if code == op.OK {
			code = op.CodeCanceled
		}
		s.completeParked(m, req.Call(), op.Response{Code: code, Msg: "wait ended: " + code.String()}, seq, cur.Version)
	}
	x.Reset(time.Time{}, s.id, false, nil) // drop the effects' references
	if parked {
		return nil, nil, pc
	}
	resp.TableVersion = cur.Version
	return resp, w, nil
}

// applySeam replays a mutation on a backup for a state implementing
// op.Executor: the same state change as on the owner; of the effects only
// completions matter here (their answers go to the retry table). s.mu is
// held.
func (s *slot) applySeam(ex op.Executor, seq uint64, now time.Time, req *op.Request) {
	x := &s.exec
	x.Reset(now, s.id, false, req)
	resp := ex.Execute(x, req)
	if req.Origin != 0 && !x.Parked() && req.Op < op.OpReservedMin {
		s.dedup.put(req.Origin, req.CallSeq, seq, resp, now)
	}
	for _, e := range x.Effects() {
		if e.Kind == op.EffectComplete && e.Resp != nil && e.Call.Origin != 0 {
			s.dedup.put(e.Call.Origin, e.Call.Seq, seq, e.Resp, now)
		}
	}
	x.Reset(time.Time{}, s.id, false, nil)
}

// becameOwner runs the OwnerHook of every state of s that has one, so it
// re-arms its timers. s.mu is held.
func (s *slot) becameOwner(m *Member, now time.Time) {
	for i, st := range s.states {
		h, ok := st.(op.OwnerHook)
		if !ok {
			continue
		}
		x := &s.exec
		x.Reset(now, s.id, true, nil)
		h.BecameOwner(x)
		for _, e := range x.Effects() {
			switch e.Kind {
			case op.EffectTimer:
				m.timers.add(timerItem{at: e.At, part: s.id, service: m.services[i].Name(), name: e.Name, key: e.Key})
			case op.EffectEmit:
				m.deliverEvent(m.services[i].Name(), e.Name, e.Payload)
			}
		}
		x.Reset(time.Time{}, s.id, false, nil)
	}
}

// coverageFor is coverage for structure (service, name): a wait for the
// synchronous backups to hold mutation seq, nil when none is needed. s.mu
// is held.
func (s *slot) coverageFor(m *Member, service, name string, seq uint64) *ackWait {
	return s.coverage(m, &op.Request{Service: service, Name: name}, seq)
}

// timerItem is one entry of the member's timer heap: the deadline of a
// parked call (pc set) or a state's timer.
type timerItem struct {
	at                 time.Time
	pc                 *parkedCall
	part               int32
	service, name, key string
}

// timerHeap holds the member's parked-call deadlines and state timers in
// time order; one loop (timerLoop) fires them, instead of a timer each.
type timerHeap struct {
	mu    sync.Mutex
	items timerItems
	kick  chan struct{}
}

type timerItems []timerItem

func (h timerItems) Len() int           { return len(h) }
func (h timerItems) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h timerItems) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *timerItems) Push(x any)        { *h = append(*h, x.(timerItem)) }
func (h *timerItems) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = timerItem{}
	*h = old[:len(old)-1]
	return it
}

func newTimerHeap() *timerHeap { return &timerHeap{kick: make(chan struct{}, 1)} }

func (t *timerHeap) add(it timerItem) {
	t.mu.Lock()
	heap.Push(&t.items, it)
	first := t.items[0].at.Equal(it.at)
	t.mu.Unlock()
	if first {
		select {
		case t.kick <- struct{}{}:
		default:
		}
	}
}

// due pops the items due at now and returns them with the time of the
// next one (zero when none).
func (t *timerHeap) due(now time.Time) ([]timerItem, time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []timerItem
	for len(t.items) > 0 && !t.items[0].at.After(now) {
		out = append(out, heap.Pop(&t.items).(timerItem))
	}
	if len(t.items) == 0 {
		return out, time.Time{}
	}
	return out, t.items[0].at
}

// timerLoop fires parked-call deadlines (OpCancelWait with CodeTimeout)
// and state timers (OpTimer), each as a sequenced mutation on the owner.
func (m *Member) timerLoop() {
	defer m.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		items, next := m.timers.due(time.Now())
		for _, it := range items {
			if m.ctx.Err() != nil {
				return
			}
			if it.pc != nil {
				m.cancelParked(it.pc, op.CodeTimeout)
				continue
			}
			req := &op.Request{Service: it.service, Name: it.name, Partition: it.part, Key: it.key, Op: op.OpTimer, Num: it.at.UnixNano()}
			// Not the owner any more (or frozen for a hand-over): the
			// refusal drops the timer, and the new owner's BecameOwner
			// re-arms it.
			m.executeLocal(nil, req)
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = max(time.Until(next), 0)
		}
		t.Reset(wait)
		select {
		case <-m.ctx.Done():
			return
		case <-m.timers.kick:
			if !t.Stop() {
				select {
				case <-t.C:
				default:
				}
			}
		case <-t.C:
		}
	}
}

// emit delivers an event about structure (service, name) to its
// subscribers once mutation seq is held by the synchronous backups.
func (m *Member) emit(s *slot, service, name string, payload []byte, seq, version uint64) {
	if service == sysop.SessionService {
		// An ended session is broadcast at once, without waiting for the
		// backups: the broadcast is idempotent, and if this owner dies
		// before they hold the end, the session simply ends again there.
		// (Waiting could drop it: the record stays pending, but only a
		// new owner would re-emit it.)
		m.sess.ended(payload)
		return
	}
	if !m.events.has(service, name) {
		return
	}
	// Acknowledgements complete on different goroutines, so the events
	// wait in the partition's queue and leave it in emission order (the
	// order of the partition's mutations), each once its own mutation is
	// held by the synchronous backups.
	w := s.coverageFor(m, service, name, seq)
	s.evMu.Lock()
	s.evq = append(s.evq, pendingEvent{service: service, name: name, payload: payload, w: w})
	s.evMu.Unlock()
	if w == nil {
		m.flushEvents(s)
		return
	}
	w.then(nil, func(*wire.Batch, error) { m.flushEvents(s) })
}

// pendingEvent is an event waiting for its mutation's acknowledgement.
type pendingEvent struct {
	service, name string
	payload       []byte
	w             *ackWait // nil: nothing to wait for
}

// flushEvents publishes the events at the head of s's queue whose
// mutations are settled, in order, dropping those whose mutation was not
// acknowledged. Publishing never blocks, so holding evMu across it is
// what keeps two flushes from interleaving.
func (m *Member) flushEvents(s *slot) {
	s.evMu.Lock()
	defer s.evMu.Unlock()
	i := 0
	for ; i < len(s.evq); i++ {
		e := &s.evq[i]
		if e.w != nil {
			done, err := e.w.settled()
			if !done {
				break
			}
			if err != nil {
				m.log.Debug("event dropped: its mutation was not acknowledged", "service", e.service, "name", e.name, "err", err)
				*e = pendingEvent{}
				continue
			}
		}
		m.deliverEvent(e.service, e.name, e.payload)
		*e = pendingEvent{}
	}
	if i == len(s.evq) {
		s.evq = s.evq[:0]
	} else {
		s.evq = s.evq[i:]
	}
}

// deliverEvent hands an event to its subscribers; the session service's
// events (a session ended) go to the member's broadcast loop.
func (m *Member) deliverEvent(service, name string, payload []byte) {
	if service == sysop.SessionService {
		m.sess.ended(payload)
		return
	}
	m.events.publish(service, name, payload)
}

func (pc *parkedCall) String() string {
	return fmt.Sprintf("%s/%s p%d call %x:%d", pc.service, pc.name, pc.part, pc.id.Origin, pc.id.Seq)
}
