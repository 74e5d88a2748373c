package grid

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/wire"
)

// peers keeps one multiplexed connection to each other member, dialled on
// first use from the member's own IP.
type peers struct {
	m       *Member
	localIP net.IP

	mu    sync.Mutex
	conns map[string]*peerConn
	done  bool
}

type peerConn struct {
	// gone is cancelled when the member leaves or fails (drop): a dial in
	// progress gives up at once instead of holding mu, and with it every
	// caller waiting for this member, until its timeout.
	gone   context.Context
	cancel context.CancelFunc

	mu sync.Mutex // serialises dialling
	// addr is the address conn was dialled to, or "" for a connection the
	// peer opened (valid whatever address it announces, while it lives).
	addr string
	conn *wire.Conn
	// failedAt and backoff: after a failed dial, calls fail fast until
	// backoff has passed (doubling up to maxDialBackoff), so that callers
	// queued on an unreachable member (a cut: each dial waits for its
	// timeout) do not take turns waiting seconds each.
	failedAt time.Time
	backoff  time.Duration
}

// dialTimeout bounds one dial of a member; maxDialBackoff caps the pause
// after failed dials (a member that comes back is dialled again within
// it; one that rejoins after failing gets a fresh entry at once).
const (
	dialTimeout    = 2 * time.Second
	maxDialBackoff = 500 * time.Millisecond
)

// adopt makes c, a connection member name opened to us, the connection to
// that member when there is no live one: both directions of the pair's
// traffic (records one way, acknowledgements the other, and the same for
// the partitions the peer owns) then share one connection, so one read
// and one write syscall carry both.
func (p *peers) adopt(name string, c *wire.Conn) {
	pc := p.entry(name)
	if pc == nil {
		return
	}
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.conn != nil {
		select {
		case <-pc.conn.Done():
		default:
			return
		}
	}
	pc.conn, pc.addr = c, ""
}

func newPeers(m *Member, localIP net.IP) *peers {
	return &peers{m: m, localIP: localIP, conns: map[string]*peerConn{}}
}

// entry returns the slot for member name, creating it, or nil once the
// peers are closed.
func (p *peers) entry(name string) *peerConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return nil
	}
	pc := p.conns[name]
	if pc == nil {
		pc = &peerConn{}
		pc.gone, pc.cancel = context.WithCancel(context.Background())
		p.conns[name] = pc
	}
	return pc
}

// get returns a live connection to member name at addr, dialling if needed.
func (p *peers) get(ctx context.Context, name, addr string) (*wire.Conn, error) {
	pc := p.entry(name)
	if pc == nil {
		return nil, op.ErrClosed
	}
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.conn != nil {
		select {
		case <-pc.conn.Done():
			pc.conn = nil
		default:
			if pc.addr == addr || pc.addr == "" {
				return pc.conn, nil
			}
			pc.conn.Close()
			pc.conn = nil
		}
	}
	if !pc.failedAt.IsZero() && time.Since(pc.failedAt) < pc.backoff {
		return nil, fmt.Errorf("%w: member %s at %s: %w (the last dial failed %v ago)", op.ErrUnavailable, name, addr, wire.ErrNotSent, time.Since(pc.failedAt).Round(time.Millisecond))
	}
	d := &net.Dialer{Timeout: dialTimeout}
	if p.localIP != nil {
		d.LocalAddr = &net.TCPAddr{IP: p.localIP}
	}
	dctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(pc.gone, cancel)
	c, err := wire.Dial(dctx, d, addr, p.m.hello(wire.RoleMember), p.m.connOptions(p.m.sec.peerTLS))
	stop()
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			pc.failedAt = time.Now()
			pc.backoff = min(max(2*pc.backoff, 50*time.Millisecond), maxDialBackoff)
		}
		return nil, fmt.Errorf("connect to member %s at %s: %w", name, addr, err)
	}
	pc.failedAt, pc.backoff = time.Time{}, 0
	if c.Peer().Name != name {
		c.Close()
		return nil, fmt.Errorf("%w: %s is member %q, expected %q", op.ErrUnavailable, addr, c.Peer().Name, name)
	}
	p.mu.Lock()
	if p.done {
		p.mu.Unlock()
		c.Close()
		return nil, op.ErrClosed
	}
	p.mu.Unlock()
	pc.conn, pc.addr = c, addr
	return c, nil
}

// call sends req to member name and returns its response; a non-OK
// response code is returned as an error too.
func (p *peers) call(ctx context.Context, name, addr string, req *op.Request) (*op.Response, error) {
	c, err := p.get(ctx, name, addr)
	if err != nil {
		return nil, err
	}
	resp, err := c.Call(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp, resp.Err()
}

// drop closes the connection to a member that left or failed.
func (p *peers) drop(name string) {
	p.mu.Lock()
	pc := p.conns[name]
	delete(p.conns, name)
	p.mu.Unlock()
	if pc == nil {
		return
	}
	pc.cancel() // before mu: a dial in progress holds it
	pc.mu.Lock()
	if pc.conn != nil {
		pc.conn.Close()
		pc.conn = nil
	}
	pc.mu.Unlock()
}

func (p *peers) closeAll() {
	p.mu.Lock()
	p.done = true
	conns := p.conns
	p.conns = map[string]*peerConn{}
	p.mu.Unlock()
	for _, pc := range conns {
		pc.cancel()
		pc.mu.Lock()
		if pc.conn != nil {
			pc.conn.Close()
			pc.conn = nil
		}
		pc.mu.Unlock()
	}
}
