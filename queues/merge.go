package queues

import (
	"slices"
	"time"

	"github.com/shoalgrid/shoal/op"
)

var _ op.Merger = Service{}

// MergeOp returns OpMerge (op.Merger).
func (Service) MergeOp() uint8 { return OpMerge }

// DefaultMerge returns op.MergeAppend: a queue's items offered on the
// losing side of a split are appended on the winning side unless its
// policy says "discard" (op.MergeDefaulter).
func (Service) DefaultMerge() int64 { return op.MergeAppend }

// MergeNames returns the queues of a partition snapshot (State.Snapshot)
// with their item counts, ready and in flight (op.Merger).
func (s Service) MergeNames(snapshot []byte, now time.Time) (map[string]int, error) {
	from := &state{queues: map[string]*queue{}}
	if err := from.Restore(now, snapshot); err != nil {
		return nil, err
	}
	out := make(map[string]int, len(from.queues))
	for name, q := range from.queues {
		if n := q.size(); n > 0 {
			out[name] = n
		}
	}
	return out, nil
}

// merge applies OpMerge.
func (s *state) merge(x *op.Exec, req *op.Request) *op.Response {
	if req.Num != op.MergeAppend {
		return fail(op.CodeBadRequest, "queue: unknown merge policy %d", req.Num)
	}
	from := &state{queues: map[string]*queue{}}
	if err := from.Restore(x.Now, req.Value); err != nil {
		return fail(op.CodeBadRequest, "queue: merge: %v", err)
	}
	src := from.queues[req.Name]
	if src == nil || src.size() == 0 {
		return &op.Response{}
	}
	ids := make([]uint64, 0, len(src.inflight))
	for id := range src.inflight {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	q := s.get(req.Name, true)
	n := 0
	for _, id := range ids {
		s.push(x, q, src.inflight[id].it)
		n++
	}
	for src.ready.len() > 0 {
		s.push(x, q, src.ready.popFront())
		n++
	}
	s.serve(x, q)
	return &op.Response{Num: int64(n)}
}
