package maps

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"slices"
	"strings"

	"github.com/shoalgrid/shoal/op"
)

// Paging, the state side: OpKeysPage and OpEntriesPage walk one
// partition's share of a map in key order, a bounded page at a time, so
// no response grows with the map (OpKeys and OpEntries, kept for old
// callers, answer with the whole partition).

// Page bounds. A page holds at most MaxPageKeys keys and, past its first
// entry, at most MaxPageBytes of keys and values.
const (
	MaxPageKeys  = 1000
	MaxPageBytes = 1 << 20
)

// pageAfter is Aux[0] of a paging request whose Key is a cursor.
const pageAfter = 1

// page serves OpKeysPage and OpEntriesPage.
func (s *state) page(now int64, req *op.Request) *op.Response {
	limit := int(min(max(req.Num, 0), MaxPageKeys))
	if req.Num < 0 {
		return fail(op.CodeBadRequest, "map: negative page size %d", req.Num)
	}
	if limit == 0 {
		limit = MaxPageKeys
	}
	tab := s.maps[req.Name]
	if tab == nil {
		if req.Op == OpKeysPage {
			return &op.Response{Value: encodeKeys(nil)}
		}
		return &op.Response{Value: encodeEntries(nil)}
	}
	after := len(req.Aux) > 0 && req.Aux[0]&pageAfter != 0
	es, more := s.sortedAfter(now, tab, req.Key, after, limit)
	size := 0
	for i, e := range es {
		size += len(e.key) + 10
		if req.Op == OpEntriesPage {
			size += len(e.value)
		}
		if size > MaxPageBytes && i > 0 {
			es, more = es[:i], true
			break
		}
	}
	if req.Op == OpKeysPage {
		keys := make([]string, len(es))
		for i, e := range es {
			keys[i] = e.key
		}
		return &op.Response{Found: more, Value: encodeKeys(keys)}
	}
	return &op.Response{Found: more, Value: encodeEntries(es)}
}

// sortedAfter is used by paging: the live entries of tab whose key sorts
// after cursor (all when !after), sorted, at most limit of them. It scans
// the table once and keeps the smallest limit keys, so a page costs
// O(n log limit) and memory for one page only.
func (s *state) sortedAfter(now int64, tab *table, cursor string, after bool, limit int) (es []kv, more bool) {
	check := tab.exps != nil && s.expiredPending(now)
	h := make(kvMaxHeap, 0, min(limit, len(tab.entries)))
	for k, b := range tab.entries {
		if after && k <= cursor {
			continue
		}
		if check && tab.expired(now, k) {
			continue
		}
		if len(h) < limit {
			h.push(kv{key: k, value: b.value(len(k))})
			continue
		}
		more = true
		if k < h[0].key {
			h[0] = kv{key: k, value: b.value(len(k))}
			h.down(0)
		}
	}
	es = []kv(h)
	slices.SortFunc(es, func(a, b kv) int { return strings.Compare(a.key, b.key) })
	return es, more
}

// kvMaxHeap is a max-heap on key: its root is the largest of the kept
// keys, the one to drop when a smaller key comes along.
type kvMaxHeap []kv

func (h *kvMaxHeap) push(x kv) {
	*h = append(*h, x)
	a := *h
	for j := len(a) - 1; j > 0; {
		i := (j - 1) / 2
		if a[i].key >= a[j].key {
			break
		}
		a[i], a[j] = a[j], a[i]
		j = i
	}
}

func (h kvMaxHeap) down(i int) {
	for {
		l := 2*i + 1
		if l >= len(h) {
			return
		}
		j := l
		if r := l + 1; r < len(h) && h[r].key > h[l].key {
			j = r
		}
		if h[i].key >= h[j].key {
			return
		}
		h[i], h[j] = h[j], h[i]
		i = j
	}
}

// RangeOption adjusts a Range or RangeKeys walk.
type RangeOption func(*rangeOptions)

type rangeOptions struct{ pageSize int }

// PageSize sets how many entries a walk fetches per request (default and
// at most MaxPageKeys; a page is also cut at MaxPageBytes).
func PageSize(n int) RangeOption {
	return func(o *rangeOptions) { o.pageSize = n }
}

func rangeOpts(opts []RangeOption) rangeOptions {
	o := rangeOptions{pageSize: MaxPageKeys}
	for _, fn := range opts {
		if fn != nil {
			fn(&o)
		}
	}
	o.pageSize = min(max(o.pageSize, 1), MaxPageKeys)
	return o
}

