package swarm

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"time"
)

type pieceStatus uint8

const (
	pieceEmpty pieceStatus = iota
	// pieceDirty is being written by one connection; nobody else may.
	pieceDirty
	pieceComplete
)

// torrent is one blob on one peer, Kraken's torrent plus its dispatcher:
// the pieces on disk and which of them are complete, the connections to
// other peers about the blob, and the piece requests in flight.
//
// A piece is written straight into the blob's file at its offset while it
// is hashed; until the hash matches it is "dirty" and neither served nor
// written by another connection, so nothing unverified is ever served.
type torrent struct {
	n       *node
	meta    *MetaInfo
	file    *os.File
	timeout time.Duration // piece request timeout

	mu        sync.Mutex
	status    []pieceStatus
	have      bitfield // complete pieces
	avail     []int    // how many connected peers have each piece
	conns     map[string]*conn
	pending   map[string]bool // peers being dialed
	reqs      *requests
	blacklist map[string]time.Time
	rng       *rand.Rand

	done     chan struct{} // closed when every piece is complete
	doneOnce sync.Once

	verifyOnce sync.Once
	verifyErr  error
}

// newTorrent opens (creating it if needed) the file at path holding the blob
// meta describes. If complete, the file already holds the whole blob.
func newTorrent(n *node, meta *MetaInfo, path string, complete bool) (*torrent, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("swarm: blob %s: %w", meta.Digest, err)
	}
	if !complete {
		if err := f.Truncate(meta.Length); err != nil {
			f.Close()
			return nil, fmt.Errorf("swarm: blob %s: %w", meta.Digest, err)
		}
	}
	np := meta.NumPieces()
	t := &torrent{
		n:         n,
		meta:      meta,
		file:      f,
		timeout:   n.cfg.requestTimeout(meta.PieceLength),
		status:    make([]pieceStatus, np),
		have:      newBitfield(np),
		avail:     make([]int, np),
		conns:     map[string]*conn{},
		pending:   map[string]bool{},
		blacklist: map[string]time.Time{},
		// Seeded per peer: peers breaking ties alike would all ask for
		// the same pieces.
		rng:  rand.New(rand.NewPCG(n.cfg.Seed, hashString(meta.Digest)^hashString(n.id))),
		done: make(chan struct{}),
	}
	t.reqs = newRequests(t.timeout, n.cfg.PipelineLimit)
	if complete || np == 0 {
		for i := range t.status {
			t.status[i] = pieceComplete
			t.have.set(i)
		}
		t.doneOnce.Do(func() { close(t.done) })
	}
	return t, nil
}

func hashString(s string) uint64 {
	h := fnv.New64a()
	io.WriteString(h, s)
	return h.Sum64()
}

func (t *torrent) digest() string { return t.meta.Digest }

func (t *torrent) complete() bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

// handshake returns what this peer tells others about the blob.
func (t *torrent) handshake() handshake {
	t.mu.Lock()
	defer t.mu.Unlock()
	return handshake{id: t.n.id, digest: t.meta.Digest, origin: t.n.origin, bitfield: t.have.clone()}
}

// saturated reports whether the torrent has all the connections it may.
func (t *torrent) saturated() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.conns)+len(t.pending) >= t.n.cfg.MaxConns
}

// connect starts dialing the peers of an announce answer, in order, while
// there is room: not ourselves, not peers we are connected to or dialing,
// not blacklisted ones.
func (t *torrent) connect(peers []PeerInfo) {
	if t.complete() {
		return
	}
	now := time.Now()
	var dial []PeerInfo
	t.mu.Lock()
	for _, p := range peers {
		if len(t.conns)+len(t.pending) >= t.n.cfg.MaxConns {
			break
		}
		if p.ID == t.n.id || t.conns[p.ID] != nil || t.pending[p.ID] || now.Before(t.blacklist[p.ID]) {
			continue
		}
		t.pending[p.ID] = true
		dial = append(dial, p)
	}
	t.mu.Unlock()
	for _, p := range dial {
		if !t.n.group.spawn(func() { t.n.dial(t, p) }) {
			t.dialFailed(p.ID)
		}
	}
}

// dialFailed forgets a dial to peer and blacklists the peer.
func (t *torrent) dialFailed(peer string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.pending, peer)
	if t.conns[peer] == nil {
		t.blacklist[peer] = time.Now().Add(t.n.cfg.BlacklistDuration)
	}
}

