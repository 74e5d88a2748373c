package client

import (
	"context"
	"time"

	"github.com/shoalgrid/shoal/internal/invoke"
	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/partition"
)

// Invoke sends req to the owner of its partition and returns the owner's
// answer, retrying (after refreshing the table) while the partition moves
// or its owner is replaced, until ctx ends. It implements op.Invoker.
//
// Every call carries an identity (client origin and call number), so a
// mutation retried after a lost connection, a failover or a backup timeout
// is answered with its first response instead of being applied twice.
func (c *Client) Invoke(ctx context.Context, req *op.Request) (*op.Response, error) {
	return c.loop.Invoke(ctx, req, false)
}

// invoke is Invoke; internal is set for the client's own calls to the
// member core's services (the session heartbeat).
func (c *Client) invoke(ctx context.Context, req *op.Request, internal bool) (*op.Response, error) {
	return c.loop.Invoke(ctx, req, internal)
}

// InvokeAll runs req on every partition, concurrently (bounded), and returns
// the responses indexed by partition. It implements op.Invoker.
func (c *Client) InvokeAll(ctx context.Context, req *op.Request) ([]*op.Response, error) {
	return c.loop.InvokeAll(ctx, req, false)
}

// InvokeMany runs every request of reqs as Invoke would and returns the
// results in order; the requests owned by one member travel together, in
// one frame (one round trip per member). It implements op.BatchInvoker.
func (c *Client) InvokeMany(ctx context.Context, reqs []*op.Request) []op.Result {
	return c.loop.InvokeMany(ctx, reqs, false)
}

// newLoop builds the client's invoke loop over its transport.
func (c *Client) newLoop() {
	c.loop = &invoke.Loop{
		T:          clientTransport{c},
		Check:      c.cfg.Limits.Check,
		Partitions: c.PartitionCount,
		Identity:   func() (uint64, uint64) { return c.session.Load(), c.callSeq.Add(1) },
		MaxBackoff: c.cfg.MaxBackoff,
		Life:       c.ctx,
		RefreshTimeout: func() time.Duration {
			return 2 * c.cfg.DialTimeout * time.Duration(max(1, len(c.Members())+len(c.cfg.Addrs)))
		},
	}
}

// clientTransport is the client's invoke.Transport: every call goes to
// its owner's connection.
type clientTransport struct{ c *Client }

func (t clientTransport) Table() (*partition.Table, <-chan struct{}) {
	changed := t.c.tableChanged()
	return t.c.Table(), changed
}

func (clientTransport) Precheck(string, *partition.Table) *op.Response { return nil }

func (t clientTransport) Err() error {
	if t.c.closed.Load() {
		return t.c.errClosed()
	}
	return nil
}

func (t clientTransport) Send(ctx context.Context, owner partition.Member, r op.Request) (*op.Response, error) {
	cn, err := t.c.conn(ctx, owner.Addr)
	if err != nil {
		return nil, err
	}
	return cn.Call(ctx, &r)
}

func (t clientTransport) SendMany(ctx context.Context, owner partition.Member, rs []*op.Request) []op.Result {
	out := make([]op.Result, len(rs))
	cn, err := t.c.conn(ctx, owner.Addr)
	if err != nil {
		for i := range out {
			out[i].Err = err
		}
		return out
	}
	resps, errs := cn.CallMany(ctx, rs)
	for i := range out {
		out[i] = op.Result{Resp: resps[i], Err: errs[i]}
	}
	return out
}

// Refresh reads the table of the member that answered with another
// version (a newer one, or an older one: it lags, or belongs to a
// restarted cluster), or, when from is zero, from every known member (see
// refresh).
func (t clientTransport) Refresh(ctx context.Context, from partition.Member, _ uint64) error {
	if from.Addr == "" {
		return t.c.refresh(ctx)
	}
	tab, err := t.c.fetchTable(ctx, from.Addr)
	if err == nil {
		t.c.adopt(tab)
	}
	return err
}
