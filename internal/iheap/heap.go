// Package iheap is a binary min-heap of any item type that tells each item
// where it sits, so that an item that changes or goes away is fixed or
// removed in O(log n) instead of being left behind as garbage. It is what
// container/heap does, without boxing every call through an interface and
// with the position bookkeeping written once for all its users.
package iheap

// Heap is a binary min-heap ordered by the less function given to New. Its
// zero value has no order: make heaps with New.
type Heap[T any] struct {
	// Items holds the heap in array order: Items[0] is the least item and
	// the children of Items[i] are Items[2i+1] and Items[2i+2]. Callers may
	// read it (to walk only the part of the heap they need); only the
	// heap's methods change it.
	Items []T

	less  func(a, b T) bool
	moved func(x T, i int)
}

// New returns an empty heap ordered by less. moved, when not nil, is told
// every item's new position whenever it changes, and -1 when the item
// leaves the heap: store it in the item to Fix or Remove it later.
func New[T any](less func(a, b T) bool, moved func(x T, i int)) Heap[T] {
	return Heap[T]{less: less, moved: moved}
}

// Len returns the number of items.
func (h *Heap[T]) Len() int { return len(h.Items) }

// Push adds x.
func (h *Heap[T]) Push(x T) {
	h.Items = append(h.Items, x)
	i := len(h.Items) - 1
	h.tell(i)
	h.up(i)
}

// Pop removes and returns the least item. The heap must not be empty.
func (h *Heap[T]) Pop() T { return h.Remove(0) }

// Remove removes and returns the item at position i.
func (h *Heap[T]) Remove(i int) T {
	n := len(h.Items) - 1
	x := h.Items[i]
	if i != n {
		h.Items[i] = h.Items[n] // the last item fills the hole, then finds its place
		h.tell(i)
	}
	var zero T
	h.Items[n] = zero // let the item's memory go
	h.Items = h.Items[:n]
	if i != n {
		h.Fix(i)
	}
	if h.moved != nil {
		h.moved(x, -1)
	}
	return x
}

// Fix restores the order after the item at position i changed.
func (h *Heap[T]) Fix(i int) {
	if !h.down(i) {
		h.up(i)
	}
}

// Clear removes every item without telling them (they are being dropped).
func (h *Heap[T]) Clear() { h.Items = nil }

func (h *Heap[T]) tell(i int) {
	if h.moved != nil {
		h.moved(h.Items[i], i)
	}
}

// up moves the item at j up to its place. It carries the item in hand and
// shifts parents down into the hole, so each level costs one comparison and
// one position update, not a swap and two.
func (h *Heap[T]) up(j int) {
	x, j0 := h.Items[j], j
	for j > 0 {
		i := (j - 1) / 2
		if !h.less(x, h.Items[i]) {
			break
		}
		h.Items[j] = h.Items[i]
		h.tell(j)
		j = i
	}
	if j != j0 {
		h.Items[j] = x
		h.tell(j)
	}
}

// down moves the item at i0 down to its place, the same way, and reports
// whether it moved.
func (h *Heap[T]) down(i0 int) bool {
	x, i, n := h.Items[i0], i0, len(h.Items)
	for {
		j := 2*i + 1
		if j >= n || j < 0 { // j < 0: int overflow
			break
		}
		if r := j + 1; r < n && h.less(h.Items[r], h.Items[j]) {
			j = r
		}
		if !h.less(h.Items[j], x) {
			break
		}
		h.Items[i] = h.Items[j]
		h.tell(i)
		i = j
	}
	if i == i0 {
		return false
	}
	h.Items[i] = x
	h.tell(i)
	return true
}
