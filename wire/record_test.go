package wire_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/wire"
)

// recordHandler echoes requests and answers a record with its body's
// length, reporting the body (a copy: the read loop reuses the buffer).
type recordHandler struct{ got chan []byte }

func (h *recordHandler) HandleRequest(c *wire.Conn, id uint64, req *op.Request) {
	c.Respond(id, echoResponse(req))
}

func (h *recordHandler) HandleRecord(c *wire.Conn, id uint64, body []byte) {
	h.got <- bytes.Clone(body)
	c.Respond(id, &op.Response{Num: int64(len(body))})
}

// goRecord sends a record whose body is payload as one msgpack bin and
// waits for the answer.
func goRecord(t *testing.T, c *wire.Conn, payload []byte) (*op.Response, error) {
	t.Helper()
	type result struct {
		resp *op.Response
		err  error
	}
	done := make(chan result, 1)
	err := c.GoRecord(nil, func(enc *msgpack.Encoder) error { return enc.EncodeBytes(payload) }, func(resp *op.Response, err error) {
		done <- result{resp, err}
	})
	if err != nil {
		return nil, err
	}
	select {
	case r := <-done:
		return r.resp, r.err
	case <-time.After(10 * time.Second):
		t.Fatal("no answer to a record")
		return nil, nil
	}
}

// Records have a frame limit of their own: a record holding a request at
// the key and value limits passes between members even where that exceeds
// MaxFrameSize; other frames keep MaxFrameSize; a record beyond its own
// limit is refused before it is sent, and the connection lives on.
func TestRecordFrames(t *testing.T) {
	ctx := testCtx(t)
	lim := wire.Limits{MaxKeySize: 64, MaxValueSize: 1024, MaxFrameSize: 2048}
	if got, want := lim.MaxRecordFrame(), 4<<10+64+2*1024+2*wire.DefaultMaxNameSize; got != want {
		t.Fatalf("MaxRecordFrame = %d, want %d", got, want)
	}
	h := &recordHandler{got: make(chan []byte, 4)}
	s := startServer(t, nil, wire.Options{Handler: h, Limits: lim})
	c, err := wire.Dial(ctx, nil, s.addr, serverHello, wire.Options{Limits: lim})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })

	payload := bytes.Repeat([]byte{7}, 3000) // over MaxFrameSize
	resp, err := goRecord(t, c, payload)
	if err != nil || resp.Code != op.OK {
		t.Fatalf("record over MaxFrameSize: %+v %v", resp, err)
	}
	if body := <-h.got; len(body) != 3003 || !bytes.Equal(body[3:], payload) {
		t.Fatalf("handler got %d bytes", len(body))
	}
	if _, err := c.Call(ctx, &op.Request{Service: "s", Key: "k", Value: make([]byte, 1024), Aux: make([]byte, 1024)}); !errors.Is(err, op.ErrTooLarge) {
		t.Fatalf("request frame over MaxFrameSize: %v, want ErrTooLarge", err)
	}
	if _, err := goRecord(t, c, make([]byte, lim.MaxRecordFrame())); !errors.Is(err, op.ErrTooLarge) {
		t.Fatalf("record over its limit: %v, want ErrTooLarge", err)
	}
	mustEcho(ctx, t, c, "still-alive")
}

// Only members send records: a client's record frame is refused (and held
// to MaxFrameSize), and so is a record to a member without a RecordHandler.
// A peer that did not announce CapRecords (an older build) gets none.
func TestRecordFramesOnlyBetweenMembers(t *testing.T) {
	ctx := testCtx(t)
	h := &recordHandler{got: make(chan []byte, 4)}
	s := startServer(t, nil, wire.Options{Handler: h})
	nc, br := rawHandshake(ctx, t, s.addr) // a client, no capabilities
	sc := s.nextConn(ctx, t)
	if _, err := goRecord(t, sc, []byte("x")); !errors.Is(err, wire.ErrNoCapability) {
		t.Fatalf("record to an old peer: %v, want ErrNoCapability", err)
	}
	body, err := msgpack.Marshal([]byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Write(frame(wire.KindRecord, 5, body)); err != nil {
		t.Fatal(err)
	}
	if id, resp := readResponse(t, br); id != 5 || resp.Code != op.CodeForbidden {
		t.Fatalf("record from a client: id %d %+v, want forbidden", id, resp)
	}
	select {
	case <-h.got:
		t.Fatal("a client's record reached the handler")
	default:
	}

	s2 := startServer(t, nil, wire.Options{Handler: echo})
	c, err := wire.Dial(ctx, nil, s2.addr, serverHello, wire.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if resp, err := goRecord(t, c, []byte("x")); err != nil || resp.Code != op.CodeForbidden {
		t.Fatalf("record to a member without a RecordHandler: %+v %v", resp, err)
	}
	mustEcho(ctx, t, c, "still-alive")
}
