package grid_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/grid/gridtest"
	"github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/quorum"
)

// ledger runs writers through the given members, each overwriting its own
// keys with increasing counters, and records every acknowledged value.
type ledger struct {
	mu      sync.Mutex
	acked   map[string]int
	unknown map[string]bool // a write that failed: it may or may not have happened
	ops     int
	errs    int
	wg      sync.WaitGroup
	stop    chan struct{}

	haltOnce sync.Once
}

func runWriters(t *testing.T, ctx context.Context, members []*grid.Member, perMember, keys int) *ledger {
	l := &ledger{acked: map[string]int{}, unknown: map[string]bool{}, stop: make(chan struct{})}
	t.Cleanup(l.halt) // runs before the cluster's cleanup: writers stop first
	for mi, mem := range members {
		for g := range perMember {
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				mp := maps.New(mem, "ledger")
				for i := 1; ; i++ {
					select {
					case <-l.stop:
						return
					default:
					}
					key := fmt.Sprintf("m%d-w%d-k%d", mi, g, i%keys)
					cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
					err := mp.Put(cctx, key, []byte(strconv.Itoa(i)))
					cancel()
					l.mu.Lock()
					l.ops++
					if err != nil {
						l.errs++
						l.unknown[key] = true
					} else {
						l.acked[key] = i
						delete(l.unknown, key)
					}
					l.mu.Unlock()
				}
			}()
		}
	}
	return l
}

func (l *ledger) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ops
}

func (l *ledger) halt() {
	l.haltOnce.Do(func() { close(l.stop) })
	l.wg.Wait()
}

// verify reads every acknowledged key and counts those whose value is not
// the last acknowledged one (lost). A key whose last write failed may hold
// that write's value instead.
func (l *ledger) verify(t *testing.T, inv *grid.Member) {
	t.Helper()
	ctx := ctxT(t, 60*time.Second)
	mp := maps.New(inv, "ledger")
	lost := 0
	for k, want := range l.acked {
		v, ok, err := mp.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := strconv.Atoi(string(v))
		if !ok || (got != want && !(l.unknown[k] && got > want)) {
			lost++
			if lost <= 5 {
				p := inv.PartitionOf(k)
				t.Errorf("key %s (partition %d, replicas %v at table %d): got %q (found %v), last acknowledged %d",
					k, p, inv.Table().ReplicaNames(p), inv.Table().Version, v, ok, want)
			}
		}
	}
	t.Logf("%d operations, %d keys acknowledged, %d lost, %d failed (outcome unknown)", l.ops, len(l.acked), lost, l.errs)
	if lost != 0 {
		t.Fatalf("%d acknowledged writes lost", lost)
	}
}

func TestCrashOfOneMemberLosesNothing(t *testing.T) {
	c := gridtest.New(t, 3)
	ctx := ctxT(t, 120*time.Second)
	l := runWriters(t, ctx, []*grid.Member{c.Member(0), c.Member(1)}, 4, 50)
	gridtest.Eventually(t, 10*time.Second, func() (bool, string) { return l.count() > 2000, "warming up" })
	start := time.Now()
	c.Crash(2)
	c.WaitStable()
	t.Logf("crash to stable (promoted and re-replicated): %v", time.Since(start).Round(time.Millisecond))
	n := l.count()
	gridtest.Eventually(t, 10*time.Second, func() (bool, string) { return l.count() > n+1000, "load after failover" })
	l.halt()
	l.verify(t, c.Member(0))
}

func TestTwoBackupsSurviveTwoCrashesAtOnce(t *testing.T) {
	c := gridtest.New(t, 5, gridtest.WithConfig(func(cfg *grid.Config) {
		cfg.Backups = &grid.Backups{Sync: 2}
	}))
	ctx := ctxT(t, 120*time.Second)
	l := runWriters(t, ctx, []*grid.Member{c.Member(0), c.Member(1)}, 4, 50)
	gridtest.Eventually(t, 10*time.Second, func() (bool, string) { return l.count() > 2000, "warming up" })
	c.Crash(3)
	c.Crash(4)
	c.WaitStable()
	n := l.count()
	gridtest.Eventually(t, 10*time.Second, func() (bool, string) { return l.count() > n+1000, "load after failover" })
	l.halt()
	l.verify(t, c.Member(0))
}

// With quorum off (two of four members crash: a majority rule would stop
// the survivors, see TestQuorumLostAfterCrashes).
func TestReReplicationThenSecondCrashLosesNothing(t *testing.T) {
	c := gridtest.New(t, 4, gridtest.WithConfig(func(cfg *grid.Config) { cfg.Quorum = &quorum.Rule{Mode: quorum.Off} }))
	ctx := ctxT(t, 120*time.Second)
	l := runWriters(t, ctx, []*grid.Member{c.Member(0)}, 4, 100)
	gridtest.Eventually(t, 10*time.Second, func() (bool, string) { return l.count() > 2000, "warming up" })
	c.Crash(3)
	c.WaitStable() // every partition has its backup again, in sync
	c.Crash(2)
	c.WaitStable()
	l.halt()
	l.verify(t, c.Member(0))
}

func TestPerformanceProfileHasNoBackups(t *testing.T) {
	c := gridtest.New(t, 3, gridtest.WithConfig(func(cfg *grid.Config) {
		cfg.Profile = grid.ProfilePerformance
	}))
	tbl := c.Member(0).Table()
	for p := range int32(tbl.Count) {
		if n := tbl.ReplicaCount(p); n != 1 {
			t.Fatalf("partition %d has %d replicas, want 1", p, n)
		}
	}
	ctx := ctxT(t, 20*time.Second)
	mp := maps.New(c.Member(0), "perf")
	for i := range 500 {
		if err := mp.Put(ctx, fmt.Sprint(i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range c.Live() {
		if s := m.Stats(); s.PartitionsBackup != 0 || s.BackupRecords != 0 {
			t.Fatalf("%s: %d backups, %d backup records", m.Name(), s.PartitionsBackup, s.BackupRecords)
		}
	}
}

func TestReliableProfileReplicatesEveryPut(t *testing.T) {
	c := gridtest.New(t, 3)
	ctx := ctxT(t, 20*time.Second)
	mp := maps.New(c.Member(0), "rel")
	const n = 500
	for i := range n {
		if err := mp.Put(ctx, fmt.Sprint(i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	var records uint64
	for _, m := range c.Live() {
		records += m.Stats().BackupRecords
	}
	if records != n {
		t.Fatalf("%d backup records for %d puts with one backup", records, n)
	}
}
