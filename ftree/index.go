package ftree

import "container/heap"

// Entries of node.pos.
const (
	posAll     = iota // index in level.all
	posOpen           // index in level.open.nodes
	posParents        // index in level.parents.nodes
)

// A level indexes the VMs at one depth. Each index answers one question of
// Insert or Delete in O(log n) without scanning the level.
type level struct {
	all     []*node  // every VM at this depth, unordered
	open    nodeHeap // VMs with a free child slot, lightest first: Insert's parents
	parents nodeHeap // VMs with at least one child, heaviest first: Delete's donors
}

func newLevel() *level {
	return &level{
		open:    nodeHeap{pos: posOpen},
		parents: nodeHeap{pos: posParents, heaviest: true},
	}
}

// add indexes n, which must not be indexed yet.
func (lv *level) add(n *node) {
	n.pos = [3]int{len(lv.all), -1, -1}
	lv.all = append(lv.all, n)
	lv.refile(n)
}

// remove unindexes n in O(log n).
func (lv *level) remove(n *node) {
	i, last := n.pos[posAll], len(lv.all)-1
	lv.all[i] = lv.all[last]
	lv.all[i].pos[posAll] = i
	lv.all[last] = nil
	lv.all = lv.all[:last]
	lv.open.set(n, false)
	lv.parents.set(n, false)
	n.pos = [3]int{-1, -1, -1}
}

// refile brings n's heap entries in line with its current fan-out and weight.
func (lv *level) refile(n *node) {
	k := n.fanout()
	lv.open.set(n, k < 2)
	lv.parents.set(n, k > 0)
}

// lighter orders VMs by weight, then by fan-out in this tree, then by
// insertion; it is a strict total order, so every choice is deterministic.
func lighter(a, b *node) bool {
	if a.weight != b.weight {
		return a.weight < b.weight
	}
	if ka, kb := a.fanout(), b.fanout(); ka != kb {
		return ka < kb
	}
	return a.seq < b.seq
}

// A nodeHeap is an indexed binary heap of VMs: each VM records its own index
// in node.pos[pos], so it can be re-positioned or removed in O(log n).
type nodeHeap struct {
	nodes    []*node
	pos      int  // which node.pos entry this heap owns
	heaviest bool // order by !lighter: the heaviest VM on top
}

func (h *nodeHeap) Len() int { return len(h.nodes) }

func (h *nodeHeap) Less(i, j int) bool {
	if h.heaviest {
		return lighter(h.nodes[j], h.nodes[i])
	}
	return lighter(h.nodes[i], h.nodes[j])
}

func (h *nodeHeap) Swap(i, j int) {
	h.nodes[i], h.nodes[j] = h.nodes[j], h.nodes[i]
	h.nodes[i].pos[h.pos] = i
	h.nodes[j].pos[h.pos] = j
}

func (h *nodeHeap) Push(x any) {
	n := x.(*node)
	n.pos[h.pos] = len(h.nodes)
	h.nodes = append(h.nodes, n)
}

func (h *nodeHeap) Pop() any {
	last := len(h.nodes) - 1
	n := h.nodes[last]
	h.nodes[last] = nil
	h.nodes = h.nodes[:last]
	n.pos[h.pos] = -1
	return n
}

// top returns the first VM, or nil if the heap is empty.
func (h *nodeHeap) top() *node {
	if len(h.nodes) == 0 {
		return nil
	}
	return h.nodes[0]
}

// set makes n a member (in its right place) if want, else not a member.
func (h *nodeHeap) set(n *node, want bool) {
	i := n.pos[h.pos]
	switch {
	case want && i < 0:
		heap.Push(h, n)
	case want:
		heap.Fix(h, i)
	case i >= 0:
		heap.Remove(h, i)
	}
}
