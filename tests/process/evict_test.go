//go:build process

package process_test

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/maps"
)

// TestMemoryGuardEvictsKeepsMemberUp writes 4 times --max-memory into a map
// whose rule has eviction lru (YAML config): every put is acknowledged
// (the member evicts instead of refusing), the process stays up within a
// bounded RSS, the map ends within the limit, and /metrics counts the
// evictions.
func TestMemoryGuardEvictsKeepsMemberUp(t *testing.T) {
	ctx := ctxT(t, 120*time.Second)
	cfg := t.TempDir() + "/node.yaml"
	if err := os.WriteFile(cfg, []byte("maps:\n  - pattern: cache\n    eviction: lru\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	procs := startCluster(t, ctx, 1, "--max-memory", "64MiB", "--profile", "performance", "--config", cfg)
	p := procs[0]
	waitSettled(t, ctx, p)
	c := dial(t, ctx, p)
	m := maps.New(c, "cache")
	value := make([]byte, 64<<10)
	const puts = 4 * (64 << 20) / (64 << 10) // 4 times the limit
	var (
		next    atomic.Int64
		mu      sync.Mutex
		failed  error
		peakRSS int64
	)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > puts {
					return
				}
				if err := m.Put(ctx, fmt.Sprintf("k%d", i), value); err != nil {
					mu.Lock()
					if failed == nil {
						failed = fmt.Errorf("put %d: %w", i, err)
					}
					mu.Unlock()
					return
				}
			}
		})
	}
	sampling, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-sampling:
				return
			case <-tick.C:
				if p.Exited() {
					return
				}
				peakRSS = max(peakRSS, rssBytes(t, p.Pid()))
			}
		}
	}()
	wg.Wait()
	close(sampling)
	<-sampled
	if p.Exited() {
		t.Fatalf("gridnode exited while being filled: %s", p.Output())
	}
	if failed != nil {
		t.Fatalf("a put into an evicting map failed: %v", failed)
	}
	n, err := m.Size(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mets, err := p.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d puts of 64 KiB (%d MiB) acknowledged under --max-memory 64MiB: %d entries (%d MiB) left, %v evicted, peak RSS %d MiB",
		puts, puts*len(value)>>20, n, n*len(value)>>20, mets["shoal_memory_evicted_total"], peakRSS>>20)
	if n*len(value) > 64<<20 {
		t.Fatalf("the map holds %d MiB, above the 64 MiB guard", n*len(value)>>20)
	}
	if mets["shoal_memory_evicted_total"] <= 0 {
		t.Fatal("no eviction counted")
	}
	if peakRSS > 256<<20 {
		t.Fatalf("peak RSS %d MiB, want at most 256 MiB with --max-memory 64MiB", peakRSS>>20)
	}
}
