package sim

import (
	"math/rand/v2"
	"time"
)

// SwarmConfig is the Kraken-like swarm baseline: the image is cut into
// pieces; a peer asks a tracker for peers, connects to a bounded number of
// them, and on each connection keeps a few piece requests outstanding,
// rarest piece first. A piece is served only once it has fully arrived (and
// been verified), which is what separates a swarm from cut-through trees.
// The registry acts as the swarm's origin (seeder). The defaults are
// Kraken's (lib/torrent/scheduler: max_open_conn 10, pipeline_limit 3).
//
// The emulation's swarm (faasnet bench) should take these values from here,
// so that calibration compares the same policy.
type SwarmConfig struct {
	// Conns bounds the connections of a peer (and of the origin) per image.
	Conns int `json:"conns"`
	// Pipeline is how many piece requests a peer keeps outstanding on one
	// connection; they are served one after the other.
	Pipeline int `json:"pipeline"`
	// Handout is how many random peers the tracker returns, besides the
	// origin, which it always returns first.
	Handout int `json:"handout"`
	// Announce is how often a peer that is not complete asks the tracker
	// again, to replace peers with nothing left to give.
	Announce time.Duration `json:"announce"`
}

// DefaultSwarm returns the Kraken defaults.
func DefaultSwarm() SwarmConfig {
	return SwarmConfig{Conns: 10, Pipeline: 3, Handout: 50, Announce: 3 * time.Second}
}

// swarm is one image's swarm.
type swarm struct {
	e         *engine
	cfg       SwarmConfig
	rng       *rand.Rand
	pieces    int
	piece     float64 // bytes of every piece but maybe the last
	last      float64 // bytes of the last piece
	origin    *speer
	tracker   tracker
	handouts  []*speer // scratch
	idleConns []*sconn // scratch
}

func newSwarm(e *engine, cfg SwarmConfig, rng *rand.Rand, size, piece float64) *swarm {
	n := int((size + piece - 1) / piece)
	if n < 1 {
		n = 1
	}
	sw := &swarm{e: e, cfg: cfg, rng: rng, pieces: n, piece: piece, last: size - float64(n-1)*piece}
	sw.origin = sw.newPeer(registryNode)
	for i := range n {
		sw.origin.have[i] = true
	}
	sw.origin.nhave = n
	sw.origin.done = true
	return sw
}

func (sw *swarm) pieceLen(i int32) float64 {
	if int(i) == sw.pieces-1 {
		return sw.last
	}
	return sw.piece
}

// speer is one VM (or the origin) in a swarm.
type speer struct {
	sw      *swarm
	vm      int32
	have    []bool
	nhave   int
	pending []bool  // requested on some connection
	count   []int32 // connected peers that have each piece
	conns   []*sconn
	listed  int // index in the tracker's list, -1 if not listed
	done    bool
	left    bool
	onDone  func()
}

func (sw *swarm) newPeer(vm int32) *speer {
	return &speer{sw: sw, vm: vm, have: make([]bool, sw.pieces), pending: make([]bool, sw.pieces),
		count: make([]int32, sw.pieces), listed: -1}
}

// sconn is a connection between two peers; data can flow both ways.
type sconn struct {
	a, b   *speer
	up     bool // the handshake (bitfield exchange) is done
	closed bool
	dirs   [2]sdir
}

func (c *sconn) other(p *speer) *speer {
	if p == c.a {
		return c.b
	}
	return c.a
}

// from returns the direction in which p sends.
func (c *sconn) from(p *speer) *sdir {
	if p == c.a {
		return &c.dirs[0]
	}
	return &c.dirs[1]
}

// sdir is one direction of a connection: the pieces dst asked src for, in
// order, and the flow carrying the first of them.
type sdir struct {
	sw       *swarm
	src, dst *speer
	queue    []int32
	got      float64 // bytes of queue[0] received
	flow     *flow
}

func (d *sdir) headLen() float64 { return d.sw.pieceLen(d.queue[0]) }

// join adds a peer on vm, complete if cached; it announces to the tracker
// after one latency.
func (sw *swarm) join(vm int32, cached bool, onDone func()) *speer {
	p := sw.newPeer(vm)
	p.onDone = onDone
	if cached {
		for i := range p.have {
			p.have[i] = true
		}
		p.nhave, p.done = sw.pieces, true
	}
	sw.e.after(sw.e.p.latency, func() { sw.announce(p) })
	return p
}

