package swarm

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/faasnet/faasnet/bwlimit"
	"github.com/faasnet/faasnet/internal/httpserver"
	"github.com/faasnet/faasnet/upstream"
)

const (
	connPath        = "/swarm/v1/conn"
	upgradeProtocol = "faasnet-swarm/1"
)

// ErrClosed is returned by operations of a closed Agent or Origin.
var ErrClosed = errors.New("swarm: closed")

// counters are a node's traffic, in piece payload bytes.
type counters struct {
	fromPeers  atomic.Int64 // received from other agents
	fromOrigin atomic.Int64 // received from origins
	uploaded   atomic.Int64 // sent to peers
	wasted     atomic.Int64 // received and thrown away: duplicates, bad pieces
	badPieces  atomic.Int64 // pieces that failed verification
}

func (s *counters) received(origin bool, n int64) {
	if origin {
		s.fromOrigin.Add(n)
	} else {
		s.fromPeers.Add(n)
	}
}

// node is what agents and origins share: a peer of the swarm with an id,
// a listener serving the peer protocol (and whatever HTTP endpoints its
// owner adds), limiters, and the torrents it holds.
type node struct {
	id     string
	addr   string
	origin bool
	dir    string
	cfg    Config
	log    *slog.Logger
	up     *bwlimit.Limiter
	down   *bwlimit.Limiter
	dialer net.Dialer

	ctx    context.Context // ends at close
	cancel context.CancelFunc
	ln     net.Listener
	mux    *http.ServeMux
	srv    *http.Server
	group  group

	mu       sync.Mutex
	torrents map[string]*torrent

	stats counters

	// Test hooks.
	corruptUploads atomic.Bool   // serve bad pieces
	testPieceDone  chan struct{} // if set, gets a token per verified piece
}

// newNode prepares a node on ln; its owner adds handlers to mux, then
// calls start.
func newNode(ln net.Listener, dir string, up, down *bwlimit.Limiter, cfg Config, origin bool) (*node, error) {
	cfg = cfg.withDefaults()
	if err := os.MkdirAll(filepath.Join(dir, "blobs"), 0o755); err != nil {
		return nil, fmt.Errorf("swarm: %w", err)
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	kind := "agent"
	if origin {
		kind = "origin"
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{
		id:       fmt.Sprintf("%s-%s-%s", kind, ln.Addr(), hex.EncodeToString(rnd[:])),
		addr:     ln.Addr().String(),
		origin:   origin,
		dir:      dir,
		cfg:      cfg,
		log:      cfg.Logger,
		up:       up,
		down:     down,
		ctx:      ctx,
		cancel:   cancel,
		ln:       ln,
		mux:      http.NewServeMux(),
		torrents: map[string]*torrent{},
	}
	// Connections leave from the node's own address, as from its own VM.
	if a, ok := ln.Addr().(*net.TCPAddr); ok {
		n.dialer.LocalAddr = &net.TCPAddr{IP: a.IP}
	}
	n.mux.HandleFunc("POST "+connPath, n.serveConn)
	n.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	// Peer connections are hijacked and set their own deadlines.
	n.srv = httpserver.New(n.track(n.mux), httpserver.Options{ReadHeaderTimeout: cfg.HandshakeTimeout})
	return n, nil
}

// track makes the node's group own every request handler, so close waits
// for them.
func (n *node) track(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !n.group.enter() {
			http.Error(w, "closing", http.StatusServiceUnavailable)
			return
		}
		defer n.group.leave()
		h.ServeHTTP(w, r)
	})
}

func (n *node) start() {
	n.group.spawn(func() { n.srv.Serve(httpserver.Listener(n.ln, httpserver.Options{})) })
}

