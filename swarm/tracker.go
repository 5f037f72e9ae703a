package swarm

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/faasnet/faasnet/internal/httpserver"
)

// peerTTL is how long the tracker hands out a peer after its last announce.
// Complete peers stop announcing, as in Kraken; the TTL outlasts any bench.
const peerTTL = 5 * time.Minute

// maxAnnounceBody bounds an announce request.
const maxAnnounceBody = 64 << 10

// PeerInfo is a peer of a blob as the tracker knows it.
type PeerInfo struct {
	ID       string `json:"id"`
	Addr     string `json:"addr"`
	Complete bool   `json:"complete,omitempty"`
	Origin   bool   `json:"origin,omitempty"`
}

// announceRequest is the body of POST /swarm/v1/announce.
type announceRequest struct {
	Digest string   `json:"digest"`
	Peer   PeerInfo `json:"peer"`
}

// announceResponse answers an announce: peers to connect to, and when to
// announce again.
type announceResponse struct {
	Peers    []PeerInfo    `json:"peers"`
	Interval time.Duration `json:"interval"`
}

// Tracker is the swarm's tracker (Kraken's tracker): it records which peers
// announced which blob and hands them out, and proxies metainfo and
// manifest requests to the origin owning a blob or image.
//
// HTTP API on its listener:
//
//	POST /swarm/v1/announce              {"digest", "peer": {"id", "addr", "complete"}}
//	                                     -> {"peers": [...], "interval": ns}
//	GET  /swarm/v1/metainfo/{digest}?namespace=REPO   -> MetaInfo, from the owning origin
//	GET  /swarm/v1/manifest?image=REF    -> the resolved manifest, from the owning origin
//	POST /swarm/v1/origins               {"id", "addr"}: an origin joins
type Tracker struct {
	addr   string
	cfg    Config
	log    *slog.Logger
	srv    *http.Server
	client *http.Client
	group  group

	mu      sync.Mutex
	rng     *rand.Rand
	blobs   map[string]map[string]*peerEntry // digest -> peer id -> entry
	origins []PeerInfo
}

type peerEntry struct {
	PeerInfo
	seen time.Time
}

// NewTracker starts a tracker serving on ln. Of cfg it uses
// AnnounceInterval, PeerHandoutLimit, Seed and Logger.
func NewTracker(ln net.Listener, cfg Config) *Tracker {
	cfg = cfg.withDefaults()
	t := &Tracker{
		addr:   ln.Addr().String(),
		cfg:    cfg,
		log:    cfg.Logger,
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}},
		rng:    rand.New(rand.NewPCG(cfg.Seed, 0x7472)),
		blobs:  map[string]map[string]*peerEntry{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /swarm/v1/announce", t.handleAnnounce)
	mux.HandleFunc("GET /swarm/v1/metainfo/{digest}", t.handleMetaInfo)
	mux.HandleFunc("GET /swarm/v1/manifest", t.handleManifest)
	mux.HandleFunc("POST /swarm/v1/origins", t.handleOrigin)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	t.srv = httpserver.New(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !t.group.enter() {
			http.Error(w, "closing", http.StatusServiceUnavailable)
			return
		}
		defer t.group.leave()
		mux.ServeHTTP(w, r)
	}), httpserver.Options{})
	t.group.spawn(func() { t.srv.Serve(httpserver.Listener(ln, httpserver.Options{})) })
	return t
}

// Addr returns the tracker's listening address.
func (t *Tracker) Addr() string { return t.addr }

// Close stops the tracker and waits for its handlers.
func (t *Tracker) Close() error {
	err := t.srv.Close()
	t.group.closeAndWait()
	t.client.CloseIdleConnections()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

func (t *Tracker) handleAnnounce(w http.ResponseWriter, r *http.Request) {
	var req announceRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, maxAnnounceBody)).Decode(&req); err != nil {
		httpError(w, http.StatusBadRequest, "decoding announce: %v", err)
		return
	}
	if req.Digest == "" || req.Peer.ID == "" || req.Peer.Addr == "" {
		httpError(w, http.StatusBadRequest, "announce needs digest, peer id and addr")
		return
	}
	req.Peer.Origin = false
	writeJSON(w, announceResponse{Peers: t.announce(req.Digest, req.Peer, time.Now()), Interval: t.cfg.AnnounceInterval})
}

// announce records p as a peer of digest and returns its handout: none if
// p is complete; else a random sample of up to PeerHandoutLimit other live
// peers plus the owning origin, seeders first, then origins, then the
// incomplete (Kraken's completeness priority).
func (t *Tracker) announce(digest string, p PeerInfo, now time.Time) []PeerInfo {
	t.mu.Lock()
	defer t.mu.Unlock()
	peers := t.blobs[digest]
	if peers == nil {
		peers = map[string]*peerEntry{}
		t.blobs[digest] = peers
	}
	peers[p.ID] = &peerEntry{PeerInfo: p, seen: now}
	if p.Complete {
		return nil
	}
	var out []PeerInfo
	for id, e := range peers {
		if now.Sub(e.seen) > peerTTL {
			delete(peers, id)
			continue
		}
		if id != p.ID {
			out = append(out, e.PeerInfo)
		}
	}
	slices.SortFunc(out, func(a, b PeerInfo) int { return cmp.Compare(a.ID, b.ID) }) // map order is not seeded
	t.rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	out = out[:min(len(out), t.cfg.PeerHandoutLimit)]
	if o, ok := t.owner(digest); ok {
		out = append(out, o)
	}
	slices.SortStableFunc(out, func(a, b PeerInfo) int { return handoutPriority(a) - handoutPriority(b) })
	return out
}

