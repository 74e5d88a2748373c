package wire_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"go.uber.org/goleak"

	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// ---------------------------------------------------------------------------
// Helpers shared by the tests, the benchmarks and the fuzz seeds.

// testTimeout bounds every test; nothing here should take more than a few
// seconds even under -race.
const testTimeout = 30 * time.Second

// testCtx returns a context that ends when the test does or after
// testTimeout.
func testCtx(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	tb.Cleanup(cancel)
	return ctx
}

// noDeadline keeps a parent's cancellation but hides its deadline.
type noDeadline struct{ context.Context }

func (noDeadline) Deadline() (time.Time, bool) { return time.Time{}, false }

var (
	serverHello = wire.Hello{Role: wire.RoleMember, Name: "server", Cluster: "test", Partitions: 271}
	clientHello = wire.Hello{Role: wire.RoleClient, Name: "client", Cluster: "test", Partitions: 271}
)

// echo answers every request inline with its own content, so that callers
// can match responses to requests.
var echo = wire.HandlerFunc(func(c *wire.Conn, id uint64, req *op.Request) {
	c.Respond(id, echoResponse(req))
})

func echoResponse(req *op.Request) *op.Response {
	return &op.Response{Found: true, Msg: req.Key, Value: req.Value, Num: req.Num, TableVersion: req.TableVersion}
}

type acceptResult struct {
	conn *wire.Conn
	err  error
}

// testServer is a listener on 127.0.0.1 whose accept loop runs wire.Accept
// on every connection. Every goroutine it starts and every Conn it accepts
// is stopped by the cleanup registered by startServer.
type testServer struct {
	addr    string
	ln      net.Listener
	results chan acceptResult

	mu     sync.Mutex
	closed bool
	raw    map[net.Conn]struct{} // connections still in the handshake
	conns  []*wire.Conn
	wg     sync.WaitGroup
}

func startServer(tb testing.TB, check func(wire.Hello) error, opts wire.Options) *testServer {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s := &testServer{
		addr:    ln.Addr().String(),
		ln:      ln,
		results: make(chan acceptResult, 256),
		raw:     make(map[net.Conn]struct{}),
	}
	s.wg.Add(1)
	go s.acceptLoop(check, opts)
	tb.Cleanup(s.close)
	return s
}

func (s *testServer) acceptLoop(check func(wire.Hello) error, opts wire.Options) {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return
		}
		s.raw[nc] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			c, err := wire.Accept(nc, serverHello, check, opts)
			s.mu.Lock()
			delete(s.raw, nc)
			late := s.closed
			if c != nil && !late {
				s.conns = append(s.conns, c)
			}
			s.mu.Unlock()
			if c != nil && late {
				c.Close()
			}
			select {
			case s.results <- acceptResult{c, err}:
			default:
			}
		}()
	}
}

func (s *testServer) close() {
	s.mu.Lock()
	s.closed = true
	raw := make([]net.Conn, 0, len(s.raw))
	for nc := range s.raw {
		raw = append(raw, nc)
	}
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	s.ln.Close()
	for _, nc := range raw {
		nc.Close() // ends handshakes in progress
	}
	for _, c := range conns {
		c.Close()
	}
	s.wg.Wait()
}

// next returns the outcome of the next wire.Accept.
func (s *testServer) next(ctx context.Context, tb testing.TB) acceptResult {
	tb.Helper()
	select {
	case r := <-s.results:
		return r
	case <-ctx.Done():
		tb.Fatalf("no connection accepted: %v", ctx.Err())
		return acceptResult{}
	}
}

// nextConn returns the server side of the next accepted connection.
func (s *testServer) nextConn(ctx context.Context, tb testing.TB) *wire.Conn {
	tb.Helper()
	r := s.next(ctx, tb)
	if r.err != nil {
		tb.Fatalf("Accept: %v", r.err)
	}
	return r.conn
}

