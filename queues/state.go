package queues

import (
	"encoding/binary"
	"fmt"
	"path"
	"slices"
	"strconv"
	"time"

	"github.com/shoalgrid/shoal/internal/varbin"
	"github.com/shoalgrid/shoal/op"
)

// ServiceName is the op.Request.Service value the queue service answers.
const ServiceName = "queue"

// DeadLetterSuffix is appended to a queue's name to name its dead-letter
// queue: items that were delivered MaxDeliveries times without an Ack move
// there. A name's part before the first '#' routes it, so a queue and its
// dead-letter queue live on the same partition.
const DeadLetterSuffix = "#dlq"

// Operation codes of the queue service (op.Request.Op). They are part of
// the wire protocol: never renumber. Every operation reads Request.Name
// (the queue name, not empty) and routes by Request.Key (the name's part
// before the first '#').
const (
	// OpOffer appends Value. Found: appended; a full queue answers
	// op.ErrQueueFull.
	OpOffer uint8 = iota + 1
	// OpOfferWait appends Value, waiting while the queue is full for at
	// most Aux = uvarint(wait ms) (absent: the request's deadline); then
	// op.ErrTimeout. The wait is decided by the owner, so a caller that
	// keeps its own deadline a little longer hears the outcome instead of
	// racing it.
	OpOfferWait
	// OpOfferAll appends every item of Value (encodeItems), all or none.
	// Num: how many were appended.
	OpOfferAll
	// OpPoll removes the head. Found: there was one; Value: the item.
	OpPoll
	// OpPollWait is OpPoll waiting for an item for Aux (as OpOfferWait).
	OpPollWait
	// OpPeek reads the head without removing it.
	OpPeek
	// OpLen: Num is the number of ready items; Value is uvarint(in flight)
	// uvarint(waiting takers) uvarint(waiting offers).
	OpLen
	// OpClear removes every ready item. Num: how many.
	OpClear
	// OpTake delivers the head for reliable consumption: it stays in flight
	// until Acked, Nacked, its visibility timeout (Num, milliseconds; 0 =
	// the queue's default) ends or the caller's session ends. Found: an
	// item was delivered; Num: the delivery id; Value: encodeDelivery.
	OpTake
	// OpTakeWait is OpTake waiting for an item for Aux (as OpOfferWait).
	OpTakeWait
	// OpAck completes delivery Num. Found: it was in flight (false: it
	// had already timed out or been acknowledged).
	OpAck
	// OpNack returns delivery Num to the head of the queue for
	// redelivery. Found: it was in flight.
	OpNack
	// OpDrain removes up to Num ready items (at most MaxBatch). Value:
	// encodeItems.
	OpDrain
	// OpMerge appends to queue Name the items it held in a partition
	// snapshot (Value) taken on the losing side of a healed network split
	// (op.Merger; Num: op.MergeAppend). Items in flight there come first
	// (they were taken earlier), then the ready ones, in order; the
	// capacity is not checked (the items were acknowledged). Num: the
	// items appended.
	OpMerge

	opEnd
)

// MaxBatch bounds the items of one OfferAll or Drain.
const MaxBatch = 10000

// Rule configures the queues whose names match Pattern (path.Match syntax).
// Every member must be started with the same rules: they are inputs of the
// replicated state machine.
type Rule struct {
	// Pattern is a path.Match pattern over queue names ("orders-*").
	Pattern string `yaml:"pattern"`
	// Capacity bounds the ready plus in-flight items; 0 = unbounded.
	Capacity int `yaml:"capacity"`
	// Visibility is the default visibility timeout of a Take; 0 = 30 s.
	Visibility time.Duration `yaml:"visibility"`
	// MaxDeliveries moves an item to the dead-letter queue after this many
	// deliveries without an Ack; 0 = never.
	MaxDeliveries int `yaml:"max-deliveries"`
	// ItemEvents makes the owner emit an event for every item added or
	// removed, for listeners; off by default (it costs an allocation per
	// operation).
	ItemEvents bool `yaml:"item-events"`
}