// admit decides whether to accept a connection the peer dialed. When both
// peers dial each other at once, the connection dialed by the smaller id
// survives, on both sides.
func (t *torrent) admit(peer string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case peer == t.n.id:
		return errors.New("connection to self")
	case t.conns[peer] != nil:
		return errors.New("already connected")
	case t.pending[peer] && peer > t.n.id:
		return errors.New("simultaneous dial; mine wins")
	case len(t.conns)+len(t.pending) >= t.n.cfg.MaxConns && !t.pending[peer]:
		return fmt.Errorf("at capacity of %d connections", t.n.cfg.MaxConns)
	}
	return nil
}

// addConn registers an established connection and starts its goroutines.
func (t *torrent) addConn(c *conn, remote bitfield, outgoing bool) error {
	c.t = t
	t.mu.Lock()
	if outgoing {
		delete(t.pending, c.peer)
	}
	if t.n.ctx.Err() != nil {
		// The node is closing and may have closed its connections
		// already: a connection added now would outlive it.
		t.mu.Unlock()
		return ErrClosed
	}
	if t.conns[c.peer] != nil {
		t.mu.Unlock()
		return errors.New("already connected")
	}
	if remote.len() != t.meta.NumPieces() {
		t.mu.Unlock()
		return fmt.Errorf("peer has %d pieces, metainfo %d", remote.len(), t.meta.NumPieces())
	}
	c.remote = remote
	for i := range t.avail {
		if remote.has(i) {
			t.avail[i]++
		}
	}
	t.conns[c.peer] = c
	var missed []int // completed between our handshake and now
	for i := range t.have.len() {
		if t.have.has(i) && !c.told.has(i) {
			missed = append(missed, i)
		}
	}
	bothComplete := remote.complete() && t.have.complete()
	t.mu.Unlock()
	for _, i := range missed {
		c.sendHave(i)
	}

	if !t.n.group.spawn(c.readLoop) || !t.n.group.spawn(c.writeLoop) {
		c.close(ErrClosed)
		return ErrClosed
	}
	if bothComplete {
		// A seeder has nothing to give another; Kraken closes such pairs.
		c.close(errors.New("both peers complete"))
		return nil
	}
	t.refill(c)
	return nil
}

// removeConn forgets a closed connection; if the blob is incomplete, the
// peer is blacklisted for a while and its pieces are asked of others.
func (t *torrent) removeConn(c *conn) {
	t.mu.Lock()
	if t.conns[c.peer] != c {
		t.mu.Unlock()
		return
	}
	delete(t.conns, c.peer)
	for i := range t.avail {
		if c.remote.has(i) {
			t.avail[i]--
		}
	}
	t.reqs.clearPeer(c.peer)
	incomplete := !t.have.complete()
	if incomplete {
		t.blacklist[c.peer] = time.Now().Add(t.n.cfg.BlacklistDuration)
	}
	t.mu.Unlock()
	t.n.log.Debug("swarm: connection closed", "node", t.n.id, "blob", t.meta.Digest, "peer", c.peer, "err", c.err)
	if incomplete {
		t.refillAll()
	}
}

// connsSnapshot returns the current connections.
func (t *torrent) connsSnapshot() []*conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	cs := make([]*conn, 0, len(t.conns))
	for _, c := range t.conns {
		cs = append(cs, c)
	}
	return cs
}

// dispatch handles one message from c's peer.
func (t *torrent) dispatch(c *conn, m message) error {
	i := int(m.index)
	if m.typ != msgError && m.typ != msgComplete && i >= t.meta.NumPieces() {
		return fmt.Errorf("%w: %s of piece %d, blob has %d", errFrame, m.typ, i, t.meta.NumPieces())
	}
	switch m.typ {
	case msgHave:
		t.onHave(c, i)
	case msgComplete:
		t.onRemoteComplete(c)
	case msgRequest:
		return t.onRequest(c, i)
	case msgCancel:
		c.cancelPiece(i)
	case msgPiece:
		return t.receivePiece(c, i, m.payload)
	case msgError:
		t.onError(c, m)
	default:
		return fmt.Errorf("%w: unexpected %s", errFrame, m.typ)
	}
	return nil
}

