package locks

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/op"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newSim(t *testing.T) *simCore {
	c := newSimCore(7)
	t.Cleanup(c.close)
	return c
}

// eventually polls cond until it holds or the test's deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func waiters(t *testing.T, l *Lock) int {
	t.Helper()
	st, err := l.Status(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	return st.Waiters
}

func TestProxyLockTryLockUnlock(t *testing.T) {
	ctx := testCtx(t)
	c := newSim(t)
	a, b := New(c.invoker(1), "job"), New(c.invoker(2), "job")
	tok, err := a.Lock(ctx)
	if err != nil || tok == 0 {
		t.Fatalf("lock %d %v", tok, err)
	}
	if _, ok, err := b.TryLock(ctx); err != nil || ok {
		t.Fatalf("try-lock of a held lock: %v %v", ok, err)
	}
	if locked, err := b.IsLocked(ctx); err != nil || !locked {
		t.Fatalf("is-locked %v %v", locked, err)
	}
	if mine, _ := a.IsLockedByMe(ctx); !mine {
		t.Fatal("holder: not mine")
	}
	if mine, _ := b.IsLockedByMe(ctx); mine {
		t.Fatal("other: mine")
	}
	if err := b.Unlock(ctx); !errors.Is(err, op.ErrNotLockOwner) || !strings.Contains(err.Error(), `"job"`) {
		t.Fatalf("unlock by a non-holder: %v", err)
	}
	if err := a.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	tok2, ok, err := b.TryLock(ctx)
	if err != nil || !ok || tok2 <= tok {
		t.Fatalf("try-lock %d %v %v after token %d", tok2, ok, err, tok)
	}
}

func TestProxyReentrancy(t *testing.T) {
	ctx := testCtx(t)
	c := newSim(t)
	inv := c.invoker(1)
	a := New(inv, "r")
	t1, _ := a.Lock(ctx)
	t2, err := a.Lock(ctx)
	if err != nil || t2 != t1 {
		t.Fatalf("re-entry %d %v, want %d", t2, err, t1)
	}
	// Another handle of the same process is another holder...
	if _, ok, _ := New(inv, "r").TryLock(ctx); ok {
		t.Fatal("another handle acquired a held lock")
	}
	// ...unless it shares the owner id.
	if tok, ok, _ := New(inv, "r", WithOwner(a.Owner())).TryLock(ctx); !ok || tok != t1 {
		t.Fatal("a handle with the holder's owner id did not re-enter")
	}
	st, _ := a.Status(ctx)
	if st.Count != 3 || !st.Mine {
		t.Fatalf("status %+v", st)
	}
	n := New(inv, "nr", WithReentrancyLimit(1))
	if _, err := n.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Lock(ctx); !errors.Is(err, op.ErrBadRequest) {
		t.Fatalf("non-reentrant re-lock: %v", err)
	}
	if _, ok, err := n.TryLock(ctx); ok || err != nil {
		t.Fatalf("non-reentrant try re-lock: %v %v", ok, err)
	}
}

func TestProxyFIFO(t *testing.T) {
	ctx := testCtx(t)
	c := newSim(t)
	holder := New(c.invoker(100), "fifo")
	if _, err := holder.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	const n = 5
	var mu sync.Mutex
	var order []int
	var tokens []uint64
	var wg sync.WaitGroup
	for i := range n {
		l := New(c.invoker(uint64(i+1)), "fifo")
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := l.Lock(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			order, tokens = append(order, i), append(tokens, tok)
			mu.Unlock()
			if err := l.Unlock(ctx); err != nil {
				t.Error(err)
			}
		}()
		eventually(t, "waiter queued", func() bool { return waiters(t, holder) == i+1 })
	}
	if err := holder.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i := range n {
		if order[i] != i || (i > 0 && tokens[i] <= tokens[i-1]) {
			t.Fatalf("grant order %v tokens %v", order, tokens)
		}
	}
}

func TestProxyLockTimeoutLeavesQueue(t *testing.T) {
	ctx := testCtx(t)
	c := newSim(t)
	a, b := New(c.invoker(1), "t"), New(c.invoker(2), "t")
	if _, err := a.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	if _, err := b.Lock(wctx); !errors.Is(err, op.ErrTimeout) {
		t.Fatalf("lock past its deadline: %v", err)
	}
	if w := waiters(t, a); w != 0 || c.parkedCalls() != 0 {
		t.Fatalf("%d waiters, %d parked after a timeout", w, c.parkedCalls())
	}
	// A cancelled wait leaves too.
	cctx, ccancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { _, err := b.Lock(cctx); done <- err }()
	eventually(t, "waiter queued", func() bool { return waiters(t, a) == 1 })
	ccancel()
	if err := <-done; !errors.Is(err, op.ErrCanceled) {
		t.Fatalf("cancelled lock: %v", err)
	}
	if w := waiters(t, a); w != 0 {
		t.Fatalf("%d waiters after a cancel", w)
	}
}

