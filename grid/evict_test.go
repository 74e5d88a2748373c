package grid_test

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/grid/gridtest"
	"github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/op"
)

// replicasEqual checks that every replica of every partition holds the
// same map state as its owner (snapshots compared at one instant). Records
// the owner's timers send are not waited for by anybody, so a backup may
// be a record behind for a moment: the check is retried until it holds.
func replicasEqual(t *testing.T, c *gridtest.Cluster, parts int) {
	t.Helper()
	gridtest.Eventually(t, 10*time.Second, func() (bool, string) {
		now := time.Now()
		copies := 0
		for p := range int32(parts) {
			var first []byte
			held := 0
			for _, mb := range c.Live() {
				snap, ok := mb.StateSnapshotForTest(p, maps.ServiceName, now)
				if !ok {
					continue
				}
				held++
				if held == 1 {
					first = snap
				} else if !bytes.Equal(first, snap) {
					return false, fmt.Sprintf("partition %d: replica on %s differs from another replica", p, mb.Name())
				}
			}
			copies += max(held-1, 0)
		}
		return copies > 0, "no partition has a backup to compare"
	})
}

// TestMapEvictionBoundAndFailover writes far more keys than a map's
// max-entries (policy lru) into a 3-member cluster, 4 writers at once: no write is refused,
// the map never holds more than its bound, every backup ends equal to its
// owner, and after the owner of a partition crashes the bound still holds
// under more writes.
func TestMapEvictionBoundAndFailover(t *testing.T) {
	const parts, bound = 16, 160 // 10 per partition
	c := gridtest.New(t, 3, gridtest.WithPartitions(parts), gridtest.WithConfig(func(cfg *grid.Config) {
		cfg.Services[0] = maps.Service{Rules: []maps.Rule{{Pattern: "cache", MaxEntries: bound, Eviction: maps.EvictLRU}}, PartitionCount: parts}
	}))
	ctx := ctxT(t, 120*time.Second)
	// write puts keys from..to-1 with 4 concurrent writers, embedded in
	// the live members in turn, and checks the map's size every 100 puts.
	write := func(from, to int) int {
		var mu sync.Mutex
		most, done := 0, 0
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for w := range 4 {
			wm := maps.New(c.Live()[w%len(c.Live())], "cache")
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := from + w; i < to; i += 4 {
					if err := wm.Put(ctx, fmt.Sprintf("k%d", i), []byte("v")); err != nil {
						errs <- fmt.Errorf("put %d into an evicting map: %w", i, err)
						return
					}
					mu.Lock()
					done++
					check := done%100 == 0
					mu.Unlock()
					if !check {
						continue
					}
					n, err := wm.Size(ctx)
					if err != nil {
						errs <- err
						return
					}
					if n > bound {
						errs <- fmt.Errorf("after about %d puts the map holds %d > %d", done, n, bound)
						return
					}
					mu.Lock()
					most = max(most, n)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		return most
	}
	most := write(0, 2000)
	t.Logf("2000 distinct keys into max-entries %d (lru): at most %d held", bound, most)
	if most < bound/2 {
		t.Fatalf("the map held only %d: eviction threw away far more than needed", most)
	}
	replicasEqual(t, c, parts)
	c.Crash(ownerIndex(t, c, "k1999"))
	c.WaitStable()
	most = write(2000, 3000)
	t.Logf("after a failover, 1000 more: at most %d held", most)
	replicasEqual(t, c, parts)
}

// TestMemoryGuardEvictsMapsWithPolicy fills a map with eviction policy lru
// far past the member's memory guard: every put is accepted (the owners
// evict instead of refusing), the map's data stays near the limit, backups
// stay equal to owners, and a map without a policy is still refused while
// the member is full.
func TestMemoryGuardEvictsMapsWithPolicy(t *testing.T) {
	const headroom = 24 << 20
	const parts = 31
	limit := heapInUse() + headroom
	c := gridtest.New(t, 2, gridtest.WithPartitions(parts), gridtest.WithConfig(func(cfg *grid.Config) {
		cfg.MaxMemory = limit
		cfg.Services[0] = maps.Service{Rules: []maps.Rule{{Pattern: "cache", Eviction: maps.EvictLRU}}, PartitionCount: parts}
	}))
	ctx := ctxT(t, 120*time.Second)
	m := maps.New(c.Member(0), "cache")
	value := make([]byte, 16<<10)
	puts := 8 * headroom / len(value)
	most := 0
	sawFull, plainRefused := false, 0
	var peak uint64
	for i := range puts {
		value[0] = byte(i)
		if err := m.Put(ctx, fmt.Sprintf("k%d", i), value); err != nil {
			t.Fatalf("put %d of %d into an evicting map: %v", i, puts, err)
		}
		if i%256 == 255 {
			n, err := m.Size(ctx)
			if err != nil {
				t.Fatal(err)
			}
			most = max(most, n)
			_, used, _ := c.Member(0).MemoryGuard()
			peak = max(peak, used)
			if _, _, full := c.Member(0).MemoryGuard(); full {
				sawFull = true
				// The guard samples every 50ms: a refusal is what counts.
				if err := maps.New(c.Member(0), "plain").Put(ctx, fmt.Sprintf("x%d", i), value); errors.Is(err, op.ErrMapFull) {
					plainRefused++
				} else if err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	evicted := c.Member(0).MemoryEvictions() + c.Member(1).MemoryEvictions()
	n, _ := m.Size(ctx)
	t.Logf("%d puts of %d KiB (%d MiB) under a %d MiB guard (%d MiB headroom): at most %d entries (%d MiB, held twice: owner and backup), %d at the end, %d evicted; peak sampled heap in use %d MiB",
		puts, len(value)>>10, puts*len(value)>>20, limit>>20, headroom>>20, most, most*len(value)>>20, n, evicted, peak>>20)
	if evicted == 0 || !sawFull || plainRefused == 0 {
		t.Fatalf("nothing evicted (full seen: %v) or a map without policy never refused (%d): the guard never engaged", sawFull, plainRefused)
	}
	// Owner and backup copies are both in this process's heap, with
	// whatever else the process holds (other tests' garbage too): the
	// entries stay under the guard, where 8 times the headroom was written.
	if 2*most*len(value) > int(limit) {
		t.Fatalf("the map held %d entries (%d MiB twice) under a %d MiB guard", most, most*len(value)>>20, limit>>20)
	}
	replicasEqual(t, c, parts)
	runtime.KeepAlive(value)
}

// TestMaxIdleCluster: entries of a map with max-idle expire on the owner's
// timer without anybody touching them, also after a failover; reads the
// owner served reach the backup (flushed), so the new owner does not
// expire an entry read just before the crash at its write time's deadline.
func TestMaxIdleCluster(t *testing.T) {
	const idle = 4 * time.Second
	c := gridtest.New(t, 3, gridtest.WithConfig(func(cfg *grid.Config) {
		cfg.Services[0] = maps.Service{Rules: []maps.Rule{{Pattern: "sessions", MaxIdle: idle}}}
	}))
	ctx := ctxT(t, 120*time.Second)
	m := maps.New(c.Member(0), "sessions")
	size := func() int {
		n, err := m.Size(ctx) // Size reads no entry: it does not count as an access
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	gone := func(what string, deadline time.Duration) time.Time {
		gridtest.Eventually(t, deadline, func() (bool, string) {
			n := size()
			return n == 0, fmt.Sprintf("%s: %d entries left", what, n)
		})
		return time.Now()
	}
	// Expiry on the owner, nobody reading.
	start := time.Now()
	if err := m.Put(ctx, "a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	at := gone("untouched entry", 20*time.Second)
	if at.Sub(start) < idle {
		t.Fatalf("expired after %v < max-idle %v", at.Sub(start), idle)
	}
	replicasEqual(t, c, 271)

	// Reads keep an entry; the crash of its owner keeps what was flushed.
	written := time.Now()
	if err := m.Put(ctx, "b", []byte("1")); err != nil {
		t.Fatal(err)
	}
	for time.Since(written) < 1500*time.Millisecond {
		if _, ok, err := m.Get(ctx, "b"); err != nil || !ok {
			t.Fatalf("get b: %v %v", ok, err)
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	c.Crash(ownerIndex(t, c, "b"))
	m = maps.New(c.Live()[0], "sessions")
	// The backup learned reads after written+0.3s (flushes every
	// max-idle/8 = 0.5s): before written+idle+0.3s, b must still be there,
	// whereas without replicated reads it would go at written+idle.
	for {
		now := time.Now()
		if now.Sub(written) >= idle+300*time.Millisecond {
			break
		}
		if n := size(); n != 1 {
			t.Fatalf("b gone %v after its write, though read until %v before the crash", now.Sub(written), 1500*time.Millisecond)
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	gone("entry after failover", 20*time.Second)
	c.WaitStable()
	replicasEqual(t, c, 271)
}
