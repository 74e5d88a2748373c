package wire

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/op"
)

// Handler serves the requests that arrive on a Conn.
//
// HandleRequest is called from the connection's read loop, one request at a
// time, so it must not block for long: run slow work elsewhere. It must
// eventually call c.Respond(id, ...) exactly once. It owns req and its byte
// slices.
type Handler interface {
	HandleRequest(c *Conn, id uint64, req *op.Request)
}

// CancelHandler is implemented by handlers that act on KindCancel frames:
// the caller of request id (received on c) gave up waiting. It is called
// from the read loop and must not block.
type CancelHandler interface {
	HandleCancel(c *Conn, id uint64)
}

// RecordHandler is implemented by handlers that take KindRecord frames
// (backup records) from member peers. HandleRecord is called from the read
// loop like HandleRequest and must eventually call c.Respond(id, ...)
// exactly once. body is the frame's body, valid only until HandleRecord
// returns (the read loop reuses the buffer): decode what you keep before
// returning.
type RecordHandler interface {
	HandleRecord(c *Conn, id uint64, body []byte)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(c *Conn, id uint64, req *op.Request)

// HandleRequest calls f.
func (f HandlerFunc) HandleRequest(c *Conn, id uint64, req *op.Request) { f(c, id, req) }

// Options configure a Conn.
type Options struct {
	// Limits bound keys, values and frames in both directions.
	Limits Limits
	// Handler serves incoming requests; nil refuses them with
	// op.ErrBadRequest.
	Handler Handler
	// MaxPendingWrite bounds the bytes queued for writing; senders block
	// (back-pressure) until the write loop drains below it. Default 32 MiB.
	MaxPendingWrite int
	// WriteTimeout bounds one write syscall; a peer that stops reading for
	// that long is disconnected. Default 10 s.
	WriteTimeout time.Duration
	// HandshakeTimeout bounds the handshake. Default 5 s.
	HandshakeTimeout time.Duration
	// MemberKeys are the handshake keys (DeriveKey of the cluster keys;
	// the first is preferred) members prove in the handshake. When set,
	// Accept refuses a peer claiming the member role unless it proves one
	// of them, and Dial with the member role proves one and checks that
	// the acceptor does too. Without them the member role is taken on the
	// peer's word.
	MemberKeys [][]byte
	// TLS, when set, runs the connection over TLS: a client config for
	// Dial (its ServerName defaults to the dialled host), a server config
	// for Accept.
	TLS *tls.Config
	// Authorize, when set, is called by Accept with the peer's checked
	// hello; an error refuses the peer (its code, op.ErrUnauthenticated
	// typically, travels to it), and the value is kept as the
	// connection's Principal.
	Authorize func(peer Hello) (any, error)
	// IdleTimeout closes the connection once nothing has arrived from the
	// peer for between one and two IdleTimeouts while no request is in
	// flight either way (none being handled here, no call waiting for
	// its response); a stalled partial frame counts as nothing. Zero
	// disables it (the default); members set it on the connections they
	// accept.
	IdleTimeout time.Duration
	// KeepAlive sends a ping frame when the connection has written nothing
	// for this long, so that a quiet connection survives the peer's
	// IdleTimeout. Dial defaults it to DefaultKeepAlive; Accept leaves it
	// off unless set. Negative disables it.
	KeepAlive time.Duration
	// MaxInFlight bounds the requests from a client (a peer whose hello
	// has RoleClient) that were handed to the Handler and not yet
	// answered: at the limit the read loop stops reading until a response
	// is sent, so a client pipelining requests gets back-pressure instead
	// of an unbounded number of goroutines and buffered responses. It does
	// not apply to member peers, whose connections also carry the
	// responses that requests in flight wait for. Zero means no limit.
	MaxInFlight int
	// OnEvent receives the events (KindEvent) the peer sends, with their
	// subscription id. It runs on the read loop: it must not block, and
	// it owns payload. Nil drops events.
	OnEvent func(sub uint64, payload []byte)
}

// DefaultKeepAlive is the keep-alive interval of dialed connections: well
// under members' default idle timeout.
const DefaultKeepAlive = 30 * time.Second

func (o Options) withDefaults() Options {
	o.Limits = o.Limits.withDefaults()
	if o.MaxPendingWrite <= 0 {
		o.MaxPendingWrite = 32 << 20
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 5 * time.Second
	}
	return o
}

// ErrNotSent is wrapped (together with op.ErrUnavailable) by Call errors for
// requests that were never written to the connection: retrying them cannot
// apply an operation twice.
var ErrNotSent = errors.New("request not sent")

// ErrConnLost is wrapped (together with op.ErrUnavailable) by Call errors for
// requests that were written but whose response never came because the
// connection broke: the operation may or may not have been applied.
var ErrConnLost = errors.New("connection lost before the response")

// Conn is one multiplexed connection between two Shoal peers. Any number of
// goroutines may Call concurrently; each request gets an id and its response
// is matched by id, so many requests are in flight at once. Frames queued by
// concurrent callers are written together by one write loop (coalesced
// flushes).
//
// A Conn owns two goroutines (read loop and write loop); Close stops both and
// waits for them.
type Conn struct {
	nc   net.Conn
	opts Options
	peer Hello
	// proven is set when the peer proved a member key in the handshake;
	// principal is what Options.Authorize returned.
	proven    bool
	principal any

	// write side: frames are encoded straight into out under mu; the
	// writer (the write loop, or a batch flush) swaps out with spare and
	// writes it without holding mu.
	mu      sync.Mutex
	cond    *sync.Cond
	out     *outBuf
	spare   *outBuf
	closing bool
	// unkicked is set when a batched enqueue left frames in out without
	// waking the write loop: the next unbatched enqueue must wake it.
	unkicked bool
	// writing is set while a goroutine (the write loop or a batch flush)
	// writes a swapped-out buffer: writes never overlap, so frames keep
	// their order.
	writing bool
	// handover is a batch flush's buffer whose write the socket did not
	// take whole; the write loop writes the rest.
	handover *outBuf
	// raw is the socket, for the non-blocking writes of batch flushes (nil
	// when nc has none: flushes then wake the write loop).
	raw syscall.RawConn

	// batch is the flush group of this connection's read loop; only that
	// goroutine touches it (see Batch).
	batch Batch

	pmu     sync.Mutex
	nextID  uint64
	pending map[uint64]chan *op.Response
	// callbacks holds calls made with Go, answered by running the callback.
	callbacks map[uint64]func(*op.Response, error)
	// chans recycles the response channels of Call.
	chans sync.Pool

	// inflight counts requests handed to the Handler and not yet
	// answered; room wakes the read loop waiting for one to be answered
	// (see Options.MaxInFlight), which sets waiting while it waits.
	inflight    atomic.Int64
	maxInFlight int64
	waiting     atomic.Bool
	room        chan struct{}

	// framesIn and framesOut count frames read and queued; the idle and
	// keep-alive timers compare them with what they saw last time (idleSeen
	// and keepSeen, touched only by the timers' callbacks).
	framesIn  atomic.Uint64
	framesOut atomic.Uint64
	idleTimer *time.Timer
	idleSeen  uint64
	keepTimer *time.Timer
	keepSeen  uint64

	closeOnce sync.Once
	done      chan struct{}
	errMu     sync.Mutex
	err       error
	loops     sync.WaitGroup
}

type outBuf struct {
	b   bytes.Buffer
	enc *msgpack.Encoder
}

func newOutBuf() *outBuf {
	o := &outBuf{}
	o.enc = msgpack.NewEncoder(&o.b)
	return o
}

// Dial connects to addr with d (whose LocalAddr should be the member's own
// IP so that address-based network faults catch this traffic), performs the
// handshake and starts the connection's loops. It returns the peer's hello.
func Dial(ctx context.Context, d *net.Dialer, addr string, local Hello, opts Options) (*Conn, error) {
	if d == nil {
		d = &net.Dialer{}
	}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%w: dial %s: %v", op.ErrUnavailable, addr, err)
	}
	if opts.KeepAlive == 0 {
		opts.KeepAlive = DefaultKeepAlive
	}
	opts = opts.withDefaults()
	if opts.TLS != nil && opts.TLS.ServerName == "" {
		if host, _, err := net.SplitHostPort(addr); err == nil {
			cfg := opts.TLS.Clone()
			cfg.ServerName = host
			opts.TLS = cfg
		}
	}
	c, err := clientHandshake(ctx, nc, local, opts)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

func clientHandshake(ctx context.Context, nc net.Conn, local Hello, opts Options) (*Conn, error) {
	dl := time.Now().Add(opts.HandshakeTimeout)
	if cdl, ok := ctx.Deadline(); ok && cdl.Before(dl) {
		dl = cdl
	}
	_ = nc.SetDeadline(dl)
	// The deadline only covers ctx's deadline: a canceled ctx must end the
	// handshake too, so it forces the deadline into the past.
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	c, err := clientHello(ctx, nc, local, opts)
	if !stop() && err == nil {
		// ctx ended as the handshake finished; the forced deadline may
		// have hit the new connection, so do not hand it out.
		c.Close()
		c, err = nil, fmt.Errorf("%w: handshake with %s: %w", op.ErrUnavailable, nc.RemoteAddr(), ctx.Err())
	}
	return c, err
}

func clientHello(ctx context.Context, nc net.Conn, local Hello, opts Options) (*Conn, error) {
	local.Magic = Magic
	local.Proto = ProtocolVersion
	local.Caps = Caps
	var keys [][]byte
	if local.Role == RoleMember && len(opts.MemberKeys) > 0 {
		keys = opts.MemberKeys
		nonce, err := newNonce()
		if err != nil {
			return nil, err
		}
		local.Nonce = nonce
		for _, k := range keys {
			local.Keys += keyID(k)
		}
	}
	if opts.TLS != nil {
		tc := tls.Client(nc, opts.TLS)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, tlsErr(ctx, nc, err)
		}
		nc = tc
	}
	if err := writeHello(nc, KindHello, local); err != nil {
		return nil, handshakeErr(ctx, nc, err)
	}
	br := bufio.NewReaderSize(nc, 64<<10)
	if b, err := br.Peek(5); err == nil && string(b) == "HTTP/" {
		// An HTTP server (gridnode's --http port, say) answering our hello
		// with an error page: its "HTTP" would read as a 1.2 GB frame.
		return nil, fmt.Errorf("%w: %s is not a Shoal data port: it answered in HTTP (is it the --http port?)", op.ErrBadRequest, nc.RemoteAddr())
	}
	kind, _, body, err := readFrame(br, nil, 64<<10)
	if err != nil {
		if opts.TLS != nil && isTLSAlert(err) {
			// TLS 1.3 reports a refused client certificate here.
			return nil, tlsErr(ctx, nc, err)
		}
		return nil, handshakeErr(ctx, nc, err)
	}
	if kind != KindHelloAck {
		return nil, malformed(fmt.Sprintf("handshake: got frame kind %d, want hello ack", kind), nil)
	}
	peer, err := DecodeHello(body)
	if err != nil {
		return nil, err
	}
	if peer.Err != "" {
		return nil, refusal(nc.RemoteAddr(), peer)
	}
	proven := false
	if keys != nil {
		if err := dialerProve(nc, br, local, peer, keys); err != nil {
			if errors.Is(err, op.ErrUnauthenticated) || errors.Is(err, op.ErrBadRequest) {
				return nil, err
			}
			return nil, handshakeErr(ctx, nc, err)
		}
		proven = true
	}
	_ = nc.SetDeadline(time.Time{})
	return start(nc, br, peer, opts, proven, nil), nil
}