// DefaultVisibility is the visibility timeout when no rule sets one.
const DefaultVisibility = 30 * time.Second

// Service is the queue service: register it with every member (cmd/gridnode
// does). Rules are matched first to last; a queue no rule matches is
// unbounded with the default visibility.
type Service struct {
	Rules []Rule
}

var (
	_ op.Service         = Service{}
	_ op.Grower          = Service{}
	_ op.State           = (*state)(nil)
	_ op.Executor        = (*state)(nil)
	_ op.SessionListener = (*state)(nil)
	_ op.OwnerHook       = (*state)(nil)
)

// Name returns ServiceName.
func (Service) Name() string { return ServiceName }

// AdminOp reports whether an operation needs the admin role on clusters
// that check client tokens (grid.AdminOps): Clear and Merge (which
// bypasses the capacity) do.
func (Service) AdminOp(o uint8) bool { return o == OpClear || o == OpMerge }

// Grows reports whether a queue operation may grow the queue (op.Grower):
// the offers, which the member's memory guard refuses when its heap is above
// the limit.
func (Service) Grows(o uint8) bool {
	switch o {
	case OpOffer, OpOfferWait, OpOfferAll:
		return true
	}
	return false
}

// Mutates reports whether a queue operation may change state.
func (Service) Mutates(o uint8) bool {
	switch o {
	case OpPeek, OpLen:
		return false
	}
	return true
}

// NewState returns the empty queue state of one partition.
func (s Service) NewState(partition int32) op.State {
	return &state{partition: partition, rules: s.Rules, queues: map[string]*queue{}}
}

// Validate checks the rules.
func (s Service) Validate() error {
	for i, r := range s.Rules {
		if _, err := path.Match(r.Pattern, ""); err != nil {
			return fmt.Errorf("queue rule %d: bad pattern %q: %w", i, r.Pattern, err)
		}
		if r.Capacity < 0 || r.MaxDeliveries < 0 || r.Visibility < 0 {
			return fmt.Errorf("queue rule %d (%q): negative capacity, visibility or max-deliveries", i, r.Pattern)
		}
	}
	return nil
}

// state holds every queue whose name routes to one partition. It is pure:
// no goroutines, no IO, time from the Exec; the member core serialises
// calls.
type state struct {
	partition int32
	rules     []Rule
	queues    map[string]*queue
	n         int // ready + in-flight items over all queues
}

// item is one queued element and the deliveries it has had.
type item struct {
	data  []byte
	count uint32
}

// delivery is an item in flight: taken, not yet acknowledged.
type delivery struct {
	id       uint64
	it       item
	session  uint64
	deadline int64 // unix nanos: back to the queue then
}

// waiter is a parked Poll, Take or Offer.
type waiter struct {
	call    op.CallID
	op      uint8
	vis     int64 // visibility of a Take, nanos
	data    []byte
	session uint64
}

type queue struct {
	name     string
	rule     Rule
	ready    deque
	inflight map[uint64]*delivery
	nextID   uint64
	// takers wait for an item (Poll and Take), offerers for room; both
	// FIFO.
	takers   []waiter
	offerers []waiter
}

func (q *queue) size() int { return q.ready.len() + len(q.inflight) }

func (q *queue) full(extra int) bool {
	return q.rule.Capacity > 0 && q.size()+extra > q.rule.Capacity
}

func (q *queue) idle() bool {
	return q.size() == 0 && len(q.takers) == 0 && len(q.offerers) == 0 && q.nextID == 0
}

func fail(c op.Code, format string, args ...any) *op.Response {
	return &op.Response{Code: c, Msg: fmt.Sprintf(format, args...)}
}

