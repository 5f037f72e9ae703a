package sim

import (
	"math"
	"testing"
	"time"
)

// TestLeaveMidTransfer removes a VM from a tree (or swarm, or from every
// stripe tree) while images are still moving: the VMs that move to a new parent keep what they have and
// finish, and nobody receives a byte twice.
func TestLeaveMidTransfer(t *testing.T) {
	type tc struct {
		s       Strategy
		stripes int
	}
	var cases []tc
	for _, s := range Strategies {
		cases = append(cases, tc{s, DefaultStripes})
	}
	// The tree with one stripe and with four: a VM leaving mid-transfer
	// re-parents VMs in every stripe it had children in.
	cases = append(cases, tc{FaaSNet, 1}, tc{FaaSNet, 4}, tc{FaaSNetLazy, 3})
	for _, cs := range cases {
		s := cs.s
		c := DefaultConfig()
		c.VMs, c.ImageSize, c.Stripes = 15, 200_000_000, cs.stripes
		c, _ = c.normalize()
		w, err := newWorld(c, s, 1, int64(time.Microsecond))
		if err != nil {
			t.Fatal(err)
		}
		ready := map[int32]bool{}
		vms, err := w.scaleOut(0, 15, false, func(vm int32) { ready[vm] = true })
		if err != nil {
			t.Fatal(err)
		}
		// A quarter of the time the fastest VM needs: nobody is done.
		w.e.run(int64(c.need(s) / float64(c.Bandwidth) / 4 * 1e9))
		// vms[1] is a child of the root, with a subtree below it.
		gone := vms[1]
		if err := w.scaleIn(0, gone); err != nil {
			t.Fatal(err)
		}
		w.e.run(math.MaxInt64)
		if len(ready) != 14 || ready[gone] {
			t.Errorf("%s: %d started (the removed VM: %v), want the 14 others", s, len(ready), ready[gone])
		}
		for _, vm := range vms {
			if vm == gone {
				if w.e.recv[vm] >= c.need(s) {
					t.Errorf("%s: the removed VM got the whole image before it left", s)
				}
				continue
			}
			// A swarm drops the part of a piece in flight on a closed
			// connection and asks for it again.
			extra := 1.0
			if s == Swarm {
				extra = float64(c.PieceSize)
			}
			if got := w.e.recv[vm] - w.e.waste[vm]; got < c.need(s)-1 || got > c.need(s)+extra {
				t.Errorf("%s: VM %d received %v bytes, want %v (+%v)", s, vm, got, c.need(s), extra)
			}
		}
		if err := w.cp.check(0); err != nil {
			t.Error(err)
		}
	}
}

// TestJoinStreamingTree adds VMs to a tree whose members are still
// fetching: a newcomer under a VM that is ahead of it by more than a block
// catches up at its own speed, and all finish.
func TestJoinStreamingTree(t *testing.T) {
	c := DefaultConfig()
	c.VMs, c.ImageSize = 20, 100_000_000
	c, _ = c.normalize()
	w, err := newWorld(c, FaaSNet, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	started := 0
	if _, err := w.scaleOut(0, 7, false, func(int32) { started++ }); err != nil {
		t.Fatal(err)
	}
	w.e.run(int64(300 * time.Millisecond))
	if _, err := w.scaleOut(0, 8, false, func(int32) { started++ }); err != nil {
		t.Fatal(err)
	}
	w.e.run(math.MaxInt64)
	if started != 15 {
		t.Errorf("%d of 15 started", started)
	}
	if got := w.e.registryOut; got != float64(c.ImageSize) {
		t.Errorf("registry sent %v bytes, want one image", got)
	}
}

func TestTimerOrder(t *testing.T) {
	e := newEngine(netParams{vms: 1, up: 1, down: 1, registry: 1, block: 1, res: 1})
	var got []int
	for i, at := range []int64{5, 1, 5, 3, 1} {
		e.at(at, func() { got = append(got, i) })
	}
	e.run(math.MaxInt64)
	want := []int{1, 4, 3, 0, 2}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("timers ran in order %v, want %v (time, then scheduling order)", got, want)
		}
	}
	if e.now != 5 {
		t.Errorf("clock at %d, want 5", e.now)
	}
}