// isTLSAlert reports whether err is a TLS alert the peer sent (a refused
// certificate, typically).
func isTLSAlert(err error) bool {
	var alert tls.AlertError
	var oe *net.OpError
	return errors.As(err, &alert) || errors.As(err, &oe) && oe.Op == "remote error"
}

// tlsErr reports a failed TLS handshake: a certificate problem is
// op.ErrUnauthenticated (not transient), a network one op.ErrUnavailable.
func tlsErr(ctx context.Context, nc net.Conn, err error) error {
	var certErr *tls.CertificateVerificationError
	var recErr tls.RecordHeaderError
	if errors.As(err, &certErr) || isTLSAlert(err) || errors.As(err, &recErr) {
		return fmt.Errorf("%w: TLS handshake with %s: %v", op.ErrUnauthenticated, nc.RemoteAddr(), err)
	}
	return handshakeErr(ctx, nc, fmt.Errorf("TLS: %w", err))
}

// handshakeErr wraps a handshake IO error, and ctx's error when ctx ended
// (the socket deadline may fire a moment before ctx's own timer does).
func handshakeErr(ctx context.Context, nc net.Conn, err error) error {
	cerr := ctx.Err()
	if dl, ok := ctx.Deadline(); cerr == nil && ok && !time.Now().Before(dl) {
		cerr = context.DeadlineExceeded
	}
	if cerr != nil {
		return fmt.Errorf("%w: handshake with %s: %v: %w", op.ErrUnavailable, nc.RemoteAddr(), err, cerr)
	}
	return fmt.Errorf("%w: handshake with %s: %v", op.ErrUnavailable, nc.RemoteAddr(), err)
}