func dial(ctx context.Context, tb testing.TB, addr string, opts wire.Options) *wire.Conn {
	tb.Helper()
	c, err := wire.Dial(ctx, nil, addr, clientHello, opts)
	if err != nil {
		tb.Fatalf("Dial: %v", err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// pair starts a server with h and opts and dials it; it returns the client
// and the server side of the connection.
func pair(ctx context.Context, tb testing.TB, h wire.Handler, serverOpts, clientOpts wire.Options) (client, server *wire.Conn) {
	tb.Helper()
	serverOpts.Handler = h
	s := startServer(tb, nil, serverOpts)
	client = dial(ctx, tb, s.addr, clientOpts)
	return client, s.nextConn(ctx, tb)
}

// frame builds a raw frame.
func frame(kind wire.Kind, id uint64, body []byte) []byte {
	b := make([]byte, 13, 13+len(body))
	binary.BigEndian.PutUint32(b, uint32(9+len(body)))
	b[4] = byte(kind)
	binary.BigEndian.PutUint64(b[5:], id)
	return append(b, body...)
}

// readRawFrame reads one frame written by a Conn.
func readRawFrame(r io.Reader) (wire.Kind, uint64, []byte, error) {
	var hdr [13]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	if n < 9 || n > 64<<20 {
		return 0, 0, nil, fmt.Errorf("bad frame length %d", n)
	}
	body := make([]byte, n-9)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, 0, nil, err
	}
	return wire.Kind(hdr[4]), binary.BigEndian.Uint64(hdr[5:]), body, nil
}

func helloBody(tb testing.TB, h wire.Hello) []byte {
	tb.Helper()
	b, err := msgpack.Marshal(&h)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func requestBody(tb testing.TB, req *op.Request) []byte {
	tb.Helper()
	var buf bytes.Buffer
	if err := wire.EncodeRequest(msgpack.NewEncoder(&buf), req); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

func responseBody(tb testing.TB, resp *op.Response) []byte {
	tb.Helper()
	var buf bytes.Buffer
	if err := wire.EncodeResponse(msgpack.NewEncoder(&buf), resp); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// rawDial opens a plain TCP connection whose IO ends with ctx.
func rawDial(ctx context.Context, tb testing.TB, addr string) net.Conn {
	tb.Helper()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	tb.Cleanup(func() { nc.Close() })
	return nc
}

// rawHandshake dials addr and completes the client side of the handshake by
// hand, so the test can then write arbitrary frames.
func rawHandshake(ctx context.Context, tb testing.TB, addr string) (net.Conn, *bufio.Reader) {
	tb.Helper()
	nc := rawDial(ctx, tb, addr)
	h := clientHello
	h.Magic, h.Proto = wire.Magic, wire.ProtocolVersion
	if _, err := nc.Write(frame(wire.KindHello, 0, helloBody(tb, h))); err != nil {
		tb.Fatal(err)
	}
	br := bufio.NewReader(nc)
	kind, _, body, err := readRawFrame(br)
	if err != nil {
		tb.Fatal(err)
	}
	ack, err := wire.DecodeHello(body)
	if kind != wire.KindHelloAck || err != nil || ack.Err != "" {
		tb.Fatalf("handshake: kind %d, ack %+v, err %v", kind, ack, err)
	}
	return nc, br
}

// readResponse reads one response frame from a raw connection.
func readResponse(tb testing.TB, r io.Reader) (uint64, *op.Response) {
	tb.Helper()
	kind, id, body, err := readRawFrame(r)
	if err != nil {
		tb.Fatalf("reading response: %v", err)
	}
	if kind != wire.KindResponse {
		tb.Fatalf("frame kind %d, want response", kind)
	}
	resp, err := wire.DecodeResponseBytes(body)
	if err != nil {
		tb.Fatal(err)
	}
	return id, resp
}

// expectClosed asserts that the peer closed nc: reading drains to EOF (or a
// reset) before ctx's deadline, which rawDial set on nc.
func expectClosed(tb testing.TB, r io.Reader) {
	tb.Helper()
	_, err := io.Copy(io.Discard, r)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		tb.Fatalf("connection still open: %v", err)
	}
}

// waitDone waits for c.Done().
func waitDone(ctx context.Context, tb testing.TB, c *wire.Conn) {
	tb.Helper()
	select {
	case <-c.Done():
	case <-ctx.Done():
		tb.Fatalf("connection not done: %v", ctx.Err())
	}
}

// rawListener accepts plain TCP connections and hands them to the test, for
// tests of Dial against a misbehaving server.
func rawListener(tb testing.TB) (addr string, conns <-chan net.Conn) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ch := make(chan net.Conn, 16)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		accepted []net.Conn
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			accepted = append(accepted, nc)
			mu.Unlock()
			select {
			case ch <- nc:
			default:
			}
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, nc := range accepted {
			nc.Close()
		}
	})
	return ln.Addr().String(), ch
}

func recvConn(ctx context.Context, tb testing.TB, ch <-chan net.Conn) net.Conn {
	tb.Helper()
	select {
	case nc := <-ch:
		if dl, ok := ctx.Deadline(); ok {
			nc.SetDeadline(dl)
		}
		return nc
	case <-ctx.Done():
		tb.Fatalf("nothing accepted: %v", ctx.Err())
		return nil
	}
}

// hangHandler never answers requests whose key is "hang": it reports them
// on hung instead. Other requests are echoed.
type hungCall struct {
	c  *wire.Conn
	id uint64
}

func hangHandler(hung chan<- hungCall) wire.Handler {
	return wire.HandlerFunc(func(c *wire.Conn, id uint64, req *op.Request) {
		if req.Key == "hang" {
			hung <- hungCall{c, id}
			return
		}
		c.Respond(id, echoResponse(req))
	})
}

func recvHung(ctx context.Context, tb testing.TB, hung <-chan hungCall) hungCall {
	tb.Helper()
	select {
	case h := <-hung:
		return h
	case <-ctx.Done():
		tb.Fatalf("request never reached the handler: %v", ctx.Err())
		return hungCall{}
	}
}

// mustEcho makes a call that the echo handler answers and checks the answer.
func mustEcho(ctx context.Context, tb testing.TB, c *wire.Conn, key string) {
	tb.Helper()
	resp, err := c.Call(ctx, &op.Request{Service: "t", Key: key, Value: []byte("v-" + key)})
	if err != nil {
		tb.Fatalf("Call(%q): %v", key, err)
	}
	if resp.Code != op.OK || resp.Msg != key || string(resp.Value) != "v-"+key {
		tb.Fatalf("Call(%q) got %+v", key, resp)
	}
}

// allocatedDuring returns the bytes allocated by the process while f ran.
func allocatedDuring(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// ---------------------------------------------------------------------------

func TestCallBasic(t *testing.T) {
	ctx := testCtx(t)
	var checked wire.Hello
	s := startServer(t, func(p wire.Hello) error { checked = p; return nil }, wire.Options{Handler: echo})
	c := dial(ctx, t, s.addr, wire.Options{})
	sc := s.nextConn(ctx, t)

	wantServer := serverHello
	wantServer.Magic, wantServer.Proto, wantServer.Caps = wire.Magic, wire.ProtocolVersion, wire.Caps
	if got := c.Peer(); got != wantServer {
		t.Errorf("client sees peer %+v, want %+v", got, wantServer)
	}
	wantClient := clientHello
	wantClient.Magic, wantClient.Proto, wantClient.Caps = wire.Magic, wire.ProtocolVersion, wire.Caps
	if got := sc.Peer(); got != wantClient {
		t.Errorf("server sees peer %+v, want %+v", got, wantClient)
	}
	if checked != wantClient {
		t.Errorf("check saw %+v, want %+v", checked, wantClient)
	}
	if c.RemoteAddr().String() != s.addr {
		t.Errorf("RemoteAddr %v, want %s", c.RemoteAddr(), s.addr)
	}
	if c.Limits() != wire.DefaultLimits() {
		t.Errorf("Limits %+v, want defaults", c.Limits())
	}
	if c.Err() != nil {
		t.Errorf("Err on an open conn: %v", c.Err())
	}

	req := &op.Request{Service: "map", Name: "users", Op: 3, Partition: 17, Key: "k", Value: []byte("value"), Aux: []byte("aux"), Num: -5, TableVersion: 9}
	resp, err := c.Call(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	want := &op.Response{Found: true, Msg: "k", Value: []byte("value"), Num: -5, TableVersion: 9}
	if resp.Code != want.Code || resp.Msg != want.Msg || !resp.Found || !bytes.Equal(resp.Value, want.Value) || resp.Num != want.Num || resp.TableVersion != want.TableVersion {
		t.Fatalf("got %+v, want %+v", resp, want)
	}

	// Requests travel the other way too: the server calls the client.
	// (The client has no handler, so it refuses.)
	resp, err = sc.Call(ctx, &op.Request{Key: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Code != op.CodeBadRequest || !errors.Is(resp.Err(), op.ErrBadRequest) {
		t.Fatalf("handler-less peer answered %+v, want a bad request", resp)
	}
}

// TestCallsMultiplexed checks pipelining: 64 goroutines x 200 calls share
// one Conn and each gets its own response, whether the handler answers
// inline (in order) or from goroutines after random delays (out of order).
func TestCallsMultiplexed(t *testing.T) {
	const goroutines, calls = 64, 200

	outOfOrder := func(wg *sync.WaitGroup, reordered *atomic.Int64) wire.Handler {
		var mu sync.Mutex
		var lastID uint64
		return wire.HandlerFunc(func(c *wire.Conn, id uint64, req *op.Request) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tm := time.NewTimer(time.Duration(rand.IntN(200)) * time.Microsecond)
				defer tm.Stop()
				select {
				case <-tm.C:
				case <-c.Done():
					return
				}
				mu.Lock()
				if id < lastID {
					reordered.Add(1)
				}
				lastID = max(lastID, id)
				mu.Unlock()
				c.Respond(id, echoResponse(req))
			}()
		})
	}

	for _, tc := range []struct {
		name     string
		reorders bool
	}{{"inline", false}, {"out-of-order", true}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			var hwg sync.WaitGroup
			t.Cleanup(hwg.Wait) // runs after the server is closed
			var reordered atomic.Int64
			h := wire.Handler(echo)
			if tc.reorders {
				h = outOfOrder(&hwg, &reordered)
			}
			c, _ := pair(ctx, t, h, wire.Options{}, wire.Options{})

			var wg sync.WaitGroup
			for g := range goroutines {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range calls {
						key := fmt.Sprintf("g%d/c%d", g, i)
						val := bytes.Repeat([]byte(key), 1+i%7)
						num := int64(g)<<32 | int64(i)
						resp, err := c.Call(ctx, &op.Request{Service: "echo", Key: key, Value: val, Num: num})
						if err != nil {
							t.Errorf("%s: %v", key, err)
							return
						}
						if resp.Msg != key || !bytes.Equal(resp.Value, val) || resp.Num != num {
							t.Errorf("%s: got response for %q (num %x)", key, resp.Msg, resp.Num)
							return
						}
					}
				}()
			}
			wg.Wait()
			if tc.reorders {
				t.Logf("%d of %d responses were sent after a later request's", reordered.Load(), goroutines*calls)
			}
		})
	}
}

