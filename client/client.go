// Package client talks to a Shoal cluster from any Go process. A *Client
// implements op.Invoker, so the structure proxies work on it exactly as on an
// embedded member: maps.New(c, "users").
//
// The client learns the partition table from any member it can reach and
// keeps it current (every response carries the member's table version; a
// newer one triggers a refresh, and an idle client polls). Each keyed
// operation goes straight to its partition owner over a shared, multiplexed
// connection. Operations that race a table change, a migration or a lost
// connection are retried on the new owner until the caller's context ends;
// when no member can be reached at all, calls fail fast with
// op.ErrUnavailable, and the client recovers by itself when members return.
//
// Throughput: share one Client among all goroutines (calls made together
// leave in one write). A process making many small calls on a VM gains from
// GODEBUG=schedtrace=2147483647, which keeps the Go runtime's monitor
// thread from parking between bursts (see README.md and docs/benchmarks.md).
package client

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoalgrid/shoal/internal/evsub"
	"github.com/shoalgrid/shoal/internal/invoke"
	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/partition"
	"github.com/shoalgrid/shoal/sysop"
	"github.com/shoalgrid/shoal/wire"
)

// Config configures a Client. Zero fields take the defaults.
type Config struct {
	// Addrs are data addresses of members to contact first (seeds).
	// Default 127.0.0.1:5701.
	Addrs []string
	// Cluster must match the members' cluster name. Default "shoal".
	Cluster string
	// Name identifies the client in members' logs. Default "client-<pid>".
	Name string
	// DialTimeout bounds connecting to one member. Default 2 s.
	DialTimeout time.Duration
	// LocalIP is the IP address connections to members leave from.
	// Default: the kernel's choice. (Network-partition tests give each
	// client its own loopback address.)
	LocalIP string
	// ConnsPerMember is the number of multiplexed connections kept to each
	// member. Default 1 (one connection carries many requests at once).
	ConnsPerMember int
	// RefreshInterval is how often an idle client re-reads the partition
	// table. Default 1 s.
	RefreshInterval time.Duration
	// MaxBackoff caps the wait between retries of one operation and between
	// reconnects to one member. Default 200 ms.
	MaxBackoff time.Duration
	// Limits bound key and value sizes; oversized requests fail before they
	// are sent.
	Limits wire.Limits
	// SessionTTL is how long the client's session lives without a
	// heartbeat; the client heartbeats every third of it. When a client
	// stops (or is cut off) for longer, the cluster ends its session and
	// releases what it held (locks, in-flight deliveries); the client
	// then continues under a new session. Default 2 s.
	SessionTTL time.Duration
	// KeepAlive is how long a connection may stay quiet before the client
	// pings the member over it, so that the member's idle timeout
	// (2 min by default) does not close it. A connection closed anyway is
	// dialed again on next use. Default wire.DefaultKeepAlive (30 s);
	// negative disables the pings.
	KeepAlive time.Duration
	// Logger receives the client's logs. Default: discard.
	Logger *slog.Logger
	// Token is the client's credential, for clusters that require one
	// (members configured with tokens). Without TLS it crosses the network
	// in clear text.
	Token string
	// TLS, when set, runs every connection over TLS (RootCAs: the members'
	// CA; Certificates: the client's certificate for mutual TLS).
	TLS *tls.Config
}

func (c Config) withDefaults() Config {
	if len(c.Addrs) == 0 {
		c.Addrs = []string{"127.0.0.1:5701"}
	}
	if c.Cluster == "" {
		c.Cluster = "shoal"
	}
	if c.Name == "" {
		c.Name = "client-" + strconv.Itoa(os.Getpid())
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 2 * time.Second
	}
	if c.ConnsPerMember <= 0 {
		c.ConnsPerMember = 1
	}
	if c.RefreshInterval <= 0 {
		c.RefreshInterval = time.Second
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 200 * time.Millisecond
	}
	if c.SessionTTL <= 0 {
		c.SessionTTL = 2 * time.Second
	}
	c.SessionTTL = max(c.SessionTTL, 30*time.Millisecond)
	c.Limits = c.Limits.WithDefaults()
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c
}

