package grid_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/grid/gridtest"
	"github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/wire"
)

// Tests of a member under attack by a peer that speaks the protocol: each
// one checks that the member stays up and keeps serving a good client, and
// logs the good client's latency during the attack.

// rawFrame builds a frame by hand.
func rawFrame(kind wire.Kind, id uint64, body []byte) []byte {
	b := make([]byte, 13, 13+len(body))
	binary.BigEndian.PutUint32(b, uint32(9+len(body)))
	b[4] = byte(kind)
	binary.BigEndian.PutUint64(b[5:], id)
	return append(b, body...)
}

// readRawFrame reads one frame from r.
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

// rawClient connects to addr and performs a client handshake by hand, so
// the test can write any bytes afterwards. IO ends with ctx's deadline.
func rawClient(ctx context.Context, t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	hello, err := msgpack.Marshal(&wire.Hello{Magic: wire.Magic, Proto: wire.ProtocolVersion, Role: wire.RoleClient, Name: "attacker", Cluster: "shoal"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Write(rawFrame(wire.KindHello, 0, hello)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	kind, _, body, err := readRawFrame(br)
	if err != nil {
		t.Fatal(err)
	}
	if ack, err := wire.DecodeHello(body); kind != wire.KindHelloAck || err != nil || ack.Err != "" {
		t.Fatalf("handshake: kind %d, %+v, %v", kind, ack, err)
	}
	return nc, br
}

func requestBody(t *testing.T, req *op.Request) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := wire.EncodeRequest(msgpack.NewEncoder(&buf), req); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// readRawResponse reads one response frame.
func readRawResponse(t *testing.T, r io.Reader) (uint64, *op.Response) {
	t.Helper()
	kind, id, body, err := readRawFrame(r)
	if err != nil {
		t.Fatalf("reading response: %v", err)
	}
	resp, err := wire.DecodeResponseBytes(body)
	if kind != wire.KindResponse || err != nil {
		t.Fatalf("frame kind %d, %v", kind, err)
	}
	return id, resp
}

// latencies are a good client's call latencies.
type latencies []time.Duration

func (l latencies) String() string {
	if len(l) == 0 {
		return "no calls"
	}
	s := slices.Clone(l)
	slices.Sort(s)
	q := func(f float64) time.Duration { return s[min(len(s)-1, int(f*float64(len(s))))] }
	return fmt.Sprintf("%d calls, p50 %v, p99 %v, max %v", len(s), q(0.50), q(0.99), s[len(s)-1])
}

func (l latencies) p99() time.Duration {
	s := slices.Clone(l)
	slices.Sort(s)
	return s[min(len(s)-1, int(0.99*float64(len(s))))]
}

// goodClient gets a key from addr over its own connection, in a loop, until
// attack returns, and returns the latencies. Every call must succeed.
func goodClient(ctx context.Context, t *testing.T, addr string, attack func()) latencies {
	t.Helper()
	conn, err := wire.Dial(ctx, nil, addr, wire.Hello{Role: wire.RoleClient, Name: "good", Cluster: "shoal"}, wire.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	put := &op.Request{Service: maps.ServiceName, Name: "good", Op: maps.OpPut, Partition: -1, Key: "k", Value: []byte("v")}
	if resp, err := conn.Call(ctx, put); err != nil || resp.Err() != nil {
		t.Fatalf("good put: %v %v", err, resp.Err())
	}
	var (
		wg   sync.WaitGroup
		lat  latencies
		fail error
	)
	stop := make(chan struct{})
	first := make(chan struct{}) // closed after the first call, or on failure
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer func() {
			if len(lat) == 0 {
				close(first)
			}
		}()
		get := &op.Request{Service: maps.ServiceName, Name: "good", Op: maps.OpGet, Partition: -1, Key: "k"}
		for {
			select {
			case <-stop:
				return
			default:
			}
			start := time.Now()
			resp, err := conn.Call(ctx, get)
			if err == nil {
				err = resp.Err()
			}
			if err == nil && string(resp.Value) != "v" {
				err = fmt.Errorf("got %q", resp.Value)
			}
			if err != nil {
				fail = err
				return
			}
			lat = append(lat, time.Since(start))
			if len(lat) == 1 {
				close(first)
			}
			// A client doing other work between calls, not a flood.
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	<-first
	attack()
	close(stop)
	wg.Wait()
	if fail != nil {
		t.Fatalf("good client failed during the attack: %v", fail)
	}
	if len(lat) == 0 {
		t.Fatal("good client made no call during the attack")
	}
	return lat
}

// deepTrailing re-tags a request body (a fixarray of 12 fields) as 13
// fields whose extra last one is an array nested depth levels deep.
func deepTrailing(t *testing.T, body []byte, depth int) []byte {
	t.Helper()
	if body[0] != 0x9c {
		t.Fatalf("want a fixarray of 12 fields, got %#x", body[0])
	}
	out := make([]byte, 0, len(body)+depth+1)
	out = append(out, 0x9d)
	out = append(out, body[1:]...)
	out = append(out, bytes.Repeat([]byte{0x91}, depth)...)
	return append(out, 0xc0)
}

// TestDeepFrameDoesNotCrashMember: one 5 MB request whose extra trailing
// field nests five million arrays killed a member (fatal stack overflow in
// msgpack's recursive Skip). Now it gets a BadRequest; the member stays up
// and keeps serving.
func TestDeepFrameDoesNotCrashMember(t *testing.T) {
	c := gridtest.New(t, 1)
	ctx := ctxT(t, 60*time.Second)
	addr := c.Member(0).Addr()
	body := requestBody(t, &op.Request{Service: maps.ServiceName, Name: "m", Op: maps.OpGet, Partition: -1, Key: "k"})
	bad := deepTrailing(t, body, 5_000_000)
	nc, br := rawClient(ctx, t, addr)
	before := goodClient(ctx, t, addr, func() { time.Sleep(200 * time.Millisecond) })
	during := goodClient(ctx, t, addr, func() {
		for i := range uint64(5) {
			if _, err := nc.Write(rawFrame(wire.KindRequest, i+1, bad)); err != nil {
				t.Fatal(err)
			}
			id, resp := readRawResponse(t, br)
			if id != i+1 || resp.Code != op.CodeBadRequest || !strings.Contains(resp.Msg, "nested too deeply") {
				t.Fatalf("deep frame: id %d %+v", id, resp)
			}
		}
	})
	t.Logf("good client before: %v; during five %d-byte deep frames: %v", before, len(bad)+13, during)
	if p := during.p99(); p > 3*time.Second {
		t.Errorf("good client p99 %v during the attack", p)
	}
	// The attacker's connection is still usable.
	if _, err := nc.Write(rawFrame(wire.KindRequest, 99, body)); err != nil {
		t.Fatal(err)
	}
	if id, resp := readRawResponse(t, br); id != 99 || resp.Err() != nil {
		t.Fatalf("good frame after the attack: id %d %+v", id, resp)
	}
}

// TestNameLimitsAndEcho: structure names are bounded (30 MiB were
// accepted), at the invoker and at the member, and errors never echo an
// oversized name or key back in full (an unknown service echoed 1 MiB).
func TestNameLimitsAndEcho(t *testing.T) {
	c := gridtest.New(t, 1)
	ctx := ctxT(t, 30*time.Second)
	m := c.Member(0)
	huge := strings.Repeat("n", 1<<20)
	over := strings.Repeat("n", wire.DefaultMaxNameSize+1)
	// Embedded invoker.
	for _, name := range []string{over, huge} {
		_, err := m.Invoke(ctx, &op.Request{Service: maps.ServiceName, Name: name, Op: maps.OpPut, Partition: -1, Key: "k", Value: []byte("v")})
		if !errors.Is(err, op.ErrTooLarge) || len(err.Error()) > 200 {
			t.Errorf("embedded put with a %d-byte name: %.200v", len(name), err)
		}
	}
	if err := maps.New(m, strings.Repeat("n", wire.DefaultMaxNameSize)).Put(ctx, "k", []byte("v")); err != nil {
		t.Errorf("a name at the limit: %v", err)
	}
	// The member's side, bypassing the client's own check.
	nc, br := rawClient(ctx, t, m.Addr())
	cases := []struct {
		name string
		req  op.Request
		code op.Code
	}{
		{"1 MiB map name", op.Request{Service: maps.ServiceName, Name: huge, Op: maps.OpPut, Partition: -1, Key: "k", Value: []byte("v")}, op.CodeTooLarge},
		{"1 MiB service name", op.Request{Service: huge, Name: "m", Partition: -1, Key: "k"}, op.CodeTooLarge},
		{"unknown service at the limit", op.Request{Service: strings.Repeat("s", wire.DefaultMaxNameSize), Name: "m", Partition: -1, Key: "k"}, op.CodeUnknownService},
		{"oversized key", op.Request{Service: maps.ServiceName, Name: "m", Op: maps.OpPut, Partition: -1, Key: strings.Repeat("k", wire.DefaultMaxKeySize+1)}, op.CodeTooLarge},
	}
	for i, tc := range cases {
		if _, err := nc.Write(rawFrame(wire.KindRequest, uint64(i+1), requestBody(t, &tc.req))); err != nil {
			t.Fatal(err)
		}
		id, resp := readRawResponse(t, br)
		if id != uint64(i+1) || resp.Code != tc.code {
			t.Errorf("%s: id %d, code %d (%.200s), want code %d", tc.name, id, resp.Code, resp.Msg, tc.code)
		}
		if len(resp.Msg) > 160 {
			t.Errorf("%s: the error echoes %d bytes: %.200s", tc.name, len(resp.Msg), resp.Msg)
		}
	}
}

// countingHandler counts the records at Warn and above.
type countingHandler struct {
	mu   *sync.Mutex
	n    *int
	msgs *[]string
}

func (h countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countingHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		h.mu.Lock()
		*h.n++
		if len(*h.msgs) < 3 {
			var b strings.Builder
			b.WriteString(r.Message)
			r.Attrs(func(a slog.Attr) bool { b.WriteString(" " + a.String()); return true })
			*h.msgs = append(*h.msgs, b.String())
		}
		h.mu.Unlock()
	}
	return nil
}
func (h countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countingHandler) WithGroup(string) slog.Handler      { return h }

// TestGarbageGossipIsNotLoggedPerPacket: each malformed gossip packet made
// memberlist log a warning; 2,000 of them must not make 2,000 log lines.
func TestGarbageGossipIsNotLoggedPerPacket(t *testing.T) {
	var (
		mu   sync.Mutex
		n    int
		msgs []string
	)
	h := countingHandler{&mu, &n, &msgs}
	c := gridtest.New(t, 1, gridtest.WithConfig(func(cfg *grid.Config) { cfg.Logger = slog.New(h) }))
	ctx := ctxT(t, 30*time.Second)
	mu.Lock()
	n = 0
	mu.Unlock()
	uc, err := net.Dial("udp", c.Member(0).GossipAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	const packets = 2000
	start := time.Now()
	for i := range packets {
		// Message type 250 is not one memberlist knows.
		if _, err := uc.Write([]byte{250, byte(i), byte(i >> 8), 'x'}); err != nil {
			t.Fatal(err)
		}
	}
	// Watch the log for two seconds while a good client is served: the old
	// member logged one warning per packet within milliseconds.
	lat := goodClient(ctx, t, c.Member(0).Addr(), func() {
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			flood := n > packets/2
			mu.Unlock()
			if flood {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
	elapsed := time.Since(start)
	mu.Lock()
	got := n
	mu.Unlock()
	t.Logf("%d garbage packets: %d warnings in %v (first: %q); good client %v", packets, got, elapsed.Round(time.Millisecond), msgs, lat)
	if limit := 10 * (int(elapsed/time.Second) + 2); got > limit {
		t.Errorf("%d warnings for %d garbage packets in %v, want at most %d", got, packets, elapsed, limit)
	}
}

// TestIdleConnectionFlood: thousands of connections that never send a
// request (some finish the handshake, some not even that) exhausted a
// member's file descriptors. Now connections over the per-address limit
// are closed at once and the rest time out, while a good client from
// another address keeps being served.
func TestIdleConnectionFlood(t *testing.T) {
	const (
		perAddr = 500
		flood   = 2500
		idle    = 300 * time.Millisecond
	)
	c := gridtest.New(t, 1, gridtest.WithConfig(func(cfg *grid.Config) {
		cfg.Conns = grid.ConnLimits{MaxConns: 2 * perAddr, MaxConnsPerAddr: perAddr, IdleTimeout: idle, HandshakeTimeout: idle}
	}))
	ctx := ctxT(t, 60*time.Second)
	m := c.Member(0)
	hello, err := msgpack.Marshal(&wire.Hello{Magic: wire.Magic, Proto: wire.ProtocolVersion, Role: wire.RoleClient, Name: "idle", Cluster: "shoal"})
	if err != nil {
		t.Fatal(err)
	}
	// The flood comes from 127.0.0.2, the good client from 127.0.0.1.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	var socks []net.Conn
	defer func() {
		for _, s := range socks {
			s.Close()
		}
	}()
	maxOpen := 0
	lat := goodClient(ctx, t, m.Addr(), func() {
		for i := range flood {
			s, err := d.DialContext(ctx, "tcp", m.Addr())
			if err != nil {
				t.Fatalf("dial %d: %v", i, err)
			}
			socks = append(socks, s)
			if i%2 == 0 {
				if _, err := s.Write(rawFrame(wire.KindHello, 0, hello)); err != nil {
					t.Fatal(err)
				}
			}
			if i%100 == 0 {
				maxOpen = max(maxOpen, m.Stats().ConnsOpen)
			}
		}
		// Every flood connection is closed by the member: refused at
		// once, or timed out in (or after) the handshake.
		for _, s := range socks {
			_ = s.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.Copy(io.Discard, s); err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Fatalf("a flood connection is still open after 10 s")
				}
			}
			maxOpen = max(maxOpen, m.Stats().ConnsOpen)
		}
	})
	st := m.Stats()
	t.Logf("%d idle connections from one address (limit %d, idle and handshake timeout %v): at most %d open, %d refused; good client %v",
		flood, perAddr, idle, maxOpen, st.ConnsRefused, lat)
	if maxOpen > perAddr+1 {
		t.Errorf("%d connections open, limit %d from the flood's address plus the good client", maxOpen, perAddr)
	}
	if st.ConnsRefused == 0 {
		t.Errorf("no connection refused")
	}
	if p := lat.p99(); p > 3*time.Second {
		t.Errorf("good client p99 %v during the flood", p)
	}
}

// TestPipelinedBigGetsStayWithinMemoryBound: 100 pipelined gets of a big
// value (a few KB sent, responses not read) each got a goroutine holding
// the forwarded value: 100 gets of 16 MiB took a member to 2 GB. Now the
// member stops reading the connection while a few forwards are in flight.
func TestPipelinedBigGetsStayWithinMemoryBound(t *testing.T) {
	gets, valSize := 100, 16<<20
	if raceEnabled {
		// The race detector makes 1.6 GB of copies take minutes.
		gets, valSize = 60, 4<<20
	}
	// LAN failure detection: the forced GCs below (slow under -race) must
	// not get a member declared dead, which would move the key.
	c := gridtest.New(t, 2, gridtest.WithConfig(func(cfg *grid.Config) {
		cfg.Gossip = grid.LANGossip()
	}))
	ctx := ctxT(t, 60*time.Second)
	m0 := c.Member(0)
	// A key member 0 does not own: every get is forwarded, and the
	// forwarded response is a decoded copy of the value.
	tbl := m0.Table()
	key := ""
	for i := 0; key == ""; i++ {
		k := fmt.Sprintf("big-%d", i)
		if o, _ := tbl.Owner(m0.PartitionOf(k)); o.Name != m0.Name() {
			key = k
		}
	}
	if err := maps.New(m0, "big").Put(ctx, key, bytes.Repeat([]byte{7}, valSize)); err != nil {
		t.Fatal(err)
	}
	get := requestBody(t, &op.Request{Service: maps.ServiceName, Name: "big", Op: maps.OpGet, Partition: -1, Key: key})
	var pipeline []byte
	for i := range gets {
		pipeline = append(pipeline, rawFrame(wire.KindRequest, uint64(i+1), get)...)
	}
	nc, br := rawClient(ctx, t, m0.Addr())
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var peak uint64
	lat := goodClient(ctx, t, m0.Addr(), func() {
		if _, err := nc.Write(pipeline); err != nil {
			t.Fatal(err)
		}
		// Do not read for a while; sample the live heap meanwhile.
		for range 10 {
			var ms runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
			select {
			case <-ctx.Done():
				t.Fatal(ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
		}
		for range gets {
			_, resp := readRawResponse(t, br)
			if resp.Err() != nil || len(resp.Value) != valSize {
				t.Fatalf("pipelined get: %v, %d bytes, %+v", resp.Err(), len(resp.Value), op.Response{Code: resp.Code, Msg: resp.Msg, Found: resp.Found, Num: resp.Num, TableVersion: resp.TableVersion})
			}
		}
	})
	grew := peak - min(peak, before.HeapAlloc)
	t.Logf("%d pipelined gets of a %d MiB value (%d bytes sent): live heap grew by up to %d MiB; good client %v",
		gets, valSize>>20, len(pipeline), grew>>20, lat)
	// In flight: a few forwarded values (4, and the one being decoded),
	// plus the connection's write buffers (32 MiB pending, plus a frame,
	// and the one being written), plus 64 MiB for what earlier tests of the
	// package are still freeing. Unbounded, every get held a value.
	if limit := uint64(5*valSize + 3*(32<<20+valSize) + 64<<20); grew > limit {
		t.Errorf("heap grew %d MiB, bound %d MiB", grew>>20, limit>>20)
	}
}

// TestDeepGossipStreamIsRefused guards memberlist's own decoding of gossip
// streams: a push/pull message nested 5,000,000 levels deep is refused by
// its depth limit (go-msgpack's 1,024), and the member keeps serving.
func TestDeepGossipStreamIsRefused(t *testing.T) {
	c := gridtest.New(t, 1)
	ctx := ctxT(t, 30*time.Second)
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", c.Member(0).GossipAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	const pushPullMsg = 6 // memberlist's message type
	msg := append([]byte{pushPullMsg, 0x81, 0xa1, 'x'}, bytes.Repeat([]byte{0x91}, 5_000_000)...)
	_, _ = nc.Write(append(msg, 0xc0)) // the member may reset the connection midway
	_, _ = io.Copy(io.Discard, nc)
	goodClient(ctx, t, c.Member(0).Addr(), func() {})
}