func TestHandshakeRefusesBadPeers(t *testing.T) {
	goodHello := clientHello
	goodHello.Magic, goodHello.Proto = wire.Magic, wire.ProtocolVersion
	badMagic := goodHello
	badMagic.Magic = "shoaL"

	for _, tc := range []struct {
		name      string
		send      []byte
		closeSend bool // half-close after sending
		want      error
	}{
		{name: "http request", send: []byte("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"), want: op.ErrTooLarge},
		{name: "zero length", send: make([]byte, 32), want: wire.ErrMalformed},
		{name: "short garbage then EOF", send: []byte("hi"), closeSend: true, want: io.ErrUnexpectedEOF},
		{name: "nothing then EOF", closeSend: true, want: io.EOF},
		{name: "wrong magic", send: frame(wire.KindHello, 0, helloBody(t, badMagic)), want: wire.ErrMalformed},
		{name: "no magic", send: frame(wire.KindHello, 0, helloBody(t, wire.Hello{Proto: 1})), want: wire.ErrMalformed},
		{name: "hello body not msgpack", send: frame(wire.KindHello, 0, []byte{0xc1, 0xc1}), want: wire.ErrMalformed},
		{name: "request before hello", send: frame(wire.KindRequest, 1, helloBody(t, goodHello)), want: wire.ErrMalformed},
		{name: "hello ack instead of hello", send: frame(wire.KindHelloAck, 0, helloBody(t, goodHello)), want: wire.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			checked := false
			s := startServer(t, func(wire.Hello) error { checked = true; return nil }, wire.Options{Handler: echo})
			nc := rawDial(ctx, t, s.addr)
			if _, err := nc.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			if tc.closeSend {
				nc.(*net.TCPConn).CloseWrite()
			}
			r := s.next(ctx, t)
			if r.err == nil {
				r.conn.Close()
				t.Fatal("Accept accepted a bad peer")
			}
			if !errors.Is(r.err, tc.want) {
				t.Errorf("Accept error %q does not wrap %q", r.err, tc.want)
			}
			if checked {
				t.Error("check was called for a bad peer")
			}
			expectClosed(t, nc)
		})
	}
}

// TestAcceptTimeout: a peer that connects and says nothing is dropped after
// HandshakeTimeout.
func TestAcceptTimeout(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t, nil, wire.Options{Handler: echo, HandshakeTimeout: 50 * time.Millisecond})
	nc := rawDial(ctx, t, s.addr)
	r := s.next(ctx, t)
	var ne net.Error
	if r.err == nil || !errors.As(r.err, &ne) || !ne.Timeout() {
		t.Fatalf("Accept error %v, want a timeout", r.err)
	}
	expectClosed(t, nc)
}

func TestHandshakeCheckRefuses(t *testing.T) {
	for _, tc := range []struct {
		name   string
		check  func(p wire.Hello) error
		reason string
	}{
		{
			name: "cluster name",
			check: func(p wire.Hello) error {
				if p.Cluster != "prod" {
					return fmt.Errorf("cluster %q is not %q", p.Cluster, "prod")
				}
				return nil
			},
			reason: `cluster "test" is not "prod"`,
		},
		{
			name: "partition count as op error",
			check: func(p wire.Hello) error {
				return op.Errorf(op.CodeBadRequest, "partition count %d, this cluster has %d", p.Partitions, 7)
			},
			reason: "partition count 271, this cluster has 7",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			s := startServer(t, tc.check, wire.Options{Handler: echo})
			c, err := wire.Dial(ctx, nil, s.addr, clientHello, wire.Options{})
			if err == nil {
				c.Close()
				t.Fatal("Dial succeeded against a refusing server")
			}
			if !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("Dial error %q lacks the reason %q", err, tc.reason)
			}
			if !errors.Is(err, op.ErrBadRequest) {
				t.Errorf("Dial error %q does not wrap op.ErrBadRequest", err)
			}
			r := s.next(ctx, t)
			if r.err == nil || !strings.Contains(r.err.Error(), tc.reason) {
				t.Errorf("Accept error %v, want one with %q", r.err, tc.reason)
			}
		})
	}
}

func TestHandshakeProtocolVersion(t *testing.T) {
	ctx := testCtx(t)
	checked := false
	s := startServer(t, func(wire.Hello) error { checked = true; return nil }, wire.Options{Handler: echo})
	nc := rawDial(ctx, t, s.addr)
	h := clientHello
	h.Magic, h.Proto = wire.Magic, wire.ProtocolVersion+1
	if _, err := nc.Write(frame(wire.KindHello, 0, helloBody(t, h))); err != nil {
		t.Fatal(err)
	}
	kind, _, body, err := readRawFrame(nc)
	if err != nil {
		t.Fatal(err)
	}
	ack, err := wire.DecodeHello(body)
	if err != nil {
		t.Fatal(err)
	}
	if kind != wire.KindHelloAck || !strings.Contains(ack.Err, "protocol version 2") {
		t.Fatalf("got kind %d ack %+v, want a refusal naming the version", kind, ack)
	}
	if ack.Name != serverHello.Name || ack.Proto != wire.ProtocolVersion {
		t.Errorf("refusal ack %+v does not describe the server", ack)
	}
	r := s.next(ctx, t)
	if r.err == nil || !errors.Is(r.err, op.ErrBadRequest) {
		t.Errorf("Accept error %v, want op.ErrBadRequest", r.err)
	}
	if checked {
		t.Error("check was called for a peer of another version")
	}
	expectClosed(t, nc)
}

