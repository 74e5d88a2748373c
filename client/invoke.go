package client

import (
	"context"
	"fmt"

	"golang.org/x/sync/errgroup"

	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/partition"
	"github.com/shoalgrid/shoal/wire"
)

// Invoke sends req to the owner of its partition and returns the owner's
// answer, retrying (after refreshing the table) while the partition moves
// or its owner is replaced, until ctx ends. It implements op.Invoker.
//
// Every call carries an identity (client origin and call number), so a
// mutation retried after a lost connection, a failover or a backup timeout
// is answered with its first response instead of being applied twice.
func (c *Client) Invoke(ctx context.Context, req *op.Request) (*op.Response, error) {
	return c.invoke(ctx, req, false)
}

// invoke is Invoke; internal is set for the client's own calls to the
// member core's services (the session heartbeat).
func (c *Client) invoke(ctx context.Context, req *op.Request, internal bool) (*op.Response, error) {
	if c.closed.Load() {
		return nil, c.errClosed()
	}
	if err := c.cfg.Limits.Check(req); err != nil {
		return nil, err
	}
	if req.Service == "" || (req.Service[0] == '_' && !internal) || req.Op >= op.OpReservedMin {
		return nil, op.Errorf(op.CodeUnknownService, "service %s", op.Quote(req.Service))
	}
	r := *req
	t := c.Table()
	if r.Partition < 0 {
		r.Partition = partition.ID(r.Key, t.Count)
	}
	if int(r.Partition) >= t.Count {
		return nil, op.Errorf(op.CodeBadRequest, "partition %d out of range 0..%d", r.Partition, t.Count-1)
	}
	if r.Origin == 0 && !internal {
		// An identity makes retries safe: the owner answers a repeated
		// mutation with its first response instead of applying it again.
		r.Origin, r.CallSeq = c.session.Load(), c.callSeq.Add(1)
	}
	backoff := op.Backoff{Max: c.cfg.MaxBackoff}
	var lastErr error
	for {
		changed := c.tableChanged()
		t = c.Table()
		owner, ok := t.Owner(r.Partition)
		var resp *op.Response
		var err error
		if !ok {
			resp = &op.Response{Code: op.CodeStaleTable, Msg: fmt.Sprintf("partition %d has no owner in table %d", r.Partition, t.Version)}
		} else {
			r.TableVersion = t.Version
			var cn *wire.Conn
			if cn, err = c.conn(ctx, owner.Addr); err == nil {
				resp, err = cn.Call(ctx, &r)
			}
		}
		if err == nil && (resp.TableVersion > t.Version || (resp.Code == op.CodeStaleTable && resp.TableVersion < t.Version)) {
			// Newer table at the owner, or the owner lags behind us (or
			// belongs to a restarted cluster): read its table.
			c.refreshFrom(ctx, owner.Addr)
		}
		switch op.Judge(resp, err) {
		case op.Done:
			return resp, resp.Err()
		case op.Fail:
			if c.closed.Load() {
				return nil, c.errClosed()
			}
			return nil, err // too large, timeout, canceled, refused
		}
		if err == nil {
			lastErr = resp.Err()
		} else {
			if c.closed.Load() {
				return nil, c.errClosed()
			}
			lastErr = err
			// The owner is unreachable: learn the current table from any
			// member. If none answers, fail fast rather than hang.
			if rerr := c.sharedRefresh(ctx); rerr != nil {
				if ctx.Err() != nil {
					return nil, fmt.Errorf("%w (last attempt: %v)", op.FromContext(ctx), lastErr)
				}
				return nil, fmt.Errorf("client: %w", rerr)
			}
		}
		if c.closed.Load() {
			return nil, c.errClosed()
		}
		if werr := backoff.Wait(ctx, changed); werr != nil {
			return nil, fmt.Errorf("%w (last attempt: %v)", werr, lastErr)
		}
	}
}

// InvokeAll runs req on every partition, concurrently (bounded), and returns
// the responses indexed by partition. It implements op.Invoker.
func (c *Client) InvokeAll(ctx context.Context, req *op.Request) ([]*op.Response, error) {
	if c.closed.Load() {
		return nil, c.errClosed()
	}
	out := make([]*op.Response, c.PartitionCount())
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(64)
	for p := range out {
		r := *req
		r.Partition = int32(p)
		g.Go(func() error {
			resp, err := c.Invoke(gctx, &r)
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
