package locks_test

// Tests and benchmarks of locks on real in-process clusters (grid/gridtest):
// embedded (proxies on the members) and through the client.
//
//	go test -run '^$' -bench Cluster -benchtime=2s -count=1 ./locks/

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/client"
	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/grid/gridtest"
	"github.com/shoalgrid/shoal/locks"
	"github.com/shoalgrid/shoal/locks/lockstest"
	"github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/sysop"
)

func withLocks(c *grid.Config) { c.Services = append(c.Services, locks.Service{}) }

func dialAll(tb testing.TB, cl *gridtest.Cluster, n int) []*client.Client {
	tb.Helper()
	var addrs []string
	for _, m := range cl.Live() {
		addrs = append(addrs, m.Addr())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var cs []*client.Client
	for i := range n {
		c, err := client.Dial(ctx, client.Config{Addrs: addrs, Name: "locks-test-" + strconv.Itoa(i)})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { c.Close() })
		cs = append(cs, c)
	}
	return cs
}

func TestClusterConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	cl := gridtest.New(t, 3, gridtest.WithConfig(withLocks))
	t.Run("embedded", func(t *testing.T) {
		lockstest.Run(t, "embedded", func(t *testing.T) []op.Invoker {
			var invs []op.Invoker
			for _, m := range cl.Live() {
				invs = append(invs, m)
			}
			return invs
		})
	})
	t.Run("client", func(t *testing.T) {
		lockstest.Run(t, "client", func(t *testing.T) []op.Invoker {
			var invs []op.Invoker
			for _, c := range dialAll(t, cl, 3) {
				invs = append(invs, c)
			}
			return invs
		})
	})
}

// benchWorkload is what each benchmark worker does in a loop.
type benchWorkload struct {
	name string
	// lockName returns the lock worker w uses at its i-th iteration.
	lockName func(w, i int) string
	// serial runs one worker instead of 16: latency without queueing.
	serial bool
}

var benchWorkloads = []benchWorkload{
	{"serial", func(int, int) string { return "bench-serial" }, true},
	{"uncontended", func(w, _ int) string { return "bench-own-" + strconv.Itoa(w) }, false},
	{"contended-one", func(int, int) string { return "bench-one" }, false},
	{"many-locks", func(w, i int) string { return "bench-many-" + strconv.Itoa((w*7919+i)%1000) }, false},
}

// BenchmarkCluster measures lock+unlock pairs on a 3-member cluster with
// one synchronous backup: embedded (workers use the members in turn) and
// through one shared client. Workloads: serial (one worker, one lock: the
// latency of an uncontended pair), uncontended (16 workers, a lock each),
// contended-one (16 workers, one lock), many-locks (16 workers over 1,000
// locks). Reported: pairs/s and the p50/p99 latency of one pair (Lock,
// then Unlock) in microseconds, including the wait for the lock.
func BenchmarkCluster(b *testing.B) {
	for _, mode := range []string{"embedded", "client"} {
		var cleanups []func()
		var invs []op.Invoker
		setup := func(b *testing.B) {
			if invs != nil {
				return
			}
			tb := benchTB{b, &cleanups}
			cl := gridtest.New(tb, 3, gridtest.WithConfig(withLocks))
			if mode == "embedded" {
				for _, m := range cl.Live() {
					invs = append(invs, m)
				}
			} else {
				for _, c := range dialAll(tb, cl, 1) {
					invs = append(invs, c)
				}
			}
		}
		for _, wl := range benchWorkloads {
			b.Run(mode+"/"+wl.name, func(b *testing.B) {
				setup(b)
				benchPairs(b, invs, wl)
			})
		}
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}
}

