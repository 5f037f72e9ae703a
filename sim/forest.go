package sim

import (
	"fmt"
	"slices"

	"github.com/faasnet/faasnet/ftree"
	"github.com/faasnet/faasnet/placement"
)

// forest is the control plane's state as the manager keeps it: a VM pool,
// one ftree.Tree per function, each VM's functions and its fan-out across
// all its trees, which every tree reads as its Weigher (FT-aware
// placement). Its methods follow manager/manager.go call for call:
// weight is Manager.weight, refanout is Manager.refanout, insert and remove
// are txn.insert and txn.remove (with txn.apply), choose is Manager.choose.
// Only what concerns storage, generations and pushes is left out.
type forest struct {
	names    []string
	index    map[string]int32
	vms      []vmState
	fns      []*ftree.Tree
	capacity int // functions per VM
	cands    []placement.Candidate
}

type vmState struct {
	fns    []int32 // functions whose tree holds this VM
	fanout int     // children across all the VM's trees
}

// vmName names VM i so that names sort like indexes (placement breaks
// ties by name).
func vmName(i, n int) string {
	return fmt.Sprintf("vm%0*d", len(fmt.Sprint(n-1)), i)
}

func newForest(vms, functions, capacity int) *forest {
	f := &forest{index: make(map[string]int32, vms), vms: make([]vmState, vms), capacity: capacity}
	f.names = make([]string, vms)
	for i := range vms {
		f.names[i] = vmName(i, vms)
		f.index[f.names[i]] = int32(i)
	}
	f.fns = make([]*ftree.Tree, functions)
	for i := range f.fns {
		f.fns[i] = ftree.New(f.weight)
	}
	return f
}

func (f *forest) weight(vm string) int {
	if i, ok := f.index[vm]; ok {
		return f.vms[i].fanout
	}
	return 0
}

// refanout recounts vm's children across its trees and tells each tree.
func (f *forest) refanout(vm string) {
	i, ok := f.index[vm]
	if !ok {
		return
	}
	v := &f.vms[i]
	n := 0
	for _, fn := range v.fns {
		n += len(f.fns[fn].Children(vm))
	}
	if n == v.fanout {
		return
	}
	v.fanout = n
	for _, fn := range v.fns {
		f.fns[fn].Reweigh(vm)
	}
}

func (f *forest) apply(ch ftree.Change) {
	for _, vm := range ch.Fanout {
		f.refanout(vm)
	}
}

// insert adds vm to fn's tree.
func (f *forest) insert(fn, vm int32) (ftree.Change, error) {
	name := f.names[vm]
	ch, err := f.fns[fn].Insert(name)
	if err != nil {
		return ch, fmt.Errorf("inserting %s into the tree of function %d: %w", name, fn, err)
	}
	f.vms[vm].fns = append(f.vms[vm].fns, fn)
	f.apply(ch)
	return ch, nil
}

// remove takes vm out of fn's tree.
func (f *forest) remove(fn, vm int32) (ftree.Change, error) {
	name := f.names[vm]
	ch, err := f.fns[fn].Delete(name)
	if err != nil {
		return ch, fmt.Errorf("removing %s from the tree of function %d: %w", name, fn, err)
	}
	v := &f.vms[vm]
	if k := slices.Index(v.fns, fn); k >= 0 {
		v.fns = slices.Delete(v.fns, k, k+1)
	}
	f.refanout(name)
	f.apply(ch)
	return ch, nil
}

// choose picks up to count VMs for fn with placement.Choose, among the VMs
// that do not host fn and are below capacity. Unlike the manager, which
// refuses a request it cannot fully meet, it returns as many as it can: a
// replayed trace goes on after a full pool, and counts what it missed.
func (f *forest) choose(fn int32, count int) []int32 {
	cs := f.cands[:0]
	for i := range f.vms {
		v := &f.vms[i]
		if len(v.fns) >= f.capacity || slices.Contains(v.fns, fn) {
			continue
		}
		cs = append(cs, placement.Candidate{VM: f.names[i], Functions: len(v.fns), Fanout: v.fanout})
	}
	f.cands = cs
	names := placement.Choose(cs, min(count, len(cs)))
	out := make([]int32, len(names))
	for k, n := range names {
		out[k] = f.index[n]
	}
	return out
}

// parent returns vm's parent in fn's tree, -1 at the root.
func (f *forest) parent(fn, vm int32) int32 {
	p, _ := f.fns[fn].Parent(f.names[vm])
	if p == "" {
		return -1
	}
	return f.index[p]
}

// height returns the height of the highest tree.
func (f *forest) height() int {
	h := 0
	for _, t := range f.fns {
		h = max(h, t.Height())
	}
	return h
}