// close stops everything the node runs and closes its files.
func (n *node) close() error {
	n.cancel()
	err := n.srv.Close()
	n.mu.Lock()
	ts := make([]*torrent, 0, len(n.torrents))
	for _, t := range n.torrents {
		ts = append(ts, t)
	}
	n.mu.Unlock()
	for _, t := range ts {
		t.closeConns()
	}
	n.group.closeAndWait()
	// Connections that raced with the close are closed now that nothing
	// can add more.
	for _, t := range ts {
		t.closeConns()
		t.file.Close()
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// torrent returns the node's torrent of digest, or nil.
func (n *node) torrent(digest string) *torrent {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.torrents[digest]
}

// blobPath returns where the node stores the blob with digest.
func (n *node) blobPath(digest string) (string, error) {
	h, err := upstream.ParseDigest(digest)
	if err != nil {
		return "", err
	}
	return filepath.Join(n.dir, "blobs", h.Algorithm+"-"+h.Hex), nil
}

// addTorrent returns the node's torrent for meta, creating it (and its
// file) if there is none; created reports which.
func (n *node) addTorrent(meta *MetaInfo, complete bool) (t *torrent, created bool, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if t := n.torrents[meta.Digest]; t != nil {
		return t, false, nil
	}
	if n.ctx.Err() != nil {
		return nil, false, ErrClosed
	}
	path, err := n.blobPath(meta.Digest)
	if err != nil {
		return nil, false, err
	}
	t, err = newTorrent(n, meta, path, complete)
	if err != nil {
		return nil, false, err
	}
	n.torrents[meta.Digest] = t
	return t, true, nil
}

// serveConn accepts a connection a peer dials: an HTTP upgrade to the peer
// protocol, after which the peer sends its handshake first.
func (n *node) serveConn(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Upgrade") != upgradeProtocol {
		http.Error(w, "expected Upgrade: "+upgradeProtocol, http.StatusUpgradeRequired)
		return
	}
	nc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "cannot upgrade: "+err.Error(), http.StatusInternalServerError)
		return
	}
	brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + upgradeProtocol + "\r\n\r\n")
	if err := brw.Flush(); err != nil {
		nc.Close()
		return
	}
	prefix, _ := brw.Reader.Peek(brw.Reader.Buffered())
	prefix = append([]byte(nil), prefix...)
	if !n.group.spawn(func() { n.accept(nc, prefix) }) {
		nc.Close()
	}
}

// accept handshakes a connection a peer dialed.
func (n *node) accept(nc net.Conn, prefix []byte) {
	c := newConn(n.ctx, nc, prefix, n.up, n.down)
	nc.SetDeadline(time.Now().Add(n.cfg.HandshakeTimeout))
	stop := context.AfterFunc(n.ctx, func() { nc.Close() }) // Close need not wait for the deadline
	defer stop()
	hs, err := c.readHandshake()
	if err != nil {
		n.log.Debug("swarm: incoming handshake", "node", n.id, "remote", nc.RemoteAddr(), "err", err)
		c.close(err)
		return
	}
	t := n.torrent(hs.digest)
	if t == nil {
		c.reject("unknown blob " + hs.digest)
		return
	}
	if err := t.admit(hs.id); err != nil {
		c.reject(err.Error())
		return
	}
	c.peer, c.origin = hs.id, hs.origin
	if err := c.writeHandshake(t.handshake()); err != nil {
		c.close(err)
		return
	}
	nc.SetDeadline(time.Time{})
	if err := t.addConn(c, hs.bitfield, false); err != nil {
		c.close(err)
	}
}

// dial connects to peer p about t's blob, or blacklists it.
func (n *node) dial(t *torrent, p PeerInfo) {
	c, hs, err := n.handshakeOut(t, p)
	if err != nil {
		n.log.Debug("swarm: dial", "node", n.id, "peer", p.ID, "blob", t.digest(), "err", err)
		t.dialFailed(p.ID)
		return
	}
	if err := t.addConn(c, hs.bitfield, true); err != nil {
		c.close(err)
		t.dialFailed(p.ID)
	}
}

// handshakeOut dials p, upgrades to the peer protocol and exchanges
// handshakes.
func (n *node) handshakeOut(t *torrent, p PeerInfo) (*conn, handshake, error) {
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.HandshakeTimeout)
	defer cancel()
	nc, err := n.dialer.DialContext(ctx, "tcp", p.Addr)
	if err != nil {
		return nil, handshake{}, err
	}
	deadline, _ := ctx.Deadline()
	nc.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	br := bufio.NewReader(nc)
	req, _ := http.NewRequest(http.MethodPost, "http://"+p.Addr+connPath, nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", upgradeProtocol)
	if err := req.Write(nc); err != nil {
		nc.Close()
		return nil, handshake{}, err
	}
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		nc.Close()
		return nil, handshake{}, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		nc.Close()
		return nil, handshake{}, fmt.Errorf("upgrade answered %s", resp.Status)
	}
	prefix, _ := br.Peek(br.Buffered())
	c := newConn(n.ctx, nc, append([]byte(nil), prefix...), n.up, n.down)
	if err := c.writeHandshake(t.handshake()); err != nil {
		c.close(err)
		return nil, handshake{}, err
	}
	hs, err := c.readHandshake()
	switch {
	case err != nil:
	case hs.id != p.ID:
		err = fmt.Errorf("peer says it is %s, tracker says %s", hs.id, p.ID)
	case hs.digest != t.digest():
		err = fmt.Errorf("peer answered about blob %s", hs.digest)
	}
	if err != nil {
		c.close(err)
		return nil, handshake{}, err
	}
	nc.SetDeadline(time.Time{})
	c.peer, c.origin = hs.id, hs.origin
	return c, hs, nil
}
