//go:build process

package process_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/internal/proctest"
	"github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/op"
)

// rssBytes reads a process's resident set size from /proc.
func rssBytes(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read status of pid %d: %v", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS for pid %d", pid)
	return 0
}

// TestMemoryGuardKeepsMemberUp writes into a member started with
// --max-memory 64MiB until it refuses with ErrMapFull, keeps writing for a
// while, and checks that the process stays up and within a bounded RSS,
// still answers reads, deletes and its status, and accepts writes again
// once deletes freed memory.
func TestMemoryGuardKeepsMemberUp(t *testing.T) {
	ctx := ctxT(t, 90*time.Second)
	procs := startCluster(t, ctx, 1, "--max-memory", "64MiB", "--profile", "performance")
	p := procs[0]
	waitSettled(t, ctx, p)
	c := dial(t, ctx, p)
	m := maps.New(c, "big")
	value := make([]byte, 64<<10)

	// 8 writers of 64KiB values; at most 1GiB in total (16 times the
	// limit): the member must refuse before.
	const maxPuts = 1 << 14
	var (
		next, accepted atomic.Int64
		mu             sync.Mutex
		refusals       int
		firstRefusal   error
		otherErr       error
		peakRSS        int64
	)
	refusedFor := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-refusedFor:
					return
				default:
				}
				i := next.Add(1)
				if i > maxPuts {
					return
				}
				err := m.Put(ctx, fmt.Sprintf("k%d", i), value)
				mu.Lock()
				switch {
				case err == nil:
					accepted.Add(1)
				case errors.Is(err, op.ErrMapFull):
					refusals++
					if firstRefusal == nil {
						firstRefusal = err
						// Keep hammering for 2 s after the first refusal.
						time.AfterFunc(2*time.Second, func() { once.Do(func() { close(refusedFor) }) })
					}
				default:
					if otherErr == nil {
						otherErr = err
					}
				}
				mu.Unlock()
			}
		})
	}
	// Sample RSS while writing.
	sampling := make(chan struct{})
	sampled := make(chan struct{})
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
				if r := rssBytes(t, p.Pid()); r > peakRSS {
					peakRSS = r // only this goroutine writes it until sampled is closed
				}
			}
		}
	}()
	wg.Wait()
	close(sampling)
	<-sampled
	if p.Exited() {
		t.Fatalf("gridnode exited while being filled: %s", p.Output())
	}
	if otherErr != nil {
		t.Fatalf("put failed with something else than ErrMapFull: %v", otherErr)
	}
	if firstRefusal == nil {
		t.Fatalf("%d puts of %d bytes accepted, none refused with ErrMapFull", accepted.Load(), len(value))
	}
	t.Logf("accepted %d puts (%d MiB of values), then %d refused: %v", accepted.Load(), accepted.Load()*int64(len(value))>>20, refusals, firstRefusal)
	t.Logf("peak RSS while filling: %d MiB (--max-memory 64MiB)", peakRSS>>20)
	if peakRSS > 256<<20 {
		t.Fatalf("peak RSS %d MiB, want at most 256 MiB with --max-memory 64MiB", peakRSS>>20)
	}
	// The guard shows in /metrics (the member is still above its limit:
	// nothing was deleted yet).
	mets, err := p.Metrics(ctx)
	if err != nil {
		t.Fatalf("metrics while full: %v", err)
	}
	if mets["shoal_memory_limit_bytes"] != 64<<20 || mets["shoal_memory_heap_in_use_bytes"] <= 64<<20 || mets["shoal_memory_full"] != 1 {
		t.Fatalf("memory guard metrics while full: limit %v, heap %v, full %v", mets["shoal_memory_limit_bytes"], mets["shoal_memory_heap_in_use_bytes"], mets["shoal_memory_full"])
	}
	// Still answering: status, reads, deletes.
	if _, err := p.Status(ctx); err != nil {
		t.Fatalf("status while full: %v", err)
	}
	n := int(next.Load())
	got := 0
	for i := 1; i <= n && got < 10; i++ {
		if v, ok, err := m.Get(ctx, fmt.Sprintf("k%d", i)); err != nil {
			t.Fatalf("get while full: %v", err)
		} else if ok && len(v) == len(value) {
			got++
		}
	}
	if got == 0 {
		t.Fatal("no accepted entry could be read back while full")
	}
	for i := 1; i <= n; i++ {
		if _, err := m.Delete(ctx, fmt.Sprintf("k%d", i)); err != nil {
			t.Fatalf("delete while full: %v", err)
		}
	}
	if err := proctest.Poll(ctx, 100*time.Millisecond, func(ctx context.Context) error {
		return m.Put(ctx, "after", value)
	}); err != nil {
		t.Fatalf("writes not accepted again after deleting everything: %v", err)
	}
	t.Logf("RSS after deletes and one accepted put: %d MiB", rssBytes(t, p.Pid())>>20)
}

// TestMapRulesFromConfigFile starts a member whose config file bounds map
// "bounded" to 271 entries, one per partition: a second new key of a partition is
// refused with ErrMapFull through a client, an update is not.
func TestMapRulesFromConfigFile(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	cfg := t.TempDir() + "/node.yaml"
	if err := os.WriteFile(cfg, []byte("maps:\n  - pattern: bounded\n    max-entries: 271\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	procs := startCluster(t, ctx, 1, "--config", cfg, "--profile", "performance")
	waitSettled(t, ctx, procs...)
	c := dial(t, ctx, procs...)
	m := maps.New(c, "bounded")
	var k1, k2 string
	for i := 0; k2 == ""; i++ {
		k := fmt.Sprintf("k%d", i)
		switch {
		case k1 == "":
			k1 = k
		case c.PartitionOf(k) == c.PartitionOf(k1):
			k2 = k
		}
	}
	if err := m.Put(ctx, k1, []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := m.Put(ctx, k2, []byte("v")); !errors.Is(err, op.ErrMapFull) {
		t.Fatalf("second key of a full partition: %v, want ErrMapFull", err)
	}
	if err := m.Put(ctx, k1, []byte("w")); err != nil {
		t.Fatalf("update in a full map: %v", err)
	}
	if err := maps.New(c, "other").Put(ctx, k2, []byte("v")); err != nil {
		t.Fatalf("a map no rule matches: %v", err)
	}
}
