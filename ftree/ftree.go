// Package ftree maintains a FaaSNet function tree: a binary tree over the VMs
// that run one function, through which container image data flows from the
// root (which pulls from the registry) down to every other VM.
//
// The tree has no keys; only its shape matters. FaaSNet (USENIX ATC '21)
// inserts at the first free slot in breadth-first order, replaces a deleted
// interior node by the shallowest leaf below it, and then restores the AVL
// invariant with rotations. A rotation re-parents up to three VMs and a
// deletion may cascade rotations up to the root, so one membership change can
// make O(log n) VMs switch parents and reconnect mid-transfer; and an AVL tree
// may still be up to 1.44·log2(n) high.
//
// This package keeps a stronger shape instead: every level except the deepest
// is full. Every root-to-leaf path then ends at depth H-1 or H, where H is the
// depth of the deepest VM, so at every node the two subtree heights differ by
// at most one (the AVL invariant holds without rotations) and
// H == floor(log2 n), the least possible height for a binary tree. The shape
// is kept by construction:
//
//   - Insert attaches the new VM at the shallowest depth that has a free child
//     slot. All candidate parents there are equally good for the shape, which
//     leaves a free choice; it is spent on load: the candidate with the least
//     weight wins (see [Weigher]). Exactly one VM gets a parent.
//   - Delete of a VM on the deepest level just detaches it. Any other VM is
//     replaced by a VM L taken from the deepest level: L takes the deleted
//     VM's parent, slot and children. At most three VMs change parent: L and
//     the deleted VM's (at most two) children.
//
// All of Insert, Delete and Reweigh take O(log n) time and lookups O(1). To
// make this hold even when a full tree oscillates between 2^k-1 and 2^k VMs
// (the deepest level appears and vanishes on every step), the indexes are kept
// per depth and persistently rather than rebuilt when the deepest level
// changes.
//
// [Striped] holds k stripe trees over the same VMs instead, so that every
// VM uploads about as much as it downloads (k = 1 is a Tree).
//
// A Tree is not safe for concurrent use.
package ftree

import (
	"errors"
	"fmt"
)

var (
	// ErrExists reports that a VM is already in the tree.
	ErrExists = errors.New("ftree: VM already in the tree")
	// ErrNotFound reports that a VM is not in the tree.
	ErrNotFound = errors.New("ftree: VM not in the tree")
	// ErrInvalid reports an input that cannot name or describe a tree: an
	// empty VM name, or links rejected by [Restore].
	ErrInvalid = errors.New("ftree: invalid input")
)

// A Weigher reports the load of a VM; lower is preferred as a parent. The
// manager passes each VM's total fan-out across all function trees so that new
// VMs attach to the least loaded candidate ("FT-aware placement").
//
// The tree reads a VM's weight when the VM is inserted or moved, when its
// number of children in this tree changes, and on [Tree.Reweigh]; in between
// it uses the value it read last. A caller whose weights change for other
// reasons (a VM gained a child in another tree) calls Reweigh.
type Weigher func(vm string) int

// A Move says that VM now has Parent as its parent; Parent is "" when VM is
// now the root.
type Move struct {
	VM, Parent string
}

// A Change describes the effect of one Insert or Delete.
type Change struct {
	// Moved lists every VM still in the tree whose parent differs from before
	// the operation, with its new parent. An inserted VM counts; a deleted VM
	// does not. It has at most three entries.
	Moved []Move
	// Fanout lists every VM still in the tree whose number of children in
	// this tree differs from before the operation, so that the caller can
	// update its weights. A deleted VM is not listed, though it lost all its
	// children in this tree.
	Fanout []string
}

// A Tree is one function tree. The zero value is not usable; call [New].
type Tree struct {
	weigh  Weigher
	nodes  map[string]*node
	root   *node
	levels []*level // levels[d] indexes the VMs at depth d; kept beyond height
	height int      // depth of the deepest VM
	seq    uint64   // insertion counter, the last tie-breaker
}

// node is one VM in the tree.
type node struct {
	vm     string
	parent *node
	kids   [2]*node
	slot   int // index in parent.kids
	depth  int
	seq    uint64 // insertion order
	weight int    // as last read from the Weigher
	pos    [3]int // indexes in the level's all, open and parents; -1 if absent
}