// Accept performs the server side of the handshake on an accepted
// connection: it reads the peer's hello, asks check whether to accept it
// (check may return an error, which is sent to the peer), answers with local
// and starts the connection's loops. When the handshake fails or is refused,
// Accept closes nc and returns the reason.
func Accept(nc net.Conn, local Hello, check func(peer Hello) error, opts Options) (*Conn, error) {
	c, err := accept(nc, local, check, opts)
	if err != nil {
		_ = nc.Close()
		return nil, err
	}
	return c, nil
}

func accept(nc net.Conn, local Hello, check func(peer Hello) error, opts Options) (*Conn, error) {
	opts = opts.withDefaults()
	_ = nc.SetDeadline(time.Now().Add(opts.HandshakeTimeout))
	if opts.TLS != nil {
		tc := tls.Server(nc, opts.TLS)
		if err := tc.Handshake(); err != nil {
			return nil, fmt.Errorf("%w: TLS handshake from %s: %v", op.ErrUnauthenticated, nc.RemoteAddr(), err)
		}
		nc = tc
	}
	br := bufio.NewReaderSize(nc, 64<<10)
	kind, _, body, err := readFrame(br, nil, 64<<10)
	if err != nil {
		return nil, fmt.Errorf("handshake from %s: %w", nc.RemoteAddr(), err)
	}
	if kind != KindHello {
		return nil, malformed(fmt.Sprintf("handshake from %s: got frame kind %d, want hello", nc.RemoteAddr(), kind), nil)
	}
	peer, err := DecodeHello(body)
	if err != nil {
		return nil, fmt.Errorf("handshake from %s: %w", nc.RemoteAddr(), err)
	}
	local.Magic = Magic
	local.Proto = ProtocolVersion
	local.Caps = Caps
	if peer.Proto != ProtocolVersion {
		err = fmt.Errorf("%w: protocol version %d, this member speaks %d", op.ErrBadRequest, peer.Proto, ProtocolVersion)
	} else if check != nil {
		err = check(peer)
	}
	var principal any
	if err == nil && opts.Authorize != nil {
		principal, err = opts.Authorize(peer)
	}
	if err != nil {
		refuse(nc, KindHelloAck, local, err)
		return nil, fmt.Errorf("handshake from %s refused: %w", nc.RemoteAddr(), err)
	}
	proven := false
	if peer.Role == RoleMember && len(opts.MemberKeys) > 0 {
		if err := acceptorProve(nc, br, peer, local, opts.MemberKeys); err != nil {
			return nil, fmt.Errorf("handshake from %s refused: %w", nc.RemoteAddr(), err)
		}
		proven = true
	} else if err := writeHello(nc, KindHelloAck, local); err != nil {
		return nil, fmt.Errorf("handshake from %s: %w", nc.RemoteAddr(), err)
	}
	_ = nc.SetDeadline(time.Time{})
	return start(nc, br, peer, opts, proven, principal), nil
}

func writeHello(w io.Writer, kind Kind, h Hello) error {
	body, err := msgpack.Marshal(&h)
	if err != nil {
		return err
	}
	frame := make([]byte, headerSize, headerSize+len(body))
	binary.BigEndian.PutUint32(frame, uint32(1+8+len(body)))
	frame[4] = byte(kind)
	frame = append(frame, body...)
	_, err = w.Write(frame)
	return err
}

// readFrame reads one frame into buf (grown as needed) and returns its kind,
// id and body. Frames larger than max are refused before their body is read.
func readFrame(r io.Reader, buf []byte, max int) (Kind, uint64, []byte, error) {
	return readFrameHdr(r, nil, buf, max, 0)
}

// readFrameHdr is readFrame reading the header into hdr (a read loop's
// scratch, so that it does not escape per frame) when hdr is long enough.
// A KindRecord frame may be as large as recordMax instead (0: no more than
// other frames).
func readFrameHdr(r io.Reader, hdr, buf []byte, max, recordMax int) (Kind, uint64, []byte, error) {
	if len(hdr) < headerSize {
		hdr = make([]byte, headerSize)
	}
	hdr = hdr[:headerSize]
	if _, err := io.ReadFull(r, hdr); err != nil {
		return 0, 0, buf, err
	}
	n := int(binary.BigEndian.Uint32(hdr[:4]))
	if n < 9 {
		return 0, 0, buf, malformed(fmt.Sprintf("frame length %d is below the header size", n), nil)
	}
	kind := Kind(hdr[4])
	if kind == KindRecord && recordMax > max {
		max = recordMax
	}
	if n+4 > max {
		return 0, 0, buf, fmt.Errorf("%w: frame of %d bytes, limit is %d", op.ErrTooLarge, n+4, max)
	}
	id := binary.BigEndian.Uint64(hdr[5:])
	body := n - 9
	if cap(buf) >= body || body <= growAbove {
		if cap(buf) < body {
			buf = make([]byte, body)
		}
		buf = buf[:body]
		if _, err := io.ReadFull(r, buf); err != nil {
			return 0, 0, buf, err
		}
		return kind, id, buf, nil
	}
	// A large frame: grow the buffer with the data that actually arrives,
	// so a peer that sends a 40 MiB header and stalls pins what it sent,
	// not 40 MiB (20 such connections pinned 911 MB).
	buf = make([]byte, 0, growAbove)
	for len(buf) < body {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(body-len(buf), len(buf)))
		}
		end := min(body, cap(buf))
		if _, err := io.ReadFull(r, buf[len(buf):end]); err != nil {
			return 0, 0, nil, err
		}
		buf = buf[:end]
	}
	return kind, id, buf, nil
}

// growAbove is the frame body size above which readFrame grows its buffer
// as the data arrives instead of allocating the claimed size up front.
const growAbove = 1 << 20