// announce lists p with the tracker, closes p's connections that only take
// a slot (Kraken closes idle connections after a while; here at the next
// announce), and connects p to peers from the tracker's answer while both
// sides have room.
func (sw *swarm) announce(p *speer) {
	if p.left {
		return
	}
	if p.listed < 0 {
		sw.tracker.add(p)
	}
	if p.done {
		return
	}
	sw.prune(p)
	for _, q := range sw.handout(p) {
		if len(p.conns) >= sw.cfg.Conns {
			break
		}
		if len(q.conns) < sw.cfg.Conns && !p.connected(q) {
			sw.connect(p, q)
		}
	}
	sw.e.after(int64(sw.cfg.Announce), func() { sw.announce(p) })
}

// prune closes p's idle connections.
func (sw *swarm) prune(p *speer) {
	idle := sw.idleConns[:0]
	for _, c := range p.conns {
		if sw.idle(c) {
			idle = append(idle, c)
		}
	}
	for _, c := range idle {
		sw.close(c)
	}
	sw.idleConns = idle[:0]
}

// handout is the tracker's answer to p, as Kraken's priority policy gives
// it: the origin, then complete peers, then the others, at random within
// each class, at most Handout peers besides the origin.
func (sw *swarm) handout(p *speer) []*speer {
	out := append(sw.handouts[:0], sw.origin)
	out = sw.tracker.seeders.sample(sw.rng, p, sw.cfg.Handout, out)
	out = sw.tracker.leechers.sample(sw.rng, p, sw.cfg.Handout-(len(out)-1), out)
	sw.handouts = out
	return out
}

// tracker lists a swarm's peers, complete ones apart.
type tracker struct {
	seeders, leechers peerSet
}

func (t *tracker) add(p *speer) {
	if p.done {
		t.seeders.add(p)
	} else {
		t.leechers.add(p)
	}
}

func (t *tracker) remove(p *speer) {
	if p.listed < 0 {
		return
	}
	if p.done {
		t.seeders.remove(p)
	} else {
		t.leechers.remove(p)
	}
}

// completed moves p to the seeders.
func (t *tracker) completed(p *speer) {
	if p.listed < 0 {
		return
	}
	t.leechers.remove(p)
	t.seeders.add(p)
}

// peerSet is a set of peers with O(1) add, remove and random pick.
type peerSet []*speer

func (s *peerSet) add(p *speer) {
	p.listed = len(*s)
	*s = append(*s, p)
}

func (s *peerSet) remove(p *speer) {
	a := *s
	last := a[len(a)-1]
	a[p.listed] = last
	last.listed = p.listed
	*s = a[:len(a)-1]
	p.listed = -1
}

// sample appends to out up to n random members other than p.
func (s peerSet) sample(rng *rand.Rand, p *speer, n int, out []*speer) []*speer {
	if n <= 0 || len(s) == 0 {
		return out
	}
	if len(s) <= 2*n {
		start := len(out)
		for _, q := range s {
			if q != p {
				out = append(out, q)
			}
		}
		tail := out[start:]
		rng.Shuffle(len(tail), func(i, j int) { tail[i], tail[j] = tail[j], tail[i] })
		if len(tail) > n {
			out = out[:start+n]
		}
		return out
	}
	// Rejection sampling: s is more than twice as large as n.
	seen := make(map[int]bool, n)
	for k := 0; k < n; {
		i := rng.IntN(len(s))
		if seen[i] || s[i] == p {
			continue
		}
		seen[i] = true
		out = append(out, s[i])
		k++
	}
	return out
}

func (p *speer) connected(q *speer) bool {
	for _, c := range p.conns {
		if c.other(p) == q {
			return true
		}
	}
	return false
}

