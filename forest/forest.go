// Package forest is the control plane's membership state: a pool of VMs and
// one function tree (package ftree) per function, kept consistent with each
// other. It is what the manager keeps in memory and what the simulator
// drives, so that both place VMs with the same code.
//
// The trees are tied together by FT-aware placement: every tree weighs a VM
// by its fan-out, its number of children across all the trees it belongs
// to, so that a new VM attaches to the least busy of the equally shallow
// parents. A VM's fan-out changes when a tree it belongs to gives it a child
// or takes one away, and then every one of its trees must read its weight
// again; Insert and Remove do that, so that after every call each tree's
// view of each VM's weight is the VM's current fan-out.
//
// A function may instead have k >= 2 stripe trees ([ftree.Striped],
// AddStripedFunction). There every VM has children in at most one stripe,
// about k of them, each receiving 1/k of the image: a VM uploads about one
// image per striped function it belongs to, however many functions overlap
// on it, while an interior VM of a single tree uploads two. A VM's weight
// (its Load, which placement and the single trees read) therefore counts a
// striped function's children 1/k each, rounded to the nearest whole; its
// Fanout still counts every child. For forests of single trees both are
// the same number, as before.
//
// Like ftree, the package is pure: no I/O, no clocks, no goroutines. A
// Forest is not safe for concurrent use.
package forest

import (
	"errors"
	"fmt"
	"slices"

	"github.com/faasnet/faasnet/ftree"
	"github.com/faasnet/faasnet/placement"
)

var (
	// ErrUnknownVM reports a VM that is not in the pool.
	ErrUnknownVM = errors.New("forest: unknown VM")
	// ErrUnknownFunction reports a function that has no tree.
	ErrUnknownFunction = errors.New("forest: unknown function")
	// ErrExists reports a function that has a tree already.
	ErrExists = errors.New("forest: function exists")
	// ErrCapacity reports a VM that hosts as many functions as its
	// capacity allows.
	ErrCapacity = errors.New("forest: VM capacity")
	// ErrHosting reports a VM that cannot leave the pool because it is
	// still in some function's tree.
	ErrHosting = errors.New("forest: VM hosts functions")
	// ErrStriped reports a one-tree operation (Insert, Remove) on a
	// function of several stripes.
	ErrStriped = errors.New("forest: function has several stripes")
)

// A Forest is a pool of VMs and one tree per function. The zero value is not
// usable; call [New].
type Forest struct {
	vms   map[string]*vm
	pool  []*vm // the VMs in the order they joined
	trees map[string]*ftree.Striped
}

// vm is one VM of the pool.
type vm struct {
	name     string
	capacity int
	fns      []string // functions whose tree holds the VM, sorted
	fanout   int      // children across all the VM's trees and stripes
	weight   int      // upload load: a striped function's children count 1/k
}

// A VM describes one VM of the pool.
type VM struct {
	Name string
	// Capacity is the most functions the VM may host.
	Capacity int
	// Functions are the functions whose tree holds the VM, sorted.
	Functions []string
	// Fanout is the VM's number of children across all its trees and
	// stripes.
	Fanout int
	// Weight is its weight in every tree: Fanout, with a striped
	// function's children counting 1/k each (rounded).
	Weight int
}

// New returns an empty forest.
func New() *Forest {
	return &Forest{vms: map[string]*vm{}, trees: map[string]*ftree.Striped{}}
}

// weight is every tree's Weigher.
func (f *Forest) weight(name string) int {
	if v, ok := f.vms[name]; ok {
		return v.weight
	}
	return 0
}

// SetVM adds name to the pool with room for capacity functions, or changes
// the capacity of a VM already there. A capacity below what the VM hosts
// keeps its functions and only refuses it more: refusing a capacity is the
// caller's policy.
func (f *Forest) SetVM(name string, capacity int) {
	v, ok := f.vms[name]
	if !ok {
		v = &vm{name: name}
		f.vms[name] = v
		f.pool = append(f.pool, v)
	}
	v.capacity = capacity
}

