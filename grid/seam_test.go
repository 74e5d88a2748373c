package grid_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/grid/gridtest"
	"github.com/shoalgrid/shoal/internal/semtest"
	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/wire"
)

// seamCluster starts n members running the test semaphore service and
// returns the index of the owner of name's partition and of the others.
func seamCluster(t *testing.T, n int, name string) (*gridtest.Cluster, int, []int) {
	t.Helper()
	c := gridtest.New(t, n, gridtest.WithServices(semtest.Service{}))
	return c, ownerIndex(t, c, name), others(t, c, name)
}

func ownerIndex(t *testing.T, c *gridtest.Cluster, name string) int {
	t.Helper()
	live := c.Live()
	o, ok := live[0].Table().Owner(live[0].PartitionOf(name))
	if !ok {
		t.Fatalf("no owner for %s", name)
	}
	return memberIndex(t, o.Name)
}

// memberIndex returns the index of gridtest member "m<i>".
func memberIndex(t *testing.T, name string) int {
	t.Helper()
	var i int
	if _, err := fmt.Sscanf(name, "m%d", &i); err != nil {
		t.Fatalf("member name %q: %v", name, err)
	}
	return i
}

// others returns the indexes of the running members that do not own
// name's partition.
func others(t *testing.T, c *gridtest.Cluster, name string) []int {
	t.Helper()
	o := ownerIndex(t, c, name)
	var out []int
	for _, m := range c.Live() {
		if i := memberIndex(t, m.Name()); i != o {
			out = append(out, i)
		}
	}
	return out
}

type result struct {
	grant int64
	err   error
}

// acquireAsync starts an Acquire and returns its result channel.
func acquireAsync(ctx context.Context, s *semtest.Sem) <-chan result {
	ch := make(chan result, 1)
	go func() {
		g, err := s.Acquire(ctx, 1)
		ch <- result{g, err}
	}()
	return ch
}

// waitWaiters polls until the semaphore has n parked waiters.
func waitWaiters(t *testing.T, s *semtest.Sem, n int) {
	t.Helper()
	gridtest.Eventually(t, 10*time.Second, func() (bool, string) {
		in, err := s.Info(context.Background())
		return err == nil && in.Waiters == n, fmt.Sprintf("waiters %d (want %d), err %v", in.Waiters, n, err)
	})
}

func expectPending(t *testing.T, ch <-chan result) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("call returned %+v while it should wait", r)
	default:
	}
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

