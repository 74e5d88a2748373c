package maps

import (
	"context"
	"strconv"
	"testing"

	"github.com/shoalgrid/shoal/op"
)

const benchKeys = 1 << 12

func benchKeyNames() []string {
	keys := make([]string, benchKeys)
	for i := range keys {
		keys[i] = "key-" + strconv.Itoa(i)
	}
	return keys
}

func BenchmarkStatePut(b *testing.B) {
	s := newTestState()
	keys := benchKeyNames()
	value := make([]byte, 64)
	req := op.Request{Service: ServiceName, Name: "bench", Op: OpPut, Value: value}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		req.Key = keys[i%benchKeys]
		s.Apply(t0, &req)
		i++
	}
}

func BenchmarkStatePutTTL(b *testing.B) {
	s := newTestState()
	keys := benchKeyNames()
	req := op.Request{Service: ServiceName, Name: "bench", Op: OpPut, Value: make([]byte, 64), Num: 60_000}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		req.Key = keys[i%benchKeys]
		s.Apply(ms(i/benchKeys), &req)
		i++
	}
}

func BenchmarkStateGet(b *testing.B) {
	s := newTestState()
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
	}
}

func BenchmarkMapPut(b *testing.B) {
	ctx := context.Background()
	m := New(newLocalInvoker(7), "bench")
	keys := benchKeyNames()
	value := make([]byte, 64)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := m.Put(ctx, keys[i%benchKeys], value); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkMapGet(b *testing.B) {
	ctx := context.Background()
	m := New(newLocalInvoker(7), "bench")
	keys := benchKeyNames()
	for _, k := range keys {
		_ = m.Put(ctx, k, make([]byte, 64))
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, ok, err := m.Get(ctx, keys[i%benchKeys]); !ok || err != nil {
			b.Fatal(ok, err)
		}
		i++
	}
}

func BenchmarkTypedGet(b *testing.B) {
	type rec struct {
		ID   int
		Name string
	}
	ctx := context.Background()
	m := NewTyped[rec](newLocalInvoker(7), "bench")
	keys := benchKeyNames()
	for i, k := range keys {
		_ = m.Put(ctx, k, rec{ID: i, Name: k})
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, ok, err := m.Get(ctx, keys[i%benchKeys]); !ok || err != nil {
			b.Fatal(ok, err)
		}
		i++
	}
}
