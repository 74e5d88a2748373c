package client

import (
	"context"
	"sync"
	"time"

	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/sysop"
	"github.com/shoalgrid/shoal/wire"
)

// eventQueue bounds the events queued for one subscription.
const eventQueue = 256

// subscription is one SubscribeEvents: registered on one connection to
// every member (the structure's owner sends the events; owners change).
type subscription struct {
	service, name string
	ch            chan []byte
	// on is the connection each member address registered it on.
	on map[string]*wire.Conn
}

type subscriptions struct {
	mu      sync.Mutex
	subs    map[uint64]*subscription
	next    uint64
	dropped uint64
}

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
	s := &subscription{service: service, name: name, ch: make(chan []byte, eventQueue), on: map[string]*wire.Conn{}}
	stop := make(chan struct{})
	c.events.mu.Lock()
	c.events.next++
	id := c.events.next
	c.events.subs[id] = s
	c.events.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-c.ctx.Done():
				return
			case p := <-s.ch:
				fn(p)
			}
		}
	}()
	c.syncSubs(ctx)
	var once sync.Once
	return func() {
		once.Do(func() {
			close(stop)
			c.events.mu.Lock()
			delete(c.events.subs, id)
			on := s.on
			c.events.mu.Unlock()
			for _, cn := range on {
				_ = cn.Go(&op.Request{Service: sysop.Service, Op: sysop.Unsubscribe, Partition: -1, Key: service, Name: name, Num: int64(id)}, func(*op.Response, error) {})
			}
		})
	}, nil
}

// onEvent receives an event frame (on a connection's read loop).
func (c *Client) onEvent(sub uint64, payload []byte) {
	c.events.mu.Lock()
	defer c.events.mu.Unlock()
	s := c.events.subs[sub]
	if s == nil {
		return
	}
	select {
	case s.ch <- payload:
	default:
		c.events.dropped++
	}
}

// syncSubs registers every subscription with every member of the table on
// which it is not registered on a live connection.
func (c *Client) syncSubs(ctx context.Context) {
	t := c.Table()
	if t == nil {
		return
	}
	c.events.mu.Lock()
	ids := make([]uint64, 0, len(c.events.subs))
	for id := range c.events.subs {
		ids = append(ids, id)
	}
	c.events.mu.Unlock()
	for _, id := range ids {
		for _, mb := range t.Members {
			if ctx.Err() != nil {
				return
			}
			c.events.mu.Lock()
			s := c.events.subs[id]
			var cur *wire.Conn
			if s != nil {
				cur = s.on[mb.Addr]
			}
			c.events.mu.Unlock()
			if s == nil {
				break
			}
			if cur != nil {
				select {
				case <-cur.Done():
				default:
					continue
				}
			}
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			cn, err := c.conn(cctx, mb.Addr)
			if err == nil {
				var resp *op.Response
				resp, err = cn.Call(cctx, &op.Request{Service: sysop.Service, Op: sysop.Subscribe, Partition: -1, Key: s.service, Name: s.name, Num: int64(id)})
				if err == nil {
					err = resp.Err()
				}
			}
			cancel()
			if err != nil {
				c.log.Debug("event subscription not registered", "member", mb.Name, "err", err)
				continue
			}
			c.events.mu.Lock()
			if c.events.subs[id] == s {
				s.on[mb.Addr] = cn
			}
			c.events.mu.Unlock()
		}
	}
}

var (
	_ op.Invoker     = (*Client)(nil)
	_ op.EventSource = (*Client)(nil)
)