func (n *node) fanout() int {
	k := 0
	for _, c := range n.kids {
		if c != nil {
			k++
		}
	}
	return k
}

// New returns an empty tree that weighs VMs with w. A nil w weighs every VM 0,
// which leaves placement to the tie-breakers.
func New(w Weigher) *Tree {
	return &Tree{weigh: w, nodes: make(map[string]*node)}
}

// Insert adds vm to the tree. The first VM becomes the root. Every later VM
// becomes a child of a VM at the shallowest depth that has a free child slot;
// among those, of the one with the least weight, then the fewest children in
// this tree, then the earliest inserted. It takes slot 0 if free, else slot 1.
func (t *Tree) Insert(vm string) (Change, error) {
	if vm == "" {
		return Change{}, fmt.Errorf("ftree: insert: empty VM name: %w", ErrInvalid)
	}
	if _, ok := t.nodes[vm]; ok {
		return Change{}, fmt.Errorf("ftree: insert %q: %w", vm, ErrExists)
	}
	t.seq++
	n := &node{vm: vm, seq: t.seq}
	t.nodes[vm] = n
	if t.root == nil {
		t.root = n
		t.place(n, 0)
		return Change{Moved: []Move{{VM: vm}}}, nil
	}
	p := t.insertionParent()
	n.parent = p
	n.slot = 0
	if p.kids[0] != nil {
		n.slot = 1
	}
	p.kids[n.slot] = n
	t.refile(p)
	t.place(n, p.depth+1)
	t.height = max(t.height, n.depth)
	return Change{Moved: []Move{{VM: vm, Parent: p.vm}}, Fanout: []string{p.vm}}, nil
}

// insertionParent returns the best VM with a free slot at the shallowest such
// depth. Levels above height-1 are full, so that depth is height-1 unless the
// deepest level is full too; then it is height, whose VMs are all leaves.
func (t *Tree) insertionParent() *node {
	if t.height > 0 {
		if p := t.levels[t.height-1].open.top(); p != nil {
			return p
		}
	}
	return t.levels[t.height].open.top()
}

// Delete removes vm from the tree. A VM on the deepest level is a leaf and is
// just detached. Any other VM is replaced by a VM L from the deepest level,
// which takes vm's parent, slot and children. L is a child of the VM on the
// next-to-deepest level with the greatest weight (then the most children in
// this tree, then the latest inserted): taking a child away relieves the
// most loaded VM. Of that VM's children, L is the one in slot 1 if any.
func (t *Tree) Delete(vm string) (Change, error) {
	x, ok := t.nodes[vm]
	if !ok {
		return Change{}, fmt.Errorf("ftree: delete %q: %w", vm, ErrNotFound)
	}
	delete(t.nodes, vm)
	if x.depth == t.height {
		return t.detachLeaf(x), nil
	}

	l := t.replacement()
	p := l.parent // may be x itself
	t.detachLeaf(l)

	t.levels[x.depth].remove(x)
	l.parent, l.slot, l.kids = x.parent, x.slot, x.kids
	if l.parent == nil {
		t.root = l
	} else {
		l.parent.kids[l.slot] = l
	}
	ch := Change{Moved: []Move{{VM: l.vm, Parent: l.parentName()}}}
	for _, c := range l.kids {
		if c != nil {
			c.parent = l
			ch.Moved = append(ch.Moved, Move{VM: c.vm, Parent: l.vm})
		}
	}
	t.place(l, x.depth)
	if p != x {
		ch.Fanout = append(ch.Fanout, p.vm)
	}
	if l.fanout() > 0 {
		ch.Fanout = append(ch.Fanout, l.vm)
	}
	return ch, nil
}

// replacement picks the VM that takes a deleted interior VM's place. The tree
// has at least two levels when it is called.
func (t *Tree) replacement() *node {
	p := t.levels[t.height-1].parents.top()
	if p.kids[1] != nil {
		return p.kids[1]
	}
	return p.kids[0]
}

// detachLeaf removes n, a VM on the deepest level, from its parent and from
// the indexes, and reports the parent's changed fan-out.
func (t *Tree) detachLeaf(n *node) Change {
	t.levels[n.depth].remove(n)
	if t.height > 0 && len(t.levels[t.height].all) == 0 {
		t.height--
	}
	p := n.parent
	n.parent = nil
	if p == nil {
		t.root = nil
		return Change{}
	}
	p.kids[n.slot] = nil
	t.refile(p)
	return Change{Fanout: []string{p.vm}}
}