// TestDialBadServer covers Dial against servers that do not speak the
// protocol.
func TestDialBadServer(t *testing.T) {
	t.Run("wrong ack kind", func(t *testing.T) {
		ctx := testCtx(t)
		addr, conns := rawListener(t)
		done := make(chan error, 1)
		go func() {
			c, err := wire.Dial(ctx, nil, addr, clientHello, wire.Options{})
			if c != nil {
				c.Close()
			}
			done <- err
		}()
		nc := recvConn(ctx, t, conns)
		if _, _, _, err := readRawFrame(nc); err != nil {
			t.Fatal(err)
		}
		h := serverHello
		h.Magic, h.Proto = wire.Magic, wire.ProtocolVersion
		nc.Write(frame(wire.KindRequest, 0, helloBody(t, h)))
		if err := <-done; !errors.Is(err, wire.ErrMalformed) {
			t.Fatalf("Dial error %v, want ErrMalformed", err)
		}
		expectClosed(t, nc)
	})
	t.Run("bad magic in ack", func(t *testing.T) {
		ctx := testCtx(t)
		addr, conns := rawListener(t)
		done := make(chan error, 1)
		go func() {
			c, err := wire.Dial(ctx, nil, addr, clientHello, wire.Options{})
			if c != nil {
				c.Close()
			}
			done <- err
		}()
		nc := recvConn(ctx, t, conns)
		if _, _, _, err := readRawFrame(nc); err != nil {
			t.Fatal(err)
		}
		nc.Write(frame(wire.KindHelloAck, 0, helloBody(t, wire.Hello{Magic: "HTTP/", Proto: 1})))
		if err := <-done; !errors.Is(err, wire.ErrMalformed) {
			t.Fatalf("Dial error %v, want ErrMalformed", err)
		}
		expectClosed(t, nc)
	})
	t.Run("server closes", func(t *testing.T) {
		ctx := testCtx(t)
		addr, conns := rawListener(t)
		done := make(chan error, 1)
		go func() {
			c, err := wire.Dial(ctx, nil, addr, clientHello, wire.Options{})
			if c != nil {
				c.Close()
			}
			done <- err
		}()
		recvConn(ctx, t, conns).Close()
		if err := <-done; !errors.Is(err, op.ErrUnavailable) {
			t.Fatalf("Dial error %v, want op.ErrUnavailable", err)
		}
	})
	t.Run("silent server, ctx deadline", func(t *testing.T) {
		ctx := testCtx(t)
		addr, _ := rawListener(t)
		dctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		c, err := wire.Dial(dctx, nil, addr, clientHello, wire.Options{HandshakeTimeout: time.Hour})
		if err == nil {
			c.Close()
			t.Fatal("Dial succeeded against a silent server")
		}
		if !errors.Is(err, op.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Dial error %v, want op.ErrUnavailable and the deadline", err)
		}
	})
	t.Run("silent server, ctx canceled", func(t *testing.T) {
		ctx := testCtx(t)
		addr, conns := rawListener(t)
		dctx, cancel := context.WithCancel(ctx)
		defer cancel()
		done := make(chan error, 1)
		go func() {
			c, err := wire.Dial(dctx, nil, addr, clientHello, wire.Options{HandshakeTimeout: time.Hour})
			if c != nil {
				c.Close()
			}
			done <- err
		}()
		nc := recvConn(ctx, t, conns)
		if _, _, _, err := readRawFrame(nc); err != nil { // the hello was sent
			t.Fatal(err)
		}
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, op.ErrUnavailable) || !errors.Is(err, context.Canceled) {
				t.Fatalf("Dial error %v, want op.ErrUnavailable and context.Canceled", err)
			}
		case <-ctx.Done():
			t.Fatal("Dial ignored its canceled context")
		}
	})
	t.Run("nothing listening", func(t *testing.T) {
		ctx := testCtx(t)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		c, err := wire.Dial(ctx, nil, addr, clientHello, wire.Options{})
		if err == nil {
			c.Close()
			t.Fatal("Dial to a closed port succeeded")
		}
		if !errors.Is(err, op.ErrUnavailable) {
			t.Fatalf("Dial error %v, want op.ErrUnavailable", err)
		}
	})
}

// countingEcho echoes and counts the requests it sees.
func countingEcho(n *atomic.Int64) wire.Handler {
	return wire.HandlerFunc(func(c *wire.Conn, id uint64, req *op.Request) {
		n.Add(1)
		c.Respond(id, echoResponse(req))
	})
}