// Waiters park on the owner, are woken in FIFO order by releases (from
// other members' sessions), and the holders are the callers' sessions.
func TestSeamParkedWaitersWakeInOrder(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, _, rest := seamCluster(t, 3, "s")
	a, b := c.Member(rest[0]), c.Member(rest[1])
	owner := c.Member(ownerIndex(t, c, "s"))
	sa, sb, so := semtest.New(a, "s"), semtest.New(b, "s"), semtest.New(owner, "s")
	if err := sa.Init(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if g, err := so.Acquire(ctx, 1); err != nil || g != 1 {
		t.Fatalf("first acquire: %d %v", g, err)
	}
	wa := acquireAsync(ctx, sa) // remote waiter (forwarded to the owner)
	waitWaiters(t, so, 1)
	wb := acquireAsync(ctx, sb)
	waitWaiters(t, so, 2)
	expectPending(t, wa)
	if err := so.Release(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if r := recv(t, wa); r.err != nil || r.grant != 2 {
		t.Fatalf("first waiter: %+v, want grant 2", r)
	}
	expectPending(t, wb)
	// Only the holder's session may release.
	if err := sb.Release(ctx, 1); !errors.Is(err, op.ErrNotLockOwner) {
		t.Fatalf("release by a non-holder: %v, want ErrNotLockOwner", err)
	}
	if err := sa.Release(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if r := recv(t, wb); r.err != nil || r.grant != 3 {
		t.Fatalf("second waiter: %+v, want grant 3", r)
	}
	in, err := so.Info(ctx)
	if err != nil || in.Waiters != 0 || in.Free != 0 || len(in.Holders) != 1 {
		t.Fatalf("info %+v %v", in, err)
	}
}

// A waiter whose deadline passes gets a timeout and leaves the waiter list
// on the owner and the backups (the new owner after a crash has no trace
// of it); a local waiter parked on the owner itself times out too.
func TestSeamDeadlineRemovesWaiterEverywhere(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, oi, rest := seamCluster(t, 3, "d")
	a, b := c.Member(rest[0]), c.Member(rest[1])
	sa, sb := semtest.New(a, "d"), semtest.New(b, "d")
	if err := sa.Init(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := sa.Acquire(ctx, 1); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := sb.Acquire(short, 1)
	if !errors.Is(err, op.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("acquire past its deadline: %v, want a timeout", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("timeout answered after %v", d)
	}
	so := semtest.New(c.Member(oi), "d")
	waitWaiters(t, so, 0)
	local, cancel2 := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel2()
	if _, err := so.Acquire(local, 1); err == nil {
		t.Fatal("local acquire on the owner succeeded while the permit is held")
	}
	waitWaiters(t, so, 0)
	// The cancels were answered to nobody (the callers had given up), so
	// nothing waited for the backup: a later acknowledged mutation of the
	// partition proves the backup applied them (records apply in order).
	if err := sa.Init(ctx, 1); err != nil {
		t.Fatal(err)
	}
	c.Crash(oi)
	c.WaitStable()
	in, err := sa.Info(ctx)
	if err != nil || in.Waiters != 0 || in.Free != 0 {
		t.Fatalf("after failover: %+v %v (want no waiter, permit still held)", in, err)
	}
}

// The owner crashes while a waiter is parked: the waiter's invoker re-sends
// the call with the same identity to the new owner, whose state (which
// replicated the waiter) parks it again, and a release wakes it there.
func TestSeamFailoverReparksWaiters(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, oi, rest := seamCluster(t, 3, "f")
	a, b := c.Member(rest[0]), c.Member(rest[1])
	sa, sb := semtest.New(a, "f"), semtest.New(b, "f")
	if err := sa.Init(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := sa.Acquire(ctx, 1); err != nil {
		t.Fatal(err)
	}
	wb := acquireAsync(ctx, sb)
	waitWaiters(t, sa, 1)
	c.Crash(oi)
	c.WaitStable()
	expectPending(t, wb)
	waitWaiters(t, sa, 1) // re-parked, not duplicated
	if err := sa.Release(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if r := recv(t, wb); r.err != nil || r.grant != 2 {
		t.Fatalf("waiter after failover: %+v, want grant 2", r)
	}
}

// A replicated timer set on the old owner fires on the new owner after a
// crash (BecameOwner re-arms it), exactly once.
func TestSeamTimerFiresAfterFailover(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, oi, rest := seamCluster(t, 3, "t")
	sa := semtest.New(c.Member(rest[0]), "t")
	if err := sa.Alarm(ctx, 1500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	c.Crash(oi)
	gridtest.Eventually(t, 20*time.Second, func() (bool, string) {
		in, err := sa.Info(ctx)
		return err == nil && in.Fired == 1 && in.AlarmAt == 0, fmt.Sprintf("%+v %v", in, err)
	})
	if in, _ := sa.Info(ctx); in.Fired != 1 {
		t.Fatalf("alarm fired %d times", in.Fired)
	}
}

// Reserved operation codes cannot be sent by a proxy.
func TestSeamReservedOpsRefused(t *testing.T) {
	ctx := ctxT(t, 20*time.Second)
	c := gridtest.New(t, 1, gridtest.WithServices(semtest.Service{}))
	_, err := c.Member(0).Invoke(ctx, &op.Request{Service: semtest.ServiceName, Name: "x", Op: op.OpSessionEnded, Partition: -1, Key: "x", Num: 1})
	if !errors.Is(err, op.ErrUnknownOp) {
		t.Fatalf("reserved op from a proxy: %v, want ErrUnknownOp", err)
	}
}

// A member that holds permits crashes: the coordinator ends its session at
// once, every partition of the semaphore service learns it (a replicated
// OpSessionEnded), its permits are released and the waiter is woken.
func TestSeamDeadMembersSessionReleasesHolds(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, _, rest := seamCluster(t, 3, "h")
	a, b := c.Member(rest[0]), c.Member(rest[1])
	sa, sb := semtest.New(a, "h"), semtest.New(b, "h")
	if err := sa.Init(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := sa.Acquire(ctx, 1); err != nil {
		t.Fatal(err)
	}
	in, err := sb.Info(ctx)
	if err != nil || in.Holders[a.Session()] != 1 {
		t.Fatalf("holders %v (want session %x of %s) %v", in.Holders, a.Session(), a.Name(), err)
	}
	wb := acquireAsync(ctx, sb)
	waitWaiters(t, sb, 1)
	start := time.Now()
	c.Crash(rest[0])
	if r := recv(t, wb); r.err != nil || r.grant != 2 {
		t.Fatalf("waiter after the holder died: %+v", r)
	}
	t.Logf("hold of a crashed member released after %v", time.Since(start).Round(time.Millisecond))
	in, err = sb.Info(ctx)
	if err != nil || len(in.Holders) != 1 || in.Holders[b.Session()] != 1 {
		t.Fatalf("holders after release %v %v", in.Holders, err)
	}
}

// An embedded subscriber on a member that does not own the structure gets
// the owner's events, including a timer's event after a failover.
func TestSeamEventsToEmbeddedSubscriber(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, oi, rest := seamCluster(t, 3, "ev")
	a := c.Member(rest[0])
	got := make(chan string, 16)
	stop, err := a.SubscribeEvents(ctx, semtest.ServiceName, "ev", func(p []byte) { got <- string(p) })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	s := semtest.New(c.Member(rest[1]), "ev")
	if err := s.Alarm(ctx, 1500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	c.Crash(oi)
	select {
	case p := <-got:
		if p != "alarm" {
			t.Fatalf("event %q, want alarm", p)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no alarm event after failover")
	}
}

// A member forwarding a parked call whose caller gives up sends a cancel
// frame to the owner, which drops the waiter.
func TestSeamCancelFrameFromForwardingMember(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, _, rest := seamCluster(t, 3, "cf")
	sa, sb := semtest.New(c.Member(rest[0]), "cf"), semtest.New(c.Member(rest[1]), "cf")
	if err := sa.Init(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := sa.Acquire(ctx, 1); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	w := acquireAsync(wctx, sb)
	waitWaiters(t, sa, 1)
	cancel()
	if r := recv(t, w); !errors.Is(r.err, op.ErrCanceled) {
		t.Fatalf("canceled acquire: %+v", r)
	}
	waitWaiters(t, sa, 0)
}

// A client that sends an unrouted request (the member forwards it) and
// gives up sends a cancel frame: the forwarded call ends and the owner
// drops the waiter.
func TestSeamCancelFrameForUnroutedRequest(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c, _, rest := seamCluster(t, 3, "u")
	sa := semtest.New(c.Member(rest[0]), "u")
	if err := sa.Init(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := sa.Acquire(ctx, 1); err != nil {
		t.Fatal(err)
	}
	conn, err := wire.Dial(ctx, nil, c.Member(rest[1]).Addr(), wire.Hello{Role: wire.RoleClient, Name: "raw", Cluster: grid.DefaultCluster}, wire.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	wctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		_, err := conn.Call(wctx, &op.Request{Service: semtest.ServiceName, Name: "u", Op: semtest.OpAcquire, Partition: -1, Key: "u", Num: 1, Origin: 42, CallSeq: 1})
		errc <- err
	}()
	waitWaiters(t, sa, 1)
	cancel()
	if err := <-errc; !errors.Is(err, op.ErrCanceled) {
		t.Fatalf("canceled call: %v", err)
	}
	waitWaiters(t, sa, 0)
}