func start(nc net.Conn, br *bufio.Reader, peer Hello, opts Options, proven bool, principal any) *Conn {
	c := &Conn{
		nc:        nc,
		opts:      opts,
		peer:      peer,
		proven:    proven,
		principal: principal,
		out:       newOutBuf(),
		spare:     newOutBuf(),
		pending:   make(map[uint64]chan *op.Response),
		callbacks: make(map[uint64]func(*op.Response, error)),
		done:      make(chan struct{}),
	}
	c.cond = sync.NewCond(&c.mu)
	if sc, ok := nc.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			c.raw = rc
		}
	}
	if opts.MaxInFlight > 0 && peer.Role == RoleClient {
		c.maxInFlight = int64(opts.MaxInFlight)
		c.room = make(chan struct{}, 1)
	}
	// The timers are set up before the loops start, and only stopped
	// (in fail) after that, so their fields need no lock.
	if opts.IdleTimeout > 0 {
		c.idleTimer = time.AfterFunc(opts.IdleTimeout, c.checkIdle)
	}
	if opts.KeepAlive > 0 {
		c.keepTimer = time.AfterFunc(opts.KeepAlive, c.keepAlive)
	}
	c.loops.Add(2)
	go c.readLoop(br)
	go c.writeLoop()
	return c
}

// checkIdle runs every IdleTimeout: it closes the connection if no frame
// arrived since the last run and no request is in flight either way.
func (c *Conn) checkIdle() {
	n := c.framesIn.Load()
	if n == c.idleSeen && c.inflight.Load() == 0 && !c.awaiting() {
		c.fail(fmt.Errorf("%w: nothing received for %v (idle timeout)", op.ErrUnavailable, c.opts.IdleTimeout))
		return
	}
	c.idleSeen = n
	select {
	case <-c.done:
	default:
		c.idleTimer.Reset(c.opts.IdleTimeout)
	}
}

// awaiting reports whether a call made on this connection waits for its
// response.
func (c *Conn) awaiting() bool {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	return len(c.pending)+len(c.callbacks) > 0
}

// keepAlive runs every KeepAlive: it sends a ping if nothing was queued
// since the last run.
func (c *Conn) keepAlive() {
	if c.framesOut.Load() == c.keepSeen {
		_ = c.enqueue(nil, KindPing, 0, nil)
	}
	c.keepSeen = c.framesOut.Load()
	select {
	case <-c.done:
	default:
		c.keepTimer.Reset(c.opts.KeepAlive)
	}
}

// answered records that a request handed to the Handler was answered, and
// wakes the read loop if it waits for room.
func (c *Conn) answered() {
	c.inflight.Add(-1)
	if c.waiting.Load() {
		select {
		case c.room <- struct{}{}:
		default:
		}
	}
}

// waitRoom blocks the read loop while MaxInFlight requests are in flight;
// false means the connection closed meanwhile.
func (c *Conn) waitRoom() bool {
	if c.maxInFlight == 0 || c.inflight.Load() < c.maxInFlight {
		return true
	}
	// Send what this loop holds back before blocking on others.
	c.batch.flush()
	c.waiting.Store(true)
	defer c.waiting.Store(false)
	for c.inflight.Load() >= c.maxInFlight {
		select {
		case <-c.room:
		case <-c.done:
			return false
		}
	}
	return true
}

// Frames returns how many frames c has read and queued for writing since
// the handshake (pings included): a count of round trips for tests and
// benchmarks.
func (c *Conn) Frames() (in, out uint64) { return c.framesIn.Load(), c.framesOut.Load() }

// Peer returns the hello the peer sent.
func (c *Conn) Peer() Hello { return c.peer }

// PeerProven reports whether the peer proved a member key (Options.
// MemberKeys) in the handshake. With member keys configured, Accept and
// Dial refuse a member-role peer that does not, so Peer().Role ==
// RoleMember then implies PeerProven.
func (c *Conn) PeerProven() bool { return c.proven }

// Principal returns what Options.Authorize returned for the peer (nil on
// dialled connections and when Authorize is not set).
func (c *Conn) Principal() any { return c.principal }

// RemoteAddr returns the peer's network address.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// Limits returns the connection's limits.
func (c *Conn) Limits() Limits { return c.opts.Limits }

// Done is closed when the connection has failed or been closed.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns why the connection closed, or nil while it is open.
func (c *Conn) Err() error {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	return c.err
}

// Close closes the connection, fails every call in flight with
// op.ErrUnavailable and waits for the loops to stop.
func (c *Conn) Close() error {
	c.fail(fmt.Errorf("%w: connection closed", op.ErrClosed))
	c.loops.Wait()
	return nil
}

func (c *Conn) fail(err error) {
	c.closeOnce.Do(func() {
		c.errMu.Lock()
		c.err = err
		c.errMu.Unlock()
		// Stop new frames and new calls before Done is closed, so that a
		// Call made after Done is closed fails with ErrNotSent, never
		// ErrConnLost, and Done implies every call in flight was failed.
		c.mu.Lock()
		c.closing = true
		c.cond.Broadcast()
		c.mu.Unlock()
		c.pmu.Lock()
		pending, callbacks := c.pending, c.callbacks
		c.pending, c.callbacks = nil, nil
		c.pmu.Unlock()
		_ = c.nc.Close()
		if c.idleTimer != nil {
			c.idleTimer.Stop()
		}
		if c.keepTimer != nil {
			c.keepTimer.Stop()
		}
		for _, ch := range pending {
			ch <- nil // nil response = connection lost
		}
		if len(callbacks) > 0 {
			lost := fmt.Errorf("%w: %w: %v", op.ErrUnavailable, ErrConnLost, err)
			for _, cb := range callbacks {
				cb(nil, lost)
			}
		}
		close(c.done)
	})
}

// errAbandoned is the reason of calls failed by AbandonCalls.
var errAbandoned = errors.New("call abandoned: its member left the partition table")

// AbandonCalls fails every call waiting for a response on c as if the
// connection had been lost (op.ErrUnavailable with ErrConnLost, so invokers
// retry them with their identity), but keeps the connection and its event
// subscriptions: the peer left the partition table (cut off, paused) and
// answers may never come, while the connection may work again after a
// heal. A response that arrives later for an abandoned call is dropped. It
// returns the number of calls failed.
func (c *Conn) AbandonCalls() int {
	c.pmu.Lock()
	if c.pending == nil {
		c.pmu.Unlock()
		return 0 // closed: fail() failed them
	}
	pending, callbacks := c.pending, c.callbacks
	c.pending, c.callbacks = map[uint64]chan *op.Response{}, map[uint64]func(*op.Response, error){}
	c.pmu.Unlock()
	for _, ch := range pending {
		ch <- nil
	}
	lost := fmt.Errorf("%w: %w: %v", op.ErrUnavailable, ErrConnLost, errAbandoned)
	for _, cb := range callbacks {
		cb(nil, lost)
	}
	return len(pending) + len(callbacks)
}

