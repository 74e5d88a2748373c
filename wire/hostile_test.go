package wire_test

import (
	"bufio"
	"bytes"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/wire"
)

// deepTrailing re-tags body, a fixarray of n fields, as n+1 fields whose
// extra last field is an array nested depth levels deep: the 5 MB frame
// that killed members through msgpack's recursive Skip (a stack overflow
// is fatal, so on the old code this test takes its whole process down).
func deepTrailing(tb testing.TB, body []byte, n, depth int) []byte {
	tb.Helper()
	if body[0] != 0x90|byte(n) || n >= 15 {
		tb.Fatalf("want a fixarray of %d fields, got %#x", n, body[0])
	}
	out := make([]byte, 0, len(body)+depth+1)
	out = append(out, body[0]+1)
	out = append(out, body[1:]...)
	out = append(out, bytes.Repeat([]byte{0x91}, depth)...)
	return append(out, 0xc0)
}

const crashDepth = 5_000_000

func TestDeeplyNestedTrailingFieldInRequest(t *testing.T) {
	ctx := testCtx(t)
	var seen atomic.Int64
	s := startServer(t, nil, wire.Options{Handler: countingEcho(&seen)})
	nc, br := rawHandshake(ctx, t, s.addr)
	sc := s.nextConn(ctx, t)

	good := requestBody(t, &op.Request{Service: "svc", Name: "m", Key: "k", Value: []byte("v"), Partition: -1})
	bad := deepTrailing(t, good, 12, crashDepth)
	if len(bad) < 5_000_000 {
		t.Fatalf("frame is %d bytes", len(bad))
	}
	// Concurrently with the hostile frames, a good client on another
	// connection keeps being served.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var served atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		c := dial(ctx, t, s.addr, wire.Options{})
		for {
			select {
			case <-stop:
				return
			default:
			}
			resp, err := c.Call(ctx, &op.Request{Key: "good"})
			if err != nil || resp.Msg != "good" {
				t.Errorf("good client: %+v, %v", resp, err)
				return
			}
			served.Add(1)
		}
	}()
	for i := range uint64(3) {
		if _, err := nc.Write(frame(wire.KindRequest, 100+i, bad)); err != nil {
			t.Fatal(err)
		}
		id, resp := readResponse(t, br)
		if id != 100+i || resp.Code != op.CodeBadRequest || !strings.Contains(resp.Msg, "nested too deeply") {
			t.Fatalf("deep frame %d: id %d %+v, want a nesting error", i, id, resp)
		}
	}
	close(stop)
	wg.Wait()
	// The attacker's own connection still works, and no deep request
	// reached the handler.
	if _, err := nc.Write(frame(wire.KindRequest, 7, good)); err != nil {
		t.Fatal(err)
	}
	if id, resp := readResponse(t, br); id != 7 || resp.Code != op.OK || resp.Msg != "k" {
		t.Fatalf("good frame after the attack: id %d %+v", id, resp)
	}
	if n := seen.Load() - served.Load(); n != 1 {
		t.Errorf("handler saw %d requests from the attacker, want 1", n)
	}
	select {
	case <-sc.Done():
		t.Fatalf("server conn closed: %v", sc.Err())
	default:
	}
}

// A hostile (or impersonated) member answering with a deeply nested
// trailing field must not crash the caller either.
func TestDeeplyNestedTrailingFieldInResponse(t *testing.T) {
	ctx := testCtx(t)
	addr, conns := rawListener(t)
	type result struct {
		resp *op.Response
		err  error
	}
	calls := make(chan result, 2)
	ready := make(chan *wire.Conn, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := wire.Dial(ctx, nil, addr, clientHello, wire.Options{})
		ready <- c
		if err != nil {
			calls <- result{nil, err}
			return
		}
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
	c := <-ready
	if c == nil {
		t.Fatal((<-calls).err)
	}
	defer c.Close()
	defer wg.Wait()

	good := responseBody(t, &op.Response{Msg: "ok", Found: true})
	for i, body := range [][]byte{deepTrailing(t, good, 6, crashDepth), good} {
		_, id, _, err := readRawFrame(br)
		if err != nil {
			t.Fatal(err)
		}
		nc.Write(frame(wire.KindResponse, id, body))
		r := <-calls
		switch {
		case r.err != nil:
			t.Fatalf("call %d: %v", i, r.err)
		case i == 0 && (r.resp.Code != op.CodeBadRequest || !strings.Contains(r.resp.Msg, "nested too deeply")):
			t.Fatalf("deep response: %+v, want a nesting error", r.resp)
		case i == 1 && (r.resp.Code != op.OK || r.resp.Msg != "ok"):
			t.Fatalf("good response after the deep one: %+v", r.resp)
		}
	}
}
