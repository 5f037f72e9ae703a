package ftree

import (
	"fmt"
	"math/bits"
)

// Check verifies every invariant of t in O(n) and returns an error naming the
// first violation found. It derives the shape from the parent and child links
// alone and compares everything cached (depths, height, indexes) against it:
//
//   - parent and child links agree both ways, slots are 0 or 1, and every VM
//     is reachable from the root exactly once (so there are no cycles);
//   - every level except the deepest is full, Height() == floor(log2 n), and
//     at every VM the two subtree heights differ by at most one;
//   - the per-depth indexes hold exactly the right VMs at the recorded
//     positions, in heap order by the weights last read.
//
// Check is for tests and debugging; a correct Tree always passes it.
func (t *Tree) Check() error {
	if err := t.checkLinks(); err != nil {
		return err
	}
	order := t.breadthFirst()
	if len(order) != len(t.nodes) {
		return fmt.Errorf("ftree: %d VMs reachable from the root, %d in the tree", len(order), len(t.nodes))
	}
	counts, err := checkShape(order)
	if err != nil {
		return err
	}
	if err := t.checkHeight(counts); err != nil {
		return err
	}
	return t.checkIndexes(counts)
}

// checkLinks verifies that the map, the root and the links agree.
func (t *Tree) checkLinks() error {
	if t.root == nil {
		if len(t.nodes) != 0 {
			return fmt.Errorf("ftree: no root but %d VMs", len(t.nodes))
		}
		return nil
	}
	if t.nodes[t.root.vm] != t.root || t.root.parent != nil {
		return fmt.Errorf("ftree: root %q not in the tree or has a parent", t.root.vm)
	}
	for vm, n := range t.nodes {
		if n.vm != vm {
			return fmt.Errorf("ftree: VM %q filed under %q", n.vm, vm)
		}
		if n.parent == nil && n != t.root {
			return fmt.Errorf("ftree: VM %q has no parent but is not the root", vm)
		}
		if p := n.parent; p != nil && (n.slot < 0 || n.slot > 1 || p.kids[n.slot] != n) {
			return fmt.Errorf("ftree: VM %q not in slot %d of its parent %q", vm, n.slot, p.vm)
		}
		for s, c := range n.kids {
			if c != nil && (c.parent != n || c.slot != s || t.nodes[c.vm] != c) {
				return fmt.Errorf("ftree: child %q in slot %d of %q does not link back", c.vm, s, vm)
			}
		}
	}
	return nil
}

// checkShape verifies depths and balance over a breadth-first order, and
// returns the number of VMs at each depth.
func checkShape(order []*node) ([]int, error) {
	var counts []int
	for _, n := range order {
		d := 0
		if n.parent != nil {
			d = n.parent.depth + 1
		}
		if n.depth != d {
			return nil, fmt.Errorf("ftree: VM %q records depth %d, is at %d", n.vm, n.depth, d)
		}
		if d == len(counts) {
			counts = append(counts, 0)
		}
		counts[d]++
	}
	// Children come after their parents, so a reverse walk sees all of a
	// VM's descendants before the VM.
	heights := make(map[*node]int, len(order))
	for i := len(order) - 1; i >= 0; i-- {
		n := order[i]
		h := [2]int{-1, -1}
		for s, c := range n.kids {
			if c != nil {
				h[s] = heights[c]
			}
		}
		if h[0]-h[1] > 1 || h[1]-h[0] > 1 {
			return nil, fmt.Errorf("ftree: subtrees of %q have heights %d and %d", n.vm, h[0], h[1])
		}
		heights[n] = 1 + max(h[0], h[1])
	}
	for d := 0; d+1 < len(counts); d++ {
		if counts[d] != 1<<d {
			return nil, fmt.Errorf("ftree: depth %d holds %d VMs, want %d above the deepest depth %d",
				d, counts[d], 1<<d, len(counts)-1)
		}
	}
	return counts, nil
}

func (t *Tree) checkHeight(counts []int) error {
	want := 0
	if len(counts) > 0 {
		want = len(counts) - 1
	}
	if t.height != want {
		return fmt.Errorf("ftree: height %d, deepest VM at depth %d", t.height, want)
	}
	if n := len(t.nodes); n > 0 && t.height != bits.Len(uint(n))-1 {
		return fmt.Errorf("ftree: height %d with %d VMs, want floor(log2 n) = %d", t.height, n, bits.Len(uint(n))-1)
	}
	return nil
}

// checkIndexes verifies every level's indexes against the links.
func (t *Tree) checkIndexes(counts []int) error {
	for d, lv := range t.levels {
		want := 0
		if d < len(counts) {
			want = counts[d]
		}
		if len(lv.all) != want {
			return fmt.Errorf("ftree: level %d indexes %d VMs, holds %d", d, len(lv.all), want)
		}
		if err := t.checkLevel(d, lv); err != nil {
			return fmt.Errorf("ftree: level %d: %w", d, err)
		}
	}
	if len(counts) > len(t.levels) {
		return fmt.Errorf("ftree: %d levels indexed, %d hold VMs", len(t.levels), len(counts))
	}
	for _, n := range t.nodes {
		if err := t.checkIndexed(n); err != nil {
			return err
		}
	}
	return nil
}

// checkIndexed verifies that n is indexed where it says, and in exactly the
// heaps its fan-out calls for.
func (t *Tree) checkIndexed(n *node) error {
	lv := t.levels[n.depth]
	k := n.fanout()
	in := func(ns []*node, i int) bool { return i >= 0 && i < len(ns) && ns[i] == n }
	switch {
	case !in(lv.all, n.pos[posAll]),
		in(lv.open.nodes, n.pos[posOpen]) != (k < 2),
		in(lv.parents.nodes, n.pos[posParents]) != (k > 0):
		return fmt.Errorf("ftree: VM %q at depth %d with %d children indexed at %v", n.vm, n.depth, k, n.pos)
	}
	return nil
}

// checkLevel verifies that each entry of lv is a VM of the tree at depth d
// that records its position, and that the heaps are in order. Together with
// the counts and the membership rule checked for every VM, this proves that
// each index holds exactly the right VMs.
func (t *Tree) checkLevel(d int, lv *level) error {
	for i, n := range lv.all {
		if t.nodes[n.vm] != n || n.depth != d || n.pos[posAll] != i {
			return fmt.Errorf("VM %q at index %d is stale", n.vm, i)
		}
	}
	for _, h := range []*nodeHeap{&lv.open, &lv.parents} {
		for i, n := range h.nodes {
			if t.nodes[n.vm] != n || n.depth != d || n.pos[h.pos] != i {
				return fmt.Errorf("VM %q at heap %d index %d is stale", n.vm, h.pos, i)
			}
			if i > 0 && h.Less(i, (i-1)/2) {
				return fmt.Errorf("VM %q at heap %d index %d is out of order", n.vm, h.pos, i)
			}
		}
	}
	return nil
}
