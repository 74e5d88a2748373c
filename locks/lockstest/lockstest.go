// Package lockstest is the conformance suite for locks: the same tests run
// against any op.Invoker (embedded members, remote clients, the in-process
// harness), so every mode is held to one behaviour.
package lockstest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/locks"
	"github.com/shoalgrid/shoal/op"
)

// Run runs the suite. invokers must return at least two invokers attached
// to the same cluster with different sessions (two members, two clients);
// each subtest uses its own lock names, prefixed with prefix so that the
// suite can run twice on one cluster.
func Run(t *testing.T, prefix string, invokers func(t *testing.T) []op.Invoker) {
	invs := invokers(t)
	if len(invs) < 2 {
		t.Fatal("lockstest: need at least two invokers")
	}
	a, b := invs[0], invs[len(invs)-1]
	ctx := func(t *testing.T) context.Context {
		c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		t.Cleanup(cancel)
		return c
	}
	name := func(s string) string { return prefix + "-" + s }
	waiters := func(t *testing.T, l *locks.Lock, n int) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			st, err := l.Status(ctx(t))
			if err == nil && st.Waiters == n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("waiters of %q: %+v %v, want %d", l.Name(), st, err, n)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}

	t.Run("LockUnlock", func(t *testing.T) {
		ctx := ctx(t)
		la, lb := locks.New(a, name("basic")), locks.New(b, name("basic"))
		t1, err := la.Lock(ctx)
		if err != nil || t1 == 0 {
			t.Fatalf("lock: %d %v", t1, err)
		}
		if _, ok, err := lb.TryLock(ctx); err != nil || ok {
			t.Fatalf("try-lock of a held lock: %v %v", ok, err)
		}
		st, err := lb.Status(ctx)
		if err != nil || !st.Held || st.Token != t1 || st.Mine || st.Holder.Owner != la.Owner() {
			t.Fatalf("status from the other side: %+v %v", st, err)
		}
		if mine, err := la.IsLockedByMe(ctx); err != nil || !mine {
			t.Fatalf("holder's IsLockedByMe: %v %v", mine, err)
		}
		if err := lb.Unlock(ctx); !errors.Is(err, op.ErrNotLockOwner) {
			t.Fatalf("unlock by a non-holder: %v", err)
		}
		if err := la.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		t2, ok, err := lb.TryLock(ctx)
		if err != nil || !ok || t2 <= t1 {
			t.Fatalf("try-lock after unlock: %d %v %v (was %d)", t2, ok, err, t1)
		}
		if err := lb.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		if locked, err := la.IsLocked(ctx); err != nil || locked {
			t.Fatalf("locked after the last unlock: %v %v", locked, err)
		}
	})

	t.Run("WaitAndHandOver", func(t *testing.T) {
		ctx := ctx(t)
		la, lb := locks.New(a, name("wait")), locks.New(b, name("wait"))
		t1, err := la.Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan uint64, 1)
		errc := make(chan error, 1)
		go func() {
			tok, err := lb.Lock(ctx)
			errc <- err
			got <- tok
		}()
		waiters(t, la, 1)
		if err := la.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if t2 := <-got; t2 <= t1 {
			t.Fatalf("token %d after %d", t2, t1)
		}
		if err := lb.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("FIFO", func(t *testing.T) {
		ctx := ctx(t)
		holder := locks.New(a, name("fifo"))
		if _, err := holder.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		const n = 4
		var mu sync.Mutex
		var order []int
		var wg sync.WaitGroup
		for i := range n {
			l := locks.New(invs[i%len(invs)], name("fifo"))
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := l.Lock(ctx); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				order = append(order, i)
				mu.Unlock()
				if err := l.Unlock(ctx); err != nil {
					t.Error(err)
				}
			}()
			waiters(t, holder, i+1)
		}
		if err := holder.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		for i := range n {
			if i >= len(order) || order[i] != i {
				t.Fatalf("grant order %v", order)
			}
		}
	})

	t.Run("TimeoutLeavesTheQueue", func(t *testing.T) {
		ctx := ctx(t)
		la, lb := locks.New(a, name("timeout")), locks.New(b, name("timeout"))
		if _, err := la.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		if _, err := lb.Lock(short); !errors.Is(err, op.ErrTimeout) {
			t.Fatalf("lock past its deadline: %v", err)
		}
		waiters(t, la, 0)
		if err := la.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		if locked, err := la.IsLocked(ctx); err != nil || locked {
			t.Fatalf("the timed-out waiter got the lock: %v %v", locked, err)
		}
	})

	t.Run("CancelLeavesTheQueue", func(t *testing.T) {
		ctx := ctx(t)
		la, lb := locks.New(a, name("cancel")), locks.New(b, name("cancel"))
		if _, err := la.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithCancel(ctx) // no deadline: only the cancel ends the wait
		errc := make(chan error, 1)
		go func() { _, err := lb.Lock(cctx); errc <- err }()
		waiters(t, la, 1)
		cancel()
		if err := <-errc; !errors.Is(err, op.ErrCanceled) {
			t.Fatalf("cancelled lock: %v", err)
		}
		waiters(t, la, 0)
		if err := la.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		if locked, err := la.IsLocked(ctx); err != nil || locked {
			t.Fatalf("the cancelled waiter got the lock: %v %v", locked, err)
		}
	})

	t.Run("Reentrancy", func(t *testing.T) {
		ctx := ctx(t)
		l := locks.New(a, name("reentrant"))
		t1, _ := l.Lock(ctx)
		t2, err := l.Lock(ctx)
		if err != nil || t2 != t1 {
			t.Fatalf("re-entry: %d %v, want %d", t2, err, t1)
		}
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		if mine, _ := l.IsLockedByMe(ctx); !mine {
			t.Fatal("released after one of two unlocks")
		}
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		nr := locks.New(a, name("nonreentrant"), locks.WithReentrancyLimit(1))
		if _, err := nr.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := nr.Lock(ctx); !errors.Is(err, op.ErrBadRequest) {
			t.Fatalf("non-reentrant re-lock: %v", err)
		}
		if err := nr.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("Lease", func(t *testing.T) {
		ctx := ctx(t)
		la, lb := locks.New(a, name("lease")), locks.New(b, name("lease"))
		t1, err := la.Lock(ctx, locks.WithLease(200*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		t2, err := lb.Lock(ctx) // granted when the owner's lease timer fires
		if err != nil || t2 <= t1 {
			t.Fatalf("lock after the lease: %d %v (was %d)", t2, err, t1)
		}
		if err := la.Unlock(ctx); !errors.Is(err, op.ErrNotLockOwner) {
			t.Fatalf("unlock after the lease: %v", err)
		}
		if err := lb.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("ForceUnlock", func(t *testing.T) {
		ctx := ctx(t)
		la, lb := locks.New(a, name("force")), locks.New(b, name("force"))
		if _, err := la.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		if ok, err := lb.ForceUnlock(ctx); err != nil || !ok {
			t.Fatalf("force-unlock: %v %v", ok, err)
		}
		if err := la.Unlock(ctx); !errors.Is(err, op.ErrNotLockOwner) {
			t.Fatalf("unlock after force-unlock: %v", err)
		}
	})

	t.Run("BadInput", func(t *testing.T) {
		ctx := ctx(t)
		if _, err := locks.New(a, "").Lock(ctx); !errors.Is(err, op.ErrBadRequest) {
			t.Fatalf("empty name: %v", err)
		}
	})

	t.Run("MutualExclusion", func(t *testing.T) {
		ctx := ctx(t)
		var inside atomic.Int32
		var last atomic.Uint64
		var wg sync.WaitGroup
		for i := range 4 {
			l := locks.New(invs[i%len(invs)], name("mutex"))
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 10 {
					tok, err := l.Lock(ctx)
					if err != nil {
						t.Error(err)
						return
					}
					if n := inside.Add(1); n != 1 {
						t.Errorf("%d holders at once", n)
					}
					if prev := last.Swap(tok); tok <= prev {
						t.Errorf("token %d after %d", tok, prev)
					}
					inside.Add(-1)
					if err := l.Unlock(ctx); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
	})

	t.Run("Election", func(t *testing.T) {
		ctx := ctx(t)
		var leaders atomic.Int32
		terms := make(chan uint64, 8)
		var wg sync.WaitGroup
		for i := range 4 {
			inv := invs[i%len(invs)]
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := locks.Elect(ctx, inv, name("election"), func(ctx context.Context, term uint64) error {
					if n := leaders.Add(1); n != 1 {
						return fmt.Errorf("%d leaders at once", n)
					}
					terms <- term
					leaders.Add(-1)
					return nil
				}, locks.WithCheckInterval(50*time.Millisecond))
				if err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		close(terms)
		var last uint64
		n := 0
		for term := range terms {
			if term <= last {
				t.Fatalf("term %d after %d", term, last)
			}
			last = term
			n++
		}
		if n != 4 {
			t.Fatalf("%d terms, want 4", n)
		}
	})
}