func TestProxyAbandonsALostGrant(t *testing.T) {
	ctx := testCtx(t)
	c := newSim(t)
	a, b := New(c.invoker(1), "lost"), New(c.invoker(2), "lost")
	if _, err := a.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := b.Lock(wctx); done <- err }()
	eventually(t, "waiter queued", func() bool { return waiters(t, a) == 1 })
	c.mu.Lock()
	c.loseAnswers = true // the grant's answer never reaches b
	c.mu.Unlock()
	if err := a.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, op.ErrTimeout) {
		t.Fatalf("lock whose answer was lost: %v", err)
	}
	c.mu.Lock()
	c.loseAnswers = false
	c.mu.Unlock()
	// b gave up, so the grant it never saw was undone: the lock is free.
	if locked, err := a.IsLocked(ctx); err != nil || locked {
		t.Fatalf("lock still held after an abandoned grant: %v %v", locked, err)
	}
}

func TestProxySessionEnd(t *testing.T) {
	ctx := testCtx(t)
	c := newSim(t)
	a, b := New(c.invoker(1), "s"), New(c.invoker(2), "s")
	ta, _ := a.Lock(ctx)
	got := make(chan uint64, 1)
	go func() {
		tok, err := b.Lock(ctx)
		if err != nil {
			t.Error(err)
		}
		got <- tok
	}()
	eventually(t, "waiter queued", func() bool { return waiters(t, a) == 1 })
	c.endSession(1)
	if tb := <-got; tb <= ta {
		t.Fatalf("token %d after the ended session's %d", tb, ta)
	}
	if err := a.Unlock(ctx); !errors.Is(err, op.ErrSessionExpired) {
		t.Fatalf("unlock by an ended session: %v", err)
	}
}

