package replicated

import (
	"context"
	"sync"
	"time"

	"github.com/shoalgrid/shoal/op"
)

// DefaultNearMaxAge is how long a Near copy trusts an entry it has not
// heard about.
const DefaultNearMaxAge = 30 * time.Second

// Near is a process-local copy of the entries of one replicated map that
// it has read: Get answers from memory, and the map's change events (from
// every member) update or invalidate what it holds. Events are at most
// once (see op.EventSource), so an entry is also re-read once it is older
// than MaxAge: a Near copy is stale by about the propagation latency
// normally, and by at most MaxAge if events were lost. Writes go through
// to the cluster and update the copy with the version they got.
//
// Safe for concurrent use. Close ends its subscription.
type Near struct {
	m      *Map
	maxAge time.Duration
	now    func() time.Time
	stop   func()

	mu      sync.Mutex
	entries map[string]*nearEntry
}

type nearEntry struct {
	ver     Version
	deleted bool // known absent (a delete seen, or a Get that found nothing)
	value   []byte
	at      time.Time // when it was read or last confirmed by an event
	// fetching counts the Gets in flight for the key: an event that
	// arrives meanwhile is kept here, so an older answer cannot replace it.
	fetching int
}

// NearOptions tune a Near copy.
type NearOptions struct {
	// MaxAge bounds how long an entry is served without a re-read (and
	// without an event about it); default DefaultNearMaxAge.
	MaxAge time.Duration
	// Now is the clock (default time.Now), for tests.
	Now func() time.Time
}

// NewNear subscribes to the events of map name through src (the member or
// client inv is) and returns an empty near copy.
func NewNear(ctx context.Context, inv op.Invoker, src op.EventSource, name string, o NearOptions) (*Near, error) {
	n := &Near{m: New(inv, name), maxAge: o.MaxAge, now: o.Now, entries: map[string]*nearEntry{}}
	if n.maxAge <= 0 {
		n.maxAge = DefaultNearMaxAge
	}
	if n.now == nil {
		n.now = time.Now
	}
	stop, err := subscribe(ctx, src, name, n.onEvent)
	if err != nil {
		return nil, err
	}
	n.stop = stop
	return n, nil
}

// Close ends the subscription; the copy keeps answering Gets.
func (n *Near) Close() { n.stop() }

// Map returns the map the copy reads through.
func (n *Near) Map() *Map { return n.m }

func (n *Near) onEvent(p []byte) {
	ev, err := DecodeEvent(p)
	if err != nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	// Only keys read here are kept: the copy holds what this process uses.
	if e := n.entries[ev.Key]; e != nil {
		n.store(e, ev.Version, ev.Type == Removed, ev.Value)
	}
}

// store makes (ver, deleted, value) the key's entry if it is newer.
func (n *Near) store(e *nearEntry, ver Version, deleted bool, value []byte) {
	if c := ver.Compare(e.ver); c < 0 || (c == 0 && !e.at.IsZero()) {
		if c == 0 {
			e.at = n.now()
		}
		return
	}
	e.ver, e.deleted, e.value, e.at = ver, deleted, value, n.now()
	if deleted {
		e.value = nil
	}
}

// Get returns key's value: from the copy when it holds a fresh entry, or
// read through (and kept).
func (n *Near) Get(ctx context.Context, key string) ([]byte, bool, error) {
	n.mu.Lock()
	e := n.entries[key]
	if e != nil && !e.at.IsZero() && n.now().Sub(e.at) < n.maxAge {
		v, ok := e.value, !e.deleted
		n.mu.Unlock()
		return v, ok, nil
	}
	if e == nil {
		e = &nearEntry{}
		n.entries[key] = e
	}
	e.fetching++
	n.mu.Unlock()

	v, ver, ok, err := n.m.GetVersion(ctx, key)

	n.mu.Lock()
	defer n.mu.Unlock()
	e.fetching--
	if err != nil {
		if e.at.IsZero() && e.fetching == 0 {
			delete(n.entries, key)
		}
		return nil, false, err
	}
	if !ok {
		// Absent on the member: remember that, at the zero version, so
		// any write's event replaces it.
		if e.ver.IsZero() {
			e.deleted, e.value, e.at = true, nil, n.now()
		} else if e.deleted {
			e.at = n.now()
		} else {
			// An event brought a newer write than the member had: keep it.
			return e.value, true, nil
		}
		return nil, false, nil
	}
	n.store(e, ver, false, v)
	return e.value, !e.deleted, nil
}

// Put writes through and keeps the value.
func (n *Near) Put(ctx context.Context, key string, value []byte) error {
	err := n.m.Put(ctx, key, value)
	// Drop the entry and let the next Get (or the event) fill it: the
	// write may lose to a concurrent newer one elsewhere.
	n.Invalidate(key)
	return err
}

// Delete deletes through.
func (n *Near) Delete(ctx context.Context, key string) (bool, error) {
	found, err := n.m.Delete(ctx, key)
	n.Invalidate(key)
	return found, err
}

// Invalidate drops key from the copy (the next Get reads through).
func (n *Near) Invalidate(key string) {
	n.mu.Lock()
	if e := n.entries[key]; e != nil {
		if e.fetching == 0 {
			delete(n.entries, key)
		} else {
			e.at = time.Time{}
		}
	}
	n.mu.Unlock()
}

// Len reports how many keys the copy holds.
func (n *Near) Len() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.entries)
}