// coalesceBelow is the pending size under which the write loop yields once
// before writing, to gather more frames into one syscall.
const coalesceBelow = 16 << 10

// maxKeptBuf is the largest read or write buffer a Conn keeps between frames.
const maxKeptBuf = 4 << 20

// Call sends req and waits for its response, ctx's end or the connection's
// loss. The response may carry a non-OK code; Call's error covers transport
// failures only: op.ErrTooLarge (nothing sent), op.ErrUnavailable with
// ErrNotSent or ErrConnLost, or the context's error mapped by op.FromContext
// (the request may have been applied).
func (c *Conn) Call(ctx context.Context, req *op.Request) (*op.Response, error) {
	if err := c.opts.Limits.Check(req); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, op.FromContext(ctx)
	}
	ch, _ := c.chans.Get().(chan *op.Response)
	if ch == nil {
		ch = make(chan *op.Response, 1)
	}
	c.pmu.Lock()
	if c.pending == nil {
		c.pmu.Unlock()
		c.chans.Put(ch)
		return nil, c.notSent()
	}
	c.nextID++
	id := c.nextID
	c.pending[id] = ch
	c.pmu.Unlock()

	// Encode a copy: writing req.Timeout would race with other goroutines
	// sending or reading the same request.
	r := *req
	r.Timeout = op.Remaining(ctx, time.Now())
	if err := c.enqueue(nil, KindRequest, id, func(enc *msgpack.Encoder) error { return EncodeRequest(enc, &r) }); err != nil {
		c.forget(id, ch)
		if errors.Is(err, op.ErrTooLarge) {
			return nil, err
		}
		return nil, c.notSent()
	}
	select {
	case resp := <-ch:
		c.chans.Put(ch)
		if resp == nil {
			if err := c.Err(); err != nil {
				return nil, fmt.Errorf("%w: %w: %v", op.ErrUnavailable, ErrConnLost, err)
			}
			return nil, fmt.Errorf("%w: %w: %v", op.ErrUnavailable, ErrConnLost, errAbandoned)
		}
		return resp, nil
	case <-ctx.Done():
		if c.forget(id, ch) {
			// The request is out and unanswered: tell the peer, so a call
			// parked there stops waiting (and consumes nothing).
			c.sendCancel(id)
		}
		return nil, op.FromContext(ctx)
	}
}

// CallMany sends every request of rs and waits for all their responses,
// ctx's end or the connection's loss; the results are in the order of rs,
// each as Call would return it. To a peer with CapRequests the requests
// travel in KindRequests frames (one unless they exceed a frame), else in
// one KindRequest frame each; either way the write loop sends them
// together.
func (c *Conn) CallMany(ctx context.Context, rs []*op.Request) ([]*op.Response, []error) {
	resps, errs := make([]*op.Response, len(rs)), make([]error, len(rs))
	if err := ctx.Err(); err != nil {
		for i := range errs {
			errs[i] = op.FromContext(ctx)
		}
		return resps, errs
	}
	now := time.Now()
	var left atomic.Int64
	all := make(chan struct{})
	done := func(i int) func(*op.Response, error) {
		return func(resp *op.Response, err error) {
			resps[i], errs[i] = resp, err
			if left.Add(-1) == 0 {
				close(all)
			}
		}
	}
	type sent struct {
		i  int
		id uint64
	}
	var out []sent
	var frame []*op.Request
	var frameIdx []int
	frameSize := 0
	batch := c.peer.Caps&CapRequests != 0
	// flush sends the requests gathered in frame, under consecutive ids.
	flush := func() {
		if len(frame) == 0 {
			return
		}
		defer func() { frame, frameIdx, frameSize = frame[:0], frameIdx[:0], 0 }()
		c.pmu.Lock()
		if c.callbacks == nil {
			c.pmu.Unlock()
			for _, i := range frameIdx {
				errs[i] = c.notSent()
			}
			return
		}
		first := c.nextID + 1
		c.nextID += uint64(len(frame))
		for j, i := range frameIdx {
			left.Add(1)
			c.callbacks[first+uint64(j)] = done(i)
		}
		c.pmu.Unlock()
		var err error
		if batch {
			reqs := frame
			err = c.enqueue(nil, KindRequests, first, func(enc *msgpack.Encoder) error { return EncodeRequests(enc, reqs) })
		} else {
			for j := range frame {
				r := frame[j]
				if err = c.enqueue(nil, KindRequest, first+uint64(j), func(enc *msgpack.Encoder) error { return EncodeRequest(enc, r) }); err != nil {
					break
				}
			}
		}
		for j, i := range frameIdx {
			id := first + uint64(j)
			out = append(out, sent{i, id})
			if err == nil {
				continue
			}
			c.pmu.Lock()
			_, still := c.callbacks[id]
			delete(c.callbacks, id)
			c.pmu.Unlock()
			if !still {
				continue // fail() or a response took it
			}
			if errors.Is(err, op.ErrTooLarge) {
				errs[i] = err
			} else {
				errs[i] = c.notSent()
			}
			if left.Add(-1) == 0 {
				close(all)
			}
		}
	}
	// Frames stay well below the limit: the estimate leaves room for the
	// encoding's overhead.
	limit := c.opts.Limits.MaxFrameSize / 2
	left.Add(1) // held until every request is sent
	for i, req := range rs {
		if err := c.opts.Limits.Check(req); err != nil {
			errs[i] = err
			continue
		}
		// Encode a copy: writing req.Timeout would race with other
		// goroutines sending or reading the same request.
		r := *req
		r.Timeout = op.Remaining(ctx, now)
		size := 64 + len(r.Service) + len(r.Name) + len(r.Key) + len(r.Value) + len(r.Aux)
		if len(frame) > 0 && (!batch || frameSize+size > limit || len(frame) >= MaxRequestsPerFrame) {
			flush()
		}
		frame, frameIdx = append(frame, &r), append(frameIdx, i)
		frameSize += size
	}
	flush()
	if left.Add(-1) == 0 {
		close(all)
	}
	select {
	case <-all:
	case <-ctx.Done():
		for _, s := range out {
			c.pmu.Lock()
			_, still := c.callbacks[s.id]
			delete(c.callbacks, s.id)
			c.pmu.Unlock()
			if still {
				// Out and unanswered: tell the peer, so a call parked
				// there stops waiting.
				c.sendCancel(s.id)
				errs[s.i] = op.FromContext(ctx)
				if left.Add(-1) == 0 {
					close(all)
				}
			}
		}
		<-all // the callbacks that already started finish quickly
	}
	for i, resp := range resps {
		if resp == nil && errs[i] == nil {
			errs[i] = fmt.Errorf("%w: %w: %v", op.ErrUnavailable, ErrConnLost, c.Err())
		}
	}
	return resps, errs
}