func (s *state) rule(name string) Rule {
	for _, r := range s.rules {
		if ok, _ := path.Match(r.Pattern, name); ok {
			return r
		}
	}
	return Rule{}
}

func (s *state) get(name string, create bool) *queue {
	q := s.queues[name]
	if q == nil && create {
		q = &queue{name: name, rule: s.rule(name), inflight: map[uint64]*delivery{}}
		s.queues[name] = q
	}
	return q
}

// Apply runs req without the seam's effects (no parking, no timers): a
// waiting operation that would park answers as if the wait timed out. The
// member core calls Execute.
func (s *state) Apply(now time.Time, req *op.Request) *op.Response {
	var x op.Exec
	x.Reset(now, s.partition, false, req)
	return s.Execute(&x, req)
}

// Execute runs one queue operation (op.Executor).
func (s *state) Execute(x *op.Exec, req *op.Request) *op.Response {
	if req == nil {
		return fail(op.CodeBadRequest, "queue: nil request")
	}
	now := x.Now.UnixNano()
	switch req.Op {
	case op.OpSessionEnded:
		s.sessionEnded(x, uint64(req.Num))
		return &op.Response{}
	case op.OpTimer:
		if q := s.queues[req.Name]; q != nil {
			if id, err := strconv.ParseUint(req.Key, 10, 64); err == nil {
				if d := q.inflight[id]; d != nil && now >= d.deadline {
					s.requeue(x, q, d)
					s.serve(x, q)
				}
			}
		}
		return &op.Response{}
	case op.OpCancelWait:
		if q := s.queues[req.Name]; q != nil {
			c := req.Call()
			q.takers = slices.DeleteFunc(q.takers, func(w waiter) bool { return w.call == c })
			q.offerers = slices.DeleteFunc(q.offerers, func(w waiter) bool { return w.call == c })
			s.drop(q)
		}
		return &op.Response{}
	}
	if req.Op == 0 || req.Op >= opEnd {
		return fail(op.CodeUnknownOp, "queue: unknown operation %d", req.Op)
	}
	if req.Name == "" {
		return fail(op.CodeBadRequest, "queue: empty queue name")
	}
	switch req.Op {
	case OpPeek:
		q := s.queues[req.Name]
		if q == nil || q.ready.len() == 0 {
			return &op.Response{}
		}
		return &op.Response{Found: true, Value: q.ready.front().data}
	case OpLen:
		q := s.queues[req.Name]
		if q == nil {
			return &op.Response{Value: []byte{0, 0, 0}}
		}
		v := binary.AppendUvarint(nil, uint64(len(q.inflight)))
		v = binary.AppendUvarint(v, uint64(len(q.takers)))
		v = binary.AppendUvarint(v, uint64(len(q.offerers)))
		return &op.Response{Num: int64(q.ready.len()), Value: v}
	case OpClear:
		q := s.queues[req.Name]
		if q == nil {
			return &op.Response{}
		}
		n := q.ready.len()
		for q.ready.len() > 0 {
			it := q.ready.popFront()
			s.emit(x, q, eventRemoved, it.data)
		}
		s.n -= n
		s.admit(x, q)
		s.drop(q)
		return &op.Response{Num: int64(n)}
	case OpAck, OpNack:
		q := s.queues[req.Name]
		if q == nil {
			return &op.Response{}
		}
		d := q.inflight[uint64(req.Num)]
		if d == nil {
			return &op.Response{}
		}
		if req.Op == OpAck {
			delete(q.inflight, d.id)
			s.n--
			s.emit(x, q, eventRemoved, d.it.data)
			s.admit(x, q)
		} else {
			s.requeue(x, q, d)
			s.serve(x, q)
		}
		s.drop(q)
		return &op.Response{Found: true}
	case OpMerge:
		return s.merge(x, req)
	case OpDrain:
		q := s.queues[req.Name]
		if req.Num < 0 {
			return fail(op.CodeBadRequest, "queue: negative drain count %d", req.Num)
		}
		if q == nil {
			return &op.Response{Value: encodeItems(nil)}
		}
		max := int(min(req.Num, MaxBatch))
		out := make([][]byte, 0, min(max, q.ready.len()))
		for len(out) < max && q.ready.len() > 0 {
			it := q.ready.popFront()
			s.n--
			s.emit(x, q, eventRemoved, it.data)
			out = append(out, it.data)
		}
		s.admit(x, q)
		s.drop(q)
		return &op.Response{Num: int64(len(out)), Value: encodeItems(out)}
	case OpOffer, OpOfferWait:
		q := s.get(req.Name, true)
		if q.full(1) || len(q.offerers) > 0 {
			if req.Op == OpOffer || req.Origin == 0 {
				s.drop(q)
				return fail(op.CodeQueueFull, "queue %q is at its capacity of %d", trunc(req.Name), q.rule.Capacity)
			}
			until, bad := waitUntil(x, req)
			if bad != nil {
				s.drop(q)
				return bad
			}
			if s.reparked(x, q.offerers, until) {
				return parkedResp()
			}
			q.offerers = append(q.offerers, waiter{call: x.Caller, op: req.Op, data: req.Value, session: req.Origin})
			x.Park(until)
			return parkedResp()
		}
		s.push(x, q, item{data: req.Value})
		s.serve(x, q)
		return &op.Response{Found: true}
	case OpOfferAll:
		items, err := decodeItems(req.Value, MaxBatch)
		if err != nil {
			return fail(op.CodeBadRequest, "queue: offer all: %v", err)
		}
		q := s.get(req.Name, true)
		if q.full(len(items)) || (len(items) > 0 && len(q.offerers) > 0) {
			s.drop(q)
			return fail(op.CodeQueueFull, "queue %q: %d items do not fit (capacity %d, holds %d)", trunc(req.Name), len(items), q.rule.Capacity, q.size())
		}
		for _, it := range items {
			s.push(x, q, item{data: it})
		}
		s.serve(x, q)
		s.drop(q)
		return &op.Response{Found: true, Num: int64(len(items))}
	case OpPoll, OpPollWait, OpTake, OpTakeWait:
		vis := int64(0)
		if req.Op == OpTake || req.Op == OpTakeWait {
			if req.Num < 0 {
				return fail(op.CodeBadRequest, "queue: negative visibility timeout %d ms", req.Num)
			}
			vis = req.Num * int64(time.Millisecond)
			if req.Num > int64(365*24*time.Hour/time.Millisecond) {
				return fail(op.CodeBadRequest, "queue: visibility timeout %d ms is too long", req.Num)
			}
		}
		q := s.get(req.Name, true)
		if q.ready.len() > 0 && len(q.takers) == 0 {
			resp := s.deliver(x, q, waiter{call: x.Caller, op: req.Op, vis: vis, session: req.Origin})
			s.admit(x, q)
			s.drop(q)
			return resp
		}
		if req.Op == OpPoll || req.Op == OpTake || req.Origin == 0 {
			s.drop(q)
			return &op.Response{}
		}
		until, bad := waitUntil(x, req)
		if bad != nil {
			s.drop(q)
			return bad
		}
		if s.reparked(x, q.takers, until) {
			return parkedResp()
		}
		q.takers = append(q.takers, waiter{call: x.Caller, op: req.Op, vis: vis, session: req.Origin})
		x.Park(until)
		return parkedResp()
	}
	return fail(op.CodeUnknownOp, "queue: unknown operation %d", req.Op)
}

