package wire_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/wire"
)

// A connection that sends nothing after the handshake is closed after the
// idle timeout; one whose dialer keeps it alive with pings, or that waits
// for a slow response, is not.
func TestIdleTimeout(t *testing.T) {
	ctx := testCtx(t)
	const idle = 100 * time.Millisecond
	hung := make(chan hungCall, 1)
	s := startServer(t, nil, wire.Options{Handler: hangHandler(hung), IdleTimeout: idle})

	// Silent after the handshake: closed within two idle periods.
	_, br := rawHandshake(ctx, t, s.addr)
	silent := s.nextConn(ctx, t)
	start := time.Now()
	expectClosed(t, br)
	waitDone(ctx, t, silent)
	if d := time.Since(start); d > 5*idle {
		t.Errorf("silent connection closed after %v, want within ~%v", d, 2*idle)
	}
	if err := silent.Err(); !errors.Is(err, op.ErrUnavailable) {
		t.Errorf("close reason %v", err)
	}

	// Quiet, but kept alive by pings: survives many idle periods.
	kept := dial(ctx, t, s.addr, wire.Options{KeepAlive: idle / 4})
	keptServer := s.nextConn(ctx, t)
	// A request in flight for longer than the idle timeout: the waiting
	// side sends nothing, and must not be cut off.
	waiter := dial(ctx, t, s.addr, wire.Options{KeepAlive: -1})
	waiterServer := s.nextConn(ctx, t)
	res := make(chan error, 1)
	go func() {
		resp, err := waiter.Call(ctx, &op.Request{Key: "hang"})
		if err == nil && resp.Msg != "late" {
			err = errors.New("wrong response " + resp.Msg)
		}
		res <- err
	}()
	h := recvHung(ctx, t, hung)
	select {
	case <-time.After(6 * idle):
	case <-keptServer.Done():
		t.Fatalf("kept-alive connection closed: %v", keptServer.Err())
	case <-waiterServer.Done():
		t.Fatalf("connection with a request in flight closed: %v", waiterServer.Err())
	}
	h.c.Respond(h.id, &op.Response{Msg: "late"})
	if err := <-res; err != nil {
		t.Fatalf("slow call: %v", err)
	}
	mustEcho(ctx, t, kept, "still-alive")
	// Once answered and quiet, the waiter's connection idles out.
	waitDone(ctx, t, waiterServer)
}

// At MaxInFlight unanswered requests from a client the read loop stops
// reading: the handler never holds more, however many are pipelined.
func TestMaxInFlight(t *testing.T) {
	ctx := testCtx(t)
	hung := make(chan hungCall, 64)
	var handled atomic.Int64
	h := wire.HandlerFunc(func(c *wire.Conn, id uint64, req *op.Request) {
		handled.Add(1)
		hangHandler(hung).HandleRequest(c, id, req)
	})
	s := startServer(t, nil, wire.Options{Handler: h, MaxInFlight: 4})
	nc, br := rawHandshake(ctx, t, s.addr)
	s.nextConn(ctx, t)
	body := requestBody(t, &op.Request{Key: "hang"})
	var frames []byte
	for i := range uint64(50) {
		frames = append(frames, frame(wire.KindRequest, i+1, body)...)
	}
	if _, err := nc.Write(frames); err != nil {
		t.Fatal(err)
	}
	var calls []hungCall
	for range 4 {
		calls = append(calls, recvHung(ctx, t, hung))
	}
	// The read loop is blocked: no fifth request reaches the handler.
	select {
	case h := <-hung:
		t.Fatalf("request %d handled while 4 were in flight", h.id)
	case <-time.After(100 * time.Millisecond):
	}
	if n := handled.Load(); n != 4 {
		t.Fatalf("handled %d, want 4", n)
	}
	// Each answer lets exactly one more in.
	for i := range 46 {
		calls[0].c.Respond(calls[0].id, &op.Response{Msg: "done"})
		calls = append(calls[1:], recvHung(ctx, t, hung))
		if n := handled.Load(); n > int64(5+i) {
			t.Fatalf("handled %d with at most 4 in flight", n)
		}
	}
	for _, c := range calls {
		c.c.Respond(c.id, &op.Response{Msg: "done"})
	}
	for range 50 {
		if _, resp := readResponse(t, br); resp.Msg != "done" {
			t.Fatalf("response %+v", resp)
		}
	}
}

// A peer that sends the header of a 40 MiB frame and a little of its body,
// then stalls, pins what it sent, not 40 MiB (20 such connections pinned
// 911 MB of a member).
func TestStalledLargeFramesPinWhatArrived(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t, nil, wire.Options{Handler: echo})
	const (
		conns = 20
		sent  = 200 << 10
	)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range conns {
		nc, _ := rawHandshake(ctx, t, s.addr)
		s.nextConn(ctx, t)
		hdr := make([]byte, 13, 13+sent)
		binary.BigEndian.PutUint32(hdr, uint32(wire.DefaultMaxFrameSize-4))
		hdr[4] = byte(wire.KindRequest)
		if _, err := nc.Write(append(hdr, make([]byte, sent)...)); err != nil {
			t.Fatal(err)
		}
	}
	// Wait until the server has read what was sent: nothing to observe
	// but memory, so poll it.
	deadline := time.Now().Add(5 * time.Second)
	var grew uint64
	for time.Now().Before(deadline) {
		runtime.GC()
		runtime.ReadMemStats(&after)
		grew = after.HeapAlloc - min(after.HeapAlloc, before.HeapAlloc)
		if grew >= conns*growAboveForTest {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("%d connections each stalled in a %d MiB frame after %d KiB: heap grew %d MiB", conns, wire.DefaultMaxFrameSize>>20, sent>>10, grew>>20)
	if limit := uint64(conns * 4 * growAboveForTest); grew > limit {
		t.Errorf("heap grew %d MiB, want under %d MiB", grew>>20, limit>>20)
	}
}

// growAboveForTest mirrors wire.growAbove: the first buffer of a large frame.
const growAboveForTest = 1 << 20

// Frames over 1 MiB are read into a growing buffer: their content must
// arrive intact, in both directions, whatever the size.
func TestLargeFramesRoundTrip(t *testing.T) {
	ctx := testCtx(t)
	c, _ := pair(ctx, t, echo, wire.Options{}, wire.Options{})
	for _, n := range []int{1<<20 - 100, 1 << 20, 1<<20 + 1, 3<<20 + 12345, 16 << 20} {
		v := make([]byte, n)
		for i := range v {
			v[i] = byte(i*7 + i>>11)
		}
		resp, err := c.Call(ctx, &op.Request{Key: "big", Value: v})
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if !bytes.Equal(resp.Value, v) {
			t.Fatalf("%d bytes sent, %d came back different", n, len(resp.Value))
		}
	}
}
