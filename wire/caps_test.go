package wire_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/wire"
)

// parkHandler never answers; it reports the cancels it receives.
type parkHandler struct {
	got      chan uint64
	canceled chan uint64
}

func (h *parkHandler) HandleRequest(c *wire.Conn, id uint64, req *op.Request) { h.got <- id }
func (h *parkHandler) HandleCancel(c *wire.Conn, id uint64)                   { h.canceled <- id }

// A caller whose context ends before the response sends a cancel frame
// for its request id; the connection stays usable.
func TestCancelFrameReachesHandler(t *testing.T) {
	ctx := testCtx(t)
	h := &parkHandler{got: make(chan uint64, 4), canceled: make(chan uint64, 4)}
	c, _ := pair(ctx, t, h, wire.Options{}, wire.Options{})
	cctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Call(cctx, &op.Request{Service: "s", Key: "k"})
		errc <- err
	}()
	var id uint64
	select {
	case id = <-h.got:
	case <-ctx.Done():
		t.Fatal("request never arrived")
	}
	cancel()
	if err := <-errc; !errors.Is(err, op.ErrCanceled) {
		t.Fatalf("call err %v, want ErrCanceled", err)
	}
	select {
	case got := <-h.canceled:
		if got != id {
			t.Fatalf("cancel for %d, want %d", got, id)
		}
	case <-ctx.Done():
		t.Fatal("no cancel frame")
	}
	select {
	case <-c.Done():
		t.Fatalf("connection closed: %v", c.Err())
	default:
	}
}

// Events flow from the accepting side to a dialer with an OnEvent.
func TestEventFrames(t *testing.T) {
	ctx := testCtx(t)
	type ev struct {
		sub uint64
		p   string
	}
	evs := make(chan ev, 4)
	_, server := pair(ctx, t, echo, wire.Options{}, wire.Options{OnEvent: func(sub uint64, p []byte) { evs <- ev{sub, string(p)} }})
	for i, p := range []string{"one", "two"} {
		if err := server.SendEvent(uint64(7+i), []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	for i, want := range []string{"one", "two"} {
		select {
		case e := <-evs:
			if e.sub != uint64(7+i) || e.p != want {
				t.Fatalf("event %+v, want %d %q", e, 7+i, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("event not delivered")
		}
	}
}

// A peer that announced no capabilities (an older build) gets no event
// frames, and an unknown frame kind from a newer peer is skipped without
// closing the connection.
func TestCapabilitiesKeepOldAndNewPeersTalking(t *testing.T) {
	ctx := testCtx(t)
	s := startServer(t, nil, wire.Options{Handler: echo})
	nc, br := rawHandshake(ctx, t, s.addr) // announces no capabilities
	sc := s.nextConn(ctx, t)
	if err := sc.SendEvent(1, []byte("x")); !errors.Is(err, wire.ErrNoCapability) {
		t.Fatalf("event to an old peer: %v, want ErrNoCapability", err)
	}
	if _, err := nc.Write(frame(wire.Kind(99), 1, nil)); err != nil {
		t.Fatal(err)
	}
	req := &op.Request{Service: "s", Key: "after-unknown"}
	if _, err := nc.Write(frame(wire.KindRequest, 2, requestBody(t, req))); err != nil {
		t.Fatal(err)
	}
	id, resp := readResponse(t, br)
	if id != 2 || resp.Msg != req.Key {
		t.Fatalf("after an unknown frame: id %d %+v", id, resp)
	}
}
