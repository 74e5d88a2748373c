// Package evsub is the subscriber side of structure events, shared by the
// member (grid) and the client: a registry of subscriptions, each
// registered (sysop.Subscribe) on one connection to every member of the
// table, because the structure's owner sends the events and owners change.
// Sync catches up members that joined and connections that were replaced;
// OnEvent hands an event frame to its subscription without blocking.
package evsub

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/partition"
	"github.com/shoalgrid/shoal/sysop"
	"github.com/shoalgrid/shoal/wire"
)

// Registry holds one process's subscriptions. Set the fields before the
// first Add; its methods are safe for concurrent use.
type Registry struct {
	// Self is the name of the local member, which Sync skips (its own
	// events are delivered in process); "" for a client.
	Self string
	// Conn returns a live connection to member mb.
	Conn func(ctx context.Context, mb partition.Member) (*wire.Conn, error)
	// Log receives a debug line for each registration that failed.
	Log *slog.Logger

	mu      sync.Mutex
	subs    map[uint64]*sub
	next    uint64
	dropped atomic.Uint64
}

// sub is one subscription.
type sub struct {
	service, name string
	// deliver hands an event over without blocking; false means dropped.
	deliver func(payload []byte) bool
	// on is the connection each member (by name) registered it on.
	on map[string]*wire.Conn
}

// Add registers a subscription to the events of structure name of
// service; deliver must not block (it runs on a connection's read loop)
// and reports false when it dropped the event. Call Sync to register it
// with the members.
func (r *Registry) Add(service, name string, deliver func(payload []byte) bool) (id uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.subs == nil {
		r.subs = map[uint64]*sub{}
	}
	r.next++
	r.subs[r.next] = &sub{service: service, name: name, deliver: deliver, on: map[string]*wire.Conn{}}
	return r.next
}

// Remove ends subscription id: it is forgotten here and unregistered,
// without waiting, on every connection that holds it.
func (r *Registry) Remove(id uint64) {
	r.mu.Lock()
	s := r.subs[id]
	delete(r.subs, id)
	r.mu.Unlock()
	if s == nil {
		return
	}
	for _, c := range s.on {
		_ = c.Go(&op.Request{Service: sysop.Service, Op: sysop.Unsubscribe, Partition: -1, Key: s.service, Name: s.name, Num: int64(id)}, func(*op.Response, error) {})
	}
}

// Len is the number of subscriptions.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.subs)
}

// Dropped counts the events dropped because their subscriber fell behind.
func (r *Registry) Dropped() uint64 { return r.dropped.Load() }

// OnEvent hands an event frame of subscription id to it (wire.Options
// OnEvent: it runs on the connection's read loop and never blocks).
func (r *Registry) OnEvent(id uint64, payload []byte) {
	r.mu.Lock()
	s := r.subs[id]
	r.mu.Unlock()
	if s != nil && !s.deliver(payload) {
		r.dropped.Add(1)
	}
}

// Sync registers every subscription with every member of t (but Self)
// that does not hold it on a live connection. Each registration waits at
// most a second; a failed one is retried by the next Sync.
func (r *Registry) Sync(ctx context.Context, t *partition.Table) {
	if t == nil {
		return
	}
	r.mu.Lock()
	ids := make([]uint64, 0, len(r.subs))
	for id := range r.subs {
		ids = append(ids, id)
	}
	r.mu.Unlock()
	for _, id := range ids {
		for _, mb := range t.Members {
			if mb.Name == r.Self {
				continue
			}
			if ctx.Err() != nil {
				return
			}
			r.mu.Lock()
			s := r.subs[id]
			var cur *wire.Conn
			if s != nil {
				cur = s.on[mb.Name]
			}
			r.mu.Unlock()
			if s == nil {
				break // removed meanwhile
			}
			if cur != nil {
				select {
				case <-cur.Done():
				default:
					continue
				}
			}
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			c, err := r.Conn(cctx, mb)
			if err == nil {
				var resp *op.Response
				resp, err = c.Call(cctx, &op.Request{Service: sysop.Service, Op: sysop.Subscribe, Partition: -1, Key: s.service, Name: s.name, Num: int64(id)})
				if err == nil {
					err = resp.Err()
				}
			}
			cancel()
			if err != nil {
				if r.Log != nil {
					r.Log.Debug("event subscription not registered", "member", mb.Name, "err", err)
				}
				continue
			}
			r.mu.Lock()
			if r.subs[id] == s {
				s.on[mb.Name] = c
			}
			r.mu.Unlock()
		}
	}
}
