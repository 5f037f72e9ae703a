package sim

import (
	"fmt"

	"github.com/faasnet/faasnet/forest"
	"github.com/faasnet/faasnet/ftree"
	"github.com/faasnet/faasnet/placement"
)

// controlPlane is the control plane as the manager keeps it: a
// forest.Forest, the manager's own code for VMs, trees and FT-aware
// placement, with placement.Choose picking VMs. It names VMs and functions by index, as the
// data plane does, and translates to the names the forest uses. What
// concerns storage, generations and pushes is left out.
type controlPlane struct {
	f       *forest.Forest
	names   []string // VM names by index
	index   map[string]int32
	fnNames []string
	trees   []*ftree.Tree // the forest's, to read
	cands   []placement.Candidate
}

// vmName names VM i so that names sort like indexes (placement breaks
// ties by name).
func vmName(i, n int) string {
	return fmt.Sprintf("vm%0*d", len(fmt.Sprint(n-1)), i)
}

func newControlPlane(vms, functions, capacity int) *controlPlane {
	c := &controlPlane{f: forest.New(), names: make([]string, vms), index: make(map[string]int32, vms),
		fnNames: make([]string, functions), trees: make([]*ftree.Tree, functions)}
	for i := range vms {
		c.names[i] = vmName(i, vms)
		c.index[c.names[i]] = int32(i)
		c.f.SetVM(c.names[i], capacity)
	}
	for i := range functions {
		c.fnNames[i] = fmt.Sprintf("fn%d", i)
		if err := c.f.AddFunction(c.fnNames[i]); err != nil {
			panic(err) // the names are distinct
		}
		c.trees[i] = c.f.Tree(c.fnNames[i])
	}
	return c
}

// insert adds vm to fn's tree.
func (c *controlPlane) insert(fn, vm int32) (ftree.Change, error) {
	return c.f.Insert(c.fnNames[fn], c.names[vm])
}

// remove takes vm out of fn's tree.
func (c *controlPlane) remove(fn, vm int32) (ftree.Change, error) {
	return c.f.Remove(c.fnNames[fn], c.names[vm])
}

// choose picks up to count VMs for fn with placement.Choose, among the VMs
// that can take it (forest.AppendCandidates; no VM caches an image). Unlike
// the manager, which refuses a request it cannot fully meet, it returns as
// many as it can: a replayed trace goes on after a full pool, and counts
// what it missed.
func (c *controlPlane) choose(fn int32, count int) []int32 {
	c.cands = c.f.AppendCandidates(c.cands[:0], c.fnNames[fn], nil)
	names := placement.Choose(c.cands, min(count, len(c.cands)))
	out := make([]int32, len(names))
	for k, n := range names {
		out[k] = c.index[n]
	}
	return out
}

// parent returns vm's parent in fn's tree, -1 at the root.
func (c *controlPlane) parent(fn, vm int32) int32 {
	p, _ := c.trees[fn].Parent(c.names[vm])
	if p == "" {
		return -1
	}
	return c.index[p]
}

// load returns how many functions vm hosts.
func (c *controlPlane) load(vm int32) int { return c.f.Load(c.names[vm]) }

// fanout returns vm's children across its trees.
func (c *controlPlane) fanout(vm int32) int { return c.f.Fanout(c.names[vm]) }

// height returns the height of the highest tree.
func (c *controlPlane) height() int {
	h := 0
	for _, t := range c.trees {
		h = max(h, t.Height())
	}
	return h
}
