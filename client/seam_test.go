package client_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/client"
	"github.com/shoalgrid/shoal/grid/gridtest"
	"github.com/shoalgrid/shoal/internal/semtest"
	"github.com/shoalgrid/shoal/op"
)

type result struct {
	grant int64
	err   error
}

func acquireAsync(ctx context.Context, s *semtest.Sem) <-chan result {
	ch := make(chan result, 1)
	go func() {
		g, err := s.Acquire(ctx, 1)
		ch <- result{g, err}
	}()
	return ch
}

func waitWaiters(t *testing.T, s *semtest.Sem, n int) {
	t.Helper()
	gridtest.Eventually(t, 10*time.Second, func() (bool, string) {
		in, err := s.Info(context.Background())
		return err == nil && in.Waiters == n, fmt.Sprintf("waiters %d (want %d), err %v", in.Waiters, n, err)
	})
}

func recv(t *testing.T, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(15 * time.Second):
		t.Fatal("parked call was never answered")
		return result{}
	}
}

func seamCluster(t *testing.T, n int) *gridtest.Cluster {
	return gridtest.New(t, n, gridtest.WithServices(semtest.Service{}))
}

// Through clients: waiters park on the owner and wake in FIFO order; a
// client's holds belong to its session.
func TestClientParkedWaitersWakeInOrder(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c := seamCluster(t, 3)
	addrs := []string{c.Member(0).Addr()}
	c1, c2, c3 := dial(t, client.Config{Addrs: addrs}), dial(t, client.Config{Addrs: addrs}), dial(t, client.Config{Addrs: addrs})
	s1, s2, s3 := semtest.New(c1, "s"), semtest.New(c2, "s"), semtest.New(c3, "s")
	if err := s1.Init(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if g, err := s1.Acquire(ctx, 1); err != nil || g != 1 {
		t.Fatalf("acquire %d %v", g, err)
	}
	w2 := acquireAsync(ctx, s2)
	waitWaiters(t, s1, 1)
	w3 := acquireAsync(ctx, s3)
	waitWaiters(t, s1, 2)
	if err := s1.Release(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if r := recv(t, w2); r.err != nil || r.grant != 2 {
		t.Fatalf("first waiter %+v", r)
	}
	in, err := s1.Info(ctx)
	if err != nil || in.Holders[c2.Session()] != 1 || in.Waiters != 1 {
		t.Fatalf("info %+v %v", in, err)
	}
	if err := s2.Release(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if r := recv(t, w3); r.err != nil || r.grant != 3 {
		t.Fatalf("second waiter %+v", r)
	}
}

// A client waiter whose context ends gets its error, and the waiter is
// gone from the owner's state.
func TestClientWaitDeadline(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c := seamCluster(t, 2)
	c1 := dial(t, client.Config{Addrs: []string{c.Member(0).Addr()}})
	c2 := dial(t, client.Config{Addrs: []string{c.Member(1).Addr()}})
	s1, s2 := semtest.New(c1, "d"), semtest.New(c2, "d")
	if err := s1.Init(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := s1.Acquire(ctx, 1); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := s2.Acquire(short, 1); !errors.Is(err, op.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("acquire past deadline: %v", err)
	}
	waitWaiters(t, s1, 0)
}

// A client holding a permit goes away without a word: its session expires
// after its TTL and the permit goes to the waiting client.
func TestClientSessionExpiryReleasesHolds(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c := seamCluster(t, 3)
	addrs := []string{c.Member(0).Addr()}
	c1 := dial(t, client.Config{Addrs: addrs, SessionTTL: 600 * time.Millisecond})
	c2 := dial(t, client.Config{Addrs: addrs})
	s1, s2 := semtest.New(c1, "x"), semtest.New(c2, "x")
	if err := s1.Init(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := s1.Acquire(ctx, 1); err != nil {
		t.Fatal(err)
	}
	w2 := acquireAsync(ctx, s2)
	waitWaiters(t, s2, 1)
	// Heartbeats keep the session (and the hold) alive past its TTL.
	select {
	case r := <-w2:
		t.Fatalf("waiter got %+v while the holder is alive", r)
	case <-time.After(1500 * time.Millisecond): // 2.5 TTLs
	}
	start := time.Now()
	c1.Close()
	if r := recv(t, w2); r.err != nil || r.grant != 2 {
		t.Fatalf("waiter after the holder vanished: %+v", r)
	}
	t.Logf("hold of a vanished client released after %v (TTL 600ms)", time.Since(start).Round(time.Millisecond))
}

// The owner crashes while a client's waiter is parked: the client re-sends
// the call to the new owner, which parks it again; a release wakes it.
func TestClientFailoverReparksWaiter(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c := seamCluster(t, 3)
	m0 := c.Member(0)
	oname, _ := m0.Table().Owner(m0.PartitionOf("f"))
	var oi int
	if _, err := fmt.Sscanf(oname.Name, "m%d", &oi); err != nil {
		t.Fatal(err)
	}
	other := c.Member((oi + 1) % 3)
	c1 := dial(t, client.Config{Addrs: []string{other.Addr()}})
	c2 := dial(t, client.Config{Addrs: []string{other.Addr()}})
	s1, s2 := semtest.New(c1, "f"), semtest.New(c2, "f")
	if err := s1.Init(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := s1.Acquire(ctx, 1); err != nil {
		t.Fatal(err)
	}
	w2 := acquireAsync(ctx, s2)
	waitWaiters(t, s1, 1)
	c.Crash(oi)
	c.WaitStable()
	waitWaiters(t, s1, 1)
	if err := s1.Release(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if r := recv(t, w2); r.err != nil || r.grant != 2 {
		t.Fatalf("waiter after failover: %+v", r)
	}
}

// A client that gives up a parked call (its context is canceled; no
// deadline) sends a cancel frame: the owner drops the waiter at once, so
// an abandoned wait consumes nothing.
func TestClientCancelFrameRemovesWaiter(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c := seamCluster(t, 2)
	c1 := dial(t, client.Config{Addrs: []string{c.Member(0).Addr()}})
	c2 := dial(t, client.Config{Addrs: []string{c.Member(1).Addr()}})
	s1, s2 := semtest.New(c1, "c"), semtest.New(c2, "c")
	if err := s1.Init(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := s1.Acquire(ctx, 1); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx) // no deadline: only a cancel ends the wait
	w := acquireAsync(wctx, s2)
	waitWaiters(t, s1, 1)
	cancel()
	if r := recv(t, w); !errors.Is(r.err, op.ErrCanceled) {
		t.Fatalf("canceled acquire: %+v", r)
	}
	waitWaiters(t, s1, 0)
	// The permit goes to nobody when released: it is free again.
	if err := s1.Release(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if in, err := s1.Info(ctx); err != nil || in.Free != 1 {
		t.Fatalf("after release %+v %v", in, err)
	}
}

// Events emitted by the owner reach a client's subscription, and stop
// after it ends.
func TestClientReceivesEvents(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c := seamCluster(t, 3)
	c1 := dial(t, client.Config{Addrs: []string{c.Member(0).Addr()}})
	got := make(chan string, 16)
	stop, err := c1.SubscribeEvents(ctx, semtest.ServiceName, "ev", func(p []byte) { got <- string(p) })
	if err != nil {
		t.Fatal(err)
	}
	s := semtest.New(c.Member(1), "ev") // another invoker (an embedded member) causes the event
	if err := s.Init(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Acquire(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, 2); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-got:
		if p != "released 2" {
			t.Fatalf("event %q", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event")
	}
	stop()
	// Unsubscribing is asynchronous on the members: poll until an event
	// is no longer delivered.
	gridtest.Eventually(t, 10*time.Second, func() (bool, string) {
		for len(got) > 0 {
			<-got
		}
		if _, err := s.Acquire(ctx, 1); err != nil {
			return false, err.Error()
		}
		if err := s.Release(ctx, 1); err != nil {
			return false, err.Error()
		}
		select {
		case p := <-got:
			return false, "still delivered: " + p
		case <-time.After(300 * time.Millisecond):
			return true, ""
		}
	})
}
