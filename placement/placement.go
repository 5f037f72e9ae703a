// Package placement picks the VMs a function scales out to. It is pure, so
// the manager and the simulator share it.
package placement

import (
	"container/heap"
	"slices"
)

// Candidate is a VM that could take the function.
type Candidate struct {
	VM string
	// Cached is true if the VM already holds the function's image.
	Cached bool
	// Functions is how many functions the VM hosts now.
	Functions int
	// Fanout is the VM's number of children across all its trees.
	Fanout int
}

// better reports whether a goes before b.
func better(a, b Candidate) bool {
	if a.Cached != b.Cached {
		return a.Cached
	}
	if a.Functions != b.Functions {
		return a.Functions < b.Functions
	}
	if a.Fanout != b.Fanout {
		return a.Fanout < b.Fanout
	}
	return a.VM < b.VM
}

func compare(a, b Candidate) int {
	switch {
	case better(a, b):
		return -1
	case better(b, a):
		return 1
	}
	return 0
}

// Choose returns n candidates, best first: VMs that already cache the image,
// then the least loaded (fewest functions, then smallest fan-out), then by
// name for determinism. The best go first so that they sit nearest the root.
// It returns nil if there are fewer than n candidates. It may reorder cs.
//
// A few out of many (a scale step in a large pool) are kept in a heap of n
// rather than by sorting every candidate: O(len(cs) log n).
func Choose(cs []Candidate, n int) []string {
	if n > len(cs) {
		return nil
	}
	best := cs
	if n < len(cs)/8 {
		h := worstFirst(slices.Clone(cs[:n]))
		heap.Init(&h)
		for _, c := range cs[n:] {
			if better(c, h[0]) {
				h[0] = c
				heap.Fix(&h, 0)
			}
		}
		best = h
	}
	slices.SortFunc(best, compare)
	out := make([]string, n)
	for i := range out {
		out[i] = best[i].VM
	}
	return out
}

// worstFirst is a heap of candidates whose top is the worst.
type worstFirst []Candidate

func (h worstFirst) Len() int           { return len(h) }
func (h worstFirst) Less(i, j int) bool { return better(h[j], h[i]) }
func (h worstFirst) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *worstFirst) Push(x any)        { *h = append(*h, x.(Candidate)) }
func (h *worstFirst) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
