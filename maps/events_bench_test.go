package maps

import (
	"testing"

	"github.com/shoalgrid/shoal/op"
)

// BenchmarkStateExecutePut is BenchmarkStatePut through Execute (the
// member core's path), with nobody listening and with a listener that
// wants values (the owner then builds one event per put), and the latter
// with a 60s TTL (the owner arms the map's expiry timer once, expiry.go).
func BenchmarkStateExecutePut(b *testing.B) {
	for _, tc := range []struct {
		name     string
		listened bool
		ttl      int64
	}{{"unlistened", false, 0}, {"listened", true, 0}, {"listened-ttl", true, 60_000}} {
		listened := tc.listened
		b.Run(tc.name, func(b *testing.B) {
			s := newTestState()
			if listened {
				l := listenReq("bench", 1, 1, true)
				s.Apply(t0, &l)
			}
			keys := benchKeyNames()
			req := op.Request{Service: ServiceName, Name: "bench", Op: OpPut, Value: make([]byte, 64), Num: tc.ttl}
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