// RemoveVM takes name out of the pool. It must first leave every tree
// ([Forest.Remove]), so that the caller sees each tree's change; otherwise
// RemoveVM fails with ErrHosting.
func (f *Forest) RemoveVM(name string) error {
	v, ok := f.vms[name]
	if !ok {
		return fmt.Errorf("removing VM %s: %w", name, ErrUnknownVM)
	}
	if len(v.fns) > 0 {
		return fmt.Errorf("removing VM %s, in the trees of %v: %w", name, v.fns, ErrHosting)
	}
	delete(f.vms, name)
	f.pool = slices.DeleteFunc(f.pool, func(x *vm) bool { return x == v })
	return nil
}

// VM describes the VM called name.
func (f *Forest) VM(name string) (VM, bool) {
	v, ok := f.vms[name]
	if !ok {
		return VM{}, false
	}
	return VM{Name: name, Capacity: v.capacity, Functions: slices.Clone(v.fns), Fanout: v.fanout, Weight: v.weight}, true
}

// Fanout returns name's children across all its trees and stripes; 0 for
// an unknown VM.
func (f *Forest) Fanout(name string) int {
	if v, ok := f.vms[name]; ok {
		return v.fanout
	}
	return 0
}

// Weight returns name's weight (see [VM]); 0 for an unknown VM.
func (f *Forest) Weight(name string) int { return f.weight(name) }

// Hosts reports whether fn's tree holds the VM called name.
func (f *Forest) Hosts(name, fn string) bool {
	v, ok := f.vms[name]
	if !ok {
		return false
	}
	_, found := slices.BinarySearch(v.fns, fn)
	return found
}

// Load returns how many functions the VM called name hosts; 0 for an
// unknown VM.
func (f *Forest) Load(name string) int {
	if v, ok := f.vms[name]; ok {
		return len(v.fns)
	}
	return 0
}

// Len returns the number of VMs in the pool.
func (f *Forest) Len() int { return len(f.vms) }

// AddFunction gives fn an empty tree.
func (f *Forest) AddFunction(fn string) error {
	return f.RestoreFunction(fn, nil)
}

// RestoreFunction gives fn the tree described by links (see
// [ftree.Restore]), for a control plane loading its state. Every VM named
// must be in the pool. Capacities are not checked: the links describe what
// was, not a request.
func (f *Forest) RestoreFunction(fn string, links []ftree.Link) error {
	if _, ok := f.trees[fn]; ok {
		return fmt.Errorf("function %s: %w", fn, ErrExists)
	}
	for _, l := range links {
		if _, ok := f.vms[l.VM]; !ok {
			return fmt.Errorf("restoring the tree of %s: VM %s: %w", fn, l.VM, ErrUnknownVM)
		}
	}
	t, err := ftree.Restore(links, f.weight)
	if err != nil {
		return fmt.Errorf("restoring the tree of %s: %w", fn, err)
	}
	f.trees[fn] = ftree.WrapTree(t)
	for _, l := range links {
		f.vms[l.VM].join(fn)
	}
	// The tree read the members' weights before their children in it
	// were counted.
	for _, l := range links {
		if l.Parent != "" {
			f.refanout(l.Parent)
		}
	}
	return nil
}

// RestoreStripedFunction gives fn the stripe trees described by l (see
// [ftree.RestoreStriped]), for a control plane loading its state. Every VM
// named must be in the pool; capacities are not checked.
func (f *Forest) RestoreStripedFunction(fn string, l ftree.Layout) error {
	if _, ok := f.trees[fn]; ok {
		return fmt.Errorf("function %s: %w", fn, ErrExists)
	}
	t, err := ftree.RestoreStriped(l)
	if err != nil {
		return fmt.Errorf("restoring the trees of %s: %w", fn, err)
	}
	members := t.Nodes(0)
	for _, n := range members {
		if _, ok := f.vms[n.VM]; !ok {
			return fmt.Errorf("restoring the trees of %s: VM %s: %w", fn, n.VM, ErrUnknownVM)
		}
	}
	f.trees[fn] = t
	for _, n := range members {
		f.vms[n.VM].join(fn)
	}
	for _, n := range members {
		f.refanout(n.VM)
	}
	return nil
}

