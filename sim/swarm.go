package sim

import (
	"math/rand/v2"
	"slices"
	"time"

	kraken "github.com/faasnet/faasnet/swarm"
)

// SwarmConfig is the Kraken-like swarm baseline, as package swarm (which
// faasnet bench runs) implements it: every layer of the image is a torrent
// of its own, cut into pieces; a peer asks a tracker for peers, connects to
// a bounded number of them, and on each connection keeps a few piece
// requests outstanding, rarest piece first. A piece is served only once it
// has fully arrived (and been verified), which is what separates a swarm
// from cut-through trees. The registry acts as the swarm's origin (seeder).
//
// DefaultSwarm takes the emulation's defaults (which are Kraken's), except
// for endgame; see there.
type SwarmConfig struct {
	// Conns bounds the connections of a peer (and of the origin) per
	// layer, counting those it is dialing.
	Conns int `json:"conns"`
	// Pipeline is how many piece requests a peer keeps outstanding on one
	// connection; they are served one after the other.
	Pipeline int `json:"pipeline"`
	// Handout is how many random peers the tracker returns besides the
	// origin: complete peers first, then the origin, then the others.
	Handout int `json:"handout"`
	// Announce is how often a peer that is not complete and has room for
	// connections asks the tracker again.
	Announce time.Duration `json:"announce"`
	// Endgame is the number of missing pieces at which a peer asks every
	// connected peer that has a missing piece for it, not just one
	// (Kraken's endgame): the first copy to arrive counts, a copy already
	// on its way then is wasted, the others are cancelled. A layer of no
	// more pieces than this is in endgame from the start. 0 disables it.
	Endgame int `json:"endgame"`
	// Blacklist is how long a peer does not dial a peer again after it
	// refused a connection for want of room.
	Blacklist time.Duration `json:"blacklist"`
	// DialJitter is the most a connection's handshake takes beyond one
	// latency, drawn at random: on a real network concurrent handshakes
	// complete in no set order. Without it, peers that announce at once
	// would be admitted strictly in announce order, and the first ten
	// would take every slot of the origin and of each other.
	DialJitter time.Duration `json:"dial_jitter"`
}

// DefaultSwarm returns package swarm's defaults (Kraken's): 10
// connections, pipeline 3, 50 peers a handout, an announce every 3 s, a
// 30 s blacklist; and a dial jitter of 2 ms.
//
// Endgame is off, unlike package swarm's (3 pieces): calibration against
// the emulation showed the fluid model's endgame far from it. In the
// model every duplicate takes its fair share of the receiver's link from
// the moment it is asked for, so the copies of a piece finish together
// and all but one are wasted: with the bench's 4 MiB pieces and 1 to 8
// MiB layers (endgame from the start) the simulated VMs received 2.7 times
// the image and took twice as long, while the emulated ones received 1.2
// times the image, and the emulation's endgame changed its makespan by
// less than its run-to-run spread (16.2 s with endgame, 13.2 s without
// at 16 VMs; 18.6 s and 23.4 s at 32). Without endgame the model matches
// the emulation's makespans.
func DefaultSwarm() SwarmConfig {
	return SwarmConfig{
		Conns:      kraken.DefaultMaxConns,
		Pipeline:   kraken.DefaultPipelineLimit,
		Handout:    kraken.DefaultPeerHandoutLimit,
		Announce:   kraken.DefaultAnnounceInterval,
		Blacklist:  kraken.DefaultBlacklistDuration,
		DialJitter: 2 * time.Millisecond,
	}
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
	sample    []*speer // scratch
	doneConns []*sconn // scratch
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
	pending []int32 // connections each piece is requested on
	count   []int32 // connected peers that have each piece
	conns   []*sconn
	listed  int // index in the tracker's list, -1 if not listed
	// dialing are the peers p is dialing: they count against its
	// connections, as in the emulation (and Kraken).
	dialing []*speer
	// banned holds the peers that refused a connection, until when.
	banned map[*speer]int64
	done   bool
	left   bool
	onDone func()
}

