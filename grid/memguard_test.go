package grid_test

import (
	"errors"
	"fmt"
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
	const headroom = 24 << 20
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
		if err := m.Put(ctx, fmt.Sprintf("k%d", i), value); err != nil {
			refused = err
			break
		}
		accepted++
	}
	if !errors.Is(refused, op.ErrMapFull) {
		t.Fatalf("after %d puts of %d bytes (limit %d): err %v, want ErrMapFull", accepted, len(value), limit, refused)
	}
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
