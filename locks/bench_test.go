package locks

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoalgrid/shoal/op"
)

// State-level benchmarks: the cost of the state machine alone, per
// operation, as the member core would drive it.

func BenchmarkStateLockUnlock(b *testing.B) {
	s := newState(0)
	var x op.Exec
	now := time.Unix(1_000_000, 0)
	lock := op.Request{Service: ServiceName, Name: "L", Op: OpLock, Value: []byte("o"), Origin: 1}
	unlock := op.Request{Service: ServiceName, Name: "L", Op: OpUnlock, Value: []byte("o"), Origin: 1}
	b.ReportAllocs()
	for b.Loop() {
		lock.CallSeq++
		x.Reset(now, 0, true, &lock)
		if r := s.Execute(&x, &lock); !r.Found {
			b.Fatal(r.Err())
		}
		unlock.CallSeq = lock.CallSeq
		x.Reset(now, 0, true, &unlock)
		if r := s.Execute(&x, &unlock); r.Code != op.OK {
			b.Fatal(r.Err())
		}
	}
}

// BenchmarkStateHandOver measures one hand-over in a queue of 64 waiters:
// the holder unlocks, the first waiter is granted, and a new waiter joins.
func BenchmarkStateHandOver(b *testing.B) {
	s := newState(0)
	var x op.Exec
	now := time.Unix(1_000_000, 0)
	req := func(code uint8, session uint64, seq uint64) *op.Request {
		return &op.Request{Service: ServiceName, Name: "L", Op: code, Value: []byte("o"), Origin: session, CallSeq: seq}
	}
	const queue = 64
	for i := range uint64(queue + 1) {
		r := req(OpLock, i+1, 1)
		x.Reset(now, 0, true, r)
		s.Execute(&x, r)
	}
	holder, next := uint64(1), uint64(queue+2)
	seq := uint64(1)
	b.ReportAllocs()
	for b.Loop() {
		seq++
		r := req(OpUnlock, holder, seq)
		x.Reset(now, 0, true, r)
		if resp := s.Execute(&x, r); resp.Code != op.OK || len(x.Effects()) == 0 {
			b.Fatal(resp.Err())
		}
		holder++
		r = req(OpLock, next, seq)
		x.Reset(now, 0, true, r)
		s.Execute(&x, r)
		next++
	}
}

// Proxy benchmarks over the in-process core harness (no network): the
// cost of the proxy, the codec and the parking machinery.

func BenchmarkProxyUncontended(b *testing.B) {
	c := newSimCore(271)
	defer c.close()
	l := New(c.invoker(1), "bench")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := l.Lock(ctx); err != nil {
			b.Fatal(err)
		}
		if err := l.Unlock(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkProxyContendedOneLock(b *testing.B) {
	c := newSimCore(271)
	defer c.close()
	ctx := context.Background()
	var sessions atomic.Uint64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		l := New(c.invoker(sessions.Add(1)), "bench")
		for pb.Next() {
			if _, err := l.Lock(ctx); err != nil {
				b.Error(err)
				return
			}
			if err := l.Unlock(ctx); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkProxyManyLocks(b *testing.B) {
	c := newSimCore(271)
	defer c.close()
	ctx := context.Background()
	var sessions atomic.Uint64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		s := sessions.Add(1)
		inv := c.invoker(s)
		ls := make([]*Lock, 64)
		for i := range ls {
			ls[i] = New(inv, "bench-"+strconv.FormatUint(s, 10)+"-"+strconv.Itoa(i))
		}
		i := 0
		for pb.Next() {
			l := ls[i%len(ls)]
			i++
			if _, err := l.Lock(ctx); err != nil {
				b.Error(err)
				return
			}
			if err := l.Unlock(ctx); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
