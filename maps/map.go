package maps

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/shoalgrid/shoal/op"
)

// Map is a handle on one distributed map. It holds no data and no
// connections: every call becomes one op.Request sent through the Invoker,
// which is why the same Map works over an embedded member and over a remote
// client. A Map is safe for concurrent use; creating one is free.
//
// Errors wrap the invoker's sentinel errors (op.ErrTimeout, op.ErrClosed,
// ...), so match them with errors.Is. After op.ErrTimeout the outcome of a
// mutation is unknown.
type Map struct {
	inv  op.Invoker
	name string
}

// New returns the map called name, reached through inv. Nothing is created
// on the cluster: a map exists while it has entries.
func New(inv op.Invoker, name string) *Map {
	return &Map{inv: inv, name: name}
}

// Name returns the map's name ("" for a nil Map).
func (m *Map) Name() string {
	if m == nil {
		return ""
	}
	return m.name
}

// Option adjusts one write.
type Option func(*options)

type options struct {
	ttl time.Duration
}

// WithTTL makes the written entry expire d after the owner applies the
// write. TTLs travel in whole milliseconds, so d is rounded up (a TTL never
// ends early); d <= 0 means the entry never expires, which is also the
// default. A later write without WithTTL clears the TTL.
func WithTTL(d time.Duration) Option {
	return func(o *options) { o.ttl = d }
}

// ttlMillis folds opts into the wire TTL.
func ttlMillis(opts []Option) int64 {
	var o options
	for _, fn := range opts {
		if fn != nil {
			fn(&o)
		}
	}
	if o.ttl <= 0 {
		return 0
	}
	ms := int64(o.ttl / time.Millisecond)
	if o.ttl%time.Millisecond != 0 && ms < math.MaxInt64 {
		ms++
	}
	return ms
}

var errNoMap = fmt.Errorf("%w: nil map or empty map name", op.ErrBadRequest)

// check rejects calls the owner could never serve, without a round trip.
func (m *Map) check() error {
	if m == nil || m.inv == nil || m.name == "" {
		return errNoMap
	}
	return nil
}

func (m *Map) request(code uint8, key string) *op.Request {
	return &op.Request{Service: ServiceName, Name: m.Name(), Op: code, Partition: -1, Key: key}
}

// invoke sends a keyed request to the key's owner.
func (m *Map) invoke(ctx context.Context, what string, req *op.Request) (*op.Response, error) {
	if err := m.check(); err != nil {
		return nil, fmt.Errorf("maps: %s %s: %w", what, op.Quote(req.Key), err)
	}
	resp, err := m.inv.Invoke(ctx, req)
	if err == nil && resp == nil {
		err = fmt.Errorf("%w: no response", op.ErrInternal)
	}
	if err != nil {
		return nil, fmt.Errorf("maps: %s %s in map %s: %w", what, op.Quote(req.Key), op.Quote(m.name), err)
	}
	return resp, nil
}

