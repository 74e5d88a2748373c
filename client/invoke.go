package client

import (
	"context"
	"errors"
	"time"

	"github.com/shoalgrid/shoal/internal/invoke"
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
		if resp, ok, rerr := t.c.relay(ctx, owner.Addr, r, err); ok {
			return resp, rerr
		}
		return nil, err
	}
	return cn.Call(ctx, &r)
}

// maxRelays bounds the calls relayed through one member at a time: below
// the member's own bound on the calls it forwards for one connection (4),
// past which it stops reading that connection, and with it every other
// call of this client to that member.
const maxRelays = 2

// relay sends r, whose owner at addr this client cannot reach (dialErr:
// the call was not sent), through another member it is connected to, as
// an unrouted call (table version 0): that member forwards it to the owner
// it knows, or refuses it at once when its side of a network cut has no
// quorum (op.ErrQuorum), instead of the call waiting for addr until its
// deadline. The call keeps its identity, so a retry after a relay is not
// applied twice. ok is false when nothing was sent: dialErr is not an
// unreachable member's, or no other member is connected or free.
func (c *Client) relay(ctx context.Context, addr string, r op.Request, dialErr error) (resp *op.Response, ok bool, err error) {
	if !errors.Is(dialErr, op.ErrUnavailable) || !errors.Is(dialErr, wire.ErrNotSent) {
		return nil, false, nil
	}
	c.mu.Lock()
	others := make([]*memberConns, 0, len(c.conns))
	for a, mc := range c.conns {
		if a != addr {
			others = append(others, mc)
		}
	}
	c.mu.Unlock()
	var via *wire.Conn
	var through *memberConns
	for _, mc := range others {
		if mc.relays.Load() >= maxRelays {
			continue
		}
		if cn := mc.live(); cn != nil {
			via, through = cn, mc
			break
		}
	}
	if via == nil {
		return nil, false, nil
	}
	if through.relays.Add(1) > maxRelays {
		through.relays.Add(-1)
		return nil, false, nil
	}
	defer through.relays.Add(-1)
	c.relayed.Add(1)
	r.TableVersion = 0
	resp, err = via.Call(ctx, &r)
	return resp, true, err
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