func TestLimits(t *testing.T) {
	t.Run("sender refuses before sending", func(t *testing.T) {
		ctx := testCtx(t)
		var seen atomic.Int64
		lim := wire.Limits{MaxKeySize: 16, MaxValueSize: 1024, MaxNameSize: 8}
		c, _ := pair(ctx, t, countingEcho(&seen), wire.Options{}, wire.Options{Limits: lim})
		for name, req := range map[string]*op.Request{
			"value":   {Key: "k", Value: make([]byte, 1025)},
			"aux":     {Key: "k", Aux: make([]byte, 1025)},
			"key":     {Key: strings.Repeat("k", 17)},
			"name":    {Key: "k", Name: strings.Repeat("n", 9)},
			"service": {Key: "k", Service: strings.Repeat("s", 9)},
		} {
			resp, err := c.Call(ctx, req)
			if !errors.Is(err, op.ErrTooLarge) || resp != nil {
				t.Errorf("%s over the limit: got %v, %v; want op.ErrTooLarge", name, resp, err)
			}
			if errors.Is(err, wire.ErrNotSent) || errors.Is(err, op.ErrUnavailable) {
				t.Errorf("%s over the limit: %v blames the connection", name, err)
			}
		}
		// Exactly at the limits is fine.
		resp, err := c.Call(ctx, &op.Request{Service: "ssssssss", Name: "nnnnnnnn", Key: strings.Repeat("k", 16), Value: make([]byte, 1024), Aux: make([]byte, 1024)})
		if err != nil || resp.Code != op.OK {
			t.Fatalf("call at the limits: %v, %v", resp, err)
		}
		if n := seen.Load(); n != 1 {
			t.Fatalf("handler saw %d requests, want only the one within limits", n)
		}
	})

	t.Run("receiver refuses with a response", func(t *testing.T) {
		ctx := testCtx(t)
		var seen atomic.Int64
		serverLim := wire.Limits{MaxKeySize: 16, MaxValueSize: 1024}
		c, sc := pair(ctx, t, countingEcho(&seen), wire.Options{Limits: serverLim}, wire.Options{})
		for name, req := range map[string]*op.Request{
			"value": {Key: "k", Value: make([]byte, 2048)},
			"aux":   {Key: "k", Aux: make([]byte, 1025)},
			"key":   {Key: strings.Repeat("k", 17)},
		} {
			resp, err := c.Call(ctx, req)
			if err != nil {
				t.Fatalf("%s: transport error %v, want a response", name, err)
			}
			if resp.Code != op.CodeTooLarge || !errors.Is(resp.Err(), op.ErrTooLarge) {
				t.Errorf("%s: got %+v, want CodeTooLarge", name, resp)
			}
			mustEcho(ctx, t, c, "after-"+name) // the connection still works
		}
		if n := seen.Load(); n != 3 {
			t.Fatalf("handler saw %d requests, want the 3 within limits", n)
		}
		select {
		case <-sc.Done():
			t.Fatalf("server connection closed: %v", sc.Err())
		default:
		}
	})

	t.Run("sender frame limit", func(t *testing.T) {
		ctx := testCtx(t)
		var seen atomic.Int64
		c, _ := pair(ctx, t, countingEcho(&seen), wire.Options{}, wire.Options{Limits: wire.Limits{MaxFrameSize: 4096}})
		_, err := c.Call(ctx, &op.Request{Key: "k", Value: make([]byte, 8192)})
		if !errors.Is(err, op.ErrTooLarge) || errors.Is(err, wire.ErrNotSent) {
			t.Fatalf("got %v, want op.ErrTooLarge alone", err)
		}
		mustEcho(ctx, t, c, "next")
		if n := seen.Load(); n != 1 {
			t.Fatalf("handler saw %d requests, want 1", n)
		}
	})

	t.Run("response too large is replaced", func(t *testing.T) {
		ctx := testCtx(t)
		big := wire.HandlerFunc(func(c *wire.Conn, id uint64, req *op.Request) {
			if req.Key == "big" {
				c.Respond(id, &op.Response{Value: make([]byte, 128<<10), TableVersion: 77})
				return
			}
			c.Respond(id, echoResponse(req))
		})
		c, _ := pair(ctx, t, big, wire.Options{Limits: wire.Limits{MaxFrameSize: 64 << 10}}, wire.Options{})
		resp, err := c.Call(ctx, &op.Request{Key: "big"})
		if err != nil {
			t.Fatal(err)
		}
		if resp.Code != op.CodeTooLarge || resp.TableVersion != 77 || resp.Value != nil {
			t.Fatalf("got %+v, want a CodeTooLarge response keeping the table version", resp)
		}
		mustEcho(ctx, t, c, "next")
	})

	t.Run("frame header over the receiver's limit", func(t *testing.T) {
		ctx := testCtx(t)
		var seen atomic.Int64
		s := startServer(t, nil, wire.Options{Handler: countingEcho(&seen), Limits: wire.Limits{MaxFrameSize: 1 << 20}})
		nc, br := rawHandshake(ctx, t, s.addr)
		sc := s.nextConn(ctx, t)
		hdr := frame(wire.KindRequest, 1, nil)
		binary.BigEndian.PutUint32(hdr, 0xFFFFFFF0) // ~4 GiB
		alloc := allocatedDuring(func() {
			if _, err := nc.Write(hdr); err != nil {
				t.Fatal(err)
			}
			waitDone(ctx, t, sc)
		})
		if !errors.Is(sc.Err(), op.ErrTooLarge) {
			t.Errorf("server conn failed with %v, want op.ErrTooLarge", sc.Err())
		}
		if alloc > 256<<20 {
			t.Errorf("refusing the frame allocated %d MiB", alloc>>20)
		}
		expectClosed(t, br)
		if seen.Load() != 0 {
			t.Error("the handler saw a request")
		}
	})
}

// TestMalformedRequest writes request frames with broken bodies: each is
// answered with CodeBadRequest for its id and the connection keeps working.
func TestMalformedRequest(t *testing.T) {
	ctx := testCtx(t)
	var seen atomic.Int64
	s := startServer(t, nil, wire.Options{Handler: countingEcho(&seen)})
	nc, br := rawHandshake(ctx, t, s.addr)
	sc := s.nextConn(ctx, t)

	bodies := map[string][]byte{
		"empty":          {},
		"reserved code":  {0xc1},
		"not an array":   {0xa3, 'a', 'b', 'c'},
		"nil":            {0xc0},
		"too few fields": {0x93, 0x01, 0x02, 0x03},
		"truncated":      requestBody(t, &op.Request{Service: "svc", Key: "key", Value: []byte("value")})[:12],
		// A Value whose bin32 header claims 4 GiB: refused without
		// allocating it.
		"huge bin claim":  append(claimPrefix(baseRequestFields(t), fValue), 0xc6, 0xff, 0xff, 0xff, 0xff, 0x00),
		"op out of range": withField(t, baseRequestFields(t), fOp, 256),
	}
	id := uint64(1000)
	for name, body := range bodies {
		id++
		var (
			gotID uint64
			resp  *op.Response
		)
		alloc := allocatedDuring(func() {
			if _, err := nc.Write(frame(wire.KindRequest, id, body)); err != nil {
				t.Fatal(err)
			}
			gotID, resp = readResponse(t, br)
		})
		if gotID != id || resp.Code != op.CodeBadRequest || !errors.Is(resp.Err(), op.ErrBadRequest) {
			t.Errorf("%s: got id %d %+v, want id %d CodeBadRequest", name, gotID, resp, id)
		}
		if alloc > 64<<20 {
			t.Errorf("%s: the server allocated %d MiB", name, alloc>>20)
		}
	}
	// The connection still works, and ids are the sender's business.
	for _, id := range []uint64{0, 1, 1 << 63, ^uint64(0)} {
		req := &op.Request{Service: "s", Key: fmt.Sprint("after-", id), Value: []byte("v")}
		if _, err := nc.Write(frame(wire.KindRequest, id, requestBody(t, req))); err != nil {
			t.Fatal(err)
		}
		gotID, resp := readResponse(t, br)
		if gotID != id || resp.Code != op.OK || resp.Msg != req.Key {
			t.Fatalf("valid request %d: got id %d %+v", id, gotID, resp)
		}
	}
	if n := seen.Load(); n != 4 {
		t.Errorf("handler saw %d requests, want 4", n)
	}
	select {
	case <-sc.Done():
		t.Fatalf("server conn closed: %v", sc.Err())
	default:
	}
}