func TestProxyLease(t *testing.T) {
	ctx := testCtx(t)
	c := newSim(t)
	a, b := New(c.invoker(1), "lease"), New(c.invoker(2), "lease")
	ta, err := a.Lock(ctx, WithLease(30*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	tb, err := b.Lock(ctx) // granted by the lease timer
	if err != nil || tb <= ta {
		t.Fatalf("lock after the lease: %d %v (was %d)", tb, err, ta)
	}
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Fatalf("granted after %v, before the lease ended", d)
	}
	if err := a.Unlock(ctx); !errors.Is(err, op.ErrNotLockOwner) {
		t.Fatalf("unlock after the lease: %v", err)
	}
}

func TestProxyFailoverReparksWaiters(t *testing.T) {
	ctx := testCtx(t)
	c := newSim(t)
	a := New(c.invoker(1), "f")
	ta, _ := a.Lock(ctx)
	const n = 3
	got := make(chan uint64, n)
	for i := range n {
		l := New(c.invoker(uint64(i+2)), "f")
		go func() {
			tok, err := l.Lock(ctx)
			if err != nil {
				t.Error(err)
			}
			got <- tok
			_ = l.Unlock(ctx)
		}()
		eventually(t, "waiter queued", func() bool { return waiters(t, a) == i+1 })
	}
	if err := c.failover(); err != nil {
		t.Fatal(err)
	}
	// The waiters re-sent their calls to the new owner and kept their
	// places (one entry each).
	eventually(t, "waiters re-parked", func() bool { return c.parkedCalls() == n })
	if w := waiters(t, a); w != n {
		t.Fatalf("%d waiters after failover, want %d", w, n)
	}
	if err := a.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	last := ta
	for range n {
		tok := <-got
		if tok <= last {
			t.Fatalf("token %d after %d", tok, last)
		}
		last = tok
	}
}

func TestProxyFailoverKeepsLease(t *testing.T) {
	ctx := testCtx(t)
	c := newSim(t)
	a, b := New(c.invoker(1), "fl"), New(c.invoker(2), "fl")
	if _, err := a.Lock(ctx, WithLease(50*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if err := c.failover(); err != nil {
		t.Fatal(err)
	}
	// The new owner's re-armed timer ends the lease.
	if _, err := b.Lock(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestProxyForceUnlock(t *testing.T) {
	ctx := testCtx(t)
	c := newSim(t)
	a, op1 := New(c.invoker(1), "fu"), New(c.invoker(9), "fu")
	if ok, err := op1.ForceUnlock(ctx); err != nil || ok {
		t.Fatalf("force-unlock of a free lock: %v %v", ok, err)
	}
	a.Lock(ctx) //nolint:errcheck // checked by the force-unlock result
	if ok, err := op1.ForceUnlock(ctx); err != nil || !ok {
		t.Fatalf("force-unlock: %v %v", ok, err)
	}
	if err := a.Unlock(ctx); !errors.Is(err, op.ErrNotLockOwner) {
		t.Fatalf("unlock after force-unlock: %v", err)
	}
}

func TestProxyBadInput(t *testing.T) {
	ctx := testCtx(t)
	c := newSim(t)
	if _, err := New(c.invoker(1), "").Lock(ctx); !errors.Is(err, op.ErrBadRequest) {
		t.Fatalf("empty name: %v", err)
	}
	if _, err := New(nil, "x").Lock(ctx); !errors.Is(err, op.ErrBadRequest) {
		t.Fatalf("nil invoker: %v", err)
	}
	var nl *Lock
	if err := nl.Unlock(ctx); !errors.Is(err, op.ErrBadRequest) {
		t.Fatalf("nil lock: %v", err)
	}
	if _, err := New(c.invoker(1), "x", WithOwner(strings.Repeat("o", MaxOwnerLen+1))).Lock(ctx); !errors.Is(err, op.ErrBadRequest) {
		t.Fatalf("long owner id: %v", err)
	}
	if _, err := New(c.invoker(1), "x").Lock(ctx, WithLease(-time.Second)); !errors.Is(err, op.ErrBadRequest) || !strings.Contains(err.Error(), "negative lease") {
		t.Fatalf("negative lease: %v", err)
	}
	if _, _, err := New(c.invoker(1), "x").TryLock(ctx, WithLease(-time.Second)); !errors.Is(err, op.ErrBadRequest) {
		t.Fatalf("negative lease: %v", err)
	}
	if leaseMillis(-time.Second) != 0 || leaseMillis(1500*time.Microsecond) != 2 || leaseMillis(time.Second) != 1000 {
		t.Fatal("lease rounding")
	}
}

// applyOnly is an invoker over a core that ignores the Exec seam (it calls
// Apply): a Lock that would wait must fail instead of reporting success.
type applyOnly struct{ s *state }

func (a applyOnly) Invoke(_ context.Context, req *op.Request) (*op.Response, error) {
	r := *req
	r.Origin, r.CallSeq = 1, uint64(time.Now().UnixNano())
	if req.Value != nil && string(req.Value) == "other" {
		r.Origin = 2
	}
	resp := a.s.Apply(time.Now(), &r)
	return resp, resp.Err()
}
func (a applyOnly) InvokeAll(context.Context, *op.Request) ([]*op.Response, error) { return nil, nil }
func (applyOnly) PartitionOf(string) int32                                         { return 0 }

func TestProxyLockOnACoreWithoutParking(t *testing.T) {
	ctx := testCtx(t)
	inv := applyOnly{s: newState(0)}
	if _, err := New(inv, "x", WithOwner("other")).Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := New(inv, "x", WithOwner("me")).Lock(ctx); !errors.Is(err, op.ErrInternal) {
		t.Fatalf("lock that could not park: %v", err)
	}
}

func TestWatchNeedsEvents(t *testing.T) {
	c := newSim(t)
	_, err := New(c.invoker(1), "w").Watch(testCtx(t), func(Change) {})
	if !errors.Is(err, ErrNoEvents) || !errors.Is(err, op.ErrBadRequest) {
		t.Fatalf("watch over an invoker without events: %v", err)
	}
	if _, err := New(c.invoker(1), "").Watch(testCtx(t), func(Change) {}); !errors.Is(err, op.ErrBadRequest) {
		t.Fatalf("watch of an empty name: %v", err)
	}
	for k, want := range map[ChangeKind]string{Acquired: "acquired", Released: "released", Expired: "lease expired", SessionEnded: "session ended", Forced: "force-unlocked", 0: "change(0)"} {
		if k.String() != want {
			t.Errorf("%d: %q", k, k.String())
		}
	}
	for k, want := range map[EventKind]string{BecameLeader: "became leader", LostLeadership: "lost leadership", Resigned: "resigned", 0: "event(0)"} {
		if k.String() != want {
			t.Errorf("%d: %q", k, k.String())
		}
	}
}