// reparked handles a retry of a call that is already waiting (it was parked
// on a previous owner, which replicated the waiter): park it again.
func (s *state) reparked(x *op.Exec, ws []waiter, until time.Time) bool {
	for _, w := range ws {
		if w.call == x.Caller {
			x.Park(until)
			return true
		}
	}
	return false
}

// maxWait bounds the wait of one parked call.
const maxWait = 24 * time.Hour

// waitUntil reads a waiting operation's wait (Aux) into a deadline; zero
// means the caller's own deadline.
func waitUntil(x *op.Exec, req *op.Request) (time.Time, *op.Response) {
	if len(req.Aux) == 0 {
		return time.Time{}, nil
	}
	r := varbin.NewReader(req.Aux)
	ms := r.Uvarint()
	if err := r.Done(); err != nil || ms > uint64(maxWait/time.Millisecond) {
		return time.Time{}, fail(op.CodeBadRequest, "queue: bad wait (at most %v)", maxWait)
	}
	return x.Now.Add(time.Duration(ms) * time.Millisecond), nil
}

// push appends it to the ready items.
func (s *state) push(x *op.Exec, q *queue, it item) {
	q.ready.pushBack(it)
	s.n++
	s.emit(x, q, eventAdded, it.data)
}

// deliver hands the head to w and returns the answer for w.
func (s *state) deliver(x *op.Exec, q *queue, w waiter) *op.Response {
	it := q.ready.popFront()
	if w.op == OpPoll || w.op == OpPollWait {
		s.n--
		s.emit(x, q, eventRemoved, it.data)
		return &op.Response{Found: true, Value: it.data}
	}
	vis := w.vis
	if vis == 0 {
		vis = int64(q.rule.Visibility)
		if vis == 0 {
			vis = int64(DefaultVisibility)
		}
	}
	q.nextID++
	it.count++
	d := &delivery{id: q.nextID, it: it, session: w.session, deadline: x.Now.UnixNano() + vis}
	q.inflight[d.id] = d
	x.Timer(q.name, strconv.FormatUint(d.id, 10), time.Unix(0, d.deadline))
	return &op.Response{Found: true, Num: int64(d.id), Value: encodeDelivery(it.count, it.data)}
}

