package queues

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/shoalgrid/shoal/internal/varbin"
	"github.com/shoalgrid/shoal/op"
)

// Queue is a handle on one distributed FIFO queue. Like maps.Map it holds
// no data and no connections: every call is one op.Request through the
// Invoker, so the same Queue works on an embedded member and on a client.
// Safe for concurrent use; creating one is free.
type Queue struct {
	inv   op.Invoker
	name  string
	route string
}

// New returns the queue called name, reached through inv. The part of name
// before the first '#' routes it (so "orders#dlq", the dead-letter queue of
// "orders", lives on the same partition as "orders").
func New(inv op.Invoker, name string) *Queue {
	route, _, _ := strings.Cut(name, "#")
	return &Queue{inv: inv, name: name, route: route}
}

// Name returns the queue's name.
func (q *Queue) Name() string { return q.name }

// DeadLetters returns the queue that receives this queue's items after
// MaxDeliveries unacknowledged deliveries.
func (q *Queue) DeadLetters() *Queue { return New(q.inv, q.name+DeadLetterSuffix) }

var errNilItem = fmt.Errorf("%w: nil item (use an empty slice for an empty item)", op.ErrBadRequest)

var errNoQueue = fmt.Errorf("%w: nil queue or empty queue name", op.ErrBadRequest)

func (q *Queue) request(code uint8) *op.Request {
	return &op.Request{Service: ServiceName, Name: q.name, Op: code, Partition: -1, Key: q.route}
}

func (q *Queue) invoke(ctx context.Context, what string, req *op.Request) (*op.Response, error) {
	if q == nil || q.inv == nil || q.name == "" {
		return nil, fmt.Errorf("queues: %s: %w", what, errNoQueue)
	}
	resp, err := q.inv.Invoke(ctx, req)
	if err == nil && resp == nil {
		err = fmt.Errorf("%w: no response", op.ErrInternal)
	}
	if err != nil {
		return nil, fmt.Errorf("queues: %s on queue %q: %w", what, q.name, err)
	}
	return resp, nil
}

// waitGrace is how much longer than the owner's wait a caller waits for
// the owner's answer: the owner decides when a wait ends (it removes the
// waiter first), so an item is never handed to a caller that gave up.
const waitGrace = 5 * time.Second

// waitCtx bounds a waiting call by wait plus waitGrace (wait <= 0: by ctx
// alone) and returns the wait to send to the owner (Aux).
func waitCtx(ctx context.Context, wait time.Duration) (context.Context, context.CancelFunc, []byte) {
	if wait <= 0 {
		c, cancel := context.WithCancel(ctx)
		return c, cancel, nil
	}
	c, cancel := context.WithTimeout(ctx, wait+waitGrace)
	ms := int64(wait / time.Millisecond)
	if wait%time.Millisecond != 0 {
		ms++
	}
	return c, cancel, binary.AppendUvarint(nil, uint64(min(ms, int64(maxWait/time.Millisecond))))
}

// expired reports whether err is the end of a wait that ran out while the
// caller's own context is still alive: "nothing arrived in time", not a
// failure.
func expired(ctx context.Context, err error) bool {
	return ctx.Err() == nil && errors.Is(err, op.ErrTimeout)
}

// Offer appends item to the tail. A bounded queue at capacity fails at once
// with op.ErrQueueFull. Once Offer returns nil the item is acknowledged: in
// the reliable profile it is on the owner and its synchronous backups.
func (q *Queue) Offer(ctx context.Context, item []byte) error {
	if item == nil {
		return fmt.Errorf("queues: offer on queue %q: %w", q.name, errNilItem)
	}
	req := q.request(OpOffer)
	req.Value = item
	_, err := q.invoke(ctx, "offer", req)
	return err
}

// OfferWait is Offer that waits while the queue is full, up to wait (<= 0:
// until ctx ends). When the wait ends first it returns op.ErrQueueFull.
func (q *Queue) OfferWait(ctx context.Context, item []byte, wait time.Duration) error {
	if item == nil {
		return fmt.Errorf("queues: offer on queue %q: %w", q.name, errNilItem)
	}
	wctx, cancel, aux := waitCtx(ctx, wait)
	defer cancel()
	req := q.request(OpOfferWait)
	req.Value, req.Aux = item, aux
	_, err := q.invoke(wctx, "offer", req)
	if expired(ctx, err) {
		return fmt.Errorf("queues: offer on queue %q: %w (waited %v)", q.name, op.ErrQueueFull, wait)
	}
	return err
}

