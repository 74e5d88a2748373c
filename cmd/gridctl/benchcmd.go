package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/wire"
)

// progressInterval is how often the live progress line is refreshed.
const progressInterval = 500 * time.Millisecond

// benchOptions are the bench command's flags.
type benchOptions struct {
	cfg    benchConfig
	ratio  string
	mapNm  string
	pre    bool
	asJSON bool
}

// benchCmd implements "gridctl bench": parse and validate, connect, run the
// optional prefill and the measured run with live progress, then report.
func benchCmd(ctx context.Context, e env, g *globals, args []string) error {
	o, err := parseBench(e, g, args)
	if err != nil {
		return err
	}
	if o.cfg.ValueSize > wire.DefaultMaxValueSize {
		// Every put would be refused by the client before sending: fail
		// now rather than report a run made only of errors.
		return fmt.Errorf("--value-size %d: %w", o.cfg.ValueSize,
			op.Errorf(op.CodeTooLarge, "value is %d bytes, limit is %d", o.cfg.ValueSize, wire.DefaultMaxValueSize))
	}
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	gen := newLoadGen(maps.New(c, o.mapNm), o.cfg)
	live := isTerminal(e.stderr)

	if o.pre {
		stop := startProgress(e.stderr, live, "prefill", gen.Progress)
		pr := gen.Prefill(ctx)
		stop()
		if live {
			fmt.Fprintf(e.stderr, "prefilled %d keys in %.2fs\n", pr.Keys, pr.Elapsed.Seconds())
		}
		if pr.Interrupted {
			return errors.New("bench interrupted during prefill")
		}
		if pr.Errors > 0 {
			fmt.Fprintf(e.stderr, "gridctl: prefill: %d of %d puts failed; first error: %s\n", pr.Errors, pr.Keys, oneLine(pr.FirstErr.Error()))
		}
	}

	stop := startProgress(e.stderr, live, "bench", gen.Progress)
	res := gen.Run(ctx)
	stop()

	if o.asJSON {
		err = writeJSON(e.stdout, benchReport(res, o.cfg))
	} else {
		err = writeBench(e.stdout, res, o)
	}
	if err != nil {
		return err
	}
	if res.Interrupted {
		return errors.New("bench interrupted: partial results above")
	}
	if res.Errors > 0 {
		// The report above stands, but a run with failures is not a
		// success: scripts and CI must see it in the exit status.
		return fmt.Errorf("bench: %d of %d operations failed; first error: %s", res.Errors, res.Ops, oneLine(tidy(res.FirstErr.Error())))
	}
	return nil
}

// parseBench parses and validates the bench flags.
func parseBench(e env, g *globals, args []string) (benchOptions, error) {
	fs := newFlagSet("bench")
	var o benchOptions
	fs.IntVar(&o.cfg.Clients, "clients", 50, "concurrent workers")
	fs.Int64Var(&o.cfg.Requests, "requests", 100000, "total operations")
	fs.DurationVar(&o.cfg.Duration, "duration", 0, "run for this long instead")
	fs.IntVar(&o.cfg.Keys, "keys", 100000, "key space size")
	fs.IntVar(&o.cfg.ValueSize, "value-size", 100, "bytes per value")
	fs.StringVar(&o.ratio, "ratio", "1:1", "get:put mix")
	fs.StringVar(&o.mapNm, "map", "bench", "map name")
	fs.BoolVar(&o.pre, "prefill", false, "put every key once first")
	pos, err := parseCommand(e, "bench", fs, g, args)
	if err != nil {
		return o, err
	}
	o.asJSON = g.json
	if len(pos) > 0 {
		return o, usagef("bench", "bench takes no arguments, got %q", pos[0])
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	switch {
	case set["duration"] && set["requests"]:
		return o, usagef("bench", "give --requests or --duration, not both")
	case set["duration"]:
		if o.cfg.Duration <= 0 {
			return o, usagef("bench", "--duration must be positive")
		}
		o.cfg.Requests = 0
	case o.cfg.Requests < 1:
		return o, usagef("bench", "--requests must be at least 1")
	}
	switch {
	case o.cfg.Clients < 1:
		return o, usagef("bench", "--clients must be at least 1")
	case o.cfg.Keys < 1:
		return o, usagef("bench", "--keys must be at least 1")
	case o.cfg.ValueSize < 0:
		return o, usagef("bench", "--value-size must not be negative")
	case o.mapNm == "":
		return o, usagef("bench", "--map is empty")
	}
	if o.cfg.GetWeight, o.cfg.PutWeight, err = parseRatio(o.ratio); err != nil {
		return o, usagef("bench", "--ratio %q: %v", o.ratio, err)
	}
	o.cfg.OpTimeout = g.timeout
	return o, nil
}

// parseRatio parses "G:P" into non-negative weights, not both zero.
func parseRatio(s string) (get, put int, err error) {
	gs, ps, ok := strings.Cut(s, ":")
	if !ok {
		return 0, 0, errors.New("want GETS:PUTS, e.g. 9:1")
	}
	get, err1 := strconv.Atoi(strings.TrimSpace(gs))
	put, err2 := strconv.Atoi(strings.TrimSpace(ps))
	switch {
	case err1 != nil || err2 != nil || get < 0 || put < 0:
		return 0, 0, errors.New("weights must be non-negative integers")
	case get+put == 0:
		return 0, 0, errors.New("weights must not both be zero")
	case get > 1_000_000 || put > 1_000_000:
		return 0, 0, errors.New("weights must be at most 1000000")
	}
	return get, put, nil
}

// benchJSON is the --json report; the field set is part of gridctl's
// interface for scripts.
type benchJSON struct {
	Ops       int64   `json:"ops"`
	Errors    int64   `json:"errors"`
	Seconds   float64 `json:"seconds"`
	OpsPerSec float64 `json:"ops_per_sec"`
	P50       float64 `json:"p50_ms"`
	P90       float64 `json:"p90_ms"`
	P99       float64 `json:"p99_ms"`
	P999      float64 `json:"p999_ms"`
	Gets      int64   `json:"gets"`
	Puts      int64   `json:"puts"`
	Clients   int     `json:"clients"`
	ValueSize int     `json:"value_size"`
}

// benchReport turns a result into the JSON report.
func benchReport(r benchResult, cfg benchConfig) benchJSON {
	return benchJSON{
		Ops:       r.Ops,
		Errors:    r.Errors,
		Seconds:   round(r.Elapsed.Seconds(), 4),
		OpsPerSec: round(opsPerSec(r), 1),
		P50:       ms(r.Latency.percentile(0.50)),
		P90:       ms(r.Latency.percentile(0.90)),
		P99:       ms(r.Latency.percentile(0.99)),
		P999:      ms(r.Latency.percentile(0.999)),
		Gets:      r.Gets,
		Puts:      r.Puts,
		Clients:   cfg.Clients,
		ValueSize: cfg.ValueSize,
	}
}

func opsPerSec(r benchResult) float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Ops) / r.Elapsed.Seconds()
}

