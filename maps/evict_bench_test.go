package maps

import (
	"testing"
	"time"

	"github.com/shoalgrid/shoal/op"
)

// BenchmarkStatePutLRU puts into a map with policy lru bounded to half the
// keys written, so every put of a new key evicts one.
func BenchmarkStatePutLRU(b *testing.B) {
	s := Service{PartitionCount: 1, Rules: []Rule{{Pattern: "bench", MaxEntries: benchKeys / 2, Eviction: EvictLRU}}}.NewState(0).(*state)
	keys := benchKeyNames()
	req := op.Request{Service: ServiceName, Name: "bench", Op: OpPut, Value: make([]byte, 64)}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		req.Key = keys[i%benchKeys]
		s.Apply(ms(i/benchKeys), &req)
		i++
	}
}

// BenchmarkStateGetIdle reads a map with max-idle: each read is kept for
// the next flush (the flush itself is not timed).
func BenchmarkStateGetIdle(b *testing.B) {
	s := Service{PartitionCount: 1, Rules: []Rule{{Pattern: "bench", MaxIdle: time.Hour}}}.NewState(0).(*state)
	keys := benchKeyNames()
	for _, k := range keys {
		s.Apply(t0, &op.Request{Name: "bench", Op: OpPut, Key: k, Value: make([]byte, 64)})
	}
	req := op.Request{Service: ServiceName, Name: "bench", Op: OpGet}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		req.Key = keys[i%benchKeys]
		if !s.Apply(t0, &req).Found {
			b.Fatal("missing")
		}
		i++
		if i%benchKeys == 0 {
			b.StopTimer()
			s.Apply(t0, &op.Request{Op: op.OpTimer, Name: "bench"})
			b.StartTimer()
		}
	}
}
