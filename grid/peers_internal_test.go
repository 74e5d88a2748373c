package grid

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/op"
)

// A member that does not answer (cut off: its port accepts nothing, or a
// listener that never completes the handshake) held every caller queued on
// its connection slot for one dial timeout each, and kept the dial going
// after the failure detector declared it dead: the resync workers copying
// partitions to live backups waited behind it, and with them the writes
// and hand-offs (2 s stalls after every cut). Now drop ends a dial in
// progress at once, and after a failed dial the callers fail fast until a
// short backoff has passed.
func TestPeerDialEndsAtDropAndFailsFastAfter(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := Start(ctx, Config{Name: "d1", BindAddr: "127.0.0.1:0", DataAddr: "127.0.0.1:0", Gossip: FastGossip(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	// A port that accepts connections and never says a word.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var held sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	held.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	defer func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		held.Wait()
	}()
	addr := ln.Addr().String()

	// drop ends a dial in progress: the caller returns long before the
	// dial timeout.
	errc := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := m.peers.get(ctx, "ghost", addr)
		errc <- err
	}()
	// Wait until the dial holds the slot, then declare the member gone.
	for {
		pc := m.peers.entry("ghost")
		if !pc.mu.TryLock() {
			break
		}
		pc.mu.Unlock()
		time.Sleep(time.Millisecond) // polling for the dial to begin
	}
	m.peers.drop("ghost")
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("dial to a silent port succeeded")
		}
		if took := time.Since(start); took >= dialTimeout {
			t.Fatalf("get returned after %v, not at the drop (dial timeout %v)", took, dialTimeout)
		}
	case <-time.After(dialTimeout + 5*time.Second):
		t.Fatal("get did not return")
	}

	// A failed dial (a refused port here) makes the next callers fail
	// fast until the backoff has passed.
	refused, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	raddr := refused.Addr().String()
	refused.Close() // nothing listens there now: dials are refused
	if _, err := m.peers.get(ctx, "gone", raddr); err == nil {
		t.Fatal("dial to a closed port succeeded")
	}
	_, err = m.peers.get(ctx, "gone", raddr)
	if !errors.Is(err, op.ErrUnavailable) {
		t.Fatalf("second get = %v; want a fast op.ErrUnavailable", err)
	}
	pc := m.peers.entry("gone")
	pc.mu.Lock()
	failedAt, backoff := pc.failedAt, pc.backoff
	pc.mu.Unlock()
	if failedAt.IsZero() || backoff <= 0 || backoff > maxDialBackoff {
		t.Fatalf("after a failed dial: failedAt %v, backoff %v", failedAt, backoff)
	}
}
