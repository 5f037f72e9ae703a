// Package placement picks the VMs a function scales out to. It is pure, so
// the manager and the simulator share it.
package placement

import "sort"

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

// Choose returns n candidates, best first: VMs that already cache the image,
// then the least loaded (fewest functions, then smallest fan-out), then by
// name for determinism. The best go first so that they sit nearest the root.
// It returns nil if there are fewer than n candidates. It reorders cs.
func Choose(cs []Candidate, n int) []string {
	if n > len(cs) {
		return nil
	}
	sort.Slice(cs, func(i, j int) bool {
		a, b := cs[i], cs[j]
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
	})
	out := make([]string, n)
	for i := range out {
		out[i] = cs[i].VM
	}
	return out
}