// RemoveFunction drops fn's tree. Its members lose their children in it,
// and every other tree of theirs reads their new weight. It returns the
// members.
func (f *Forest) RemoveFunction(fn string) ([]string, error) {
	t, ok := f.trees[fn]
	if !ok {
		return nil, fmt.Errorf("removing function %s: %w", fn, ErrUnknownFunction)
	}
	nodes := t.Nodes(0)
	members := make([]string, len(nodes))
	for i, n := range nodes {
		members[i] = n.VM
		f.vms[n.VM].leave(fn)
	}
	delete(f.trees, fn)
	for _, m := range members {
		f.refanout(m)
	}
	return members, nil
}

// Tree returns fn's tree, nil if fn has none or has several stripes. The
// caller reads it and must not change it: changes go through the Forest,
// which keeps the weights right.
func (f *Forest) Tree(fn string) *ftree.Tree {
	if t, ok := f.trees[fn]; ok {
		return t.Tree()
	}
	return nil
}

// Striped returns fn's stripe trees (one stripe for a function added with
// AddFunction), nil if fn has none. The caller reads it and must not
// change it.
func (f *Forest) Striped(fn string) *ftree.Striped { return f.trees[fn] }

// Stripes returns fn's number of stripes, 0 if fn has no tree.
func (f *Forest) Stripes(fn string) int {
	if t, ok := f.trees[fn]; ok {
		return t.Stripes()
	}
	return 0
}

// AddStripedFunction gives fn k empty stripe trees (see [ftree.Striped]);
// k = 1 is AddFunction.
func (f *Forest) AddStripedFunction(fn string, k int) error {
	if _, ok := f.trees[fn]; ok {
		return fmt.Errorf("function %s: %w", fn, ErrExists)
	}
	t, err := ftree.NewStriped(k, f.weight)
	if err != nil {
		return fmt.Errorf("function %s: %w", fn, err)
	}
	f.trees[fn] = t
	return nil
}

// Insert adds the VM called name to fn's tree (see [ftree.Tree.Insert]) and
// returns the tree's change. The VM must be in the pool, below its
// capacity. A function of several stripes takes InsertStriped instead
// (ErrStriped).
func (f *Forest) Insert(fn, name string) (ftree.Change, error) {
	if t, ok := f.trees[fn]; ok && t.Stripes() > 1 {
		return ftree.Change{}, fmt.Errorf("inserting %s into the tree of %s: %w", name, fn, ErrStriped)
	}
	ch, err := f.InsertStriped(fn, name)
	return stripeZero(ch, err)
}

// Remove takes the VM called name out of fn's tree (see
// [ftree.Tree.Delete]) and returns the tree's change. A function of several
// stripes takes RemoveStriped instead (ErrStriped).
func (f *Forest) Remove(fn, name string) (ftree.Change, error) {
	if t, ok := f.trees[fn]; ok && t.Stripes() > 1 {
		return ftree.Change{}, fmt.Errorf("removing %s from the tree of %s: %w", name, fn, ErrStriped)
	}
	ch, err := f.RemoveStriped(fn, name)
	return stripeZero(ch, err)
}

// stripeZero turns a one-stripe change back into a Change.
func stripeZero(ch ftree.StripedChange, err error) (ftree.Change, error) {
	out := ftree.Change{Fanout: ch.Fanout}
	for _, m := range ch.Moved {
		out.Moved = append(out.Moved, ftree.Move{VM: m.VM, Parent: m.Parent})
	}
	return out, err
}

