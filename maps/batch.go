package maps

import (
	"context"
	"fmt"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/shoalgrid/shoal/op"
)

// Batch limits. A batch call makes one request per partition that holds
// some of its keys, split further only when a partition's share exceeds
// batchMaxKeys keys or (PutAll) batchMaxBytes of encoded entries, so that
// no request or answer comes near the wire's frame limit.
const (
	batchMaxKeys     = 1000
	batchMaxBytes    = 4 << 20
	batchParallelism = 32
)

// batchReq is one request of a batch call: keys of one partition (and, for
// PutAll, their values).
type batchReq struct {
	partition int32
	keys      []string
	entries   []kv
	size      int
}

// groupKeys splits keys by partition into requests of at most batchMaxKeys
// keys. Duplicate keys are sent once.
func (m *Map) groupKeys(keys []string) []*batchReq {
	byPart := map[int32]*batchReq{}
	seen := make(map[string]struct{}, len(keys))
	var out []*batchReq
	for _, k := range keys {
		if _, dup := seen[k]; dup {
			continue
		}
		seen[k] = struct{}{}
		p := m.inv.PartitionOf(k)
		r := byPart[p]
		if r == nil || len(r.keys) >= batchMaxKeys {
			r = &batchReq{partition: p}
			byPart[p] = r
			out = append(out, r)
		}
		r.keys = append(r.keys, k)
	}
	return out
}

// runBatch sends one request per batchReq and hands every response to
// done (called concurrently). With an op.BatchInvoker the requests go out
// together, grouped by owner (one round trip per member); otherwise at
// most batchParallelism at a time, and the first failure cancels the
// requests not sent yet. The first failure is returned.
func (m *Map) runBatch(ctx context.Context, what string, code uint8, reqs []*batchReq, num int64, done func(*batchReq, *op.Response)) error {
	if err := m.check(); err != nil {
		return fmt.Errorf("maps: %s: %w", what, err)
	}
	build := func(br *batchReq) *op.Request {
		req := m.request(code, "")
		req.Partition, req.Num = br.partition, num
		if br.entries != nil {
			req.Value = encodeEntries(br.entries)
		} else {
			req.Value = encodeKeys(br.keys)
		}
		return req
	}
	fail := func(br *batchReq, err error) error {
		return fmt.Errorf("maps: %s in map %s: partition %d: %w", what, op.Quote(m.name), br.partition, err)
	}
	if bi, ok := m.inv.(op.BatchInvoker); ok && len(reqs) > 1 {
		rs := make([]*op.Request, len(reqs))
		for i, br := range reqs {
			rs[i] = build(br)
		}
		var first error
		for i, res := range bi.InvokeMany(ctx, rs) {
			err := res.Err
			if err == nil && res.Resp == nil {
				err = fmt.Errorf("%w: no response", op.ErrInternal)
			}
			if err != nil {
				if first == nil {
					first = fail(reqs[i], err)
				}
				continue
			}
			done(reqs[i], res.Resp)
		}
		return first
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(batchParallelism)
	for _, br := range reqs {
		g.Go(func() error {
			resp, err := m.inv.Invoke(gctx, build(br))
			if err == nil && resp == nil {
				err = fmt.Errorf("%w: no response", op.ErrInternal)
			}
			if err != nil {
				return fail(br, err)
			}
			done(br, resp)
			return nil
		})
	}
	return g.Wait()
}

// GetAll reads keys and returns the live ones with their values (absent and
// expired keys are left out). It makes one request per partition holding
// some of the keys (a partition's share of more than 1000 keys takes
// more); when the invoker is an op.BatchInvoker (members and clients) the
// requests owned by one member travel together, one round trip per member,
// else they go out up to 32 at a time.
// Each partition is read at its own instant: GetAll is not a snapshot
// across partitions.
func (m *Map) GetAll(ctx context.Context, keys []string) (map[string][]byte, error) {
	if err := m.check(); err != nil {
		return nil, fmt.Errorf("maps: get-all: %w", err)
	}
	out := make(map[string][]byte, len(keys))
	var mu sync.Mutex
	var bad error
	err := m.runBatch(ctx, "get-all", OpGetAll, m.groupKeys(keys), 0, func(br *batchReq, resp *op.Response) {
		es, err := decodeEntries(resp.Value)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			bad = fmt.Errorf("maps: get-all in map %s: partition %d: %w: %w", op.Quote(m.name), br.partition, op.ErrInternal, err)
			return
		}
		for _, e := range es {
			out[e.key] = e.value
		}
	})
	if err == nil {
		err = bad
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// PutAll stores every entry of entries (with the TTL of opts, as Put). It
// makes one request per partition holding some of the keys (a partition's
// share of more than 1000 entries or 4MiB takes more), sent grouped by
// owner as GetAll's. Each request is applied atomically on its partition, but the
// call is not atomic across partitions: on an error some partitions may
// hold their entries and others not (retrying the call is safe). A member
// above its memory limit refuses with op.ErrMapFull.
func (m *Map) PutAll(ctx context.Context, entries map[string][]byte, opts ...Option) error {
	if err := m.check(); err != nil {
		return fmt.Errorf("maps: put-all: %w", err)
	}
	byPart := map[int32]*batchReq{}
	var reqs []*batchReq
	for k, v := range entries {
		p := m.inv.PartitionOf(k)
		size := 10 + len(k) + len(v)
		r := byPart[p]
		if r == nil || len(r.entries) >= batchMaxKeys || (r.size+size > batchMaxBytes && len(r.entries) > 0) {
			r = &batchReq{partition: p}
			byPart[p] = r
			reqs = append(reqs, r)
		}
		r.entries = append(r.entries, kv{key: k, value: v})
		r.size += size
	}
	return m.runBatch(ctx, "put-all", OpPutAll, reqs, ttlMillis(opts), func(*batchReq, *op.Response) {})
}

// DeleteAll removes keys and returns how many were present. It makes one
// request per partition holding some of the keys (more for a partition's
// share of more than 1000 keys), sent grouped by owner as GetAll's. It is not atomic across
// partitions: on an error some keys may be deleted and others not, and the
// count is not returned.
func (m *Map) DeleteAll(ctx context.Context, keys []string) (int, error) {
	if err := m.check(); err != nil {
		return 0, fmt.Errorf("maps: delete-all: %w", err)
	}
	var mu sync.Mutex
	n := 0
	err := m.runBatch(ctx, "delete-all", OpDeleteAll, m.groupKeys(keys), 0, func(_ *batchReq, resp *op.Response) {
		mu.Lock()
		n += int(resp.Num)
		mu.Unlock()
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}