func (sw *swarm) newPeer(vm int32) *speer {
	return &speer{sw: sw, vm: vm, have: make([]bool, sw.pieces), pending: make([]int32, sw.pieces),
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

// announce lists p with the tracker and, while p lacks pieces, dials peers
// from the tracker's answer while it has room; again every Announce
// interval while it still has room. Connections stay open while neither
// side needs the other; they close once both are complete.
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
	if sw.room(p) > 0 {
		for _, q := range sw.handout(p) {
			if sw.room(p) <= 0 {
				break
			}
			if p.connected(q) || slices.Contains(p.dialing, q) || sw.e.now < p.banned[q] {
				continue
			}
			sw.dial(p, q)
		}
	}
	sw.e.after(int64(sw.cfg.Announce), func() { sw.announce(p) })
}

// jitter draws the random part of a handshake's time.
func (sw *swarm) jitter() int64 {
	if sw.cfg.DialJitter <= 0 {
		return 0
	}
	return sw.rng.Int64N(int64(sw.cfg.DialJitter) + 1)
}

// room is how many more connections p may open or accept: its open ones
// and its dials count.
func (sw *swarm) room(p *speer) int {
	return sw.cfg.Conns - len(p.conns) - len(p.dialing)
}

// dial connects p to q after one latency (the handshake), if q admits it
// then: a peer without room refuses (unless it is dialing p itself), and
// is not dialed again for Blacklist. Since dials count against room, peers
// that announce at once, each dialing many others, refuse each other a lot:
// that is the emulation's behaviour, and Kraken's.
func (sw *swarm) dial(p, q *speer) {
	p.dialing = append(p.dialing, q)
	sw.e.after(sw.e.p.latency+sw.jitter(), func() {
		if k := slices.Index(p.dialing, q); k >= 0 {
			p.dialing = slices.Delete(p.dialing, k, k+1)
		}
		switch {
		case p.left || q.left || p.connected(q) || p.done && q.done:
		case sw.room(q) <= 0 && !slices.Contains(q.dialing, p):
			if p.banned == nil {
				p.banned = map[*speer]int64{}
			}
			p.banned[q] = sw.e.now + int64(sw.cfg.Blacklist)
		default:
			sw.connect(p, q)
		}
	})
}

// handout is the tracker's answer to p, as the emulation's tracker gives
// it (Kraken's completeness priority): up to Handout random other peers
// plus the origin, complete peers first, then the origin, then the others.
func (sw *swarm) handout(p *speer) []*speer {
	t := &sw.tracker
	sample := sampleUnion(sw.rng, p, sw.cfg.Handout, t.seeders, t.leechers, sw.sample[:0])
	out := sw.handouts[:0]
	for _, q := range sample {
		if q.done {
			out = append(out, q)
		}
	}
	out = append(out, sw.origin)
	for _, q := range sample {
		if !q.done {
			out = append(out, q)
		}
	}
	sw.sample, sw.handouts = sample, out
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

// sampleUnion appends to out up to n random members of a and b other
// than p.
func sampleUnion(rng *rand.Rand, p *speer, n int, a, b peerSet, out []*speer) []*speer {
	m := len(a) + len(b)
	at := func(i int) *speer {
		if i < len(a) {
			return a[i]
		}
		return b[i-len(a)]
	}
	if n <= 0 || m == 0 {
		return out
	}
	if m <= 2*n {
		start := len(out)
		for i := range m {
			if q := at(i); q != p {
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
	// Rejection sampling: the union is more than twice as large as n.
	seen := make(map[int]bool, n)
	for k := 0; k < n; {
		i := rng.IntN(m)
		if seen[i] || at(i) == p {
			continue
		}
		seen[i] = true
		out = append(out, at(i))
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

// connect opens a connection and exchanges bitfields.
func (sw *swarm) connect(p, q *speer) {
	c := &sconn{a: p, b: q, up: true}
	c.dirs[0] = sdir{sw: sw, src: p, dst: q}
	c.dirs[1] = sdir{sw: sw, src: q, dst: p}
	p.conns = append(p.conns, c)
	q.conns = append(q.conns, c)
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
}

// fill tops up d's requests to the pipeline limit, rarest piece first.
func (sw *swarm) fill(d *sdir) {
	for len(d.queue) < sw.cfg.Pipeline {
		i := sw.rarest(d.src, d.dst, d.queue)
		if i < 0 {
			break
		}
		d.queue = append(d.queue, i)
		d.dst.pending[i]++
	}
	if len(d.queue) > 0 && d.flow == nil {
		d.flow = &flow{src: d.src.vm, dst: d.dst.vm, dir: d, active: true}
		sw.e.add(d.flow)
	}
}

// rarest returns the piece src has and dst neither has nor has asked for
// (in endgame: has not asked src for, queued) that the fewest of dst's
// peers have, ties broken at random; -1 if none.
func (sw *swarm) rarest(src, dst *speer, queued []int32) int32 {
	if dst.vm == registryNode || dst.done {
		return -1
	}
	endgame := sw.endgame(dst)
	best, bestCount := int32(-1), int32(1<<30)
	off := sw.rng.IntN(sw.pieces)
	for k := range sw.pieces {
		i := (off + k) % sw.pieces
		asked := dst.pending[i] > 0 && (!endgame || slices.Contains(queued, int32(i)))
		if src.have[i] && !dst.have[i] && !asked && dst.count[i] < bestCount {
			best, bestCount = int32(i), dst.count[i]
		}
	}
	return best
}

// endgame reports whether p misses few enough pieces to ask several peers
// for each.
func (sw *swarm) endgame(p *speer) bool {
	return sw.cfg.Endgame > 0 && sw.pieces-p.nhave <= sw.cfg.Endgame
}

// pieceDone handles the arrival of d's first queued piece.
func (d *sdir) pieceDone() {
	sw := d.sw
	i := d.queue[0]
	d.queue = append(d.queue[:0], d.queue[1:]...)
	d.got = 0
	dst := d.dst
	dst.pending[i]--
	if dst.have[i] {
		// A duplicate of endgame, on its way when the first copy arrived.
		sw.e.wasted(dst.vm, sw.pieceLen(i))
	} else {
		dst.have[i] = true
		dst.nhave++
		for _, c := range dst.conns {
			if c.up {
				c.other(dst).count[i]++
				sw.cancel(c.from(c.other(dst)), i)
				sw.fill(c.from(dst))
			}
		}
		// As the emulation does, every connection's pipeline is topped
		// up: a cancel made room, or endgame began.
		for _, c := range dst.conns {
			if c.up {
				sw.fill(c.from(c.other(dst)))
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
		sw.finish(dst)
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

// cancel drops piece i from d's queue unless it is on its way (the head):
// the receiver got it elsewhere.
func (sw *swarm) cancel(d *sdir, i int32) {
	for k := 1; k < len(d.queue); k++ {
		if d.queue[k] == i {
			d.queue = slices.Delete(d.queue, k, k+1)
			d.dst.pending[i]--
			return
		}
	}
}

// close closes c; requests queued on it go back to be asked elsewhere.
// finish closes p's connections to complete peers (the origin too), as
// Kraken and the emulation do once a peer completes: neither side needs
// the other, and a duplicate of endgame still on its way stops.
func (sw *swarm) finish(p *speer) {
	done := sw.doneConns[:0]
	for _, c := range p.conns {
		if c.other(p).done {
			done = append(done, c)
		}
	}
	for _, c := range done {
		sw.close(c)
	}
	sw.doneConns = done[:0]
}

// close closes c; requests queued on it go back to be asked elsewhere, and
// the part of a piece on its way is lost.
func (sw *swarm) close(c *sconn) {
	c.closed = true
	for k := range c.dirs {
		d := &c.dirs[k]
		sw.e.remove(d.flow)
		d.flow = nil
		sw.e.wasted(d.dst.vm, d.got)
		d.got = 0
		for _, i := range d.queue {
			d.dst.pending[i]--
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