// handleRequests serves a KindRequests frame: each request as if it had
// come in its own frame, under ids id, id+1, ... It returns false when the
// connection closed while waiting for room.
func (c *Conn) handleRequests(dec *msgpack.Decoder, body []byte, id uint64, names *Names) bool {
	open := true
	n, at, err := decodeRequestsBody(dec, body, names, func(i int, req *op.Request) {
		if !open {
			return
		}
		rid := id + uint64(i)
		if err := c.opts.Limits.Check(req); err != nil {
			c.reply(nil, rid, &op.Response{Code: op.CodeOf(err), Msg: op.Message(err)})
			return
		}
		if c.opts.Handler == nil {
			c.reply(nil, rid, &op.Response{Code: op.CodeBadRequest, Msg: "this peer serves no requests"})
			return
		}
		if !c.waitRoom() {
			open = false
			return
		}
		c.inflight.Add(1)
		c.opts.Handler.HandleRequest(c, rid, req)
	})
	if !open {
		return false
	}
	if err != nil {
		// Answer the requests the decoding did not reach (a body that is
		// not even an array gets one answer, under the frame's id).
		for i := at; i < max(n, 1); i++ {
			c.reply(nil, id+uint64(i), &op.Response{Code: op.CodeBadRequest, Msg: op.Message(err)})
		}
	}
	return true
}

// sendCancel sends a KindCancel frame for request id if the peer
// understands it. It never waits for buffer space: a cancel is a hint.
func (c *Conn) sendCancel(id uint64) {
	if c.peer.Caps&CapCancel == 0 {
		return
	}
	c.mu.Lock()
	full := c.closing || c.out.b.Len() >= c.opts.MaxPendingWrite
	c.mu.Unlock()
	if full {
		return
	}
	_ = c.enqueue(nil, KindCancel, id, func(enc *msgpack.Encoder) error { return enc.EncodeNil() })
}

// ErrNoCapability is returned for a frame the peer does not understand.
var ErrNoCapability = errors.New("wire: the peer does not support this frame kind")

// SendEvent sends an event of subscription sub to the peer (which must
// have announced CapEvents). It may wait for buffer space like any frame.
func (c *Conn) SendEvent(sub uint64, payload []byte) error {
	if c.peer.Caps&CapEvents == 0 {
		return ErrNoCapability
	}
	if len(payload) > c.opts.Limits.MaxValueSize {
		return fmt.Errorf("%w: event of %d bytes", op.ErrTooLarge, len(payload))
	}
	return c.enqueue(nil, KindEvent, sub, func(enc *msgpack.Encoder) error { return enc.EncodeBytes(payload) })
}

// Go sends req without waiting: done runs exactly once, with the response
// or with the error that ended the connection (wrapping op.ErrUnavailable
// and ErrConnLost). It runs on the connection's read loop, so it must be
// quick and must not call Call on this connection. Frames are written in
// the order of Go and Call calls, so a caller that serialises its calls
// (e.g. under a lock) gets its requests delivered in that order. If Go
// returns an error, nothing was sent and done is never called.
func (c *Conn) Go(req *op.Request, done func(*op.Response, error)) error {
	return c.GoBatch(nil, req, done)
}

// GoBatch is Go with the write deferred to batch b (see Batch); b may be
// nil.
func (c *Conn) GoBatch(b *Batch, req *op.Request, done func(*op.Response, error)) error {
	if err := c.opts.Limits.Check(req); err != nil {
		return err
	}
	c.pmu.Lock()
	if c.callbacks == nil {
		c.pmu.Unlock()
		return c.notSent()
	}
	c.nextID++
	id := c.nextID
	c.callbacks[id] = done
	c.pmu.Unlock()
	if err := c.enqueue(b, KindRequest, id, func(enc *msgpack.Encoder) error { return EncodeRequest(enc, req) }); err != nil {
		c.pmu.Lock()
		_, still := c.callbacks[id]
		delete(c.callbacks, id)
		c.pmu.Unlock()
		if !still {
			// fail() took the callback and runs it; report success so the
			// caller does not handle the failure twice.
			return nil
		}
		if errors.Is(err, op.ErrTooLarge) {
			return err
		}
		return c.notSent()
	}
	return nil
}

// GoRecord sends a backup record (a KindRecord frame whose body encode
// writes) like GoBatch sends a request: done runs exactly once with the
// peer's response or the error that ended the connection; an error from
// GoRecord means nothing was sent. The peer must have announced CapRecords
// (else ErrNoCapability). The frame may be as large as
// Limits.MaxRecordFrame.
func (c *Conn) GoRecord(b *Batch, encode func(*msgpack.Encoder) error, done func(*op.Response, error)) error {
	if c.peer.Caps&CapRecords == 0 {
		return ErrNoCapability
	}
	c.pmu.Lock()
	if c.callbacks == nil {
		c.pmu.Unlock()
		return c.notSent()
	}
	c.nextID++
	id := c.nextID
	c.callbacks[id] = done
	c.pmu.Unlock()
	if err := c.enqueue(b, KindRecord, id, encode); err != nil {
		c.pmu.Lock()
		_, still := c.callbacks[id]
		delete(c.callbacks, id)
		c.pmu.Unlock()
		if !still {
			return nil // fail() took the callback and runs it
		}
		if errors.Is(err, op.ErrTooLarge) {
			return err
		}
		return c.notSent()
	}
	return nil
}

func (c *Conn) notSent() error {
	return fmt.Errorf("%w: %w: %v", op.ErrUnavailable, ErrNotSent, c.Err())
}

// forget removes a call whose caller gave up; a response that raced in is
// drained so the channel can be reused. It reports whether the call was
// still waiting for its response.
func (c *Conn) forget(id uint64, ch chan *op.Response) bool {
	c.pmu.Lock()
	_, still := c.pending[id]
	delete(c.pending, id)
	c.pmu.Unlock()
	if still {
		select {
		case <-ch:
			still = false // answered after all
		default:
		}
		c.chans.Put(ch)
	}
	// Otherwise fail() or the read loop owns the send; let the channel go
	// to the garbage collector rather than risk a stale value in the pool.
	return still
}