// ms converts to milliseconds with microsecond-and-a-bit resolution; more
// digits would only show the histogram's bucket midpoints.
func ms(d time.Duration) float64 { return round(float64(d)/1e6, 4) }

func round(x float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(x*p) / p
}

// writeBench prints the human report.
func writeBench(w io.Writer, r benchResult, o benchOptions) error {
	mode := fmt.Sprintf("%d requests", o.cfg.Requests)
	if o.cfg.Requests == 0 {
		mode = o.cfg.Duration.String()
	}
	fmt.Fprintf(w, "bench on map %q: %s, %d clients, %d-byte values, %d keys, get:put %d:%d\n\n",
		o.mapNm, mode, o.cfg.Clients, o.cfg.ValueSize, o.cfg.Keys, o.cfg.GetWeight, o.cfg.PutWeight)
	h := r.Latency
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "ops\t%d (gets %d, puts %d, get misses %d)\n", r.Ops, r.Gets, r.Puts, r.Misses)
	fmt.Fprintf(tw, "errors\t%d\n", r.Errors)
	fmt.Fprintf(tw, "seconds\t%.3f\n", r.Elapsed.Seconds())
	fmt.Fprintf(tw, "ops/sec\t%.0f\n", opsPerSec(r))
	fmt.Fprintf(tw, "latency ms\tp50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  (mean %.3f, max %.3f)\n",
		ms(h.percentile(0.5)), ms(h.percentile(0.9)), ms(h.percentile(0.99)), ms(h.percentile(0.999)),
		ms(h.mean()), ms(time.Duration(h.max)))
	return tw.Flush()
}

// isTerminal reports whether w is a terminal, where a live progress line
// helps; in a pipe or a file it would only be noise.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// startProgress refreshes a progress line on w every progressInterval until
// the returned function is called, which erases the line. It does nothing
// when live is false.
func startProgress(w io.Writer, live bool, label string, read func() (ops, errs int64)) (stop func()) {
	if !live {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	width := 0
	wg.Go(func() {
		t := time.NewTicker(progressInterval)
		defer t.Stop()
		var lastOps int64
		last := time.Now()
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				ops, errs := read()
				line := progressLine(label, ops, errs, float64(ops-lastOps)/now.Sub(last).Seconds())
				width = max(width, len(line))
				fmt.Fprintf(w, "\r%-*s", width, line)
				lastOps, last = ops, now
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
		if width > 0 {
			fmt.Fprintf(w, "\r%s\r", strings.Repeat(" ", width))
		}
	}
}

// progressLine formats one progress update; rate is over the last interval.
func progressLine(label string, ops, errs int64, rate float64) string {
	return fmt.Sprintf("%s: %d ops, %.0f ops/s, %d errors", label, ops, rate, errs)
}
