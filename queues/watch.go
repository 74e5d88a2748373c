package queues

import (
	"context"
	"fmt"

	"github.com/shoalgrid/shoal/op"
)

// ItemEventKind says what happened to an item.
type ItemEventKind uint8

// Item event kinds.
const (
	// ItemAdded: an item was appended (Offer, OfferAll, a dead letter).
	ItemAdded ItemEventKind = ItemEventKind(eventAdded)
	// ItemRemoved: an item left the queue for good (Poll, Drain, Clear,
	// Ack, or moved to the dead-letter queue).
	ItemRemoved ItemEventKind = ItemEventKind(eventRemoved)
)

// String names the kind.
func (k ItemEventKind) String() string {
	switch k {
	case ItemAdded:
		return "added"
	case ItemRemoved:
		return "removed"
	}
	return fmt.Sprintf("item-event(%d)", uint8(k))
}

// ItemEvent is an item added to or removed from a queue, as its owner
// emitted it.
type ItemEvent struct {
	Kind ItemEventKind
	Item []byte
}

// ErrNoEvents is returned by Listen when the invoker does not deliver
// structure events.
var ErrNoEvents = fmt.Errorf("%w: the invoker does not deliver structure events", op.ErrBadRequest)

// Listen calls fn for every item added to or removed from the queue, until
// the returned function is called. The queue's rule must enable item
// events (Rule.ItemEvents; off by default because it costs an allocation
// per operation on the owner). Delivery is the runtime's: in order per
// owner, at most once (events are dropped when fn falls behind, and lost
// across an owner failover or a reconnect), so listeners observe, they do
// not account: use Take/Ack to process every item.
func (q *Queue) Listen(ctx context.Context, fn func(ItemEvent)) (stop func(), err error) {
	sub, ok := q.inv.(op.EventSource)
	if !ok {
		return nil, fmt.Errorf("queues: listen on queue %q: %w", q.name, ErrNoEvents)
	}
	stop, err = sub.SubscribeEvents(ctx, ServiceName, q.name, func(p []byte) {
		if len(p) == 0 {
			return
		}
		fn(ItemEvent{Kind: ItemEventKind(p[0]), Item: p[1:]})
	})
	if err != nil {
		return nil, fmt.Errorf("queues: listen on queue %q: %w", q.name, err)
	}
	return stop, nil
}