// invokeAll sends a whole-map request to every partition.
func (m *Map) invokeAll(ctx context.Context, what string, code uint8) ([]*op.Response, error) {
	if err := m.check(); err != nil {
		return nil, fmt.Errorf("maps: %s: %w", what, err)
	}
	resps, err := m.inv.InvokeAll(ctx, m.request(code, ""))
	if err == nil {
		for p, r := range resps {
			if r == nil {
				err = fmt.Errorf("%w: no response from partition %d", op.ErrInternal, p)
				break
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("maps: %s map %s: %w", what, op.Quote(m.name), err)
	}
	return resps, nil
}

// Incr adds delta to the integer stored under key (decimal text; an absent
// key counts as 0), keeps the entry's TTL and returns the new value. It is
// atomic on the key's owner and retry-safe: a retried call is answered, not
// applied twice. A value that is not an integer fails with op.ErrWrongType.
func (m *Map) Incr(ctx context.Context, key string, delta int64) (int64, error) {
	req := m.request(OpIncr, key)
	req.Num = delta
	resp, err := m.invoke(ctx, "incr", req)
	if err != nil {
		return 0, err
	}
	return resp.Num, nil
}

// Put stores value under key, replacing any previous value and TTL.
func (m *Map) Put(ctx context.Context, key string, value []byte, opts ...Option) error {
	req := m.request(OpPut, key)
	req.Value, req.Num = value, ttlMillis(opts)
	_, err := m.invoke(ctx, "put", req)
	return err
}

// Get returns the value under key; found is false when key is absent or
// expired.
func (m *Map) Get(ctx context.Context, key string) (value []byte, found bool, err error) {
	resp, err := m.invoke(ctx, "get", m.request(OpGet, key))
	if err != nil || !resp.Found {
		return nil, false, err
	}
	return resp.Value, true, nil
}

// Delete removes key and reports whether it was present.
func (m *Map) Delete(ctx context.Context, key string) (existed bool, err error) {
	resp, err := m.invoke(ctx, "delete", m.request(OpDelete, key))
	if err != nil {
		return false, err
	}
	return resp.Found, nil
}

// PutIfAbsent stores value under key only if key is absent, atomically.
// stored reports whether it did; when it did not, existing is the value
// already there.
func (m *Map) PutIfAbsent(ctx context.Context, key string, value []byte, opts ...Option) (existing []byte, stored bool, err error) {
	req := m.request(OpPutIfAbsent, key)
	req.Value, req.Num = value, ttlMillis(opts)
	resp, err := m.invoke(ctx, "put-if-absent", req)
	if err != nil {
		return nil, false, err
	}
	if resp.Found {
		return nil, true, nil
	}
	return resp.Value, false, nil
}

// Replace stores value under key only if key is present, atomically, and
// reports whether it did. The TTL is replaced too.
func (m *Map) Replace(ctx context.Context, key string, value []byte, opts ...Option) (bool, error) {
	req := m.request(OpReplace, key)
	req.Value, req.Num = value, ttlMillis(opts)
	resp, err := m.invoke(ctx, "replace", req)
	if err != nil {
		return false, err
	}
	return resp.Found, nil
}

// CompareAndSwap stores new under key only if key is present with a value
// equal to old (byte for byte), atomically, and reports whether it did. An
// absent key never matches, not even a nil old.
func (m *Map) CompareAndSwap(ctx context.Context, key string, old, new []byte, opts ...Option) (bool, error) {
	req := m.request(OpCompareAndSwap, key)
	req.Value, req.Aux, req.Num = new, old, ttlMillis(opts)
	resp, err := m.invoke(ctx, "compare-and-swap", req)
	if err != nil {
		return false, err
	}
	return resp.Found, nil
}

// Contains reports whether key is present.
func (m *Map) Contains(ctx context.Context, key string) (bool, error) {
	resp, err := m.invoke(ctx, "contains", m.request(OpContains, key))
	if err != nil {
		return false, err
	}
	return resp.Found, nil
}

// Size returns the number of live entries. Partitions are counted one after
// another, not at one instant, so under concurrent writes the total is
// approximate.
func (m *Map) Size(ctx context.Context) (int, error) {
	resps, err := m.invokeAll(ctx, "size", OpSize)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, r := range resps {
		n += r.Num
	}
	return int(n), nil
}

// Keys returns every live key, sorted. The result holds the whole key
// set in memory (the requests do not: they page as RangeKeys); use
// RangeKeys or Range to walk a large map.
func (m *Map) Keys(ctx context.Context) ([]string, error) {
	var keys []string
	err := m.rangeKeys(ctx, "keys", func(k string) bool {
		keys = append(keys, k)
		return true
	}, nil)
	if err != nil {
		return nil, err
	}
	slices.Sort(keys)
	return keys, nil
}

// Clear removes every entry. It is not atomic across partitions: a write
// racing with Clear may survive it.
func (m *Map) Clear(ctx context.Context) error {
	_, err := m.invokeAll(ctx, "clear", OpClear)
	return err
}