// Respond sends the response to request id. It is safe to call from any
// goroutine. A response too large for a frame is replaced by an
// op.ErrTooLarge error response.
func (c *Conn) Respond(id uint64, resp *op.Response) { c.RespondBatch(nil, id, resp) }

// RespondBatch is Respond with the write deferred to batch b (see Batch); b
// may be nil.
func (c *Conn) RespondBatch(b *Batch, id uint64, resp *op.Response) {
	c.reply(b, id, resp)
	c.answered()
}

// reply sends a response; the read loop uses it directly for the requests
// it refuses without handing them to the Handler.
func (c *Conn) reply(b *Batch, id uint64, resp *op.Response) {
	err := c.enqueue(b, KindResponse, id, func(enc *msgpack.Encoder) error { return EncodeResponse(enc, resp) })
	if errors.Is(err, op.ErrTooLarge) {
		_ = c.enqueue(b, KindResponse, id, func(enc *msgpack.Encoder) error {
			return EncodeResponse(enc, &op.Response{Code: op.CodeTooLarge, Msg: op.Message(err), TableVersion: resp.TableVersion})
		})
	}
}

// enqueue encodes one frame into the pending write buffer, waiting while the
// buffer is over its bound.
func (c *Conn) enqueue(b *Batch, kind Kind, id uint64, body func(*msgpack.Encoder) error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for !c.closing && c.out.b.Len() >= c.opts.MaxPendingWrite {
		// Frames left by a batch may not have woken the write loop yet.
		c.unkicked = false
		c.cond.Broadcast()
		c.cond.Wait()
	}
	if c.closing {
		return op.ErrClosed
	}
	o := c.out
	start := o.b.Len()
	var hdr [headerSize]byte
	hdr[4] = byte(kind)
	binary.BigEndian.PutUint64(hdr[5:], id)
	o.b.Write(hdr[:])
	if body == nil {
		// A header-only frame (a ping).
	} else if err := body(o.enc); err != nil {
		o.b.Truncate(start)
		return fmt.Errorf("%w: encode: %v", op.ErrInternal, err)
	}
	n := o.b.Len() - start
	if limit := c.opts.Limits.MaxFrameSize; n > limit && (kind != KindRecord || n > c.opts.Limits.MaxRecordFrame()) {
		if kind == KindRecord {
			limit = c.opts.Limits.MaxRecordFrame()
		}
		o.b.Truncate(start)
		return op.Errorf(op.CodeTooLarge, "frame of %d bytes, limit is %d", n, limit)
	}
	binary.BigEndian.PutUint32(o.b.Bytes()[start:], uint32(n-4))
	c.framesOut.Add(1)
	switch {
	case b != nil && (start == 0 || c.unkicked):
		// Leave the write loop asleep: the batch wakes it when the read
		// loop that owns the batch runs out of buffered input.
		c.unkicked = true
		b.add(c)
	case start == 0 || c.unkicked:
		c.unkicked = false
		c.cond.Broadcast()
	}
	return nil
}

// kick sends the frames a batch left: on the calling goroutine when no write
// is in progress (saving the hand-off to the write loop, a thread wake-up),
// else by waking the write loop.
func (c *Conn) kick() {
	c.mu.Lock()
	if !c.unkicked {
		c.mu.Unlock()
		return
	}
	if c.closing || c.writing || c.out.b.Len() == 0 || c.raw == nil {
		c.unkicked = false
		c.cond.Broadcast()
		c.mu.Unlock()
		return
	}
	c.writeOut(true)
}

func (c *Conn) writeLoop() {
	defer c.loops.Done()
	for {
		c.mu.Lock()
		for !c.closing && c.handover == nil && (c.out.b.Len() == 0 || c.writing) {
			c.cond.Wait()
		}
		if c.closing {
			c.mu.Unlock()
			return
		}
		if o := c.handover; o != nil {
			// A batch flush found the socket full: finish its write here,
			// where blocking harms nobody.
			c.handover = nil
			c.mu.Unlock()
			if !c.writeBuf(o, false) {
				return
			}
			continue
		}
		if c.out.b.Len() < coalesceBelow {
			// Let the goroutines that are about to send run first, so one
			// syscall carries their frames too: under load this cuts
			// write syscalls several-fold for a scheduling round trip.
			c.mu.Unlock()
			runtime.Gosched()
			c.mu.Lock()
			if c.closing {
				c.mu.Unlock()
				return
			}
			if c.writing || c.out.b.Len() == 0 {
				// A batch flush wrote them meanwhile.
				c.mu.Unlock()
				continue
			}
		}
		if !c.writeOut(false) {
			return
		}
	}
}

// writeOut writes the pending frames. It is called with c.mu held, while
// no other write is in progress, and returns with c.mu released; false
// means the connection failed. inline is set for a batch flush.
func (c *Conn) writeOut(inline bool) bool {
	o := c.out
	c.out, c.spare = c.spare, o
	c.writing, c.unkicked = true, false
	c.cond.Broadcast() // wake senders waiting for room
	c.mu.Unlock()
	return c.writeBuf(o, inline)
}

// writeNow writes b without blocking (the socket is non-blocking; the
// runtime is not asked to wait for it): it returns how much the kernel
// took. A batch flush uses it so that a peer that stops reading (a paused
// member) cannot stall the read loop doing the flush; what is left goes to
// the connection's write loop.
func (c *Conn) writeNow(b []byte) (int, error) {
	n := 0
	var werr error
	err := c.raw.Write(func(fd uintptr) bool {
		for n < len(b) {
			m, e := writeFD(fd, b[n:])
			if m > 0 {
				n += m
			}
			if e == syscall.EINTR {
				continue
			}
			if e != nil {
				if e != syscall.EAGAIN {
					werr = e
				}
				break
			}
			if m <= 0 {
				break
			}
		}
		return true // never wait for the socket here
	})
	if err == nil {
		err = werr
	}
	return n, err
}