// Client is a connection to a Shoal cluster. It is safe for concurrent use.
type Client struct {
	cfg Config
	log *slog.Logger

	table     atomic.Pointer[partition.Table]
	tableMu   sync.Mutex
	tableCond chan struct{}

	mu    sync.Mutex
	conns map[string]*memberConns // by member data address

	subsMu sync.Mutex
	subs   map[chan Event]struct{}

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed atomic.Bool

	// session is the client's session id, the origin of its calls
	// (numbered by callSeq); structures name holders by it.
	session atomic.Uint64
	callSeq atomic.Uint64

	// events are the client's event subscriptions (shared code with
	// the member: internal/evsub).
	events *evsub.Registry
	// announced is the newest table version a member announced on
	// sysop.TableStream; tableKick wakes refreshLoop to read it.
	announced atomic.Uint64
	tableKick chan struct{}
	// synced is closed once refreshLoop's first Sync is done; ignoreAnn
	// makes the client ignore announcements (tests that need a stale
	// table).
	synced    chan struct{}
	ignoreAnn atomic.Bool
	// relayed counts the calls sent through another member because
	// their owner was unreachable (see relay).
	relayed atomic.Uint64
	// noDial, set by tests only, makes dials to the addresses it
	// reports fail as an unreachable member's would.
	noDial atomic.Pointer[func(addr string) bool]
	// loop is the route-and-retry loop of Invoke, InvokeAll and
	// InvokeMany (shared with the member, see internal/invoke); its table
	// reads are shared among the calls that need one.
	loop *invoke.Loop
}

// memberConns is the connection set to one member address.
type memberConns struct {
	mu       sync.Mutex
	conns    []*wire.Conn
	next     atomic.Uint32
	failedAt time.Time
	backoff  time.Duration
	// relays counts the calls relayed through this member (see relay).
	relays atomic.Int32
}

// live returns one of mc's open connections, or nil, also while a dial to
// the member holds mc.mu (a relay must not wait for it).
func (mc *memberConns) live() *wire.Conn {
	if !mc.mu.TryLock() {
		return nil
	}
	defer mc.mu.Unlock()
	for _, cn := range mc.conns {
		if cn == nil {
			continue
		}
		select {
		case <-cn.Done():
		default:
			return cn
		}
	}
	return nil
}