func benchPairs(b *testing.B, invs []op.Invoker, wl benchWorkload) {
	ctx := context.Background()
	var worker atomic.Int64
	var mu sync.Mutex
	var lats []time.Duration
	var errs atomic.Int64
	var firstErr atomic.Pointer[error]
	b.SetParallelism(8) // 16 workers on 2 CPUs: contention is real
	b.ResetTimer()
	work := func(next func() bool) {
		w := int(worker.Add(1) - 1)
		inv := invs[w%len(invs)]
		handles := map[string]*locks.Lock{}
		var own []time.Duration
		for i := 0; next(); i++ {
			name := wl.lockName(w, i)
			l := handles[name]
			if l == nil {
				l = locks.New(inv, name)
				handles[name] = l
			}
			start := time.Now()
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			_, err := l.Lock(cctx)
			if err == nil {
				err = l.Unlock(cctx)
			}
			cancel()
			if err != nil {
				errs.Add(1)
				firstErr.CompareAndSwap(nil, &err)
				continue
			}
			own = append(own, time.Since(start))
		}
		mu.Lock()
		lats = append(lats, own...)
		mu.Unlock()
	}
	if wl.serial {
		n := 0
		work(func() bool { n++; return n <= b.N })
	} else {
		b.RunParallel(func(pb *testing.PB) { work(pb.Next) })
	}
	b.StopTimer()
	if n := errs.Load(); n > 0 {
		b.Fatalf("%d errors; first: %v", n, *firstErr.Load())
	}
	slices.Sort(lats)
	q := func(p float64) float64 {
		if len(lats) == 0 {
			return 0
		}
		return float64(lats[min(len(lats)-1, int(p*float64(len(lats))))].Microseconds())
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pairs/s")
	b.ReportMetric(q(0.50), "p50-us")
	b.ReportMetric(q(0.99), "p99-us")
}

// benchTB hands gridtest a TB whose cleanups the benchmark runs itself, so
// the cluster lives across the runs of a sub-benchmark.
type benchTB struct {
	testing.TB
	cleanups *[]func()
}

func (t benchTB) Cleanup(f func()) { *t.cleanups = append(*t.cleanups, f) }

// ownerIndex returns the index in cl of the member owning name's partition.
func ownerIndex(t *testing.T, cl *gridtest.Cluster, name string) int {
	t.Helper()
	m := cl.Live()[0]
	o, ok := m.Table().Owner(m.PartitionOf(name))
	if !ok {
		t.Fatalf("no owner for %q", name)
	}
	for i := 0; ; i++ {
		if mi := cl.Member(i); mi != nil && mi.Name() == o.Name {
			return i
		}
	}
}

func waitWaiters(t *testing.T, l *locks.Lock, n int) {
	t.Helper()
	gridtest.Eventually(t, 20*time.Second, func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		st, err := l.Status(ctx)
		return err == nil && st.Waiters == n, fmt.Sprintf("status %+v %v, want %d waiters", st, err, n)
	})
}

// TestClusterFailoverWithHolderAndWaiters crashes the owner of a lock that
// is held and waited for: the hold survives on the promoted backup, the
// waiters' calls are re-parked there in their order, and tokens keep
// increasing.
func TestClusterFailoverWithHolderAndWaiters(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := gridtest.New(t, 3, gridtest.WithConfig(withLocks))
	cs := dialAll(t, cl, 3)
	const name = "failover"
	holder := locks.New(cs[0], name)
	t1, err := holder.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	type grant struct {
		i   int
		tok uint64
		err error
	}
	grants := make(chan grant, 2)
	var wg sync.WaitGroup
	defer wg.Wait()
	for i := 1; i <= 2; i++ {
		l := locks.New(cs[i], name)
		wg.Go(func() {
			tok, err := l.Lock(ctx)
			grants <- grant{i, tok, err}
			if err == nil {
				err = l.Unlock(ctx)
			}
			if err != nil {
				t.Error(err)
			}
		})
		waitWaiters(t, holder, i)
	}
	victim := ownerIndex(t, cl, name)
	cl.Crash(victim)
	cl.WaitStable()
	waitWaiters(t, holder, 2)
	st, err := holder.Status(ctx)
	if err != nil || !st.Mine || st.Token != t1 {
		t.Fatalf("hold after failover: %+v %v", st, err)
	}
	if err := holder.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	last := t1
	for want := 1; want <= 2; want++ {
		g := <-grants
		if g.err != nil || g.i != want || g.tok <= last {
			t.Fatalf("grant %+v, want waiter %d with a token above %d", g, want, last)
		}
		last = g.tok
	}
}

// TestClusterMutualExclusionUnderCrash runs workers that increment a
// counter in a map, guarded only by the lock and checked with the fencing
// token, while the owner of the lock's partition crashes: no two critical
// sections overlap, tokens increase, and the counter equals the number of
// completed sections.
func TestClusterMutualExclusionUnderCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cl := gridtest.New(t, 4, gridtest.WithConfig(withLocks))
	cs := dialAll(t, cl, 2)
	const name = "mutex"
	var inside atomic.Int32
	var completed atomic.Int64
	var lastTok atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		c := cs[w%2]
		wg.Go(func() {
			l := locks.New(c, name)
			m := maps.New(c, "counters")
			for {
				select {
				case <-stop:
					return
				default:
				}
				tok, err := l.Lock(ctx)
				if err != nil {
					t.Errorf("worker %d: lock: %v", w, err)
					return
				}
				if n := inside.Add(1); n != 1 {
					t.Errorf("%d holders at once", n)
				}
				if prev := lastTok.Swap(tok); tok <= prev {
					t.Errorf("token %d after %d", tok, prev)
				}
				v, _, err := m.Get(ctx, "n")
				if err == nil {
					n, _ := strconv.Atoi(string(v))
					err = m.Put(ctx, "n", []byte(strconv.Itoa(n+1)))
				}
				inside.Add(-1)
				if err != nil {
					t.Errorf("worker %d: counter: %v", w, err)
					return
				}
				completed.Add(1)
				if err := l.Unlock(ctx); err != nil {
					t.Errorf("worker %d: unlock: %v", w, err)
					return
				}
			}
		})
	}
	gridtest.Eventually(t, 20*time.Second, func() (bool, string) { return completed.Load() >= 50, "warming up" })
	cl.Crash(ownerIndex(t, cl, name))
	before := completed.Load()
	gridtest.Eventually(t, 30*time.Second, func() (bool, string) {
		return completed.Load() >= before+50, fmt.Sprintf("%d sections since the crash", completed.Load()-before)
	})
	close(stop)
	wg.Wait()
	v, _, err := maps.New(cs[0], "counters").Get(ctx, "n")
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := strconv.Atoi(string(v)); int64(n) != completed.Load() {
		t.Fatalf("counter %d, completed sections %d", n, completed.Load())
	}
	t.Logf("%d critical sections, %d after crashing the lock's owner", completed.Load(), completed.Load()-before)
}