func TestBadFramesCloseTheConnection(t *testing.T) {
	for name, raw := range map[string][]byte{
		"hello after start":    frame(wire.KindHello, 0, nil),
		"length below header":  {0, 0, 0, 3, 3, 0, 0, 0, 0, 0, 0, 0, 1},
		"truncated then close": frame(wire.KindRequest, 1, []byte{1, 2, 3})[:14],
	} {
		t.Run(name, func(t *testing.T) {
			ctx := testCtx(t)
			s := startServer(t, nil, wire.Options{Handler: echo})
			nc, br := rawHandshake(ctx, t, s.addr)
			sc := s.nextConn(ctx, t)
			if _, err := nc.Write(raw); err != nil {
				t.Fatal(err)
			}
			nc.(*net.TCPConn).CloseWrite()
			waitDone(ctx, t, sc)
			if err := sc.Err(); !errors.Is(err, op.ErrBadRequest) && !errors.Is(err, op.ErrUnavailable) {
				t.Errorf("server conn failed with %v", err)
			}
			expectClosed(t, br)
		})
	}
}

// TestMalformedResponse: a response body the client cannot decode fails
// that call with CodeBadRequest and leaves the connection usable.
func TestMalformedResponse(t *testing.T) {
	ctx := testCtx(t)
	addr, conns := rawListener(t)
	type result struct {
		resp *op.Response
		err  error
	}
	calls := make(chan result, 2)
	clientReady := make(chan *wire.Conn, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := wire.Dial(ctx, nil, addr, clientHello, wire.Options{})
		if err != nil {
			calls <- result{nil, err}
			clientReady <- nil
			return
		}
		clientReady <- c
		for _, key := range []string{"first", "second"} {
			resp, err := c.Call(ctx, &op.Request{Key: key})
			calls <- result{resp, err}
		}
	}()
	nc := recvConn(ctx, t, conns)
	br := bufio.NewReader(nc)
	if _, _, _, err := readRawFrame(br); err != nil {
		t.Fatal(err)
	}
	h := serverHello
	h.Magic, h.Proto = wire.Magic, wire.ProtocolVersion
	nc.Write(frame(wire.KindHelloAck, 0, helloBody(t, h)))
	c := <-clientReady
	if c == nil {
		t.Fatal((<-calls).err)
	}
	defer c.Close()
	defer wg.Wait()

	_, id, _, err := readRawFrame(br)
	if err != nil {
		t.Fatal(err)
	}
	nc.Write(frame(wire.KindResponse, id, []byte{0x91, 0xc1}))
	r := <-calls
	if r.err != nil || r.resp.Code != op.CodeBadRequest || !strings.Contains(r.resp.Msg, "malformed response") {
		t.Fatalf("first call: %+v, %v; want a malformed-response error", r.resp, r.err)
	}
	_, id, _, err = readRawFrame(br)
	if err != nil {
		t.Fatal(err)
	}
	// A response for an id nobody waits for is ignored.
	nc.Write(frame(wire.KindResponse, id+100, responseBody(t, &op.Response{Msg: "stray"})))
	nc.Write(frame(wire.KindResponse, id, responseBody(t, &op.Response{Msg: "ok", Num: 2})))
	r = <-calls
	if r.err != nil || r.resp.Code != op.OK || r.resp.Msg != "ok" {
		t.Fatalf("second call: %+v, %v", r.resp, r.err)
	}
}

func TestCallContext(t *testing.T) {
	t.Run("deadline", func(t *testing.T) {
		ctx := testCtx(t)
		hung := make(chan hungCall, 1)
		c, _ := pair(ctx, t, hangHandler(hung), wire.Options{}, wire.Options{})
		cctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
		defer cancel()
		resp, err := c.Call(cctx, &op.Request{Key: "hang"})
		if resp != nil || !errors.Is(err, op.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v, %v; want op.ErrTimeout", resp, err)
		}
		if op.CodeOf(err) != op.CodeTimeout {
			t.Errorf("CodeOf(%v) = %v", err, op.CodeOf(err))
		}
		// The forgotten id's late response is harmless and is not
		// delivered to the next call.
		h := recvHung(ctx, t, hung)
		h.c.Respond(h.id, &op.Response{Msg: "late"})
		mustEcho(ctx, t, c, "next")
	})

	t.Run("canceled while waiting", func(t *testing.T) {
		ctx := testCtx(t)
		hung := make(chan hungCall, 1)
		c, _ := pair(ctx, t, hangHandler(hung), wire.Options{}, wire.Options{})
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		errc := make(chan error, 1)
		go func() {
			_, err := c.Call(cctx, &op.Request{Key: "hang"})
			errc <- err
		}()
		h := recvHung(ctx, t, hung)
		cancel()
		err := <-errc
		if !errors.Is(err, op.ErrCanceled) || !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want op.ErrCanceled", err)
		}
		h.c.Respond(h.id, &op.Response{Msg: "late"})
		mustEcho(ctx, t, c, "next")
	})

	t.Run("canceled before the call", func(t *testing.T) {
		ctx := testCtx(t)
		var seen atomic.Int64
		c, _ := pair(ctx, t, countingEcho(&seen), wire.Options{}, wire.Options{})
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := c.Call(cctx, &op.Request{Key: "x"}); !errors.Is(err, op.ErrCanceled) {
			t.Fatalf("got %v, want op.ErrCanceled", err)
		}
		mustEcho(ctx, t, c, "next")
		if n := seen.Load(); n != 1 {
			t.Fatalf("handler saw %d requests, want 1", n)
		}
	})

	// Many abandoned calls whose responses arrive late, interleaved with
	// live ones: a recycled response channel must never carry a stale
	// response to a later call.
	t.Run("late responses never leak", func(t *testing.T) {
		ctx := testCtx(t)
		hung := make(chan hungCall, 1)
		c, _ := pair(ctx, t, hangHandler(hung), wire.Options{}, wire.Options{})
		for i := range 200 {
			cctx, cancel := context.WithCancel(ctx)
			errc := make(chan error, 1)
			go func() {
				_, err := c.Call(cctx, &op.Request{Key: "hang"})
				errc <- err
			}()
			h := recvHung(ctx, t, hung)
			if i%2 == 0 {
				// The response races with the cancellation.
				h.c.Respond(h.id, &op.Response{Msg: "late"})
				cancel()
			} else {
				cancel()
				h.c.Respond(h.id, &op.Response{Msg: "late"})
			}
			if err := <-errc; err != nil && !errors.Is(err, op.ErrCanceled) {
				t.Fatalf("abandoned call: %v", err)
			}
			mustEcho(ctx, t, c, fmt.Sprint("live-", i))
		}
	})
}