func (t *torrent) onHave(c *conn, i int) {
	t.mu.Lock()
	if c.remote.set(i) {
		t.avail[i]++
	}
	t.mu.Unlock()
	t.refill(c)
}

func (t *torrent) onRemoteComplete(c *conn) {
	t.mu.Lock()
	for i := range t.avail {
		if c.remote.set(i) {
			t.avail[i]++
		}
	}
	weComplete := t.have.complete()
	t.mu.Unlock()
	if weComplete {
		c.close(errors.New("both peers complete"))
		return
	}
	t.refill(c)
}

func (t *torrent) onRequest(c *conn, i int) error {
	t.mu.Lock()
	ok := t.status[i] == pieceComplete
	t.mu.Unlock()
	if !ok {
		c.enqueue(appendError(nil, uint32(i), codePieceUnavailable, "piece not available"))
		return nil
	}
	return c.queuePiece(i)
}

func (t *torrent) onError(c *conn, m message) {
	if m.code != codePieceUnavailable || int(m.index) >= t.meta.NumPieces() {
		t.n.log.Debug("swarm: peer error", "peer", c.peer, "code", m.code, "text", m.text)
		return
	}
	t.mu.Lock()
	t.reqs.markInvalid(c.peer, int(m.index))
	t.mu.Unlock()
	t.refillAll()
}

// writePiece sends piece i to c's peer, unless it was cancelled meanwhile.
func (t *torrent) writePiece(c *conn, i int) error {
	n := t.meta.pieceLen(i)
	if _, err := c.w.Write(appendPieceHeader(nil, i, n)); err != nil {
		return err
	}
	var src io.Reader = io.NewSectionReader(t.file, t.meta.pieceOffset(i), n)
	if t.n.corruptUploads.Load() {
		src = corrupt(src, n)
	}
	w, err := io.Copy(c.w, src)
	t.n.stats.uploaded.Add(w)
	if err == nil && w != n {
		err = fmt.Errorf("blob file ended %d bytes into piece %d", w, i)
	}
	return err
}

// receivePiece reads a piece payload of n bytes from c into the file, and
// keeps it if it matches the metainfo.
func (t *torrent) receivePiece(c *conn, i int, n int64) error {
	if n != t.meta.pieceLen(i) {
		return fmt.Errorf("%w: piece %d of %d bytes, want %d", errFrame, i, n, t.meta.pieceLen(i))
	}
	t.mu.Lock()
	st := t.status[i]
	if st == pieceEmpty {
		t.status[i] = pieceDirty
	} else {
		t.reqs.remove(c.peer, i)
	}
	t.mu.Unlock()
	st2 := &t.n.stats
	if st != pieceEmpty {
		// Someone else wrote or is writing it (endgame, expired request).
		got, err := copyN(io.Discard, c.r, n)
		st2.received(c.origin, got)
		st2.wasted.Add(got)
		return err
	}
	h := sha256.New()
	dst := io.MultiWriter(io.NewOffsetWriter(t.file, t.meta.pieceOffset(i)), h)
	got, err := copyN(dst, c.r, n)
	st2.received(c.origin, got)
	if err == nil && !bytes.Equal(h.Sum(nil), t.meta.sums[i][:]) {
		err = fmt.Errorf("piece %d from %s: %w", i, c.peer, errBadPiece)
		st2.badPieces.Add(1)
		st2.wasted.Add(n)
		t.n.log.Warn("swarm: bad piece", "node", t.n.id, "blob", t.meta.Digest, "piece", i, "peer", c.peer)
	}
	if err != nil {
		t.mu.Lock()
		t.status[i] = pieceEmpty
		t.reqs.markInvalid(c.peer, i)
		t.mu.Unlock()
		return err
	}
	t.pieceDone(i, c)
	return nil
}

