package grid_test

import (
	"errors"
	"fmt"
	"runtime"
	"runtime/metrics"
	"strings"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/grid/gridtest"
	"github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/queues"
)

func heapInUse() int64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return int64(s[0].Value.Uint64())
}

// TestMemoryGuardRefusesGrowthKeepsReadsAndDeletes fills a two-member
// cluster past a small MaxMemory: the owners refuse puts, offers and claims
// with op.ErrMapFull, still answer gets and deletes, and accept writes
// again once deletes have freed the memory.
func TestMemoryGuardRefusesGrowthKeepsReadsAndDeletes(t *testing.T) {
	const headroom, margin = 24 << 20, 4 << 20
	limit := heapInUse() + headroom
	c := gridtest.New(t, 2,
		gridtest.WithServices(queues.Service{}, maps.IdemService{}),
		gridtest.WithConfig(func(cfg *grid.Config) { cfg.MaxMemory = limit }))
	ctx := ctxT(t, 60*time.Second)
	m := maps.New(c.Member(0), "big")
	value := make([]byte, 16<<10)
	// Writes of at most 8 times the headroom: the guard must refuse
	// before, or the test fails.
	accepted := 0
	var refused error
	for i := 0; i < 8*headroom/len(value); i++ {
		value[0] = byte(i)
		err := m.Put(ctx, fmt.Sprintf("k%d", i), value)
		if errors.Is(err, op.ErrMapFull) && 2*accepted*len(value) < 3*margin {
			// Refused early: garbage (of this test's puts, or left by
			// earlier tests while the collector lagged on a loaded
			// machine) filled the heap in use. Collect, wait for both
			// guards to see the heap fall, and go on filling, so the
			// entries end up outweighing the margin below.
			runtime.GC()
			gridtest.Eventually(t, 10*time.Second, func() (bool, string) {
				_, used0, full0 := c.Member(0).MemoryGuard()
				_, used1, full1 := c.Member(1).MemoryGuard()
				return !full0 && !full1, fmt.Sprintf("guards still full after a collection: heap in use %d / %d, limit %d", used0, used1, limit)
			})
			i--
			continue
		}
		if err != nil {
			refused = err
			break
		}
		accepted++
	}
	if !errors.Is(refused, op.ErrMapFull) {
		t.Fatalf("after %d puts of %d bytes (limit %d): err %v, want ErrMapFull", accepted, len(value), limit, refused)
	}
	// Garbage counts in the heap in use, so the refusal may come while the
	// live data are below the limit, and a collection would lift it. A
	// ballast tops the live heap up to margin above the limit, and the
	// entries (held twice: owner and backup) weigh more than that margin
	// twice over, so deleting them brings the heap back under the limit.
	runtime.GC()
	ballast := make([]byte, max(0, limit+margin-heapInUse()))
	for i := range ballast {
		ballast[i] = byte(i)
	}
	defer runtime.KeepAlive(ballast)
	if 2*accepted*len(value) < 2*margin {
		t.Fatalf("only %d bytes of entries: deleting them would not bring the heap under the limit", accepted*len(value))
	}
	gridtest.Eventually(t, 10*time.Second, func() (bool, string) {
		_, used, full := c.Member(1).MemoryGuard()
		return full, fmt.Sprintf("member guard not full: heap in use %d, limit %d", used, limit)
	})
	if !strings.Contains(refused.Error(), "limit") || !strings.Contains(refused.Error(), "heap in use") {
		t.Fatalf("refusal does not say how much is used and the limit: %v", refused)
	}
	t.Logf("refused after %d puts (%d MiB of values), limit %d MiB: %v", accepted, accepted*len(value)>>20, limit>>20, refused)
	// Other structures that grow are refused too; reads keep working.
	if err := queues.New(c.Member(1), "q").Offer(ctx, []byte("x")); !errors.Is(err, op.ErrMapFull) {
		t.Fatalf("queue offer while full: %v, want ErrMapFull", err)
	}
	if _, err := maps.NewIdempotencyStore(c.Member(1), "ids", time.Minute).Claim(ctx, "id-1"); !errors.Is(err, op.ErrMapFull) {
		t.Fatalf("claim while full: %v, want ErrMapFull", err)
	}
	if v, ok, err := m.Get(ctx, "k0"); err != nil || !ok || len(v) != len(value) {
		t.Fatalf("get while full: %d bytes, %v, %v", len(v), ok, err)
	}
	// The cluster holds exactly the accepted puts (owners count theirs).
	total := 0
	for _, mb := range c.Live() {
		total += mb.Stats().Entries
	}
	if total != accepted {
		t.Fatalf("members hold %d entries, %d puts were accepted", total, accepted)
	}
	// Deletes work while full, and free the memory: writes are accepted
	// again (the member forces a collection while it stays full).
	for i := range accepted {
		if _, err := m.Delete(ctx, fmt.Sprintf("k%d", i)); err != nil {
			t.Fatalf("delete k%d while full: %v", i, err)
		}
	}
	gridtest.Eventually(t, 20*time.Second, func() (bool, string) {
		err := m.Put(ctx, "after", value)
		return err == nil, fmt.Sprintf("put after deletes: %v", err)
	})
}

