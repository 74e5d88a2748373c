package iheap

import (
	"math/rand/v2"
	"slices"
	"testing"
)

type item struct {
	v   int
	pos int
}

func newItemHeap() Heap[*item] {
	return New(func(a, b *item) bool { return a.v < b.v }, func(x *item, i int) { x.pos = i })
}

// check verifies the heap order and that every item knows its position.
func check(t *testing.T, h *Heap[*item]) {
	t.Helper()
	for i, x := range h.Items {
		if x.pos != i {
			t.Fatalf("item %d at %d thinks it is at %d", x.v, i, x.pos)
		}
		if i > 0 && x.v < h.Items[(i-1)/2].v {
			t.Fatalf("item %d at %d is less than its parent %d", x.v, i, h.Items[(i-1)/2].v)
		}
	}
}

// TestRandomOperations runs random pushes, removals, changes and pops
// against a sorted slice and checks order and positions after each.
func TestRandomOperations(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	h := newItemHeap()
	var live []*item
	for step := range 5000 {
		switch op := r.IntN(10); {
		case op < 4 || len(live) == 0:
			x := &item{v: r.IntN(1000)}
			h.Push(x)
			live = append(live, x)
		case op < 6:
			k := r.IntN(len(live))
			x := live[k]
			if got := h.Remove(x.pos); got != x {
				t.Fatalf("step %d: Remove returned %d, want %d", step, got.v, x.v)
			}
			if x.pos != -1 {
				t.Fatalf("step %d: removed item still at %d", step, x.pos)
			}
			live = slices.Delete(live, k, k+1)
		case op < 8:
			x := live[r.IntN(len(live))]
			x.v = r.IntN(1000)
			h.Fix(x.pos)
		default:
			minV := slices.MinFunc(live, func(a, b *item) int { return a.v - b.v }).v
			x := h.Pop()
			if x.v != minV {
				t.Fatalf("step %d: Pop gave %d, least is %d", step, x.v, minV)
			}
			live = slices.DeleteFunc(live, func(y *item) bool { return y == x })
		}
		if h.Len() != len(live) {
			t.Fatalf("step %d: %d items, want %d", step, h.Len(), len(live))
		}
		check(t, &h)
	}
}

func TestPopSorts(t *testing.T) {
	h := New(func(a, b int) bool { return a < b }, nil) // no positions kept
	in := []int{5, 3, 9, 1, 1, 7, 0, 8}
	for _, v := range in {
		h.Push(v)
	}
	var out []int
	for h.Len() > 0 {
		out = append(out, h.Pop())
	}
	if !slices.IsSorted(out) || len(out) != len(in) {
		t.Errorf("popped %v", out)
	}
}

func BenchmarkPushRemove(b *testing.B) {
	h := newItemHeap()
	items := make([]*item, 1024)
	for i := range items {
		items[i] = &item{v: i * 7919 % 1024}
		h.Push(items[i])
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		x := items[i%len(items)]
		h.Remove(x.pos)
		x.v = (x.v + 513) % 1024
		h.Push(x)
	}
}