// connect opens a connection; it carries data after one latency.
func (sw *swarm) connect(p, q *speer) {
	c := &sconn{a: p, b: q}
	c.dirs[0] = sdir{sw: sw, src: p, dst: q}
	c.dirs[1] = sdir{sw: sw, src: q, dst: p}
	p.conns = append(p.conns, c)
	q.conns = append(q.conns, c)
	sw.e.after(sw.e.p.latency, func() {
		if c.closed {
			return
		}
		c.up = true
		for i := range sw.pieces {
			if p.have[i] {
				q.count[i]++
			}
			if q.have[i] {
				p.count[i]++
			}
		}
		sw.fill(&c.dirs[0])
		sw.fill(&c.dirs[1])
	})
}

// fill tops up d's requests to the pipeline limit, rarest piece first.
func (sw *swarm) fill(d *sdir) {
	for len(d.queue) < sw.cfg.Pipeline {
		i := sw.rarest(d.src, d.dst)
		if i < 0 {
			break
		}
		d.queue = append(d.queue, i)
		d.dst.pending[i] = true
	}
	if len(d.queue) > 0 && d.flow == nil {
		d.flow = &flow{src: d.src.vm, dst: d.dst.vm, dir: d, active: true}
		sw.e.add(d.flow)
	}
}

// rarest returns the piece src has and dst neither has nor has asked for
// that the fewest of dst's peers have, ties broken at random; -1 if none.
func (sw *swarm) rarest(src, dst *speer) int32 {
	if dst.vm == registryNode || dst.done {
		return -1
	}
	best, bestCount := int32(-1), int32(1<<30)
	off := sw.rng.IntN(sw.pieces)
	for k := range sw.pieces {
		i := (off + k) % sw.pieces
		if src.have[i] && !dst.have[i] && !dst.pending[i] && dst.count[i] < bestCount {
			best, bestCount = int32(i), dst.count[i]
		}
	}
	return best
}

// pieceDone handles the arrival of d's first queued piece.
func (d *sdir) pieceDone() {
	sw := d.sw
	i := d.queue[0]
	d.queue = append(d.queue[:0], d.queue[1:]...)
	d.got = 0
	dst := d.dst
	dst.pending[i] = false
	if !dst.have[i] {
		dst.have[i] = true
		dst.nhave++
		for _, c := range dst.conns {
			if c.up {
				c.other(dst).count[i]++
				sw.fill(c.from(dst))
			}
		}
	}
	sw.fill(d)
	if len(d.queue) == 0 {
		sw.e.remove(d.flow)
		d.flow = nil
	}
	if dst.nhave == sw.pieces && !dst.done {
		sw.tracker.completed(dst)
		dst.done = true
		sw.prune(dst)
		if dst.onDone != nil {
			dst.onDone()
		}
	}
}

// leave takes p out of the swarm: its connections close, the pieces asked
// of it are asked elsewhere.
func (sw *swarm) leave(p *speer) {
	p.left = true
	sw.tracker.remove(p)
	for len(p.conns) > 0 {
		sw.close(p.conns[0])
	}
}

// idle reports whether c carries nothing and neither side has anything the
// other lacks: it only takes a connection slot.
func (sw *swarm) idle(c *sconn) bool {
	if !c.up || len(c.dirs[0].queue) > 0 || len(c.dirs[1].queue) > 0 {
		return false
	}
	return sw.rarest(c.a, c.b) < 0 && sw.rarest(c.b, c.a) < 0
}

// close closes c; requests queued on it go back to be asked elsewhere.
func (sw *swarm) close(c *sconn) {
	c.closed = true
	for k := range c.dirs {
		d := &c.dirs[k]
		sw.e.remove(d.flow)
		d.flow = nil
		for _, i := range d.queue {
			d.dst.pending[i] = false
		}
		d.queue = nil
	}
	for _, p := range []*speer{c.a, c.b} {
		for k, pc := range p.conns {
			if pc == c {
				p.conns = append(p.conns[:k], p.conns[k+1:]...)
				break
			}
		}
	}
	if !c.up {
		return
	}
	c.up = false
	for _, p := range []*speer{c.a, c.b} {
		q := c.other(p)
		for i := range sw.pieces {
			if q.have[i] {
				p.count[i]--
			}
		}
	}
	for _, p := range []*speer{c.a, c.b} {
		if p.left {
			continue
		}
		for _, pc := range p.conns {
			if pc.up {
				sw.fill(pc.from(pc.other(p)))
			}
		}
	}
}
