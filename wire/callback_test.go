package wire_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/wire"
)

type goResult struct {
	key  string
	resp *op.Response
	err  error
}

// TestGo covers Conn.Go: each callback runs exactly once, with its own
// response, and requests made by one goroutine arrive in order.
func TestGo(t *testing.T) {
	ctx := testCtx(t)
	var (
		mu   sync.Mutex
		seen []string
	)
	recording := wire.HandlerFunc(func(c *wire.Conn, id uint64, req *op.Request) {
		mu.Lock()
		seen = append(seen, req.Key)
		mu.Unlock()
		c.Respond(id, echoResponse(req))
	})
	c, _ := pair(ctx, t, recording, wire.Options{}, wire.Options{})

	const n = 500
	results := make(chan goResult, n)
	var want []string
	for i := range n {
		key := fmt.Sprint("go-", i)
		want = append(want, key)
		err := c.Go(&op.Request{Key: key, Value: []byte(key), Num: int64(i)}, func(resp *op.Response, err error) {
			results <- goResult{key, resp, err}
		})
		if err != nil {
			t.Fatalf("Go(%s): %v", key, err)
		}
	}
	got := make(map[string]bool)
	for range n {
		var r goResult
		select {
		case r = <-results:
		case <-ctx.Done():
			t.Fatalf("%d of %d callbacks ran: %v", len(got), n, ctx.Err())
		}
		if r.err != nil || r.resp.Msg != r.key || string(r.resp.Value) != r.key {
			t.Fatalf("%s: callback got %+v, %v", r.key, r.resp, r.err)
		}
		if got[r.key] {
			t.Fatalf("%s: callback ran twice", r.key)
		}
		got[r.key] = true
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Fatalf("requests arrived out of order:\n%v", seen)
	}
}

func TestGoFailures(t *testing.T) {
	t.Run("connection lost", func(t *testing.T) {
		ctx := testCtx(t)
		const n = 4
		hung := make(chan hungCall, n)
		c, _ := pair(ctx, t, hangHandler(hung), wire.Options{}, wire.Options{})
		results := make(chan goResult, 2*n)
		for i := range n {
			key := fmt.Sprint("hang-", i)
			if err := c.Go(&op.Request{Key: "hang"}, func(resp *op.Response, err error) {
				results <- goResult{key, resp, err}
			}); err != nil {
				t.Fatal(err)
			}
		}
		for range n {
			recvHung(ctx, t, hung)
		}
		c.Close()
		for range n {
			r := <-results
			if r.resp != nil || !errors.Is(r.err, op.ErrUnavailable) || !errors.Is(r.err, wire.ErrConnLost) {
				t.Errorf("%s: callback got %v, %v; want ErrConnLost", r.key, r.resp, r.err)
			}
		}
		select {
		case r := <-results:
			t.Fatalf("a callback ran twice: %+v", r)
		default:
		}
	})

	t.Run("not sent", func(t *testing.T) {
		ctx := testCtx(t)
		c, _ := pair(ctx, t, echo, wire.Options{}, wire.Options{Limits: wire.Limits{MaxValueSize: 8}})
		called := false
		cb := func(*op.Response, error) { called = true }
		if err := c.Go(&op.Request{Value: make([]byte, 9)}, cb); !errors.Is(err, op.ErrTooLarge) {
			t.Errorf("too large: %v, want op.ErrTooLarge", err)
		}
		c.Close()
		if err := c.Go(&op.Request{}, cb); !errors.Is(err, wire.ErrNotSent) || !errors.Is(err, op.ErrUnavailable) {
			t.Errorf("after Close: %v, want ErrNotSent", err)
		}
		if called {
			t.Error("a callback ran for a request that was not sent")
		}
	})
}
