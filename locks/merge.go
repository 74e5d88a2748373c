package locks

import (
	"time"

	"github.com/shoalgrid/shoal/op"
)

var _ op.Merger = Service{}

// MergeOp returns OpMerge (op.Merger).
func (Service) MergeOp() uint8 { return OpMerge }

// DefaultMerge returns op.MergeRevoke (op.MergeDefaulter): grants made on
// the losing side of a split are revoked and its token counter carried
// over.
func (Service) DefaultMerge() int64 { return op.MergeRevoke }

// MergeNames returns the locks of a partition snapshot (State.Snapshot)
// that were held there, 1 each, and the empty name (count 0) when none was
// but tokens were issued: the counter must still be carried over
// (op.Merger).
func (Service) MergeNames(snapshot []byte, _ time.Time) (map[string]int, error) {
	from := newState(0)
	if err := decodeSnapshot(snapshot, from); err != nil {
		return nil, err
	}
	out := map[string]int{}
	for name, l := range from.locks {
		if l.held {
			out[name] = 1
		}
	}
	if len(out) == 0 && from.last > 0 {
		out[""] = 0
	}
	return out, nil
}

// merge applies OpMerge.
func (s *state) merge(req *op.Request) *op.Response {
	if req.Num != op.MergeRevoke {
		return fail(op.CodeBadRequest, "locks: unknown merge policy %d", req.Num)
	}
	from := newState(s.partition)
	if err := decodeSnapshot(req.Value, from); err != nil {
		return fail(op.CodeBadRequest, "locks: merge: %v", err)
	}
	s.last = max(s.last, from.last)
	if l := from.locks[req.Name]; l != nil && l.held {
		return &op.Response{Num: 1}
	}
	return &op.Response{}
}
