package sim

import (
	"fmt"
	"math"
	"slices"
	"testing"
	"time"
)

// TestSwarmInvariants runs layered swarms, with and without endgame, event
// by event, and checks the bookkeeping after every step: connection limits
// (dials count), no duplicate connections, request counts; and at the end
// that every VM kept exactly the image, whatever it received twice.
func TestSwarmInvariants(t *testing.T) {
	for _, endgame := range []int{0, 3} {
		t.Run(fmt.Sprint("endgame", endgame), func(t *testing.T) {
			c := DefaultConfig()
			c.VMs, c.ImageSize, c.Layers = 40, 60_000_000, 3
			c.PieceSize = 4_000_000
			c.Swarm.Endgame = endgame
			c, err := c.normalize()
			if err != nil {
				t.Fatal(err)
			}
			w, err := newWorld(c, Swarm, 1, int64(time.Microsecond))
			if err != nil {
				t.Fatal(err)
			}
			ready := 0
			if _, err := w.scaleOut(0, c.VMs, false, func(int32) { ready++ }); err != nil {
				t.Fatal(err)
			}
			sp := w.pl.(*swarmPlane)
			for step := 0; w.e.step(math.MaxInt64); step++ {
				for _, sw := range sp.swarms[0] {
					checkSwarm(t, step, sw, sp.peers[0])
				}
			}
			if ready != c.VMs {
				t.Fatalf("%d of %d VMs ready", ready, c.VMs)
			}
			wasted := 0.0
			for v := range c.VMs {
				if got := w.e.recv[v] - w.e.waste[v]; math.Abs(got-c.need(Swarm)) > 1 {
					t.Errorf("VM %d kept %v bytes, want %v", v, got, c.need(Swarm))
				}
				wasted += w.e.waste[v]
			}
			// Endgame's duplicates cost bytes; without it nothing is
			// received twice (no connection closes mid-piece here).
			if endgame == 0 && wasted != 0 || endgame > 0 && wasted == 0 {
				t.Errorf("endgame %d: %v bytes wasted", endgame, wasted)
			}
		})
	}
}

func checkSwarm(t *testing.T, step int, sw *swarm, peers map[int32][]*speer) {
	t.Helper()
	all := []*speer{sw.origin}
	for _, qs := range peers {
		for _, q := range qs {
			if q.sw == sw {
				all = append(all, q)
			}
		}
	}
	for _, p := range all {
		seen := map[*speer]bool{}
		for _, c := range p.conns {
			o := c.other(p)
			if o == p || seen[o] || c.closed {
				t.Fatalf("step %d: peer %d: bad connection to %d", step, p.vm, o.vm)
			}
			seen[o] = true
		}
		n := len(p.conns)
		for _, q := range p.dialing {
			if !seen[q] {
				n++
			}
		}
		if n > sw.cfg.Conns {
			t.Fatalf("step %d: peer %d has %d connections and dials, limit %d", step, p.vm, n, sw.cfg.Conns)
		}
		asked := make([]int32, sw.pieces)
		for _, c := range p.conns {
			d := c.from(c.other(p))
			for k, i := range d.queue {
				asked[i]++
				if p.have[i] && k > 0 {
					t.Fatalf("step %d: peer %d still asks for piece %d it has", step, p.vm, i)
				}
			}
		}
		if !slices.Equal(asked, p.pending) {
			t.Fatalf("step %d: peer %d: requests %v, counted %v", step, p.vm, asked, p.pending)
		}
	}
}
