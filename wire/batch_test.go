package wire_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/wire"
)

// A read loop's batch flush writes to other connections itself; a peer
// that stops reading (a paused member) must not stall that read loop:
// after a short budget the rest of the write goes to the stuck
// connection's write loop.
func TestBatchFlushDoesNotStallOnStuckPeer(t *testing.T) {
	ctx := testCtx(t)

	// A peer that completes the handshake and then never reads again.
	addr, accepted := rawListener(t)
	handshook := make(chan struct{})
	go func() {
		defer close(handshook)
		nc := recvConn(ctx, t, accepted)
		if _, _, _, err := readRawFrame(nc); err != nil {
			t.Errorf("stuck peer: reading hello: %v", err)
			return
		}
		h := serverHello
		h.Magic, h.Proto = wire.Magic, wire.ProtocolVersion
		if _, err := nc.Write(frame(wire.KindHelloAck, 0, helloBody(t, h))); err != nil {
			t.Errorf("stuck peer: writing hello ack: %v", err)
		}
	}()
	stuck, err := wire.Dial(ctx, nil, addr, clientHello, wire.Options{WriteTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	<-handshook

	// The server forwards a 4 MiB request to the stuck peer in its batch
	// for every "fwd" request, and answers everything in its batch.
	big := bytes.Repeat([]byte{'x'}, 4<<20)
	handler := wire.HandlerFunc(func(c *wire.Conn, id uint64, req *op.Request) {
		b := c.Batch()
		if req.Key == "fwd" {
			if err := stuck.GoBatch(b, &op.Request{Service: "s", Name: "n", Key: "big", Value: big}, func(*op.Response, error) {}); err != nil {
				t.Errorf("GoBatch: %v", err)
			}
		}
		c.RespondBatch(b, id, echoResponse(req))
	})
	client, _ := pair(ctx, t, handler, wire.Options{}, wire.Options{})

	// 12 MiB toward a peer that reads nothing fills the socket buffers;
	// every call must still be answered promptly.
	for i, key := range []string{"fwd", "fwd", "fwd", "a", "b", "c", "d", "e"} {
		start := time.Now()
		mustEcho(ctx, t, client, key)
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("call %d (%s) took %v: the read loop was stalled by the stuck peer", i, key, d)
		}
	}
}
