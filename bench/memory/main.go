// Command memory measures the heap cost of one map entry on a Shoal member:
// it starts one in-process member with the performance profile (no
// backups, so the heap holds exactly one copy of every entry), puts -n
// entries with keys "key:%07d" and -value-size byte values, and prints the
// live-heap growth per entry after a full GC.
//
//	go run ./bench/memory                 # 1,000,000 entries of 100 bytes
//	go run ./bench/memory -wait 0         # skip the steady-state measurement
//	go run ./bench/memory -memprofile /tmp/heap.prof   # where the bytes are
//
// Two figures are printed: right after the puts (the heap then also holds
// the member's table of recent request identities, kept for retries for
// 2 minutes) and, after -wait, in steady state once that table has expired.
// The second is the cost of an entry at rest. Both are per copy: with N
// backups a cluster holds N+1 copies.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoalgrid/shoal/grid"
	"github.com/shoalgrid/shoal/maps"
	"github.com/shoalgrid/shoal/op"
)

type result struct {
	Entries          int     `json:"entries"`
	ValueSize        int     `json:"value_size"`
	KeyLen           int     `json:"key_len"`
	HeapBaseline     uint64  `json:"heap_baseline_bytes"`
	HeapAfterPuts    uint64  `json:"heap_after_puts_bytes"`
	PerEntryAfter    float64 `json:"bytes_per_entry_after_puts"`
	HeapSteady       uint64  `json:"heap_steady_bytes,omitempty"`
	PerEntrySteady   float64 `json:"bytes_per_entry_steady,omitempty"`
	WaitSeconds      float64 `json:"wait_seconds"`
	PutSeconds       float64 `json:"put_seconds"`
	MapSize          int     `json:"map_size"`
	GoVersion        string  `json:"go_version"`
	HeapObjectsAfter uint64  `json:"heap_objects_after_puts"`
}

func heap() runtime.MemStats {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms
}

func main() {
	n := flag.Int("n", 1_000_000, "entries to put")
	size := flag.Int("value-size", 100, "bytes per value")
	workers := flag.Int("workers", 8, "concurrent putters")
	wait := flag.Duration("wait", 125*time.Second, "wait before the steady-state measurement (0: skip)")
	memprofile := flag.String("memprofile", "", "write a heap profile (pprof) of the last measurement to this `file`")
	flag.Parse()

	ctx := context.Background()
	m, err := grid.Start(ctx, grid.Config{
		Name:     "mem",
		BindAddr: "127.0.0.1:0",
		DataAddr: "127.0.0.1:0",
		Profile:  grid.ProfilePerformance,
		Services: []op.Service{maps.Service{}},
		Gossip:   grid.FastGossip(),
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "memory:", err)
		os.Exit(1)
	}
	defer m.Close()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = m.WaitReady(wctx)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "memory:", err)
		os.Exit(1)
	}
	mp := maps.New(m, "mem")
	value := make([]byte, *size)
	for i := range value {
		value[i] = 'a' + byte(i%26)
	}

	base := heap()
	start := time.Now()
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	for range *workers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(*n) {
					return
				}
				// The key is built here and kept by the map, as a key
				// decoded from the wire would be.
				if err := mp.Put(ctx, fmt.Sprintf("key:%07d", i), value); err != nil {
					if failed.Add(1) == 1 {
						fmt.Fprintln(os.Stderr, "memory: put:", err)
					}
				}
			}
		})
	}
	wg.Wait()
	putTime := time.Since(start)
	if failed.Load() > 0 {
		fmt.Fprintf(os.Stderr, "memory: %d puts failed\n", failed.Load())
		os.Exit(1)
	}
	after := heap()
	sz, err := mp.Size(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "memory: size:", err)
		os.Exit(1)
	}
	r := result{
		Entries:          *n,
		ValueSize:        *size,
		KeyLen:           len(fmt.Sprintf("key:%07d", 0)),
		HeapBaseline:     base.HeapAlloc,
		HeapAfterPuts:    after.HeapAlloc,
		PerEntryAfter:    float64(after.HeapAlloc-base.HeapAlloc) / float64(*n),
		PutSeconds:       putTime.Seconds(),
		MapSize:          sz,
		GoVersion:        runtime.Version(),
		HeapObjectsAfter: after.HeapObjects - base.HeapObjects,
		WaitSeconds:      wait.Seconds(),
	}
	fmt.Fprintf(os.Stderr, "memory: %d entries, %.1f B/entry right after the puts\n", *n, r.PerEntryAfter)
	if *wait > 0 {
		fmt.Fprintf(os.Stderr, "memory: waiting %v for the identity table to expire\n", *wait)
		time.Sleep(*wait)
		steady := heap()
		r.HeapSteady = steady.HeapAlloc
		r.PerEntrySteady = float64(steady.HeapAlloc-base.HeapAlloc) / float64(*n)
		fmt.Fprintf(os.Stderr, "memory: %.1f B/entry in steady state\n", r.PerEntrySteady)
		runtime.KeepAlive(mp)
	}
	if *memprofile != "" {
		f, err := os.Create(*memprofile)
		if err == nil {
			runtime.GC()
			err = pprof.WriteHeapProfile(f)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "memory: heap profile:", err)
			os.Exit(1)
		}
	}
	enc := json.NewEncoder(os.Stdout)
	_ = enc.Encode(r)
}
