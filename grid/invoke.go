package grid

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/partition"
)

// Invoke runs req on the owner of its partition: locally when this member
// owns it, otherwise over the owner's connection. Calls that race a table
// change or a migration are retried against the new owner until ctx ends;
// they are never dropped silently. It implements op.Invoker.
func (m *Member) Invoke(ctx context.Context, req *op.Request) (*op.Response, error) {
	return m.invoke(ctx, req, false)
}

// invoke is Invoke; internal is set for the member core's own calls,
// which may use the reserved operation codes (op.OpReservedMin and up).
func (m *Member) invoke(ctx context.Context, req *op.Request, internal bool) (*op.Response, error) {
	if m.closed.Load() {
		return nil, m.errClosed()
	}
	if err := m.cfg.Limits.Check(req); err != nil {
		return nil, err
	}
	if req.Service == "" || (req.Service[0] == '_' && !internal) {
		return nil, op.Errorf(op.CodeUnknownService, "service %s", op.Quote(req.Service))
	}
	if req.Op >= op.OpReservedMin && !internal {
		return nil, op.Errorf(op.CodeUnknownOp, "operation %d is reserved for the member core", req.Op)
	}
	if ws := m.wideService(req.Service); ws != nil {
		// A replicated service answers from this member's copy. The
		// replica keeps the value: never let it alias the caller's.
		r := *req
		r.Value, r.Aux = bytes.Clone(r.Value), bytes.Clone(r.Aux)
		resp, pending := m.applyWide(ws, &r)
		if pending == nil {
			return resp, resp.Err()
		}
		ch := make(chan *op.Response, 1)
		pending(func(resp *op.Response) { ch <- resp })
		select {
		case resp := <-ch:
			return resp, resp.Err()
		case <-ctx.Done():
			// Applied here; whether the other members hold it is unknown.
			return nil, fmt.Errorf("waiting for other members to take the write: %w", op.FromContext(ctx))
		}
	}
	r := *req
	if r.Partition < 0 {
		r.Partition = m.PartitionOf(r.Key)
	}
	if int(r.Partition) >= m.cfg.PartitionCount {
		return nil, op.Errorf(op.CodeBadRequest, "partition %d out of range 0..%d", r.Partition, m.cfg.PartitionCount-1)
	}
	if r.Origin == 0 && !internal {
		// Give the call an identity so a retry is never applied twice.
		r.Origin, r.CallSeq = m.sess.id.Load(), m.callSeq.Add(1)
	}
	cloned := false
	var backoff op.Backoff
	var lastErr error
	for {
		changed := m.tableChanged()
		t := m.Table()
		var resp *op.Response
		var err error
		var owner partition.Member
		if t == nil {
			resp = &op.Response{Code: op.CodeStaleTable, Msg: "member " + m.cfg.Name + " has no partition table yet"}
		} else if q := m.quorumRefusal(r.Name, time.Now(), t.Version, false); q != nil {
			// This side has no quorum: fail fast rather than wait for an
			// owner on the other side.
			resp = q
		} else if o, ok := t.Owner(r.Partition); !ok {
			resp = &op.Response{Code: op.CodeStaleTable, Msg: fmt.Sprintf("partition %d has no owner in table %d", r.Partition, t.Version), TableVersion: t.Version}
		} else {
			owner = o
			r.TableVersion = t.Version
			if owner.Name == m.cfg.Name {
				if !cloned {
					// The state machine keeps the value: never let it
					// alias the caller's buffer.
					r.Value, r.Aux, cloned = bytes.Clone(r.Value), bytes.Clone(r.Aux), true
				}
				var w *ackWait
				var pc *parkedCall
				if dl, ok := ctx.Deadline(); ok {
					// A state that parks the call learns when its
					// caller stops waiting.
					r.Timeout = max(time.Until(dl), time.Millisecond)
				}
				start := time.Now()
				resp, w, pc = m.executeLocal(nil, &r)
				if pc != nil {
					resp, err = m.waitParked(ctx, pc)
					if err != nil {
						return nil, err
					}
				}
				if resp.Code == op.OK {
					resp.Value = bytes.Clone(resp.Value)
				}
				if w != nil {
					werr := w.wait(ctx, m.cfg.BackupTimeout)
					if werr == nil {
						werr = m.leaseAtAck(r.Name)
					}
					if werr != nil {
						resp = errResponse(werr, resp.TableVersion)
					}
				}
				m.observeLatency(&r, resp.Code, start)
			} else {
				var c interface {
					Call(context.Context, *op.Request) (*op.Response, error)
				}
				c, err = m.peers.get(ctx, owner.Name, owner.Addr)
				if err == nil {
					resp, err = c.Call(ctx, &r)
				}
			}
		}
		switch op.Judge(resp, err) {
		case op.Done:
			return resp, resp.Err()
		case op.Fail:
			return nil, err
		}
		if err != nil {
			lastErr = err
		} else {
			lastErr = resp.Err()
			if t != nil && resp.TableVersion > t.Version {
				m.pullTable(ctx, owner)
			}
		}
		if m.closed.Load() {
			return nil, m.errClosed()
		}
		if werr := backoff.Wait(ctx, changed); werr != nil {
			return nil, fmt.Errorf("%w (last attempt: %v)", werr, lastErr)
		}
	}
}

// pullTable fetches the table of a member that answered with a newer
// version than ours, so we need not wait for the coordinator's next push.
// It reports whether the member answered with a table (adopted or not).
func (m *Member) pullTable(ctx context.Context, from partition.Member) bool {
	if from.Name == "" || from.Name == m.cfg.Name {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	resp, err := m.peers.call(ctx, from.Name, from.Addr, &op.Request{Service: sysService, Op: sysGetTable, Partition: -1})
	if err != nil || !resp.Found {
		return false
	}
	t, err := partition.Unmarshal(resp.Value)
	if err != nil {
		return false
	}
	m.adopt(t, from.Name)
	return true
}

// InvokeAll runs req on every partition (concurrently, bounded) and returns
// the responses indexed by partition. It implements op.Invoker.
func (m *Member) InvokeAll(ctx context.Context, req *op.Request) ([]*op.Response, error) {
	return m.invokeAll(ctx, req, false)
}

func (m *Member) invokeAll(ctx context.Context, req *op.Request, internal bool) ([]*op.Response, error) {
	out := make([]*op.Response, m.cfg.PartitionCount)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(64)
	for p := range out {
		r := *req
		r.Partition = int32(p)
		g.Go(func() error {
			resp, err := m.invoke(gctx, &r, internal)
			if err != nil {
				return fmt.Errorf("partition %d: %w", p, err)
			}
			out[p] = resp
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}
