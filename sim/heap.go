package sim

// minHeap is a binary min-heap of items that order themselves. It stands in
// for container/heap on the simulator's hot paths, where boxing every item
// in an interface would cost an allocation per push.
type minHeap[T heapOrder[T]] []T

// heapOrder is an item of a minHeap: before reports whether it comes first.
type heapOrder[T any] interface {
	before(other T) bool
}

// init orders h from scratch, in O(n).
func (h minHeap[T]) init() {
	for i := len(h)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

func (h minHeap[T]) down(i int) {
	n := len(h)
	for {
		c := 2*i + 1
		if c >= n {
			return
		}
		if c+1 < n && h[c+1].before(h[c]) {
			c++
		}
		if !h[c].before(h[i]) {
			return
		}
		h[i], h[c] = h[c], h[i]
		i = c
	}
}

func (h *minHeap[T]) push(x T) {
	*h = append(*h, x)
	s := *h
	for i := len(s) - 1; i > 0; {
		p := (i - 1) / 2
		if !s[i].before(s[p]) {
			break
		}
		s[i], s[p] = s[p], s[i]
		i = p
	}
}

// pop removes and returns the first item; h must not be empty.
func (h *minHeap[T]) pop() T {
	s := *h
	top := s[0]
	n := len(s) - 1
	s[0] = s[n]
	var zero T
	s[n] = zero // let go of what the item holds (a timer's closure)
	*h = s[:n]
	h.down(0)
	return top
}