func TestTimeoutField(t *testing.T) {
	ctx := testCtx(t)
	timeoutEcho := wire.HandlerFunc(func(c *wire.Conn, id uint64, req *op.Request) {
		c.Respond(id, &op.Response{Num: int64(req.Timeout)})
	})
	c, _ := pair(ctx, t, timeoutEcho, wire.Options{}, wire.Options{})

	for _, d := range []time.Duration{time.Millisecond * 500, 5 * time.Second} {
		cctx, cancel := context.WithTimeout(ctx, d)
		dl, _ := cctx.Deadline()
		req := &op.Request{Key: "k", Timeout: 42}
		left := time.Until(dl)
		resp, err := c.Call(cctx, req)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		got := time.Duration(resp.Num)
		if got <= 0 || got > left {
			t.Errorf("timeout %v arrived as %v, want in (0, %v]", d, got, left)
		}
		if req.Timeout != 42 {
			t.Errorf("Call changed the caller's request: Timeout = %v", req.Timeout)
		}
	}

	resp, err := c.Call(noDeadline{ctx}, &op.Request{Key: "k", Timeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Num != 0 {
		t.Errorf("no deadline arrived as %v, want 0", time.Duration(resp.Num))
	}
}

func TestClose(t *testing.T) {
	t.Run("in-flight calls fail with ErrConnLost", func(t *testing.T) {
		ctx := testCtx(t)
		const n = 8
		hung := make(chan hungCall, n)
		c, _ := pair(ctx, t, hangHandler(hung), wire.Options{}, wire.Options{})
		errs := make(chan error, n)
		for range n {
			go func() {
				_, err := c.Call(ctx, &op.Request{Key: "hang"})
				errs <- err
			}()
		}
		for range n {
			recvHung(ctx, t, hung)
		}
		if err := c.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		for range n {
			err := <-errs
			if !errors.Is(err, op.ErrUnavailable) || !errors.Is(err, wire.ErrConnLost) || errors.Is(err, wire.ErrNotSent) {
				t.Errorf("in-flight call: %v, want op.ErrUnavailable and ErrConnLost", err)
			}
		}
	})

	t.Run("calls after Close are not sent", func(t *testing.T) {
		ctx := testCtx(t)
		var seen atomic.Int64
		c, _ := pair(ctx, t, countingEcho(&seen), wire.Options{}, wire.Options{})
		mustEcho(ctx, t, c, "before")
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if err := c.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		select {
		case <-c.Done():
		default:
			t.Fatal("Done not closed after Close")
		}
		if !errors.Is(c.Err(), op.ErrClosed) {
			t.Errorf("Err() = %v, want op.ErrClosed", c.Err())
		}
		_, err := c.Call(ctx, &op.Request{Key: "after"})
		if !errors.Is(err, op.ErrUnavailable) || !errors.Is(err, wire.ErrNotSent) || errors.Is(err, wire.ErrConnLost) {
			t.Fatalf("call after Close: %v, want op.ErrUnavailable and ErrNotSent", err)
		}
		if seen.Load() != 1 {
			t.Fatalf("handler saw %d requests, want 1", seen.Load())
		}
		c.Respond(1, &op.Response{}) // harmless on a closed conn
	})

	t.Run("peer close", func(t *testing.T) {
		ctx := testCtx(t)
		hung := make(chan hungCall, 1)
		c, sc := pair(ctx, t, hangHandler(hung), wire.Options{}, wire.Options{})
		errc := make(chan error, 1)
		go func() {
			_, err := c.Call(ctx, &op.Request{Key: "hang"})
			errc <- err
		}()
		recvHung(ctx, t, hung)
		sc.Close()
		waitDone(ctx, t, c)
		if !errors.Is(c.Err(), op.ErrUnavailable) {
			t.Errorf("Err() = %v, want op.ErrUnavailable", c.Err())
		}
		if err := <-errc; !errors.Is(err, wire.ErrConnLost) || !errors.Is(err, op.ErrUnavailable) {
			t.Errorf("in-flight call: %v, want ErrConnLost", err)
		}
		if _, err := c.Call(ctx, &op.Request{Key: "x"}); !errors.Is(err, wire.ErrNotSent) {
			t.Errorf("call after the peer closed: %v, want ErrNotSent", err)
		}
	})

	t.Run("peer vanishes", func(t *testing.T) {
		ctx := testCtx(t)
		s := startServer(t, nil, wire.Options{Handler: echo})
		c := dial(ctx, t, s.addr, wire.Options{})
		s.close() // closes the server side and the listener
		waitDone(ctx, t, c)
		if !errors.Is(c.Err(), op.ErrUnavailable) {
			t.Errorf("Err() = %v, want op.ErrUnavailable", c.Err())
		}
	})

	// Close racing with a crowd of callers: every call ends, and with one
	// of the documented errors.
	t.Run("racing callers", func(t *testing.T) {
		ctx := testCtx(t)
		c, _ := pair(ctx, t, echo, wire.Options{}, wire.Options{})
		var wg sync.WaitGroup
		var ok, notSent, lost atomic.Int64
		start := make(chan struct{})
		for g := range 32 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for i := 0; ; i++ {
					key := fmt.Sprintf("%d/%d", g, i)
					resp, err := c.Call(ctx, &op.Request{Key: key})
					switch {
					case err == nil:
						if resp.Msg != key {
							t.Errorf("%s got %q", key, resp.Msg)
							return
						}
						ok.Add(1)
					case errors.Is(err, wire.ErrNotSent) && errors.Is(err, op.ErrUnavailable):
						notSent.Add(1)
						return
					case errors.Is(err, wire.ErrConnLost) && errors.Is(err, op.ErrUnavailable):
						lost.Add(1)
					default:
						t.Errorf("%s: unexpected error %v", key, err)
						return
					}
				}
			}()
		}
		close(start)
		mustEcho(ctx, t, c, "warm")
		for ok.Load() < 200 && ctx.Err() == nil {
			runtime.Gosched()
		}
		c.Close()
		wg.Wait()
		if notSent.Load() != 32 {
			t.Errorf("%d callers saw ErrNotSent, want all 32", notSent.Load())
		}
		t.Logf("ok %d, lost %d, not sent %d", ok.Load(), lost.Load(), notSent.Load())
	})
}

