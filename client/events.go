package client

import (
	"context"
	"sync"

	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/sysop"
)

// eventQueue bounds the events queued for one subscription.
const eventQueue = 256

// SubscribeEvents calls fn with the payload of every event that structure
// name of service emits, on one goroutine of the subscription, in the
// order the owner emitted them. It returns once the subscription is
// registered with every member that answered before ctx ended (the others,
// members that join later and replaced connections are caught up in the
// background, about every RefreshInterval).
//
// Delivery guarantees: at most once, best effort. An event is sent after
// the mutation that emitted it is held by its synchronous backups; it is
// lost if its connection breaks, while the subscription is being
// re-registered, or when fn falls more than 256 events behind. Treat
// events as hints and read the structure for the truth.
//
// The system stream sysop.MergeStream of service sysop.Service carries
// the merge reports members emit after a healed split
// (sysop.DecodeMergeReport).
//
// The returned function ends the subscription.
func (c *Client) SubscribeEvents(ctx context.Context, service, name string, fn func(payload []byte)) (func(), error) {
	if c.closed.Load() {
		return nil, c.errClosed()
	}
	if service == "" || (service[0] == '_' && !sysop.SystemStream(service, name)) {
		return nil, op.Errorf(op.CodeUnknownService, "service %q", service)
	}
	ch := make(chan []byte, eventQueue)
	stop := make(chan struct{})
	id := c.events.Add(service, name, func(p []byte) bool {
		select {
		case ch <- p:
			return true
		default:
			return false
		}
	})
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-c.ctx.Done():
				return
			case p := <-ch:
				fn(p)
			}
		}
	}()
	c.events.Sync(ctx, c.Table())
	var once sync.Once
	return func() {
		once.Do(func() {
			close(stop)
			c.events.Remove(id)
		})
	}, nil
}

var (
	_ op.Invoker      = (*Client)(nil)
	_ op.BatchInvoker = (*Client)(nil)
	_ op.EventSource  = (*Client)(nil)
)