// walk pages through the map's partitions (those the size round found
// non-empty) in order, each in key order, handing every page's payload to
// page, which returns the page's last key and whether to go on. A member
// that predates paging (op.ErrUnknownOp) is asked for its whole partition
// with whole instead.
func (m *Map) walk(ctx context.Context, what string, code, whole uint8, o rangeOptions, page func(payload []byte) (last string, cont bool, err error)) error {
	if err := m.check(); err != nil {
		return fmt.Errorf("maps: %s: %w", what, err)
	}
	// The sizes tell both the partition count (op has no call for it) and
	// which partitions can be skipped, at the cost of one small round.
	sizes, err := m.invokeAll(ctx, what, OpSize)
	if err != nil {
		return err
	}
	for p, sz := range sizes {
		if sz.Num == 0 {
			continue
		}
		cursor, after := "", false
		for {
			req := m.request(code, cursor)
			req.Partition, req.Num = int32(p), int64(o.pageSize)
			if after {
				req.Aux = []byte{pageAfter}
			}
			resp, err := m.inv.Invoke(ctx, req)
			if errors.Is(err, op.ErrUnknownOp) && !after {
				req = m.request(whole, "")
				req.Partition = int32(p)
				resp, err = m.inv.Invoke(ctx, req)
				if err == nil && resp != nil {
					resp.Found = false // the whole partition: no next page
				}
			}
			if err == nil && resp == nil {
				err = fmt.Errorf("%w: no response", op.ErrInternal)
			}
			if err != nil {
				return fmt.Errorf("maps: %s map %s: partition %d: %w", what, op.Quote(m.name), p, err)
			}
			last, cont, err := page(resp.Value)
			if err != nil {
				return fmt.Errorf("maps: %s map %s: partition %d: %w: %w", what, op.Quote(m.name), p, op.ErrInternal, err)
			}
			if !cont {
				return nil
			}
			if !resp.Found {
				break
			}
			cursor, after = last, true
		}
	}
	return nil
}

// Range calls fn for every live entry until fn returns false. It walks
// one partition at a time, in key order within a partition, fetching a
// bounded page per request (PageSize), so neither a response nor the
// walk's memory grows with the map. Range is not a snapshot: entries
// written or removed during the walk may or may not be seen (an entry
// present for the whole walk is seen exactly once), and each page is read
// at a different instant. fn may call the Map.
func (m *Map) Range(ctx context.Context, fn func(key string, value []byte) bool, opts ...RangeOption) error {
	if fn == nil {
		return fmt.Errorf("maps: range: %w: nil func", op.ErrBadRequest)
	}
	return m.walk(ctx, "range", OpEntriesPage, OpEntries, rangeOpts(opts), func(payload []byte) (string, bool, error) {
		es, err := decodeEntries(payload)
		if err != nil {
			return "", false, err
		}
		for _, e := range es {
			if !fn(e.key, e.value) {
				return "", false, nil
			}
		}
		if len(es) == 0 {
			return "", true, nil
		}
		return es[len(es)-1].key, true, nil
	})
}

// RangeKeys calls fn for every live key until fn returns false, page by
// page like Range (keys only, so pages carry no values).
func (m *Map) RangeKeys(ctx context.Context, fn func(key string) bool, opts ...RangeOption) error {
	return m.rangeKeys(ctx, "range-keys", fn, opts)
}

func (m *Map) rangeKeys(ctx context.Context, what string, fn func(key string) bool, opts []RangeOption) error {
	if fn == nil {
		return fmt.Errorf("maps: %s: %w: nil func", what, op.ErrBadRequest)
	}
	return m.walk(ctx, what, OpKeysPage, OpKeys, rangeOpts(opts), func(payload []byte) (string, bool, error) {
		keys, err := decodeKeys(payload)
		if err != nil {
			return "", false, err
		}
		for _, k := range keys {
			if !fn(k) {
				return "", false, nil
			}
		}
		if len(keys) == 0 {
			return "", true, nil
		}
		return keys[len(keys)-1], true, nil
	})
}

// All returns an iterator over the map's live entries, page by page as
// Range. The iteration stops at the first error, which *errp receives
// (errp may be nil to ignore it).
func (m *Map) All(ctx context.Context, errp *error, opts ...RangeOption) iter.Seq2[string, []byte] {
	return func(yield func(string, []byte) bool) {
		err := m.Range(ctx, yield, opts...)
		if errp != nil {
			*errp = err
		}
	}
}