// OfferAll appends items in order, all or none (at most MaxBatch).
func (q *Queue) OfferAll(ctx context.Context, items [][]byte) error {
	if len(items) == 0 {
		return nil
	}
	if len(items) > MaxBatch {
		return fmt.Errorf("queues: offer all on queue %q: %w: %d items, at most %d per call", q.name, op.ErrTooLarge, len(items), MaxBatch)
	}
	for i, it := range items {
		if it == nil {
			return fmt.Errorf("queues: offer all on queue %q: item %d: %w", q.name, i, errNilItem)
		}
	}
	req := q.request(OpOfferAll)
	req.Value = encodeItems(items)
	_, err := q.invoke(ctx, "offer all", req)
	return err
}

// Poll removes and returns the head at once; ok is false when the queue is
// empty. A polled item is gone once Poll returns: if the caller crashes
// before using it, it is lost. Use Take for at-least-once processing.
func (q *Queue) Poll(ctx context.Context) (item []byte, ok bool, err error) {
	resp, err := q.invoke(ctx, "poll", q.request(OpPoll))
	if err != nil || !resp.Found {
		return nil, false, err
	}
	return resp.Value, true, nil
}

// PollWait is Poll that waits up to wait (<= 0: until ctx ends) for an
// item. Waiters are served in arrival order; a waiter that gives up is
// removed on the owner, so no item goes to a caller that is gone.
func (q *Queue) PollWait(ctx context.Context, wait time.Duration) (item []byte, ok bool, err error) {
	wctx, cancel, aux := waitCtx(ctx, wait)
	defer cancel()
	req := q.request(OpPollWait)
	req.Aux = aux
	resp, err := q.invoke(wctx, "poll", req)
	if expired(ctx, err) {
		return nil, false, nil
	}
	if err != nil || !resp.Found {
		return nil, false, err
	}
	return resp.Value, true, nil
}

// Peek returns the head without removing it.
func (q *Queue) Peek(ctx context.Context) (item []byte, ok bool, err error) {
	resp, err := q.invoke(ctx, "peek", q.request(OpPeek))
	if err != nil || !resp.Found {
		return nil, false, err
	}
	return resp.Value, true, nil
}

// Len returns the number of ready items and of items in flight (taken, not
// yet acknowledged).
func (q *Queue) Len(ctx context.Context) (ready, inFlight int, err error) {
	st, err := q.Stats(ctx)
	return st.Ready, st.InFlight, err
}

// Stats is a queue's size and waiters at one moment.
type Stats struct {
	Ready         int // items waiting to be taken
	InFlight      int // items taken and not yet acknowledged
	WaitingTakers int // parked PollWait / TakeWait calls
	WaitingOffers int // parked OfferWait calls on a full queue
}

// Stats returns the queue's size and waiters.
func (q *Queue) Stats(ctx context.Context) (Stats, error) {
	resp, err := q.invoke(ctx, "len", q.request(OpLen))
	if err != nil {
		return Stats{}, err
	}
	r := varbin.NewReader(resp.Value)
	st := Stats{Ready: int(resp.Num), InFlight: int(r.Uvarint()), WaitingTakers: int(r.Uvarint()), WaitingOffers: int(r.Uvarint())}
	if r.Err() != nil {
		return Stats{}, fmt.Errorf("queues: len on queue %q: %w: %v", q.name, op.ErrInternal, r.Err())
	}
	return st, nil
}

// Clear removes every ready item (not those in flight) and returns how many.
func (q *Queue) Clear(ctx context.Context) (int, error) {
	resp, err := q.invoke(ctx, "clear", q.request(OpClear))
	if err != nil {
		return 0, err
	}
	return int(resp.Num), nil
}

