package wire_test

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/wire"
)

// CallMany to a peer with CapRequests sends one KindRequests frame; the
// server handles each request as if it came alone and every caller gets
// its own answer, in order.
func TestCallManyOneFrame(t *testing.T) {
	ctx := testCtx(t)
	c, srv := pair(ctx, t, echo, wire.Options{}, wire.Options{})
	var rs []*op.Request
	for i := range 300 {
		rs = append(rs, &op.Request{Service: "s", Key: "k" + strconv.Itoa(i), Num: int64(i), Value: []byte{byte(i)}})
	}
	// One oversized request fails alone, without being sent.
	rs = append(rs, &op.Request{Service: "s", Key: "big", Value: make([]byte, wire.DefaultMaxValueSize+1)})
	_, out0 := c.Frames()
	in0, _ := srv.Frames()
	resps, errs := c.CallMany(ctx, rs)
	for i := range 300 {
		if errs[i] != nil || resps[i] == nil || resps[i].Msg != rs[i].Key || resps[i].Num != int64(i) {
			t.Fatalf("request %d: %+v, %v", i, resps[i], errs[i])
		}
	}
	if !errors.Is(errs[300], op.ErrTooLarge) {
		t.Errorf("oversized request: %v, want ErrTooLarge", errs[300])
	}
	_, out1 := c.Frames()
	in1, _ := srv.Frames()
	if out1-out0 != 1 || in1-in0 != 1 {
		t.Errorf("client queued %d frames, server read %d; want 1 each", out1-out0, in1-in0)
	}
	// The connection still serves single calls.
	mustEcho(ctx, t, c, "after")
}

// Requests too big for one frame together are split over several.
func TestCallManySplitsFrames(t *testing.T) {
	ctx := testCtx(t)
	lim := wire.Limits{MaxFrameSize: 64 << 10}
	c, _ := pair(ctx, t, echo, wire.Options{Limits: lim}, wire.Options{Limits: lim})
	var rs []*op.Request
	for i := range 20 {
		rs = append(rs, &op.Request{Service: "s", Key: strconv.Itoa(i), Value: bytes.Repeat([]byte{'x'}, 10<<10)})
	}
	_, out0 := c.Frames()
	resps, errs := c.CallMany(ctx, rs)
	for i := range rs {
		if errs[i] != nil || resps[i].Msg != rs[i].Key || len(resps[i].Value) != 10<<10 {
			t.Fatalf("request %d: %v", i, errs[i])
		}
	}
	if _, out1 := c.Frames(); out1-out0 < 4 || out1-out0 > 10 {
		t.Errorf("%d frames for 200 KiB under a 64 KiB frame limit, want 4..10", out1-out0)
	}
}

// A caller whose context ends gets ErrCanceled for the requests not
// answered, and the peer gets a cancel frame for each.
func TestCallManyCancel(t *testing.T) {
	ctx := testCtx(t)
	h := &parkHandler{got: make(chan uint64, 8), canceled: make(chan uint64, 8)}
	c, _ := pair(ctx, t, h, wire.Options{}, wire.Options{})
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan []error, 1)
	go func() {
		_, errs := c.CallMany(cctx, []*op.Request{{Service: "s", Key: "a"}, {Service: "s", Key: "b"}})
		done <- errs
	}()
	ids := map[uint64]bool{}
	for range 2 {
		select {
		case id := <-h.got:
			ids[id] = true
		case <-ctx.Done():
			t.Fatal("requests never arrived")
		}
	}
	cancel()
	for _, err := range <-done {
		if !errors.Is(err, op.ErrCanceled) {
			t.Errorf("err %v, want ErrCanceled", err)
		}
	}
	for range 2 {
		select {
		case id := <-h.canceled:
			if !ids[id] {
				t.Errorf("cancel for unknown id %d", id)
			}
		case <-ctx.Done():
			t.Fatal("no cancel frame")
		}
	}
}

// A lost connection fails every request of the batch with ErrUnavailable
// (retriable).
func TestCallManyConnLost(t *testing.T) {
	ctx := testCtx(t)
	h := &parkHandler{got: make(chan uint64, 8), canceled: make(chan uint64, 8)}
	c, srv := pair(ctx, t, h, wire.Options{}, wire.Options{})
	done := make(chan []error, 1)
	go func() {
		_, errs := c.CallMany(ctx, []*op.Request{{Service: "s", Key: "a"}, {Service: "s", Key: "b"}})
		done <- errs
	}()
	for range 2 {
		<-h.got
	}
	srv.Close()
	for _, err := range <-done {
		if !errors.Is(err, op.ErrUnavailable) {
			t.Errorf("err %v, want ErrUnavailable", err)
		}
	}
}

// A KindRequests frame whose body breaks off gets a BadRequest answer for
// each request it did not deliver; the ones before it are served, and the
// connection lives.
func TestRequestsFrameMalformed(t *testing.T) {
	ctx := testCtx(t)
	var served atomic.Int64
	h := wire.HandlerFunc(func(c *wire.Conn, id uint64, req *op.Request) {
		served.Add(1)
		c.Respond(id, echoResponse(req))
	})
	s := startServer(t, nil, wire.Options{Handler: h})
	nc, br := rawHandshake(ctx, t, s.addr)
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	if err := enc.EncodeArrayLen(3); err != nil {
		t.Fatal(err)
	}
	if err := wire.EncodeRequest(enc, &op.Request{Service: "s", Key: "ok"}); err != nil {
		t.Fatal(err)
	}
	// Two more claimed, one is not a request (a string), one is missing:
	// the body is still well-formed msgpack, so the count is trusted.
	enc.EncodeString("junk")
	enc.EncodeNil()
	if _, err := nc.Write(frame(wire.KindRequests, 100, buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	got := map[uint64]op.Code{}
	for range 3 {
		id, resp := readResponse(t, br)
		got[id] = resp.Code
	}
	if got[100] != op.OK || got[101] != op.CodeBadRequest || got[102] != op.CodeBadRequest || served.Load() != 1 {
		t.Errorf("answers %v, served %d; want 100 OK, 101 and 102 bad request, 1 served", got, served.Load())
	}
	// Not msgpack at all: one answer, under the frame's id.
	if _, err := nc.Write(frame(wire.KindRequests, 200, []byte{0xc1})); err != nil {
		t.Fatal(err)
	}
	if id, resp := readResponse(t, br); id != 200 || resp.Code != op.CodeBadRequest {
		t.Errorf("answer %d %+v, want 200 bad request", id, resp)
	}
	if _, err := nc.Write(frame(wire.KindRequest, 300, requestBody(t, &op.Request{Service: "s", Key: "x"}))); err != nil {
		t.Fatal(err)
	}
	if id, resp := readResponse(t, br); id != 300 || resp.Code != op.OK {
		t.Errorf("after malformed frames: %d %+v", id, resp)
	}
}