// serve hands ready items to waiting takers, in arrival order.
func (s *state) serve(x *op.Exec, q *queue) {
	for q.ready.len() > 0 && len(q.takers) > 0 {
		w := q.takers[0]
		q.takers = q.takers[1:]
		x.Complete(w.call, s.deliver(x, q, w))
	}
	if len(q.takers) == 0 {
		q.takers = nil
	}
	s.admit(x, q)
}

// admit moves waiting offers in while there is room.
func (s *state) admit(x *op.Exec, q *queue) {
	moved := false
	for len(q.offerers) > 0 && !q.full(1) {
		w := q.offerers[0]
		q.offerers = q.offerers[1:]
		s.push(x, q, item{data: w.data})
		x.Complete(w.call, &op.Response{Found: true})
		moved = true
	}
	if len(q.offerers) == 0 {
		q.offerers = nil
	}
	if moved {
		s.serve(x, q)
	}
}

// requeue returns an in-flight delivery to the head of the queue, or to the
// dead-letter queue once it was delivered MaxDeliveries times.
func (s *state) requeue(x *op.Exec, q *queue, d *delivery) {
	delete(q.inflight, d.id)
	if q.rule.MaxDeliveries > 0 && int(d.it.count) >= q.rule.MaxDeliveries && !isDeadLetter(q.name) {
		s.n--
		dl := s.get(q.name+DeadLetterSuffix, true)
		// A dead-letter queue is unbounded: refusing a dead letter
		// would lose it.
		s.push(x, dl, item{data: d.it.data})
		s.serve(x, dl)
		return
	}
	q.ready.pushFront(d.it)
}

func isDeadLetter(name string) bool {
	return len(name) > len(DeadLetterSuffix) && name[len(name)-len(DeadLetterSuffix):] == DeadLetterSuffix
}