// writeBuf writes o, a swapped-out buffer, while c.writing is set, and
// clears c.writing when done (unless it hands the rest over).
func (c *Conn) writeBuf(o *outBuf, inline bool) bool {
	var err error
	if inline && c.raw != nil {
		var n int
		n, err = c.writeNow(o.b.Bytes())
		if err == nil && n < o.b.Len() {
			o.b.Next(n) // the rest, in order, before anything queued later
			c.mu.Lock()
			c.handover = o // c.writing stays set until the write loop is done
			c.cond.Broadcast()
			c.mu.Unlock()
			return true
		}
	} else {
		_ = c.nc.SetWriteDeadline(time.Now().Add(c.opts.WriteTimeout))
		_, err = c.nc.Write(o.b.Bytes())
	}
	if o.b.Cap() > maxKeptBuf {
		// Do not keep a huge buffer alive after one large frame.
		o.b = bytes.Buffer{}
		o.enc.Reset(&o.b)
	} else {
		o.b.Reset()
	}
	c.mu.Lock()
	c.writing = false
	// Frames queued during the write wait for the write loop.
	c.cond.Broadcast()
	c.mu.Unlock()
	if err != nil {
		c.fail(fmt.Errorf("%w: write: %v", op.ErrUnavailable, err))
		return false
	}
	return true
}

// Batch defers the wake-up of write loops while a connection's read loop
// works through input it has already received, so that the frames it causes
// (responses, and requests on other connections such as backup records)
// leave in one write syscall per connection instead of one per frame: the
// event-loop batching of Redis, across connections. The read loop flushes
// its batch before it could block on the socket, and every batchFrames
// frames.
//
// A Batch belongs to one read loop: use c.Batch() only on c's read loop
// (in its Handler or in the callback of a GoBatch/Go call on c), and pass it
// to RespondBatch or GoBatch of any connection.
type Batch struct {
	conns []*Conn
}

// Batch returns the flush group of c's read loop. Only call it from that
// goroutine (a Handler serving c, or a response callback of c).
func (c *Conn) Batch() *Batch { return &c.batch }

// batchFrames bounds the frames a read loop handles before it flushes its
// batch, which bounds the latency batching adds.
const batchFrames = 64

func (b *Batch) add(c *Conn) {
	for _, x := range b.conns {
		if x == c {
			return
		}
	}
	b.conns = append(b.conns, c)
}

// flush sends what every connection written through b holds (see kick).
func (b *Batch) flush() {
	for i, c := range b.conns {
		c.kick()
		b.conns[i] = nil
	}
	b.conns = b.conns[:0]
}

// frameBuffered reports whether br holds a whole frame, so reading it will
// not block.
func frameBuffered(br *bufio.Reader) bool {
	if br.Buffered() < headerSize {
		return false
	}
	h, err := br.Peek(4)
	if err != nil {
		return false
	}
	return br.Buffered() >= int(binary.BigEndian.Uint32(h))+4
}

func (c *Conn) readLoop(br *bufio.Reader) {
	defer c.loops.Done()
	defer c.batch.flush()
	var buf []byte
	rd := bytes.NewReader(nil)
	dec := msgpack.NewDecoder(rd)
	handled := 0
	hdr := make([]byte, headerSize)
	var names Names
	recordMax := 0
	if c.peer.Role == RoleMember {
		recordMax = c.opts.Limits.MaxRecordFrame()
	}
	for {
		if handled >= batchFrames || !frameBuffered(br) {
			c.batch.flush()
			handled = 0
		}
		handled++
		kind, id, body, err := readFrameHdr(br, hdr, buf, c.opts.Limits.MaxFrameSize, recordMax)
		buf = body
		if cap(buf) > maxKeptBuf {
			// Decoding copies what it keeps: do not pin a huge buffer
			// for the connection's lifetime after one large frame.
			buf = nil
		}
		if err != nil {
			switch {
			case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed):
				err = fmt.Errorf("%w: connection closed by peer", op.ErrUnavailable)
			case !errors.Is(err, op.ErrBadRequest) && !errors.Is(err, op.ErrTooLarge):
				err = fmt.Errorf("%w: read: %v", op.ErrUnavailable, err)
			}
			c.fail(err)
			return
		}
		c.framesIn.Add(1)
		rd.Reset(body)
		dec.Reset(rd)
		switch kind {
		case KindPing:
			// Only keeps the connection from idling out.
		case KindRequest:
			req := new(op.Request)
			if err := decodeRequestBody(dec, body, req, &names); err != nil {
				c.reply(nil, id, &op.Response{Code: op.CodeBadRequest, Msg: op.Message(err)})
				continue
			}
			if err := c.opts.Limits.Check(req); err != nil {
				c.reply(nil, id, &op.Response{Code: op.CodeOf(err), Msg: op.Message(err)})
				continue
			}
			if c.opts.Handler == nil {
				c.reply(nil, id, &op.Response{Code: op.CodeBadRequest, Msg: "this peer serves no requests"})
				continue
			}
			if !c.waitRoom() {
				return
			}
			c.inflight.Add(1)
			c.opts.Handler.HandleRequest(c, id, req)
		case KindRequests:
			if !c.handleRequests(dec, body, id, &names) {
				return
			}
		case KindResponse:
			resp := new(op.Response)
			if err := decodeResponseBody(dec, body, resp); err != nil {
				resp = &op.Response{Code: op.CodeBadRequest, Msg: "malformed response: " + op.Message(err)}
			}
			c.pmu.Lock()
			ch, ok := c.pending[id]
			delete(c.pending, id)
			cb, isCB := c.callbacks[id]
			delete(c.callbacks, id)
			c.pmu.Unlock()
			if ok {
				ch <- resp
			} else if isCB {
				cb(resp, nil)
			}
		case KindRecord:
			h, ok := c.opts.Handler.(RecordHandler)
			if !ok || c.peer.Role != RoleMember {
				c.reply(nil, id, &op.Response{Code: op.CodeForbidden, Msg: "backup records are taken from members only"})
				continue
			}
			if !c.waitRoom() {
				return
			}
			c.inflight.Add(1)
			h.HandleRecord(c, id, body)
		case KindCancel:
			if h, ok := c.opts.Handler.(CancelHandler); ok {
				h.HandleCancel(c, id)
			}
		case KindEvent:
			payload, err := dec.DecodeBytes()
			if err != nil {
				continue // a malformed event is dropped, the connection lives
			}
			if c.opts.OnEvent != nil {
				c.opts.OnEvent(id, payload)
			}
		case KindHello, KindHelloAck:
			c.fail(malformed(fmt.Sprintf("handshake frame kind %d after the handshake", kind), nil))
			return
		default:
			if Caps&CapSkipUnknown != 0 {
				continue // a newer peer's frame: skip it (we announced so)
			}
			c.fail(malformed(fmt.Sprintf("unexpected frame kind %d", kind), nil))
			return
		}
	}
}