// Reweigh reads vm's weight again and re-positions vm accordingly. It does
// nothing if vm is not in the tree.
func (t *Tree) Reweigh(vm string) {
	if n, ok := t.nodes[vm]; ok {
		t.refile(n)
	}
}

// place puts n at depth d in the indexes, with a fresh weight.
func (t *Tree) place(n *node, d int) {
	for len(t.levels) <= d {
		t.levels = append(t.levels, newLevel())
	}
	n.depth = d
	n.weight = t.weightOf(n.vm)
	t.levels[d].add(n)
}

// refile re-reads n's weight and repairs its index entries after its weight
// or its number of children changed.
func (t *Tree) refile(n *node) {
	n.weight = t.weightOf(n.vm)
	t.levels[n.depth].refile(n)
}

func (t *Tree) weightOf(vm string) int {
	if t.weigh == nil {
		return 0
	}
	return t.weigh(vm)
}

func (n *node) parentName() string {
	if n.parent == nil {
		return ""
	}
	return n.parent.vm
}

// Len returns the number of VMs in the tree.
func (t *Tree) Len() int { return len(t.nodes) }

// Height returns the depth of the deepest VM: 0 for an empty tree and for a
// single VM. It is always floor(log2(Len())).
func (t *Tree) Height() int { return t.height }

// Root returns the root VM, or "" if the tree is empty.
func (t *Tree) Root() string {
	if t.root == nil {
		return ""
	}
	return t.root.vm
}

// Contains reports whether vm is in the tree.
func (t *Tree) Contains(vm string) bool {
	_, ok := t.nodes[vm]
	return ok
}

// Parent returns vm's parent, "" if vm is the root. It reports false if vm is
// not in the tree.
func (t *Tree) Parent(vm string) (string, bool) {
	n, ok := t.nodes[vm]
	if !ok {
		return "", false
	}
	return n.parentName(), true
}

// Children returns vm's children in slot order, skipping empty slots. It
// returns nil if vm is not in the tree or has no children.
func (t *Tree) Children(vm string) []string {
	n, ok := t.nodes[vm]
	if !ok {
		return nil
	}
	return n.children()
}

func (n *node) children() []string {
	var out []string
	for _, c := range n.kids {
		if c != nil {
			out = append(out, c.vm)
		}
	}
	return out
}

// Depth returns vm's depth, 0 at the root. It reports false if vm is not in
// the tree.
func (t *Tree) Depth(vm string) (int, bool) {
	n, ok := t.nodes[vm]
	if !ok {
		return 0, false
	}
	return n.depth, true
}

// A Node describes one VM's position in the tree.
type Node struct {
	VM       string
	Parent   string // "" at the root
	Slot     int    // index in the parent's child slots; 0 at the root
	Depth    int
	Children []string // in slot order, empty slots skipped
}

// Node returns vm's position, or false if vm is not in the tree.
func (t *Tree) Node(vm string) (Node, bool) {
	n, ok := t.nodes[vm]
	if !ok {
		return Node{}, false
	}
	return Node{VM: n.vm, Parent: n.parentName(), Slot: n.slot, Depth: n.depth, Children: n.children()}, true
}

// Nodes returns every VM in breadth-first order: the root first, then each
// level in turn, children in slot order.
func (t *Tree) Nodes() []Node {
	out := make([]Node, 0, len(t.nodes))
	for _, n := range t.breadthFirst() {
		out = append(out, Node{
			VM:       n.vm,
			Parent:   n.parentName(),
			Slot:     n.slot,
			Depth:    n.depth,
			Children: n.children(),
		})
	}
	return out
}

// breadthFirst returns the VMs reachable from the root by child links, in
// level order. Where each VM is some parent's child at most once (as Check
// and Restore ensure before they call it) each VM appears once; the walk
// stops past Len() VMs so that corrupt links cannot make it loop.
func (t *Tree) breadthFirst() []*node {
	if t.root == nil {
		return nil
	}
	order := make([]*node, 1, len(t.nodes))
	order[0] = t.root
	for i := 0; i < len(order) && len(order) <= len(t.nodes); i++ {
		for _, c := range order[i].kids {
			if c != nil {
				order = append(order, c)
			}
		}
	}
	return order
}
