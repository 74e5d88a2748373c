package main

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

var quantiles = []float64{0.5, 0.9, 0.99, 0.999}

// exactPercentile is the nearest-rank definition the histogram estimates.
func exactPercentile(sorted []int64, q float64) int64 {
	rank := int(math.Ceil(q * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// checkAgainstExact records samples and compares every reported percentile
// with the exact one: the error must stay within 1% (the design bound is
// 0.2%).
func checkAgainstExact(t *testing.T, name string, samples []int64) {
	t.Helper()
	h := &histogram{}
	for _, v := range samples {
		h.record(time.Duration(v))
	}
	sorted := slices.Sorted(slices.Values(samples))
	for _, q := range quantiles {
		want := float64(exactPercentile(sorted, q))
		got := float64(h.percentile(q))
		if math.Abs(got-want) > 0.01*want {
			t.Errorf("%s: p%v = %v, exact %v (error %.3f%%)", name, q*100, got, want, 100*math.Abs(got-want)/want)
		}
	}
	if h.count() != uint64(len(samples)) || int64(h.min) != sorted[0] || h.max != sorted[len(sorted)-1] {
		t.Errorf("%s: count %d min %d max %d", name, h.count(), h.min, h.max)
	}
}

func TestHistogramUniform(t *testing.T) {
	// Every latency from 1 µs to 1 s in 1 µs steps: the percentiles are
	// known in closed form.
	h := &histogram{}
	for i := int64(1); i <= 1_000_000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	for _, q := range quantiles {
		want := q * float64(time.Second)
		if got := float64(h.percentile(q)); math.Abs(got-want) > 0.01*want {
			t.Errorf("p%v = %v, want %v", q*100, time.Duration(got), time.Duration(want))
		}
	}
	if m := h.mean(); m < 499*time.Millisecond || m > 501*time.Millisecond {
		t.Errorf("mean %v", m)
	}
}

func TestHistogramDistributions(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 200_000
	dists := map[string]func() int64{
		// Typical service latency: exponential around 300 µs.
		"exponential": func() int64 { return int64(rng.ExpFloat64() * 300e3) },
		// Heavy tail.
		"lognormal": func() int64 { return int64(math.Exp(12 + 1.5*rng.NormFloat64())) },
		// Fast path plus rare slow path: p99.9 falls in the second mode.
		"bimodal": func() int64 {
			if rng.IntN(100) == 0 {
				return 50e6 + rng.Int64N(10e6)
			}
			return 100e3 + rng.Int64N(50e3)
		},
		// Values in the exact range and just above it.
		"small": func() int64 { return rng.Int64N(2000) + 1 },
	}
	for name, gen := range dists {
		samples := make([]int64, n)
		for i := range samples {
			samples[i] = max(gen(), 1)
		}
		checkAgainstExact(t, name, samples)
	}
}

func TestHistogramConstantAndEdges(t *testing.T) {
	h := &histogram{}
	if h.percentile(0.5) != 0 || h.mean() != 0 {
		t.Error("empty histogram should report 0")
	}
	for range 1000 {
		h.record(1234567 * time.Nanosecond)
	}
	for _, q := range quantiles {
		if got := h.percentile(q); got != 1234567 {
			t.Errorf("constant: p%v = %v", q*100, got)
		}
	}
	h = &histogram{}
	h.record(-5) // clock step: counted as zero
	h.record(time.Duration(math.MaxInt64))
	if h.percentile(0.5) != 0 || h.percentile(1) != time.Duration(math.MaxInt64) {
		t.Errorf("edges: %v %v", h.percentile(0.5), h.percentile(1))
	}
}

func TestBucketsCoverValues(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	check := func(v int64) {
		i := bucketOf(v)
		lo, w := bucketRange(i)
		if i < 0 || i >= histBuckets || v < lo || v-lo >= w {
			t.Fatalf("v=%d: bucket %d = [%d, %d+%d)", v, i, lo, lo, w)
		}
		if v >= 512 && float64(w)/float64(lo) > 1.0/256 {
			t.Fatalf("v=%d: bucket width %d too wide for %d", v, w, lo)
		}
	}
	for v := range int64(5000) {
		check(v)
	}
	for s := range 63 {
		p := int64(1) << s
		check(p)
		check(p - 1)
		check(p + 1)
	}
	check(math.MaxInt64)
	for range 100_000 {
		check(rng.Int64N(math.MaxInt64))
	}
	// Bucket indexes increase with the value, so scanning buckets in order
	// visits samples in order.
	prev := -1
	for v := int64(0); v < 1<<22; v += 37 {
		if i := bucketOf(v); i < prev {
			t.Fatalf("bucketOf(%d) = %d < %d", v, i, prev)
		} else {
			prev = i
		}
	}
}

func TestHistogramMerge(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	all, a, b := &histogram{}, &histogram{}, &histogram{}
	for i := range 10000 {
		d := time.Duration(rng.Int64N(int64(time.Second)))
		all.record(d)
		if i%3 == 0 {
			a.record(d)
		} else {
			b.record(d)
		}
	}
	m := &histogram{}
	m.merge(a)
	m.merge(b)
	m.merge(&histogram{})
	if m.counts != all.counts || m.total != all.total || m.min != all.min || m.max != all.max {
		t.Fatal("merged histogram differs from the one that saw every sample")
	}
	for _, q := range quantiles {
		if m.percentile(q) != all.percentile(q) {
			t.Errorf("p%v differs", q*100)
		}
	}
}
