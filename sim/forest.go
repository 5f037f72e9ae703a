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
//
// Each function has Config.Stripes stripe trees (ftree.Striped, fan-out k).
// For the fan-out measurement (Config.StripeFanout = 2 with more than two
// stripes), each stripe is instead a binary tree of its own, kept in the
// forest as a function of its own, so that FT-aware placement spreads the
// interior roles over the stripes as it does over functions.
type controlPlane struct {
	f       *forest.Forest
	names   []string // VM names by index
	index   map[string]int32
	fnNames []string
	stripes int
	binary  bool             // one forest tree per stripe
	trees   []*ftree.Striped // the forest's, to read; nil when binary
	btrees  [][]*ftree.Tree  // [fn][stripe] when binary
	cands   []placement.Candidate
}

// vmName names VM i so that names sort like indexes (placement breaks
// ties by name).
func vmName(i, n int) string {
	return fmt.Sprintf("vm%0*d", len(fmt.Sprint(n-1)), i)
}

func newControlPlane(vms, functions, capacity, stripes int, binary bool) *controlPlane {
	stripes = max(stripes, 1)
	binary = binary && stripes > 1
	c := &controlPlane{f: forest.New(), names: make([]string, vms), index: make(map[string]int32, vms),
		fnNames: make([]string, functions), stripes: stripes, binary: binary}
	if binary {
		capacity *= stripes
		c.btrees = make([][]*ftree.Tree, functions)
	} else {
		c.trees = make([]*ftree.Striped, functions)
	}
	for i := range vms {
		c.names[i] = vmName(i, vms)
		c.index[c.names[i]] = int32(i)
		c.f.SetVM(c.names[i], capacity)
	}
	for i := range functions {
		c.fnNames[i] = fmt.Sprintf("fn%d", i)
		if !binary {
			if err := c.f.AddStripedFunction(c.fnNames[i], stripes); err != nil {
				panic(err) // the names are distinct, stripes normalized
			}
			c.trees[i] = c.f.Striped(c.fnNames[i])
			continue
		}
		c.btrees[i] = make([]*ftree.Tree, stripes)
		for s := range stripes {
			name := c.stripeFn(int32(i), s)
			if err := c.f.AddFunction(name); err != nil {
				panic(err)
			}
			c.btrees[i][s] = c.f.Tree(name)
		}
	}
	return c
}

// stripeFn names the forest function that holds stripe s of fn when
// binary.
func (c *controlPlane) stripeFn(fn int32, s int) string {
	return fmt.Sprintf("%s#%d", c.fnNames[fn], s)
}

// insert adds vm to fn's trees.
func (c *controlPlane) insert(fn, vm int32) (ftree.StripedChange, error) {
	if !c.binary {
		return c.f.InsertStriped(c.fnNames[fn], c.names[vm])
	}
	return c.eachStripe(fn, func(name string) (ftree.Change, error) { return c.f.Insert(name, c.names[vm]) })
}

// remove takes vm out of fn's trees.
func (c *controlPlane) remove(fn, vm int32) (ftree.StripedChange, error) {
	if !c.binary {
		return c.f.RemoveStriped(c.fnNames[fn], c.names[vm])
	}
	return c.eachStripe(fn, func(name string) (ftree.Change, error) { return c.f.Remove(name, c.names[vm]) })
}

func (c *controlPlane) eachStripe(fn int32, op func(name string) (ftree.Change, error)) (ftree.StripedChange, error) {
	var out ftree.StripedChange
	for s := range c.stripes {
		ch, err := op(c.stripeFn(fn, s))
		if err != nil {
			return out, err
		}
		for _, m := range ch.Moved {
			out.Moved = append(out.Moved, ftree.StripeMove{Stripe: s, VM: m.VM, Parent: m.Parent})
		}
		out.Fanout = append(out.Fanout, ch.Fanout...)
	}
	return out, nil
}

// choose picks up to count VMs for fn with placement.Choose, among the VMs
// that can take it (forest.AppendCandidates; no VM caches an image). Unlike
// the manager, which refuses a request it cannot fully meet, it returns as
// many as it can: a replayed trace goes on after a full pool, and counts
// what it missed.
func (c *controlPlane) choose(fn int32, count int) []int32 {
	name := c.fnNames[fn]
	if c.binary {
		name = c.stripeFn(fn, 0)
	}
	c.cands = c.f.AppendCandidates(c.cands[:0], name, nil)
	names := placement.Choose(c.cands, min(count, len(c.cands)))
	out := make([]int32, len(names))
	for k, n := range names {
		out[k] = c.index[n]
	}
	return out
}

// parent returns vm's parent in stripe s of fn's trees, -1 at the root.
func (c *controlPlane) parent(fn, vm int32, s int) int32 {
	var p string
	if c.binary {
		p, _ = c.btrees[fn][s].Parent(c.names[vm])
	} else {
		p, _ = c.trees[fn].Parent(c.names[vm], s)
	}
	if p == "" {
		return -1
	}
	return c.index[p]
}

// parents returns vm's parent in each stripe of fn's trees, -1 at a root.
func (c *controlPlane) parents(fn, vm int32) []int32 {
	out := make([]int32, c.stripes)
	for s := range out {
		out[s] = c.parent(fn, vm, s)
	}
	return out
}

// size returns the number of VMs in fn's trees.
func (c *controlPlane) size(fn int32) int {
	if c.binary {
		return c.btrees[fn][0].Len()
	}
	return c.trees[fn].Len()
}

// check runs every tree's Check.
func (c *controlPlane) check(fn int32) error {
	if !c.binary {
		return c.trees[fn].Check()
	}
	for _, t := range c.btrees[fn] {
		if err := t.Check(); err != nil {
			return err
		}
	}
	return nil
}

// load returns how many functions vm hosts.
func (c *controlPlane) load(vm int32) int {
	if c.binary {
		return c.f.Load(c.names[vm]) / c.stripes
	}
	return c.f.Load(c.names[vm])
}

// fanout returns vm's children across its trees.
func (c *controlPlane) fanout(vm int32) int { return c.f.Fanout(c.names[vm]) }

// height returns the height of the highest tree.
func (c *controlPlane) height() int {
	h := 0
	for fn := range c.fnNames {
		for s := range c.stripes {
			if c.binary {
				h = max(h, c.btrees[fn][s].Height())
			} else {
				h = max(h, c.trees[fn].Height(s))
			}
		}
	}
	return h
}