// TestMapMaxEntriesHoldsAfterFailover bounds a map to one entry per
// partition: a second new key in a partition is refused with ErrMapFull,
// and still is after the owner crashes and its backup takes over (backups
// applied exactly what the owner did).
func TestMapMaxEntriesHoldsAfterFailover(t *testing.T) {
	const parts = 16
	c := gridtest.New(t, 3, gridtest.WithPartitions(parts), gridtest.WithConfig(func(cfg *grid.Config) {
		cfg.Services[0] = maps.Service{Rules: []maps.Rule{{Pattern: "bounded", MaxEntries: parts}}, PartitionCount: parts}
	}))
	ctx := ctxT(t, 60*time.Second)
	m := maps.New(c.Member(0), "bounded")
	// Two keys of one partition.
	var k1, k2 string
	for i := 0; k2 == ""; i++ {
		k := fmt.Sprintf("k%d", i)
		switch {
		case k1 == "":
			k1 = k
		case c.Member(0).PartitionOf(k) == c.Member(0).PartitionOf(k1):
			k2 = k
		}
	}
	if err := m.Put(ctx, k1, []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := m.Put(ctx, k2, []byte("v")); !errors.Is(err, op.ErrMapFull) {
		t.Fatalf("second key of a full partition: %v, want ErrMapFull", err)
	}
	if err := m.Put(ctx, k1, []byte("updated")); err != nil {
		t.Fatalf("update in a full map: %v", err)
	}
	if err := maps.New(c.Member(0), "free").Put(ctx, k2, []byte("v")); err != nil {
		t.Fatalf("a map without a rule: %v", err)
	}
	ow, _ := c.Member(0).Table().Owner(c.Member(0).PartitionOf(k1))
	idx := -1
	for i := range 3 {
		if mb := c.Member(i); mb != nil && mb.Name() == ow.Name {
			idx = i
		}
	}
	if idx < 0 {
		t.Fatalf("owner %s of %s is not a member", ow.Name, k1)
	}
	c.Crash(idx)
	c.WaitStable()
	via := maps.New(c.Live()[0], "bounded")
	if v, ok, err := via.Get(ctx, k1); err != nil || !ok || string(v) != "updated" {
		t.Fatalf("after failover: %q %v %v", v, ok, err)
	}
	if err := via.Put(ctx, k2, []byte("v")); !errors.Is(err, op.ErrMapFull) {
		t.Fatalf("after failover, second key of a full partition: %v, want ErrMapFull", err)
	}
	if _, err := via.Delete(ctx, k1); err != nil {
		t.Fatal(err)
	}
	if err := via.Put(ctx, k2, []byte("v")); err != nil {
		t.Fatalf("after a delete: %v", err)
	}
}
