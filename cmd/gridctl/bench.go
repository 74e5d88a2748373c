package main

import (
	"context"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoalgrid/shoal/maps"
)

// kvStore is what the load generator needs from a map. *maps.Map satisfies
// it; tests use an in-memory fake so the generator is checked without a
// cluster.
type kvStore interface {
	Get(ctx context.Context, key string) ([]byte, bool, error)
	Put(ctx context.Context, key string, value []byte, opts ...maps.Option) error
}

// benchConfig describes one load-generator run. It is validated by the bench
// command; the generator trusts it.
type benchConfig struct {
	// Clients is the number of concurrent workers (all share one kvStore).
	Clients int
	// Requests is the total number of operations; 0 when Duration is used.
	Requests int64
	// Duration bounds the run when Requests is 0.
	Duration time.Duration
	// Keys is the key-space size: keys are "key:0" .. "key:<Keys-1>".
	Keys int
	// ValueSize is the size of every value put.
	ValueSize int
	// GetWeight and PutWeight set the operation mix (get:put).
	GetWeight, PutWeight int
	// OpTimeout bounds each operation.
	OpTimeout time.Duration
	// Seed makes key and operation choices reproducible (0: random).
	Seed uint64
}

// benchResult is the outcome of one measured run.
type benchResult struct {
	// Ops counts every operation attempted, failed ones included.
	Ops int64
	// Errors counts failed operations.
	Errors int64
	// Gets and Puts split Ops by kind.
	Gets, Puts int64
	// Misses counts gets of absent keys (not errors).
	Misses int64
	// Elapsed is the wall time from the first operation to the last reply.
	Elapsed time.Duration
	// Latency holds the latency of every successful operation. Failed ones
	// are left out: a timeout would report the deadline, not the service.
	Latency *histogram
	// FirstErr is the first error seen, if any.
	FirstErr error
	// Interrupted is true when the caller's context ended the run early.
	Interrupted bool
}

// prefillResult is the outcome of a prefill pass.
type prefillResult struct {
	Keys        int64
	Errors      int64
	Elapsed     time.Duration
	FirstErr    error
	Interrupted bool
}

// loadGen drives load against a kvStore. Run and Prefill must not be called
// concurrently; Progress may be called at any time from another goroutine.
type loadGen struct {
	kv    kvStore
	cfg   benchConfig
	value []byte

	// Live counters of the current phase, read by Progress.
	done atomic.Int64
	errs atomic.Int64

	firstErr atomic.Pointer[error]
}

// newLoadGen returns a generator; the value written by every put is built
// once and shared read-only by all workers.
func newLoadGen(kv kvStore, cfg benchConfig) *loadGen {
	v := make([]byte, cfg.ValueSize)
	for i := range v {
		v[i] = 'a' + byte(i%26)
	}
	return &loadGen{kv: kv, cfg: cfg, value: v}
}

// Progress returns the operations completed and the errors seen so far in
// the current phase, for live display.
func (g *loadGen) Progress() (ops, errs int64) {
	return g.done.Load(), g.errs.Load()
}

// benchKey returns the name of key i of the key space.
func benchKey(i int) string { return "key:" + strconv.Itoa(i) }

func (g *loadGen) noteErr(err error) {
	g.errs.Add(1)
	g.firstErr.CompareAndSwap(nil, &err)
}

func (g *loadGen) takeFirstErr() error {
	if p := g.firstErr.Swap(nil); p != nil {
		return *p
	}
	return nil
}

func (g *loadGen) reset() {
	g.done.Store(0)
	g.errs.Store(0)
	g.firstErr.Store(nil)
}

// Prefill puts every key of the key space once, with Clients workers, so
// that a following get-only run finds its keys. Errors are counted, not
// fatal.
func (g *loadGen) Prefill(ctx context.Context) prefillResult {
	g.reset()
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range g.cfg.Clients {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(g.cfg.Keys) {
					return
				}
				octx, cancel := context.WithTimeout(ctx, g.cfg.OpTimeout)
				err := g.kv.Put(octx, benchKey(int(i)), g.value)
				cancel()
				if err != nil {
					if ctx.Err() != nil {
						return // interrupted, not a failure of the store
					}
					g.noteErr(err)
				}
				g.done.Add(1)
			}
		})
	}
	wg.Wait()
	return prefillResult{
		Keys:        g.done.Load(),
		Errors:      g.errs.Load(),
		Elapsed:     time.Since(start),
		FirstErr:    g.takeFirstErr(),
		Interrupted: ctx.Err() != nil,
	}
}

// workerStats is one worker's private tally, merged after the run so the
// hot loop touches no shared memory except the progress counters.
type workerStats struct {
	gets, puts, misses, errs int64
	hist                     histogram
}

// Run performs the measured run: Requests operations in total (workers
// claim them from a shared counter, so fast workers take more, as clients
// of a real service would), or as many as fit in Duration. An operation in
// flight when Duration ends is completed and counted. Errors are counted and
// the run goes on; cancelling ctx stops it early with Interrupted set.
func (g *loadGen) Run(ctx context.Context) benchResult {
	g.reset()
	var (
		claimed atomic.Int64
		stop    atomic.Bool
		wg      sync.WaitGroup
	)
	seed := g.cfg.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	stats := make([]*workerStats, g.cfg.Clients)
	start := time.Now()
	if g.cfg.Requests <= 0 {
		// Armed after start is taken, so Elapsed is never below Duration.
		t := time.AfterFunc(g.cfg.Duration, func() { stop.Store(true) })
		defer t.Stop()
	}
	for w := range stats {
		st := &workerStats{}
		stats[w] = st
		rng := rand.New(rand.NewPCG(seed, uint64(w)))
		wg.Go(func() { g.worker(ctx, rng, st, &claimed, &stop) })
	}
	wg.Wait()
	res := benchResult{
		Elapsed:     time.Since(start),
		Latency:     &histogram{},
		FirstErr:    g.takeFirstErr(),
		Interrupted: ctx.Err() != nil,
	}
	for _, st := range stats {
		res.Gets += st.gets
		res.Puts += st.puts
		res.Misses += st.misses
		res.Errors += st.errs
		res.Latency.merge(&st.hist)
	}
	res.Ops = res.Gets + res.Puts
	return res
}

// worker issues operations until the request budget is spent, the duration
// has passed or ctx ends.
func (g *loadGen) worker(ctx context.Context, rng *rand.Rand, st *workerStats, claimed *atomic.Int64, stop *atomic.Bool) {
	total := g.cfg.GetWeight + g.cfg.PutWeight
	for !stop.Load() && ctx.Err() == nil {
		if g.cfg.Requests > 0 && claimed.Add(1) > g.cfg.Requests {
			return
		}
		key := benchKey(rng.IntN(g.cfg.Keys))
		isGet := rng.IntN(total) < g.cfg.GetWeight
		octx, cancel := context.WithTimeout(ctx, g.cfg.OpTimeout)
		var (
			err   error
			found = true
		)
		start := time.Now()
		if isGet {
			_, found, err = g.kv.Get(octx, key)
		} else {
			err = g.kv.Put(octx, key, g.value)
		}
		lat := time.Since(start)
		cancel()
		if err != nil && ctx.Err() != nil {
			return // interrupted: the operation is not counted at all
		}
		if isGet {
			st.gets++
		} else {
			st.puts++
		}
		switch {
		case err != nil:
			st.errs++
			g.noteErr(err)
		case !found:
			st.misses++
			st.hist.record(lat)
		default:
			st.hist.record(lat)
		}
		g.done.Add(1)
	}
}