// TestClusterMemberDeathReleasesItsLocks crashes a member whose embedded
// caller holds a lock (the lock living on another member): the member's
// session ends when it is declared dead, and the lock passes to the
// waiting client with a higher token.
func TestClusterMemberDeathReleasesItsLocks(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := gridtest.New(t, 3, gridtest.WithConfig(withLocks))
	// A lock whose partition the victim does not own, so the hold itself
	// survives and only the session matters.
	victim := 2
	name := ""
	for i := 0; name == ""; i++ {
		if n := "held-by-member-" + strconv.Itoa(i); ownerIndex(t, cl, n) != victim {
			name = n
		}
	}
	t1, err := locks.New(cl.Member(victim), name).Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	session := cl.Member(victim).Session()
	sp := sysop.SessionPartition(session, cl.Live()[0].Table().Count)
	so, _ := cl.Live()[0].Table().Owner(sp)
	t.Logf("victim %s; its session's partition %d is owned by %s", cl.Member(victim).Name(), sp, so.Name)
	c := dialAll(t, cl, 1)[0]
	waiter := locks.New(c, name)
	got := make(chan uint64, 1)
	go func() {
		tok, err := waiter.Lock(ctx)
		if err != nil {
			t.Error(err)
		}
		got <- tok
	}()
	waitWaiters(t, waiter, 1)
	start := time.Now()
	cl.Crash(victim)
	select {
	case t2 := <-got:
		if t2 <= t1 {
			t.Fatalf("token %d after the dead member's %d", t2, t1)
		}
	case <-time.After(15 * time.Second):
		st, err := waiter.Status(ctx)
		t.Fatalf("lock not passed 15s after the member's death (its session %x): status %+v %v", session, st, err)
	}
	t.Logf("the dead member's lock passed after %v", time.Since(start).Round(time.Millisecond))
}

// TestClusterWatch checks that lock changes reach watchers embedded and
// through the client, and that an election term ends on the event that
// ends it, long before its next check.
func TestClusterWatch(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	cl := gridtest.New(t, 3, gridtest.WithConfig(withLocks))
	cs := dialAll(t, cl, 1)
	for _, mode := range []string{"embedded", "client"} {
		t.Run(mode, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var inv op.Invoker = cs[0]
			if mode == "embedded" {
				inv = cl.Live()[1]
			}
			name := "watched-" + mode
			changes := make(chan locks.Change, 16)
			stop, err := locks.New(inv, name).Watch(ctx, func(c locks.Change) { changes <- c })
			if err != nil {
				t.Fatal(err)
			}
			defer stop()
			next := func() locks.Change {
				t.Helper()
				select {
				case c := <-changes:
					return c
				case <-ctx.Done():
					t.Fatal("no change delivered")
					return locks.Change{}
				}
			}
			l := locks.New(cl.Live()[0], name, locks.WithOwner("w"))
			tok, err := l.Lock(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if c := next(); c.Kind != locks.Acquired || c.Token != tok || c.Holder.Owner != "w" {
				t.Fatalf("change %+v", c)
			}
			if err := l.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
			if c := next(); c.Kind != locks.Released || c.Token != tok {
				t.Fatalf("change %+v", c)
			}

			// A term whose checks are an hour apart ends on the event.
			e := locks.NewElection(inv, "elect-"+mode, locks.WithCheckInterval(time.Hour))
			term, err := e.Campaign(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := locks.New(cs[0], "elect-"+mode).ForceUnlock(ctx); err != nil {
				t.Fatal(err)
			}
			select {
			case <-term.Done():
			case <-ctx.Done():
				t.Fatal("the force-unlock event did not end the term")
			}
			if !term.Lost() {
				t.Fatalf("term ended with %v", term.Err())
			}
			_ = term.Resign(ctx)
		})
	}
}