// TestBackPressure: with a tiny write buffer on both sides, many large calls
// against a slow handler all complete.
func TestBackPressure(t *testing.T) {
	ctx := testCtx(t)
	var hwg sync.WaitGroup
	t.Cleanup(hwg.Wait)
	slow := wire.HandlerFunc(func(c *wire.Conn, id uint64, req *op.Request) {
		hwg.Add(1)
		go func() {
			defer hwg.Done()
			tm := time.NewTimer(time.Duration(rand.IntN(1000)) * time.Microsecond)
			defer tm.Stop()
			select {
			case <-tm.C:
			case <-c.Done():
				return
			}
			c.Respond(id, echoResponse(req))
		}()
	})
	opts := wire.Options{MaxPendingWrite: 4 << 10}
	c, _ := pair(ctx, t, slow, opts, opts)

	const goroutines, calls, size = 16, 16, 64 << 10
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range calls {
				key := fmt.Sprintf("%d/%d", g, i)
				val := bytes.Repeat([]byte{byte(g), byte(i)}, size/2)
				resp, err := c.Call(ctx, &op.Request{Key: key, Value: val})
				if err != nil {
					t.Errorf("%s: %v", key, err)
					return
				}
				if resp.Msg != key || !bytes.Equal(resp.Value, val) {
					t.Errorf("%s: got the response for %q", key, resp.Msg)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// TestBidirectional: both sides call each other at once on one connection.
func TestBidirectional(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t, nil, wire.Options{Handler: echo})
	c := dial(ctx, t, s.addr, wire.Options{Handler: echo})
	sc := s.nextConn(ctx, t)
	var wg sync.WaitGroup
	for side, conn := range []*wire.Conn{c, sc} {
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 100 {
					key := fmt.Sprintf("%d/%d/%d", side, g, i)
					resp, err := conn.Call(ctx, &op.Request{Key: key})
					if err != nil || resp.Msg != key {
						t.Errorf("%s: %v, %v", key, resp, err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
}

// TestLyingHeadersOverTheWire: frames whose msgpack headers claim gigabytes,
// sent again and again on one connection (whose decoder is long-lived) and
// as handshakes, are refused without the member's memory or work growing.
func TestLyingHeadersOverTheWire(t *testing.T) {
	claim := []byte{0xdb, 0x6c, 0x09, 0xc4, 0x30} // str32 of ~1.8 GB
	base := baseRequestFields(t)

	t.Run("requests", func(t *testing.T) {
		ctx := testCtx(t)
		var seen atomic.Int64
		s := startServer(t, nil, wire.Options{Handler: countingEcho(&seen)})
		nc, br := rawHandshake(ctx, t, s.addr)
		bodies := [][]byte{
			append(claimPrefix(base, fService), claim...),
			append(claimPrefix(base, fKey), claim...),
			append(joinArray(len(base)+1, base...), append([]byte{0x91, 0x81, 0xa1, 'k'}, claim...)...),
		}
		alloc := allocatedDuring(func() {
			for i := range 60 {
				id := uint64(i + 1)
				if _, err := nc.Write(frame(wire.KindRequest, id, bodies[i%len(bodies)])); err != nil {
					t.Fatal(err)
				}
				gotID, resp := readResponse(t, br)
				if gotID != id || resp.Code != op.CodeBadRequest {
					t.Fatalf("frame %d: got id %d %+v, want CodeBadRequest", id, gotID, resp)
				}
			}
		})
		if alloc > 256<<20 {
			t.Errorf("60 small frames made the server allocate %d MiB", alloc>>20)
		}
		if _, err := nc.Write(frame(wire.KindRequest, 1000, requestBody(t, &op.Request{Key: "ok"}))); err != nil {
			t.Fatal(err)
		}
		if id, resp := readResponse(t, br); id != 1000 || resp.Code != op.OK || seen.Load() != 1 {
			t.Fatalf("valid request after the bad ones: id %d %+v", id, resp)
		}
	})

	t.Run("handshakes", func(t *testing.T) {
		ctx := testCtx(t)
		s := startServer(t, nil, wire.Options{Handler: echo})
		bodies := [][]byte{
			append([]byte{0x82, 0xa5, 'm', 'a', 'g', 'i', 'c', 0xa5, 's', 'h', 'o', 'a', 'l', 0xa4, 'n', 'a', 'm', 'e'}, claim...),
			append([]byte{0x81, 0xa7, 'u', 'n', 'k', 'n', 'o', 'w', 'n'}, claim...),
		}
		alloc := allocatedDuring(func() {
			for i := range 60 {
				nc := rawDial(ctx, t, s.addr)
				if _, err := nc.Write(frame(wire.KindHello, 0, bodies[i%len(bodies)])); err != nil {
					t.Fatal(err)
				}
				if r := s.next(ctx, t); !errors.Is(r.err, wire.ErrMalformed) {
					t.Fatalf("handshake %d: Accept error %v, want ErrMalformed", i, r.err)
				}
				expectClosed(t, nc)
				nc.Close()
			}
		})
		if alloc > 256<<20 {
			t.Errorf("60 small handshakes made the server allocate %d MiB", alloc>>20)
		}
	})
}

// AbandonCalls fails the calls waiting on a connection (retriable: the
// peer left the table) and keeps the connection: a later call is answered,
// and an answer to an abandoned call that comes after all is dropped.
func TestAbandonCallsKeepsConnection(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	held := make(chan func(), 4)
	h := wire.HandlerFunc(func(c *wire.Conn, id uint64, req *op.Request) {
		if req.Key == "hold" {
			held <- func() { c.Respond(id, &op.Response{Found: true}) }
			return
		}
		c.Respond(id, &op.Response{Found: true, Value: []byte(req.Key)})
	})
	client, _ := pair(ctx, t, h, wire.Options{}, wire.Options{})
	errc := make(chan error, 1)
	go func() {
		_, err := client.Call(ctx, &op.Request{Service: "s", Key: "hold"})
		errc <- err
	}()
	var answer func()
	select {
	case answer = <-held:
	case <-ctx.Done():
		t.Fatal("the held call never reached the server")
	}
	if n := client.AbandonCalls(); n != 1 {
		t.Fatalf("AbandonCalls failed %d calls, want 1", n)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, op.ErrUnavailable) || !errors.Is(err, wire.ErrConnLost) {
			t.Fatalf("abandoned call: %v; want op.ErrUnavailable and wire.ErrConnLost", err)
		}
	case <-ctx.Done():
		t.Fatal("the abandoned call did not return")
	}
	answer() // the late answer is dropped
	resp, err := client.Call(ctx, &op.Request{Service: "s", Key: "next"})
	if err != nil || string(resp.Value) != "next" {
		t.Fatalf("call after AbandonCalls: %v, %v", resp, err)
	}
	select {
	case <-client.Done():
		t.Fatal("AbandonCalls closed the connection")
	default:
	}
}
