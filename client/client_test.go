package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/shoalgrid/shoal/client"
	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/grid/gridtest"
	"github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/maps/mapstest"
	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/partition"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, gridtest.LeakOptions()...) }

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func dial(t *testing.T, cfg client.Config) *client.Client {
	t.Helper()
	if cfg.RefreshInterval == 0 {
		cfg.RefreshInterval = 100 * time.Millisecond
	}
	c, err := client.Dial(ctxT(t, 10*time.Second), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestMapConformanceClient(t *testing.T) {
	mapstest.Run(t, func(t *testing.T) []op.Invoker {
		cl := gridtest.New(t, 3)
		var invs []op.Invoker
		for _, m := range cl.Live() {
			invs = append(invs, dial(t, client.Config{Addrs: []string{m.Addr()}}))
		}
		return invs
	})
}

func TestDialUnreachableFailsWithContext(t *testing.T) {
	ctx := ctxT(t, 300*time.Millisecond)
	_, err := client.Dial(ctx, client.Config{Addrs: []string{"127.0.0.1:1"}})
	if !errors.Is(err, op.ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	if _, err := client.Dial(ctx, client.Config{Addrs: []string{"no-port"}}); !errors.Is(err, op.ErrBadRequest) {
		t.Fatalf("bad address: %v", err)
	}
}

func TestWrongClusterIsRefused(t *testing.T) {
	cl := gridtest.New(t, 1)
	ctx := ctxT(t, 500*time.Millisecond)
	_, err := client.Dial(ctx, client.Config{Addrs: []string{cl.Member(0).Addr()}, Cluster: "other"})
	if err == nil {
		t.Fatal("dial into another cluster succeeded")
	}
}

func TestCallsAfterCloseFail(t *testing.T) {
	cl := gridtest.New(t, 1)
	c := dial(t, client.Config{Addrs: []string{cl.Member(0).Addr()}})
	c.Close()
	c.Close()
	_, _, err := maps.New(c, "m").Get(ctxT(t, time.Second), "k")
	if !errors.Is(err, op.ErrClosed) {
		t.Fatalf("err = %v, want ErrClosed", err)
	}
}

func TestClientLearnsJoinsAndRoutesToOwners(t *testing.T) {
	cl := gridtest.New(t, 2)
	c := dial(t, client.Config{Addrs: []string{cl.Member(0).Addr()}})
	events, cancel := c.Subscribe(8)
	defer cancel()
	cl.Add()
	cl.WaitStable()
	ctx := ctxT(t, 10*time.Second)
	select {
	case ev := <-events:
		if ev.Type != client.MemberJoined || ev.Member.Name != "m2" {
			t.Fatalf("event = %+v", ev)
		}
	case <-ctx.Done():
		t.Fatal("no join event")
	}
	m := maps.New(c, "r")
	for i := range 300 {
		if err := m.Put(ctx, fmt.Sprint(i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	// Every member served some of the puts directly: routing is smart.
	for _, mem := range cl.Live() {
		if mem.Stats().Entries == 0 {
			t.Errorf("%s holds no entries", mem.Name())
		}
	}
}

// TestClientRelaysWhenOwnerUnreachable: a client that cannot reach a
// member (a network cut between them only) still reaches that member's
// partitions, through another member that forwards its calls; the calls
// keep their identity, so each is applied once.
func TestClientRelaysWhenOwnerUnreachable(t *testing.T) {
	cl := gridtest.New(t, 3)
	c, err := client.Dial(ctxT(t, 10*time.Second), client.Config{Addrs: []string{cl.Member(0).Addr()}, RefreshInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cut := cl.Member(2)
	client.CutOff(c, cut.Addr())
	ctx := ctxT(t, 20*time.Second)
	m := maps.New(c, "relayed")
	owned := 0
	for i := range 200 {
		k := fmt.Sprint(i)
		if o, _ := c.Table().Owner(partition.ID(k, c.PartitionCount())); o.Name == cut.Name() {
			owned++
		}
		if _, err := m.Incr(ctx, k, 1); err != nil {
			t.Fatalf("incr %s: %v", k, err)
		}
	}
	if owned == 0 {
		t.Fatalf("no key of 200 is owned by %s", cut.Name())
	}
	if n := client.Relayed(c); n < uint64(owned) {
		t.Errorf("%d calls relayed, want at least the %d to %s", n, owned, cut.Name())
	}
	// Read on the cut-off member itself: every key counted once.
	direct := maps.New(cut, "relayed")
	for i := range 200 {
		v, found, err := direct.Get(ctx, fmt.Sprint(i))
		if err != nil || !found || string(v) != "1" {
			t.Fatalf("key %d on %s: %v %v %v", i, cut.Name(), v, found, err)
		}
	}
}

// TestClientFollowsAnnouncedTables: members announce each table they
// adopt (sysop.TableStream) and the client reads it at once: an idle
// client whose periodic refresh is an hour away (and whose session
// heartbeats, whose answers carry the table version, a minute away)
// follows a join to the cluster's final table.
func TestClientFollowsAnnouncedTables(t *testing.T) {
	cl := gridtest.New(t, 2)
	c := dial(t, client.Config{Addrs: []string{cl.Member(0).Addr()}, RefreshInterval: time.Hour, SessionTTL: 3 * time.Minute})
	client.WaitSynced(c)
	v0 := c.Table().Version
	cl.Add()
	cl.WaitStable()
	want := cl.Member(0).Table().Version
	gridtest.Eventually(t, 10*time.Second, func() (bool, string) {
		v := c.Table().Version
		return v == want, fmt.Sprintf("client table %d (was %d), cluster %d", v, v0, want)
	})
}

// Killing the member a client talks to mid-load: callers see no error (the
// operations are retried on the new owners) and nothing is left hanging.
func TestClientSurvivesMemberCrash(t *testing.T) {
	cl := gridtest.New(t, 3)
	c := dial(t, client.Config{Addrs: []string{cl.Member(0).Addr(), cl.Member(1).Addr()}})
	ctx := ctxT(t, 60*time.Second)
	var ops, errs atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := maps.New(c, "load")
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				err := m.Put(cctx, fmt.Sprintf("w%d-%d", w, i%100), []byte("v"))
				cancel()
				ops.Add(1)
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	gridtest.Eventually(t, 10*time.Second, func() (bool, string) { return ops.Load() > 500, "warming up" })
	start := time.Now()
	cl.Crash(0)
	cl.WaitStable()
	recovered := time.Since(start)
	before := ops.Load()
	gridtest.Eventually(t, 10*time.Second, func() (bool, string) { return ops.Load() > before+500, "load after crash" })
	close(stop)
	wg.Wait()
	t.Logf("%d operations, %d errors; cluster stable %v after the crash", ops.Load(), errs.Load(), recovered.Round(time.Millisecond))
	if errs.Load() != 0 {
		t.Fatalf("%d errors, first: %v", errs.Load(), firstErr.Load())
	}
}

func TestNoMemberReachableFailsFastThenRecovers(t *testing.T) {
	cl := gridtest.New(t, 1)
	addr := cl.Member(0).Addr()
	c := dial(t, client.Config{Addrs: []string{addr}})
	m := maps.New(c, "m")
	ctx := ctxT(t, 30*time.Second)
	if err := m.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	cl.Crash(0)
	start := time.Now()
	_, _, err := m.Get(ctx, "k")
	if !errors.Is(err, op.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v to fail; want fast", d)
	}
	// The whole "cluster" comes back on the same address: the idle client
	// reconnects by itself and adopts the new cluster's table even though
	// its versions started again.
	mem, err := grid.Start(ctx, grid.Config{Name: "again", BindAddr: "127.0.0.1:0", DataAddr: addr, Gossip: grid.FastGossip(), Services: []op.Service{maps.Service{}}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	gridtest.Eventually(t, 10*time.Second, func() (bool, string) {
		err := m.Put(ctx, "k2", []byte("v2"))
		return err == nil, fmt.Sprint(err)
	})
	if v, ok, err := maps.New(mem, "m").Get(ctx, "k2"); err != nil || !ok || string(v) != "v2" {
		t.Fatalf("put through recovered client not visible: %q %v %v", v, ok, err)
	}
}

func TestStatusAndSafe(t *testing.T) {
	cl := gridtest.New(t, 3)
	c := dial(t, client.Config{Addrs: []string{cl.Member(0).Addr()}})
	ctx := ctxT(t, 10*time.Second)
	sts, err := c.Status(ctx)
	if err != nil || len(sts) != 3 {
		t.Fatalf("status: %d members, %v", len(sts), err)
	}
	owned := 0
	for _, st := range sts {
		owned += st.PartitionsOwned
		if st.TableBackups != 1 {
			t.Fatalf("%s keeps %d backups, want 1", st.Name, st.TableBackups)
		}
	}
	if owned != c.PartitionCount() {
		t.Fatalf("owned %d, want %d", owned, c.PartitionCount())
	}
	safe, why, err := c.Safe(ctx)
	if err != nil || !safe {
		t.Fatalf("safe = %v (%s), %v", safe, why, err)
	}
	// After a crash the cluster re-replicates and becomes safe again, as
	// seen through the client.
	cl.Crash(2)
	cl.WaitStable()
	gridtest.Eventually(t, 10*time.Second, func() (bool, string) {
		safe, why, err := c.Safe(ctx)
		return err == nil && safe && len(c.Members()) == 2, fmt.Sprint(why, err)
	})
}

// Members close connections that stay quiet past their idle timeout: a
// client must survive idle periods, kept alive by its pings or, without
// them, by dialing again.
func TestClientSurvivesIdleTimeout(t *testing.T) {
	const idle = 150 * time.Millisecond
	cl := gridtest.New(t, 1, gridtest.WithConfig(func(c *grid.Config) { c.Conns.IdleTimeout = idle }))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, keepAlive := range []time.Duration{idle / 5, -1} {
		c, err := client.Dial(ctx, client.Config{Addrs: []string{cl.Member(0).Addr()}, KeepAlive: keepAlive, RefreshInterval: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		m := maps.New(c, "idle")
		if err := m.Put(ctx, "k", []byte("v")); err != nil {
			t.Fatal(err)
		}
		// Quiet for several idle timeouts.
		select {
		case <-time.After(5 * idle):
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
		if v, ok, err := m.Get(ctx, "k"); err != nil || !ok || string(v) != "v" {
			t.Errorf("keep-alive %v: get after an idle period: %q %v %v", keepAlive, v, ok, err)
		}
		c.Close()
	}
}
