package maps

import (
	"testing"

	"github.com/shoalgrid/shoal/op"
)

// BenchmarkStateExecutePut is BenchmarkStatePut through Execute (the
// member core's path), with nobody listening and with a listener that
// wants values (the owner then builds one event per put).
func BenchmarkStateExecutePut(b *testing.B) {
	for _, listened := range []bool{false, true} {
		name := "unlistened"
		if listened {
			name = "listened"
		}
		b.Run(name, func(b *testing.B) {
			s := newTestState()
			if listened {
				l := listenReq("bench", 1, 1, true)
				s.Apply(t0, &l)
			}
			keys := benchKeyNames()
			req := op.Request{Service: ServiceName, Name: "bench", Op: OpPut, Value: make([]byte, 64)}
			var x op.Exec
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				req.Key = keys[i%benchKeys]
				x.Reset(t0, 3, true, &req)
				s.Execute(&x, &req)
				i++
			}
		})
	}
}
