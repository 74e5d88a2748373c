package grid

import (
	"testing"
	"time"
)

func TestLatencyHistogram(t *testing.T) {
	l := newLatencies([]string{"map", "q"}, func(svc int, o uint8) string {
		if svc == 0 && o == 1 {
			return "put"
		}
		return ""
	})
	for _, d := range []time.Duration{0, 50 * time.Microsecond, 51 * time.Microsecond, 3 * time.Millisecond, time.Minute} {
		l.observe(0, 1, d)
	}
	l.observe(1, 7, time.Millisecond)
	l.observe(2, 1, time.Millisecond)  // unknown service: ignored
	l.observe(-1, 1, time.Millisecond) // idem
	s := l.snapshot()
	if len(s) != 2 {
		t.Fatalf("snapshot %+v, want 2 series", s)
	}
	put := s[0]
	if put.Service != "map" || put.Op != "put" || put.Count != 5 || put.Sum != time.Minute+3*time.Millisecond+101*time.Microsecond {
		t.Errorf("put = %+v", put)
	}
	want := map[int]uint64{0: 2, 1: 1, 6: 1, latencyBoundCount: 1} // ≤50µs: 0 and 50µs; ≤100µs; ≤5ms; +Inf
	for i, n := range put.Buckets {
		if n != want[i] {
			t.Errorf("bucket %d (≤%v) = %d, want %d", i, LatencyBounds()[min(i, latencyBoundCount-1)], n, want[i])
		}
	}
	if q := s[1]; q.Service != "q" || q.Op != "7" || q.Count != 1 || q.Buckets[4] != 1 {
		t.Errorf("q = %+v", q)
	}
}

func TestLatencyObserveAllocatesNothing(t *testing.T) {
	l := newLatencies([]string{"map"}, func(int, uint8) string { return "" })
	l.observe(0, 2, time.Millisecond) // the first call creates the histogram
	if n := testing.AllocsPerRun(1000, func() { l.observe(0, 2, 700*time.Microsecond) }); n != 0 {
		t.Errorf("observe allocates %v times per call", n)
	}
}

func BenchmarkLatencyObserve(b *testing.B) {
	l := newLatencies([]string{"map"}, func(int, uint8) string { return "" })
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.observe(0, 2, 300*time.Microsecond)
		}
	})
}
