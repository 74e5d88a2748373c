package maps

import (
	"strconv"
	"testing"

	"github.com/shoalgrid/shoal/op"
)

// BenchmarkStateEntriesPage pages through one partition's share of a
// 10-million-key map (37,000 keys on 271 partitions): the cost of one page
// of 1000 entries, and the bytes of its answer, against OpEntries's whole
// partition.
func BenchmarkStateEntriesPage(b *testing.B) {
	const n = 37_000
	s := newTestState()
	v := make([]byte, 64)
	for i := range n {
		s.Apply(t0, &op.Request{Op: OpPut, Name: "big", Key: "key-" + strconv.Itoa(i), Value: v})
	}
	b.Run("page", func(b *testing.B) {
		b.ReportAllocs()
		var size int
		cursor := ""
		for b.Loop() {
			req := op.Request{Op: OpEntriesPage, Name: "big", Key: cursor, Aux: []byte{pageAfter}}
			resp := s.Apply(t0, &req)
			size = len(resp.Value)
			if !resp.Found {
				cursor = ""
				continue
			}
			es, _ := decodeEntries(resp.Value)
			cursor = es[len(es)-1].key
		}
		b.ReportMetric(float64(size), "bytes/page")
	})
	b.Run("whole", func(b *testing.B) {
		b.ReportAllocs()
		var size int
		for b.Loop() {
			size = len(s.Apply(t0, &op.Request{Op: OpEntries, Name: "big"}).Value)
		}
		b.ReportMetric(float64(size), "bytes/answer")
	})
}
