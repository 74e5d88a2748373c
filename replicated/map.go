package replicated

import (
	"context"
	"fmt"
	"sync"

	"github.com/shoalgrid/shoal/op"
)

// EventType says what changed.
type EventType uint8

// Event types.
const (
	// Added: the key had no live entry on the member that fired it.
	Added EventType = iota + 1
	// Updated: the key's value was replaced.
	Updated
	// Removed: the key was deleted (Value is the removed value).
	Removed
)

// String names the event type.
func (t EventType) String() string {
	switch t {
	case Added:
		return "added"
	case Updated:
		return "updated"
	case Removed:
		return "removed"
	}
	return "unknown"
}

// Event is a change of one key of a replicated map, fired on every member
// whose copy changed (a write or delete applied there, by a local call or
// merged from a peer).
type Event struct {
	Type    EventType
	Key     string
	Value   []byte
	Version Version
}

// Entry is one live entry of a replicated map.
type Entry struct {
	Key     string
	Value   []byte
	Version Version
}

// Map is a handle on one replicated map, reached through an invoker: an
// embedded member answers from its own copy, a client is answered by the
// member it sends the call to (the one its table routes the key to). It
// holds no data; see Near for a client-side copy. Safe for concurrent use.
type Map struct {
	inv  op.Invoker
	name string
}

// New returns the replicated map called name, reached through inv.
func New(inv op.Invoker, name string) *Map { return &Map{inv: inv, name: name} }

// Name returns the map's name.
func (m *Map) Name() string { return m.name }

func (m *Map) call(ctx context.Context, o uint8, key string, value []byte) (*op.Response, error) {
	resp, err := m.inv.Invoke(ctx, &op.Request{Service: Name, Name: m.name, Op: o, Partition: -1, Key: key, Value: value})
	if err != nil {
		return nil, fmt.Errorf("replicated map %s: %w", op.Quote(m.name), err)
	}
	return resp, nil
}

// Get returns the value of key on the answering member's copy.
func (m *Map) Get(ctx context.Context, key string) ([]byte, bool, error) {
	v, _, ok, err := m.GetVersion(ctx, key)
	return v, ok, err
}

// GetVersion is Get, also returning the entry's version.
func (m *Map) GetVersion(ctx context.Context, key string) ([]byte, Version, bool, error) {
	resp, err := m.call(ctx, OpGet, key, nil)
	if err != nil || !resp.Found {
		return nil, Version{}, false, err
	}
	ver, val, err := decodeEntry(resp.Value)
	if err != nil {
		return nil, Version{}, false, fmt.Errorf("replicated map %s: %w", op.Quote(m.name), err)
	}
	return val, ver, true, nil
}

// Put writes value under key on the answering member. It returns once
// that member applied it and as many other members as the map's
// synchronous backup count (grid's Config.Backups and StructureBackups:
// one in the reliable profile, none in the performance profile; at most
// the live members) merged it, so an acknowledged write survives that many
// crashes; the remaining members receive it in the background. A
// concurrent write of the same key elsewhere with a newer version wins
// everywhere (eventual consistency). op.ErrBackupTimeout means the write
// was applied on the answering member but not confirmed by enough others
// in time: it may or may not survive that member.
func (m *Map) Put(ctx context.Context, key string, value []byte) error {
	_, err := m.call(ctx, OpPut, key, value)
	return err
}

// Delete deletes key (a deletion marker, acknowledged like Put); it
// reports whether the answering member held it.
func (m *Map) Delete(ctx context.Context, key string) (bool, error) {
	resp, err := m.call(ctx, OpDelete, key, nil)
	if err != nil {
		return false, err
	}
	return resp.Found, nil
}

// Entries lists the live entries in key order.
func (m *Map) Entries(ctx context.Context) ([]Entry, error) {
	resp, err := m.call(ctx, OpEntries, "", nil)
	if err != nil {
		return nil, err
	}
	es, err := decodeEntries(resp.Value)
	if err != nil {
		return nil, fmt.Errorf("replicated map %s: %w", op.Quote(m.name), err)
	}
	return es, nil
}

// Len counts the live entries.
func (m *Map) Len(ctx context.Context) (int, error) {
	resp, err := m.call(ctx, OpLen, "", nil)
	if err != nil {
		return 0, err
	}
	return int(resp.Num), nil
}

// Watch calls fn for the map's changes, from src (the member or client
// that inv is). Every member fires the events of its own copy: a member
// (op.LocalEventSource) subscribes to its own only, and sees every change
// as it reaches its copy; a client's subscription hears from every member,
// so Watch drops the events whose version is not newer than the last one
// it passed on for the key: fn sees each key's changes once, in version
// order (a change overtaken by a newer one before it arrived is skipped).
// Delivery is at most once, as for every event (see op.EventSource): use
// events as hints and re-read what matters. fn runs on one goroutine at a
// time. Call stop to end.
func (m *Map) Watch(ctx context.Context, src op.EventSource, fn func(Event)) (stop func(), err error) {
	var mu sync.Mutex
	seen := map[string]Version{}
	return subscribe(ctx, src, m.name, func(p []byte) {
		ev, err := DecodeEvent(p)
		if err != nil {
			return
		}
		mu.Lock()
		last, ok := seen[ev.Key]
		fresh := !ok || ev.Version.Compare(last) > 0
		if fresh {
			seen[ev.Key] = ev.Version
			fn(ev)
		}
		mu.Unlock()
	})
}

// subscribe subscribes fn to map name's events: a member's own only, or
// every member's through a client.
func subscribe(ctx context.Context, src op.EventSource, name string, fn func([]byte)) (func(), error) {
	if l, ok := src.(op.LocalEventSource); ok {
		return l.SubscribeLocalEvents(Name, name, fn)
	}
	return src.SubscribeEvents(ctx, Name, name, fn)
}
