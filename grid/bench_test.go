package grid_test

// Benchmarks of embedded members: a 3-member cluster in this process, on
// loopback, with maps.Map proxies on the members themselves (as an
// application embedding grid.Member would use them). Each parallel worker
// uses the proxy of one member (round robin), so about two calls in three
// are forwarded to the key's owner over a member-to-member connection and
// one in three runs locally.
//
//	go test -run '^$' -bench 'Embedded' -benchmem -benchtime=2s -count=1 ./grid/
//
// Sub-benchmarks: backups=0 (ProfilePerformance), backups=1 (default: one
// synchronous backup), backups=2 (Backups{Sync: 2}) and async=1
// (Backups{Async: 1}). Values are 100 bytes; keys are drawn uniformly from
// 100,000 names, all written once before the timer starts. Figures: ops/s,
// and p50/p99 latency of one call in microseconds. docs/benchmarks.md has
// the measured figures.

import (
	"context"
	"math"
	"math/bits"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/grid/gridtest"
	"github.com/shoalgrid/shoal/maps"
)

const (
	benchKeySpace  = 100_000
	benchValueSize = 100
	benchMapName   = "bench"
)

// benchSetup is one backup configuration of the cluster.
type benchSetup struct {
	name string
	cfg  func(*grid.Config)
}

func benchSetups() []benchSetup {
	return []benchSetup{
		{"backups=0", func(c *grid.Config) { c.Profile = grid.ProfilePerformance }},
		{"backups=1", func(c *grid.Config) {}},
		{"backups=2", func(c *grid.Config) { c.Backups = &grid.Backups{Sync: 2} }},
		{"async=1", func(c *grid.Config) { c.Backups = &grid.Backups{Sync: 0, Async: 1} }},
	}
}

func benchKeys() []string {
	keys := make([]string, benchKeySpace)
	for i := range keys {
		keys[i] = "key:" + strconv.Itoa(i)
	}
	return keys
}

func benchValue() []byte {
	v := make([]byte, benchValueSize)
	for i := range v {
		v[i] = 'a' + byte(i%26)
	}
	return v
}

// benchTB hands gridtest a TB whose cleanups the benchmark runs itself: a
// sub-benchmark's function runs several times (growing b.N) and its
// cleanups run after each, but the cluster should live across them.
type benchTB struct {
	testing.TB
	cleanups *[]func()
}

func (t benchTB) Cleanup(f func()) { *t.cleanups = append(*t.cleanups, f) }

func runBenchCleanups(fs *[]func()) {
	for i := len(*fs) - 1; i >= 0; i-- {
		(*fs)[i]()
	}
	*fs = nil
}

// benchPrefill writes every key once, with 50 workers.
func benchPrefill(tb testing.TB, mps []*maps.Map, keys []string, value []byte) {
	tb.Helper()
	var next atomic.Int64
	var failed atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	for w := range 50 {
		wg.Go(func() {
			mp := mps[w%len(mps)]
			for {
				i := next.Add(1) - 1
				if i >= int64(len(keys)) {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := mp.Put(ctx, keys[i], value)
				cancel()
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		tb.Fatalf("prefill: %d puts failed; first: %v", n, *firstErr.Load())
	}
}

// latHist is a log-linear latency histogram (32 sub-buckets per power of
// two, about 3% resolution) that records without allocating.
type latHist struct {
	n     [64 * 32]uint64
	total uint64
}

func (h *latHist) record(d time.Duration) {
	v := uint64(max(d, 1))
	e := bits.Len64(v) - 1
	var sub uint64
	if e >= 5 {
		sub = (v >> (e - 5)) & 31
	} else {
		sub = (v << (5 - e)) & 31
	}
	h.n[e*32+int(sub)]++
	h.total++
}

func (h *latHist) merge(o *latHist) {
	for i, n := range o.n {
		h.n[i] += n
	}
	h.total += o.total
}

// quantile returns the middle of the bucket holding quantile q.
func (h *latHist) quantile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	target := max(uint64(math.Ceil(q*float64(h.total))), 1)
	var c uint64
	for i, n := range h.n {
		c += n
		if c >= target {
			e, sub := i/32, uint64(i%32)
			lo := float64(32+sub) * math.Ldexp(1, e) / 32
			hi := float64(33+sub) * math.Ldexp(1, e) / 32
			return time.Duration((lo + hi) / 2)
		}
	}
	return 0
}

// benchReport adds ops/s and latency quantiles to b's result.
func benchReport(b *testing.B, h *latHist) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	b.ReportMetric(float64(h.quantile(0.50))/1e3, "p50-us")
	b.ReportMetric(float64(h.quantile(0.99))/1e3, "p99-us")
}

func BenchmarkEmbeddedPut(b *testing.B) { benchEmbedded(b, true) }

func BenchmarkEmbeddedGet(b *testing.B) { benchEmbedded(b, false) }

func benchEmbedded(b *testing.B, put bool) {
	keys := benchKeys()
	value := benchValue()
	var cleanups []func()
	b.Cleanup(func() { runBenchCleanups(&cleanups) })
	for _, s := range benchSetups() {
		var mps []*maps.Map
		b.Run(s.name, func(b *testing.B) {
			if mps == nil {
				// Started on the first run only, and only when the
				// -bench filter selects this sub-benchmark.
				cl := gridtest.New(benchTB{b, &cleanups}, 3, gridtest.WithConfig(s.cfg))
				for _, m := range cl.Live() {
					mps = append(mps, maps.New(m, benchMapName))
				}
				benchPrefill(b, mps, keys, value)
			}
			ctx := context.Background()
			var (
				worker atomic.Uint64
				mu     sync.Mutex
				hist   latHist
				errs   atomic.Int64
				misses atomic.Int64
			)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				w := worker.Add(1)
				mp := mps[w%uint64(len(mps))]
				rng := rand.New(rand.NewPCG(w, 0x5eed))
				h := new(latHist)
				for pb.Next() {
					k := keys[rng.IntN(len(keys))]
					start := time.Now()
					var err error
					if put {
						err = mp.Put(ctx, k, value)
					} else {
						var found bool
						_, found, err = mp.Get(ctx, k)
						if err == nil && !found {
							misses.Add(1)
						}
					}
					h.record(time.Since(start))
					if err != nil && errs.Add(1) == 1 {
						b.Error(err)
					}
				}
				mu.Lock()
				hist.merge(h)
				mu.Unlock()
			})
			b.StopTimer()
			benchReport(b, &hist)
			if n := misses.Load(); n > 0 {
				b.Errorf("%d gets missed prefilled keys", n)
			}
		})
		runBenchCleanups(&cleanups)
	}
}
