package maps

import (
	"bytes"
	"context"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"github.com/shoalgrid/shoal/op"
)

// localInvoker is an in-process op.Invoker over real map States: a test
// harness for the proxies, not a mock. It keeps the parts of the contract a
// proxy can observe: routing by key, Partition >= 0 targeting, non-OK codes
// returned as errors, ownership of Value/Aux handed to the state (it copies,
// as a wire would) and response bytes detached from the state before the
// partition is unlocked.
type localInvoker struct {
	parts []*localPart
	now   func() time.Time
}

type localPart struct {
	mu sync.Mutex
	st op.State
}

var _ op.Invoker = (*localInvoker)(nil)

func newLocalInvoker(n int) *localInvoker { return newLocalInvokerWith(Service{}, n) }

// newLocalInvokerWith is newLocalInvoker over svc's states (rules).
func newLocalInvokerWith(svc Service, n int) *localInvoker {
	inv := &localInvoker{now: time.Now}
	for p := range n {
		inv.parts = append(inv.parts, &localPart{st: svc.NewState(int32(p))})
	}
	return inv
}

func (l *localInvoker) PartitionOf(key string) int32 {
	h := fnv.New32a()
	h.Write([]byte(key))
	return int32(h.Sum32() % uint32(len(l.parts)))
}

func (l *localInvoker) Invoke(ctx context.Context, req *op.Request) (*op.Response, error) {
	if err := op.FromContext(ctx); err != nil {
		return nil, err
	}
	if req.Service != ServiceName {
		return nil, op.Errorf(op.CodeUnknownService, "%q", req.Service)
	}
	r := *req // the caller's request stays untouched
	if r.Partition < 0 {
		r.Partition = l.PartitionOf(r.Key)
	}
	if int(r.Partition) >= len(l.parts) {
		return nil, op.Errorf(op.CodeBadRequest, "partition %d out of range", r.Partition)
	}
	r.Value, r.Aux = bytes.Clone(r.Value), bytes.Clone(r.Aux)
	p := l.parts[r.Partition]
	p.mu.Lock()
	resp := p.st.Apply(l.now(), &r)
	out := *resp
	out.Value = bytes.Clone(resp.Value)
	p.mu.Unlock()
	return &out, out.Err()
}

func (l *localInvoker) InvokeAll(ctx context.Context, req *op.Request) ([]*op.Response, error) {
	resps := make([]*op.Response, len(l.parts))
	for p := range l.parts {
		r := *req
		r.Partition = int32(p)
		resp, err := l.Invoke(ctx, &r)
		if err != nil {
			return nil, fmt.Errorf("partition %d: %w", p, err)
		}
		resps[p] = resp
	}
	return resps, nil
}

// failInvoker fails every call with err, for error-wrapping tests.
type failInvoker struct{ err error }

func (f failInvoker) Invoke(context.Context, *op.Request) (*op.Response, error) {
	return &op.Response{Code: op.CodeOf(f.err)}, f.err
}

func (f failInvoker) InvokeAll(context.Context, *op.Request) ([]*op.Response, error) {
	return nil, f.err
}

func (failInvoker) PartitionOf(string) int32 { return 0 }