// Drain removes and returns up to max ready items (at most MaxBatch) at
// once, like Poll: they are gone when Drain returns.
func (q *Queue) Drain(ctx context.Context, max int) ([][]byte, error) {
	if max <= 0 {
		return nil, nil
	}
	req := q.request(OpDrain)
	req.Num = int64(min(max, MaxBatch))
	resp, err := q.invoke(ctx, "drain", req)
	if err != nil {
		return nil, err
	}
	items, err := decodeItems(resp.Value, MaxBatch)
	if err != nil {
		return nil, fmt.Errorf("queues: drain queue %q: %w: %v", q.name, op.ErrInternal, err)
	}
	return items, nil
}

// Delivery is an item taken for reliable processing: Ack it when done or
// Nack it to have it redelivered. Until then it is in flight; it returns to
// the head of the queue when its visibility timeout ends or when the
// taker's session ends (its process died).
type Delivery struct {
	q *Queue
	// ID identifies the delivery within its queue.
	ID uint64
	// Item is the delivered item.
	Item []byte
	// Count is how many times the item has been delivered, this one
	// included (> 1 means an earlier delivery was not acknowledged).
	Count int
}

// TakeOption adjusts a Take.
type TakeOption func(*takeOptions)

type takeOptions struct{ vis time.Duration }

// WithVisibility sets how long the delivery may stay unacknowledged before
// the item is delivered again (default: the queue's rule, else 30 s).
func WithVisibility(d time.Duration) TakeOption {
	return func(o *takeOptions) { o.vis = d }
}

func visMillis(opts []TakeOption) (int64, error) {
	var o takeOptions
	for _, fn := range opts {
		if fn != nil {
			fn(&o)
		}
	}
	if o.vis < 0 {
		return 0, fmt.Errorf("%w: negative visibility timeout %v", op.ErrBadRequest, o.vis)
	}
	ms := int64(o.vis / time.Millisecond)
	if o.vis%time.Millisecond != 0 {
		ms++
	}
	return ms, nil
}

// Take delivers the head for reliable processing, at once; ok is false
// when the queue is empty.
func (q *Queue) Take(ctx context.Context, opts ...TakeOption) (d *Delivery, ok bool, err error) {
	return q.take(ctx, OpTake, nil, opts)
}

// TakeWait is Take that waits up to wait (<= 0: until ctx ends) for an item.
func (q *Queue) TakeWait(ctx context.Context, wait time.Duration, opts ...TakeOption) (d *Delivery, ok bool, err error) {
	wctx, cancel, aux := waitCtx(ctx, wait)
	defer cancel()
	d, ok, err = q.take(wctx, OpTakeWait, aux, opts)
	if expired(ctx, err) {
		return nil, false, nil
	}
	return d, ok, err
}

func (q *Queue) take(ctx context.Context, code uint8, aux []byte, opts []TakeOption) (*Delivery, bool, error) {
	ms, err := visMillis(opts)
	if err != nil {
		return nil, false, fmt.Errorf("queues: take on queue %q: %w", q.name, err)
	}
	req := q.request(code)
	req.Num, req.Aux = ms, aux
	resp, err := q.invoke(ctx, "take", req)
	if err != nil || !resp.Found {
		return nil, false, err
	}
	count, data, err := decodeDelivery(resp.Value)
	if err != nil {
		return nil, false, fmt.Errorf("queues: take on queue %q: %w", q.name, err)
	}
	return &Delivery{q: q, ID: uint64(resp.Num), Item: data, Count: int(count)}, true, nil
}

// Ack completes the delivery: the item is removed for good. ok is false
// when the delivery was no longer in flight (its visibility timeout ended
// or its session ended, so the item may have gone to another consumer).
func (d *Delivery) Ack(ctx context.Context) (ok bool, err error) {
	return d.settle(ctx, OpAck, "ack")
}

// Nack returns the item to the head of the queue for redelivery.
func (d *Delivery) Nack(ctx context.Context) (ok bool, err error) {
	return d.settle(ctx, OpNack, "nack")
}

func (d *Delivery) settle(ctx context.Context, code uint8, what string) (bool, error) {
	if d == nil || d.q == nil {
		return false, fmt.Errorf("queues: %s: %w: nil delivery", what, op.ErrBadRequest)
	}
	req := d.q.request(code)
	req.Num = int64(d.ID)
	resp, err := d.q.invoke(ctx, what, req)
	if err != nil {
		return false, err
	}
	return resp.Found, nil
}