// pieceDone marks piece i complete, tells the other peers (have, cancel),
// and keeps every pipeline full or, if the blob is complete, finishes.
func (t *torrent) pieceDone(i int, from *conn) {
	t.mu.Lock()
	t.status[i] = pieceComplete
	t.have.set(i)
	dups := t.reqs.requestedFrom(i)
	t.reqs.clear(i)
	complete := t.have.complete()
	cancel := map[string]bool{}
	for _, p := range dups {
		cancel[p] = true
	}
	conns := make([]*conn, 0, len(t.conns))
	for _, c := range t.conns {
		conns = append(conns, c)
	}
	t.mu.Unlock()
	if ch := t.n.testPieceDone; ch != nil {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	for _, c := range conns {
		if c == from {
			continue
		}
		if cancel[c.peer] {
			c.sendCancel(i)
		}
		c.sendHave(i)
	}
	if complete {
		t.finish()
		return
	}
	for _, c := range conns {
		t.refill(c)
	}
}

// finish runs once the blob is complete: like Kraken, it closes the
// connections to peers that are complete too and tells the others.
func (t *torrent) finish() {
	t.doneOnce.Do(func() {
		t.mu.Lock()
		clear(t.blacklist)
		var seeders, leechers []*conn
		for _, c := range t.conns {
			if c.remote.complete() {
				seeders = append(seeders, c)
			} else {
				leechers = append(leechers, c)
			}
		}
		t.mu.Unlock()
		close(t.done)
		for _, c := range seeders {
			c.close(errors.New("both peers complete"))
		}
		for _, c := range leechers {
			c.sendComplete()
		}
	})
}

// refill asks c's peer for more pieces, up to the pipeline limit.
func (t *torrent) refill(c *conn) {
	if c.isClosed() {
		return
	}
	t.mu.Lock()
	if t.have.complete() {
		t.mu.Unlock()
		return
	}
	var cands []int
	for i, st := range t.status {
		if st == pieceEmpty && c.remote.has(i) {
			cands = append(cands, i)
		}
	}
	pieces := t.reqs.reserve(c.peer, cands, t.avail, t.endgame(), time.Now(), t.rng)
	pieces = append([]int(nil), pieces...)
	t.mu.Unlock()
	c.sendRequests(pieces)
}

func (t *torrent) refillAll() {
	for _, c := range t.connsSnapshot() {
		t.refill(c)
	}
}

// endgame reports whether few enough pieces are missing to ask several
// peers for the same one. The caller holds t.mu.
func (t *torrent) endgame() bool {
	th := t.n.cfg.EndgameThreshold
	return th >= 0 && t.meta.NumPieces()-t.have.count() <= th
}

// resendFailed asks other peers for the pieces whose requests expired or
// failed (Kraken's resendFailedPieceRequests), then tops up every pipeline.
func (t *torrent) resendFailed() {
	now := time.Now()
	type send struct {
		c     *conn
		piece int
	}
	var sends []send
	t.mu.Lock()
	for _, r := range t.reqs.failed(now) {
		if t.status[r.piece] != pieceEmpty {
			continue
		}
		for _, c := range t.conns {
			if c.peer == r.peer || !c.remote.has(r.piece) {
				continue
			}
			got := t.reqs.reserve(c.peer, []int{r.piece}, t.avail, t.endgame(), now, t.rng)
			if len(got) > 0 {
				sends = append(sends, send{c, r.piece})
				break
			}
		}
	}
	t.mu.Unlock()
	for _, s := range sends {
		s.c.sendRequests([]int{s.piece})
	}
	t.refillAll()
}

// verify checks, once, that the complete blob has its digest.
func (t *torrent) verify() error {
	t.verifyOnce.Do(func() {
		m, err := computeMetaInfo(io.NewSectionReader(t.file, 0, t.meta.Length), t.meta.Digest, t.meta.PieceLength)
		if err == nil && m.Length != t.meta.Length {
			err = fmt.Errorf("swarm: blob %s: %d bytes, metainfo says %d", t.meta.Digest, m.Length, t.meta.Length)
		}
		t.verifyErr = err
	})
	return t.verifyErr
}

// closeConns closes every connection of the torrent.
func (t *torrent) closeConns() {
	for _, c := range t.connsSnapshot() {
		c.close(ErrClosed)
	}
}

// corrupt returns r with the first byte of its n bytes flipped: a test hook
// that makes a peer serve bad pieces.
func corrupt(r io.Reader, n int64) io.Reader {
	if n == 0 {
		return r
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(r, b); err != nil {
		return r
	}
	b[0] ^= 0xff
	return io.MultiReader(bytes.NewReader(b), r)
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copyN is io.CopyN through a pooled buffer: a piece costs no allocation.
func copyN(dst io.Writer, src io.Reader, n int64) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	w, err := io.CopyBuffer(dst, io.LimitReader(src, n), *bp)
	if err == nil && w < n {
		err = io.ErrUnexpectedEOF
	}
	return w, err
}
