package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoalgrid/shoal/queues"
)

// queueBenchPhase is the result of one phase.
type queueBenchPhase struct {
	Phase     string  `json:"phase"`
	Ops       uint64  `json:"ops"`
	Errors    int64   `json:"errors"`
	Seconds   float64 `json:"seconds"`
	OpsPerSec float64 `json:"ops_per_sec"`
	P50ms     float64 `json:"p50_ms"`
	P99ms     float64 `json:"p99_ms"`
	Queues    int     `json:"queues"`
	Clients   int     `json:"clients"`
}

// queueBenchCmd implements "gridctl queue bench".
func queueBenchCmd(ctx context.Context, e env, g *globals, args []string) error {
	fs := newFlagSet("queue bench")
	clients := fs.Int("clients", 50, "concurrent workers")
	nq := fs.Int("queues", 1, "number of queues")
	dur := fs.Duration("duration", 5*time.Second, "length of the offer phase")
	size := fs.Int("value-size", 100, "bytes per item")
	pos, err := parseCommand(e, "queue", fs, g, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("queue", "queue bench takes no arguments")
	}
	if *clients < 1 || *nq < 1 || *dur <= 0 || *size < 0 {
		return usagef("queue", "--clients and --queues must be >= 1, --duration > 0, --value-size >= 0")
	}
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	qs := make([]*queues.Queue, *nq)
	for i := range qs {
		qs[i] = queues.New(c, "bench-q-"+strconv.Itoa(i))
	}
	item := make([]byte, *size)
	phase := func(name string, deadline time.Time, op func(ctx context.Context, q *queues.Queue) (bool, error)) queueBenchPhase {
		var wg sync.WaitGroup
		var errs atomic.Int64
		hs := make([]histogram, *clients)
		start := time.Now()
		for w := range *clients {
			wg.Go(func() {
				q := qs[w%len(qs)]
				for (deadline.IsZero() || time.Now().Before(deadline)) && ctx.Err() == nil {
					octx, cancel := context.WithTimeout(ctx, g.timeout)
					t0 := time.Now()
					more, err := op(octx, q)
					cancel()
					if err != nil {
						errs.Add(1)
						continue
					}
					if !more {
						return
					}
					hs[w].record(time.Since(t0))
				}
			})
		}
		wg.Wait()
		el := time.Since(start)
		var h histogram
		for i := range hs {
			h.merge(&hs[i])
		}
		return queueBenchPhase{Phase: name, Ops: h.count(), Errors: errs.Load(), Seconds: el.Seconds(),
			OpsPerSec: float64(h.count()) / el.Seconds(), P50ms: millis(h.percentile(0.50)), P99ms: millis(h.percentile(0.99)),
			Queues: *nq, Clients: *clients}
	}
	var results []queueBenchPhase
	results = append(results, phase("offer", time.Now().Add(*dur), func(ctx context.Context, q *queues.Queue) (bool, error) {
		return true, q.Offer(ctx, item)
	}))
	results = append(results, phase("take+ack", time.Time{}, func(ctx context.Context, q *queues.Queue) (bool, error) {
		d, ok, err := q.Take(ctx)
		if err != nil || !ok {
			return false, err
		}
		_, err = d.Ack(ctx)
		return true, err
	}))
	var failed int64
	for _, r := range results {
		failed += r.Errors
		if g.json {
			b, _ := json.Marshal(r)
			fmt.Fprintln(e.stdout, string(b))
			continue
		}
		fmt.Fprintf(e.stdout, "%-9s %8d ops in %6.2fs: %9.0f ops/s  p50 %.3f ms  p99 %.3f ms  errors %d  (%d queues, %d clients)\n",
			r.Phase, r.Ops, r.Seconds, r.OpsPerSec, r.P50ms, r.P99ms, r.Errors, r.Queues, r.Clients)
	}
	if failed > 0 {
		return fmt.Errorf("%d operations failed", failed)
	}
	return nil
}

func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