// sessionEnded returns a dead session's deliveries to their queues (oldest
// first at the head) and answers its parked calls.
func (s *state) sessionEnded(x *op.Exec, session uint64) {
	names := make([]string, 0, len(s.queues))
	for name := range s.queues {
		names = append(names, name)
	}
	slices.Sort(names) // map order must not leak into replicated effects
	for _, name := range names {
		q := s.queues[name]
		var ds []*delivery
		for _, d := range q.inflight {
			if d.session == session {
				ds = append(ds, d)
			}
		}
		slices.SortFunc(ds, func(a, b *delivery) int { return -cmpU64(a.id, b.id) })
		for _, d := range ds {
			s.requeue(x, q, d)
		}
		gone := func(w waiter) bool {
			if w.session != session {
				return false
			}
			x.Complete(w.call, fail(op.CodeSessionExpired, "queue %q: session %x ended", trunc(q.name), session))
			return true
		}
		q.takers = slices.DeleteFunc(q.takers, gone)
		q.offerers = slices.DeleteFunc(q.offerers, gone)
		s.serve(x, q)
		s.drop(q)
	}
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// drop forgets an idle queue. The delivery-id counter is kept while it is
// non-zero so ids are never reused in a queue's lifetime; an emptied queue
// with no deliveries ever made costs nothing.
func (s *state) drop(q *queue) {
	if q.idle() {
		delete(s.queues, q.name)
	}
}

// BecameOwner re-arms the visibility timers of every in-flight delivery.
func (s *state) BecameOwner(x *op.Exec) {
	names := make([]string, 0, len(s.queues))
	for name := range s.queues {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		q := s.queues[name]
		ids := make([]uint64, 0, len(q.inflight))
		for id := range q.inflight {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		for _, id := range ids {
			x.Timer(name, strconv.FormatUint(id, 10), time.Unix(0, q.inflight[id].deadline))
		}
	}
}

// ListensForSessions marks the state as an op.SessionListener.
func (s *state) ListensForSessions() {}

// Len reports the ready and in-flight items of the partition.
func (s *state) Len() int { return s.n }

// Event kinds of item events (the first byte of an event payload).
const (
	eventAdded   byte = 1
	eventRemoved byte = 2
)

func (s *state) emit(x *op.Exec, q *queue, kind byte, data []byte) {
	if !q.rule.ItemEvents || !x.Owner {
		return
	}
	p := make([]byte, 1+len(data))
	p[0] = kind
	copy(p[1:], data)
	x.Emit(q.name, p)
}

// trunc shortens a name for an error message.
func trunc(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// deque is a ring buffer of items.
type deque struct {
	buf        []item
	head, size int
}

func (d *deque) len() int { return d.size }

func (d *deque) grow() {
	n := max(8, 2*len(d.buf))
	nb := make([]item, n)
	for i := 0; i < d.size; i++ {
		nb[i] = d.buf[(d.head+i)%len(d.buf)]
	}
	d.buf, d.head = nb, 0
}

func (d *deque) pushBack(it item) {
	if d.size == len(d.buf) {
		d.grow()
	}
	d.buf[(d.head+d.size)%len(d.buf)] = it
	d.size++
}

func (d *deque) pushFront(it item) {
	if d.size == len(d.buf) {
		d.grow()
	}
	d.head = (d.head - 1 + len(d.buf)) % len(d.buf)
	d.buf[d.head] = it
	d.size++
}

func (d *deque) front() item { return d.buf[d.head] }

func (d *deque) at(i int) item { return d.buf[(d.head+i)%len(d.buf)] }

func (d *deque) popFront() item {
	it := d.buf[d.head]
	d.buf[d.head] = item{}
	d.head = (d.head + 1) % len(d.buf)
	d.size--
	if d.size == 0 {
		d.head = 0
		if len(d.buf) > 1024 {
			d.buf = nil // release a burst's backing array
		}
	}
	return it
}

// parkedResp is what Execute returns for a parked call: the core ignores
// it (the answer comes with a later Complete), but never hands it nil.
func parkedResp() *op.Response { return &op.Response{} }
