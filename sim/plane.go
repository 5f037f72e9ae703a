package sim

import (
	"math"
	"math/rand/v2"

	"github.com/faasnet/faasnet/imagegen"
)

// A plane is a data plane: how the VMs the control plane assigns to a
// function get its image. The control plane (controlPlane) and its trees
// are the same under every strategy, so that strategies differ in nothing
// but the data plane.
//
// An image is Config.Layers layers (see layerSizes), which every strategy
// moves in parallel, each on its own, as the emulation's workers and swarm
// agents do: a tree streams each layer down its own pipeline, a swarm
// shares each layer as a torrent of its own.
type plane interface {
	// join starts vm's fetch of fn's image; parents are vm's parents in
	// each stripe of fn's trees, -1 at a root. done runs when vm has the
	// bytes it needs of every layer. With cached, vm has the whole image
	// already: it fetches nothing, done does not run, and vm can serve
	// others at once.
	join(fn, vm int32, parents []int32, cached bool, done func())
	// move tells that vm's parent in stripe s of fn's trees is now parent.
	move(fn, vm int32, s int, parent int32)
	// leave stops vm's part in fn.
	leave(fn, vm int32)
}

// layerSizes splits the bytes a VM needs of an image of cfg into its
// layers: as package imagegen sizes the bench's generated images (the base
// layer half of the image, the others sharing the rest with decreasing
// weights), scaled to need.
func layerSizes(cfg Config, need float64) []float64 {
	n := max(cfg.Layers, 1)
	if n == 1 {
		return []float64{need}
	}
	sizes, err := imagegen.LayerSizes(imagegen.Spec{TotalSize: cfg.ImageSize, Layers: n})
	if err != nil {
		panic(err) // normalize checked the layers
	}
	out := make([]float64, n)
	for i, s := range sizes {
		out[i] = float64(s) * need / float64(cfg.ImageSize)
	}
	return out
}

// allDone returns a function to call once per layer that runs done on the
// last call.
func allDone(layers int, done func()) func() {
	if layers == 1 {
		return done
	}
	left := layers
	return func() {
		if left--; left == 0 && done != nil {
			done()
		}
	}
}

// stripeSizes splits a blob of size bytes into the k stripes its blocks go
// down: block i (of block bytes, the last one shorter) to stripe i mod k.
// A blob of one block goes down stripe 0 alone.
func stripeSizes(size, block float64, k int) []float64 {
	out := make([]float64, k)
	full := math.Floor(size / block)
	rem := size - full*block
	for s := range k {
		// Blocks s, s+k, ... below full.
		if n := math.Floor((full - float64(s) + float64(k) - 1) / float64(k)); n > 0 {
			out[s] = n * block
		}
	}
	if rem > 0 {
		out[int(math.Mod(full, float64(k)))] += rem
	}
	return out
}

// treePlane is FaaSNet: every VM streams each stripe of each layer from
// its parent in that stripe's tree, each stripe's root from the registry.
// A VM's uplink is one link in the engine, so whatever it forwards (its
// children in every stripe, every layer) shares it max-min fairly; so does
// its downlink, across the stripes it receives.
type treePlane struct {
	e     *engine
	sizes [][]float64 // [layer][stripe]
	reps  []map[int32][][]*replica
}

func newTreePlane(e *engine, functions int, layers []float64, stripes int) *treePlane {
	p := &treePlane{e: e, sizes: make([][]float64, len(layers)), reps: make([]map[int32][][]*replica, functions)}
	for l, size := range layers {
		p.sizes[l] = stripeSizes(size, e.p.block, stripes)
	}
	for i := range p.reps {
		p.reps[i] = map[int32][][]*replica{}
	}
	return p
}

// replica returns vm's copy of stripe s of layer l of fn's image; nil for
// the registry (vm -1), a VM that left, or an empty stripe.
func (p *treePlane) replica(fn, vm int32, l, s int) *replica {
	if vm < 0 {
		return nil
	}
	if rs := p.reps[fn][vm]; rs != nil {
		return rs[l][s]
	}
	return nil
}

func (p *treePlane) join(fn, vm int32, parents []int32, cached bool, done func()) {
	parts := 0
	for _, ss := range p.sizes {
		for _, size := range ss {
			if size > 0 {
				parts++
			}
		}
	}
	onDone := allDone(parts, done)
	rs := make([][]*replica, len(p.sizes))
	for l, ss := range p.sizes {
		rs[l] = make([]*replica, len(ss))
		for s, size := range ss {
			if size > 0 {
				rs[l][s] = &replica{vm: vm, size: size, parent: p.replica(fn, parents[s], l, s), onDone: onDone}
			}
		}
	}
	p.reps[fn][vm] = rs
	for _, ls := range rs {
		for _, r := range ls {
			switch {
			case r == nil:
			case cached:
				r.have, r.done = r.size, true
			default:
				p.e.fetch(r)
			}
		}
	}
}

func (p *treePlane) move(fn, vm int32, s int, parent int32) {
	for l, ls := range p.reps[fn][vm] {
		if ls[s] != nil {
			p.e.reparent(ls[s], p.replica(fn, parent, l, s))
		}
	}
}

func (p *treePlane) leave(fn, vm int32) {
	rs, ok := p.reps[fn][vm]
	if !ok {
		return
	}
	for _, ls := range rs {
		for _, r := range ls {
			if r != nil {
				p.e.drop(r)
			}
		}
	}
	delete(p.reps[fn], vm)
}

// directPlane is every VM fetching from the registry (whole, or only the
// part read before start), each layer in one piece.
type directPlane struct {
	treePlane
}

func (p *directPlane) join(fn, vm int32, _ []int32, cached bool, done func()) {
	p.treePlane.join(fn, vm, []int32{-1}, cached, done)
}
func (p *directPlane) move(fn, vm int32, s int, parent int32) {}

// swarmPlane is one swarm per layer of each function's image.
type swarmPlane struct {
	e      *engine
	cfg    SwarmConfig
	rng    *rand.Rand
	sizes  []float64 // of each layer
	piece  float64
	swarms [][]*swarm // [fn][layer], created on the first join
	peers  []map[int32][]*speer
}

func newSwarmPlane(e *engine, cfg SwarmConfig, rng *rand.Rand, functions int, sizes []float64, piece float64) *swarmPlane {
	p := &swarmPlane{e: e, cfg: cfg, rng: rng, sizes: sizes, piece: piece,
		swarms: make([][]*swarm, functions), peers: make([]map[int32][]*speer, functions)}
	for i := range p.peers {
		p.peers[i] = map[int32][]*speer{}
	}
	return p
}

func (p *swarmPlane) join(fn, vm int32, _ []int32, cached bool, done func()) {
	if p.swarms[fn] == nil {
		p.swarms[fn] = make([]*swarm, len(p.sizes))
		for l, size := range p.sizes {
			p.swarms[fn][l] = newSwarm(p.e, p.cfg, p.rng, size, p.piece)
		}
	}
	onDone := allDone(len(p.sizes), done)
	qs := make([]*speer, len(p.sizes))
	for l, sw := range p.swarms[fn] {
		qs[l] = sw.join(vm, cached, onDone)
	}
	p.peers[fn][vm] = qs
}

func (p *swarmPlane) move(fn, vm int32, s int, parent int32) {}

func (p *swarmPlane) leave(fn, vm int32) {
	qs, ok := p.peers[fn][vm]
	if !ok {
		return
	}
	for l, q := range qs {
		p.swarms[fn][l].leave(q)
	}
	delete(p.peers[fn], vm)
}