// InsertStriped adds the VM called name to every stripe of fn's trees (see
// [ftree.Striped.Insert]) and returns the change. The VM must be in the
// pool, below its capacity.
func (f *Forest) InsertStriped(fn, name string) (ftree.StripedChange, error) {
	t, ok := f.trees[fn]
	if !ok {
		return ftree.StripedChange{}, fmt.Errorf("inserting %s into the tree of %s: %w", name, fn, ErrUnknownFunction)
	}
	v, ok := f.vms[name]
	if !ok {
		return ftree.StripedChange{}, fmt.Errorf("inserting %s into the tree of %s: %w", name, fn, ErrUnknownVM)
	}
	if len(v.fns) >= v.capacity && !t.Contains(name) {
		return ftree.StripedChange{}, fmt.Errorf("inserting %s into the tree of %s: it hosts %d functions: %w", name, fn, len(v.fns), ErrCapacity)
	}
	ch, err := t.Insert(name)
	if err != nil {
		return ch, fmt.Errorf("inserting %s into the tree of %s: %w", name, fn, err)
	}
	v.join(fn)
	f.apply(ch.Fanout)
	return ch, nil
}

// RemoveStriped takes the VM called name out of every stripe of fn's trees
// (see [ftree.Striped.Delete]) and returns the change.
func (f *Forest) RemoveStriped(fn, name string) (ftree.StripedChange, error) {
	t, ok := f.trees[fn]
	if !ok {
		return ftree.StripedChange{}, fmt.Errorf("removing %s from the tree of %s: %w", name, fn, ErrUnknownFunction)
	}
	ch, err := t.Delete(name)
	if err != nil {
		return ch, fmt.Errorf("removing %s from the tree of %s: %w", name, fn, err)
	}
	f.vms[name].leave(fn)
	// The change does not list the removed VM, but it lost its children
	// in this tree, and its other trees must know.
	f.refanout(name)
	f.apply(ch.Fanout)
	return ch, nil
}

// apply brings the weights up to date after a tree change.
func (f *Forest) apply(fanout []string) {
	for _, name := range fanout {
		f.refanout(name)
	}
}

// refanout recounts name's children across its trees and, if its weight
// changed, has each of its trees read the new weight.
func (f *Forest) refanout(name string) {
	v, ok := f.vms[name]
	if !ok {
		return
	}
	n, w := 0, 0
	for _, fn := range v.fns {
		t := f.trees[fn]
		c := t.ChildCount(name)
		n += c
		w += (2*c + t.Stripes()) / (2 * t.Stripes())
	}
	v.fanout = n
	if w == v.weight {
		return
	}
	v.weight = w
	for _, fn := range v.fns {
		f.trees[fn].Reweigh(name)
	}
}

// AppendCandidates appends to dst every VM that could join fn's tree: in
// the pool, not in the tree, below its capacity; in the order they joined
// the pool (which placement.Choose does not depend on, but sorts fastest
// when it follows the names). cached tells whether a VM holds fn's image
// already; nil means none does. [placement.Choose] picks among them.
func (f *Forest) AppendCandidates(dst []placement.Candidate, fn string, cached func(vm string) bool) []placement.Candidate {
	for _, v := range f.pool {
		if len(v.fns) >= v.capacity {
			continue
		}
		if _, hosts := slices.BinarySearch(v.fns, fn); hosts {
			continue
		}
		c := placement.Candidate{VM: v.name, Functions: len(v.fns), Fanout: v.weight}
		if cached != nil {
			c.Cached = cached(v.name)
		}
		dst = append(dst, c)
	}
	return dst
}

func (v *vm) join(fn string) {
	if i, found := slices.BinarySearch(v.fns, fn); !found {
		v.fns = slices.Insert(v.fns, i, fn)
	}
}

func (v *vm) leave(fn string) {
	if i, found := slices.BinarySearch(v.fns, fn); found {
		v.fns = slices.Delete(v.fns, i, i+1)
	}
}