// Dial connects to the cluster through the first reachable address in
// cfg.Addrs, reads the partition table and returns a ready client. It keeps
// trying the addresses until ctx ends.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	cfg = cfg.withDefaults()
	for _, a := range cfg.Addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("client: address %q: %w: %v", a, op.ErrBadRequest, err)
		}
	}
	cctx, cancel := context.WithCancel(context.Background())
	c := &Client{
		cfg:       cfg,
		log:       cfg.Logger,
		conns:     map[string]*memberConns{},
		subs:      map[chan Event]struct{}{},
		tableCond: make(chan struct{}),
		ctx:       cctx,
		cancel:    cancel,
	}
	c.session.Store(rand.Uint64() | 1)
	c.newLoop()
	c.events = &evsub.Registry{Log: c.log, Conn: func(ctx context.Context, mb partition.Member) (*wire.Conn, error) {
		return c.conn(ctx, mb.Addr)
	}}
	c.tableKick = make(chan struct{}, 1)
	c.synced = make(chan struct{})
	// Table changes are announced by every member (registered by
	// refreshLoop's first Sync); the read loop only notes the version.
	c.events.Add(sysop.Service, sysop.TableStream, func(p []byte) bool {
		if len(p) != 8 || c.ignoreAnn.Load() {
			return true
		}
		v := binary.BigEndian.Uint64(p)
		for {
			seen := c.announced.Load()
			if v <= seen || c.announced.CompareAndSwap(seen, v) {
				break
			}
		}
		if t := c.table.Load(); t == nil || v > t.Version {
			select {
			case c.tableKick <- struct{}{}:
			default:
			}
		}
		return true
	})
	backoff := 50 * time.Millisecond
	for {
		err := c.refresh(ctx)
		if err == nil {
			break
		}
		if errors.Is(err, op.ErrBadRequest) || errors.Is(err, op.ErrUnauthenticated) || errors.Is(err, op.ErrForbidden) {
			c.Close()
			return nil, fmt.Errorf("client: connect to %v: %w", cfg.Addrs, err)
		}
		select {
		case <-ctx.Done():
			c.Close()
			return nil, fmt.Errorf("client: connect to %v: %w (last error: %w)", cfg.Addrs, op.FromContext(ctx), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
	// Open the session before the first call, so that anything this
	// client comes to hold has a session record that can expire. A
	// cluster without sessions (older members) answers an error: ignored.
	hctx, hcancel := context.WithTimeout(ctx, c.cfg.SessionTTL)
	if err := c.heartbeat(hctx, c.session.Load()); err != nil {
		c.log.Debug("open session", "err", err)
	}
	hcancel()
	c.wg.Add(2)
	go c.refreshLoop()
	go c.heartbeatLoop()
	return c, nil
}

// Close closes every connection. Calls in flight fail; later calls return
// an error matching op.ErrClosed. Close is idempotent.
func (c *Client) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	c.cancel()
	c.wg.Wait()
	c.mu.Lock()
	conns := c.conns
	c.conns = map[string]*memberConns{}
	c.mu.Unlock()
	for _, mc := range conns {
		mc.closeAll()
	}
	c.subsMu.Lock()
	for ch := range c.subs {
		delete(c.subs, ch)
		close(ch)
	}
	c.subsMu.Unlock()
	return nil
}

func (mc *memberConns) closeAll() {
	mc.mu.Lock()
	conns := mc.conns
	mc.conns = nil
	mc.mu.Unlock()
	for _, cn := range conns {
		if cn != nil {
			cn.Close()
		}
	}
}

// abandonCalls fails the calls waiting on the member's connections
// (wire.Conn.AbandonCalls), keeping the connections.
func (mc *memberConns) abandonCalls() {
	mc.mu.Lock()
	conns := slices.Clone(mc.conns)
	mc.mu.Unlock()
	for _, cn := range conns {
		if cn != nil {
			cn.AbandonCalls()
		}
	}
}

func (c *Client) errClosed() error { return fmt.Errorf("client: %w", op.ErrClosed) }

// Table returns the partition table the client routes by.
func (c *Client) Table() *partition.Table { return c.table.Load() }

// Members returns the cluster's members as of the client's table.
func (c *Client) Members() []partition.Member {
	if t := c.Table(); t != nil {
		return slices.Clone(t.Members)
	}
	return nil
}

// PartitionCount returns the cluster's partition count.
func (c *Client) PartitionCount() int {
	if t := c.Table(); t != nil {
		return t.Count
	}
	return 0
}

// PartitionOf returns the partition of key. It implements op.Invoker.
func (c *Client) PartitionOf(key string) int32 {
	return partition.ID(key, max(c.PartitionCount(), 1))
}

// conn returns a live connection to the member at addr, dialling when
// needed. After a failed dial the address is not retried until its backoff
// has passed, so a dead member costs nothing per call.
func (c *Client) conn(ctx context.Context, addr string) (*wire.Conn, error) {
	c.mu.Lock()
	if c.closed.Load() {
		c.mu.Unlock()
		return nil, c.errClosed()
	}
	mc := c.conns[addr]
	if mc == nil {
		mc = &memberConns{conns: make([]*wire.Conn, c.cfg.ConnsPerMember)}
		c.conns[addr] = mc
	}
	c.mu.Unlock()

	i := int(mc.next.Add(1)) % c.cfg.ConnsPerMember
	mc.mu.Lock()
	defer mc.mu.Unlock()
	if mc.conns == nil {
		return nil, c.errClosed()
	}
	if cn := mc.conns[i]; cn != nil {
		select {
		case <-cn.Done():
			mc.conns[i] = nil
		default:
			return cn, nil
		}
	}
	if !mc.failedAt.IsZero() && time.Since(mc.failedAt) < mc.backoff {
		return nil, fmt.Errorf("%w: member %s: %w (retrying in %v)", op.ErrUnavailable, addr, wire.ErrNotSent, (mc.backoff - time.Since(mc.failedAt)).Round(time.Millisecond))
	}
	dctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	d := &net.Dialer{}
	if ip := net.ParseIP(c.cfg.LocalIP); ip != nil {
		d.LocalAddr = &net.TCPAddr{IP: ip}
	}
	var cn *wire.Conn
	var err error
	if f := c.noDial.Load(); f != nil && (*f)(addr) {
		err = fmt.Errorf("%w: dial %s: cut off by the test", op.ErrUnavailable, addr)
	} else {
		cn, err = wire.Dial(dctx, d, addr, wire.Hello{Role: wire.RoleClient, Name: c.cfg.Name, Cluster: c.cfg.Cluster, Token: c.cfg.Token}, wire.Options{Limits: c.cfg.Limits, TLS: c.cfg.TLS, KeepAlive: c.cfg.KeepAlive, OnEvent: c.events.OnEvent})
	}
	if err != nil {
		mc.failedAt = time.Now()
		mc.backoff = min(max(2*mc.backoff, 50*time.Millisecond), c.cfg.MaxBackoff)
		if !errors.Is(err, op.ErrUnavailable) {
			return nil, err // refused handshake (wrong cluster): not transient
		}
		return nil, fmt.Errorf("%w: %w", err, wire.ErrNotSent)
	}
	mc.failedAt, mc.backoff = time.Time{}, 0
	mc.conns[i] = cn
	return cn, nil
}