func handoutPriority(p PeerInfo) int {
	switch {
	case p.Origin:
		return 1
	case p.Complete:
		return 0
	}
	return 2
}

// owner returns the origin responsible for key (a digest or an image), by
// rendezvous hashing so that adding an origin moves few keys.
func (t *Tracker) owner(key string) (PeerInfo, bool) {
	var best PeerInfo
	var bestScore uint64
	for _, o := range t.origins {
		h := fnv.New64a()
		io.WriteString(h, o.ID)
		io.WriteString(h, "\x00")
		io.WriteString(h, key)
		if s := mix64(h.Sum64()); best.ID == "" || s > bestScore {
			best, bestScore = o, s
		}
	}
	return best, best.ID != ""
}

// mix64 is splitmix64's finalizer: FNV's high bits barely depend on the
// last bytes hashed, and rendezvous hashing compares whole scores.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

func (t *Tracker) handleOrigin(w http.ResponseWriter, r *http.Request) {
	var o PeerInfo
	if err := json.NewDecoder(io.LimitReader(r.Body, maxAnnounceBody)).Decode(&o); err != nil || o.ID == "" || o.Addr == "" {
		httpError(w, http.StatusBadRequest, "origin registration needs id and addr")
		return
	}
	o.Origin, o.Complete = true, true
	t.mu.Lock()
	t.origins = slices.DeleteFunc(t.origins, func(x PeerInfo) bool { return x.ID == o.ID })
	t.origins = append(t.origins, o)
	t.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (t *Tracker) handleMetaInfo(w http.ResponseWriter, r *http.Request) {
	digest := r.PathValue("digest")
	q := url.Values{"namespace": {r.URL.Query().Get("namespace")}}
	t.proxy(w, r, digest, "/swarm/v1/metainfo/"+url.PathEscape(digest)+"?"+q.Encode())
}

func (t *Tracker) handleManifest(w http.ResponseWriter, r *http.Request) {
	image := r.URL.Query().Get("image")
	q := url.Values{"image": {image}}
	t.proxy(w, r, image, "/swarm/v1/manifest?"+q.Encode())
}

// proxy forwards a GET to the origin owning key and copies its answer.
func (t *Tracker) proxy(w http.ResponseWriter, r *http.Request, key, pathQuery string) {
	t.mu.Lock()
	o, ok := t.owner(key)
	t.mu.Unlock()
	if !ok {
		httpError(w, http.StatusServiceUnavailable, "no origin registered")
		return
	}
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, "http://"+o.Addr+pathQuery, nil)
	if err != nil {
		httpError(w, http.StatusBadRequest, "%v", err)
		return
	}
	resp, err := t.client.Do(req)
	if err != nil {
		httpError(w, http.StatusBadGateway, "origin %s: %v", o.Addr, err)
		return
	}
	defer resp.Body.Close()
	w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

// httpError answers with a JSON error, as the rest of faasnet does.
func httpError(w http.ResponseWriter, code int, format string, args ...any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": fmt.Sprintf(format, args...)})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// trackerClient is how agents and origins talk to the tracker.
type trackerClient struct {
	base   string // http://host:port
	client *http.Client
}

func newTrackerClient(addr string) *trackerClient {
	return &trackerClient{
		base:   "http://" + addr,
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}},
	}
}

func (c *trackerClient) close() { c.client.CloseIdleConnections() }

// do sends a request and decodes a 2xx JSON answer into out (if not nil).
func (c *trackerClient) do(ctx context.Context, method, pathQuery string, body, out any, limit int64) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+pathQuery, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return fmt.Errorf("reading answer: %w", err)
	}
	if int64(len(b)) > limit {
		return fmt.Errorf("answer exceeds %d bytes", limit)
	}
	if resp.StatusCode/100 != 2 {
		var e struct{ Error string }
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s: %s", resp.Status, e.Error)
		}
		return errors.New(resp.Status)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

func (c *trackerClient) announce(ctx context.Context, digest string, p PeerInfo) (announceResponse, error) {
	var resp announceResponse
	err := c.do(ctx, http.MethodPost, "/swarm/v1/announce", announceRequest{Digest: digest, Peer: p}, &resp, 16<<20)
	if err != nil {
		return resp, fmt.Errorf("swarm: announcing %s to tracker %s: %w", digest, c.base, err)
	}
	return resp, nil
}

// metaInfo fetches and validates the metainfo of digest in namespace.
func (c *trackerClient) metaInfo(ctx context.Context, namespace, digest string) (*MetaInfo, error) {
	var raw json.RawMessage
	q := url.Values{"namespace": {namespace}}
	err := c.do(ctx, http.MethodGet, "/swarm/v1/metainfo/"+url.PathEscape(digest)+"?"+q.Encode(), nil, &raw, MaxPieces*70+4096)
	if err != nil {
		return nil, fmt.Errorf("swarm: metainfo of %s from tracker %s: %w", digest, c.base, err)
	}
	m, err := ParseMetaInfo(raw)
	if err != nil {
		return nil, err
	}
	if m.Digest != digest {
		return nil, fmt.Errorf("swarm: asked metainfo of %s, got %s", digest, m.Digest)
	}
	return m, nil
}

func (c *trackerClient) registerOrigin(ctx context.Context, p PeerInfo) error {
	if err := c.do(ctx, http.MethodPost, "/swarm/v1/origins", p, nil, 1<<10); err != nil {
		return fmt.Errorf("swarm: registering origin with tracker %s: %w", c.base, err)
	}
	return nil
}
