package swarm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/faasnet/faasnet/bwlimit"
	"github.com/faasnet/faasnet/upstream"
)

// manifestResponse is an image resolved by an origin: the manifest of the
// registry's platform, exactly as the registry served it.
type manifestResponse struct {
	Repository string `json:"repository"`
	Digest     string `json:"digest"`
	MediaType  string `json:"mediaType"`
	Manifest   []byte `json:"manifest"`
}

// Origin seeds blobs from the registry into the swarm (Kraken's origin).
// It is the only component that talks to the registry: it resolves images
// for agents, and fetches each blob whole, once, the first time its
// metainfo is asked for; from then on it serves the blob's pieces to peers
// like any peer that has all of them.
//
// HTTP API on its listener, besides the peer protocol (the tracker proxies
// to it):
//
//	GET /swarm/v1/metainfo/{digest}?namespace=REPO  -> MetaInfo
//	GET /swarm/v1/manifest?image=REF
//	    -> {"repository", "digest", "mediaType", "manifest": base64 of the raw manifest}
type Origin struct {
	n   *node
	reg *upstream.Registry
	tc  *trackerClient

	registryBytes atomic.Int64

	mu        sync.Mutex
	fetches   map[string]*once[*MetaInfo]        // by digest
	manifests map[string]*once[manifestResponse] // by image reference
}

// NewOrigin starts an origin serving on ln, storing blobs under dir,
// fetching them through reg, and registers it with the tracker at
// trackerAddr ("host:port").
//
// up limits what the origin uploads to peers: the bench passes the
// registry's egress limiter here when the origin stands in for the registry
// (the origin's own fetches then must not be limited again), or nil for
// Kraken's deployment, a dedicated origin cluster whose egress is not the
// bottleneck. Of cfg it uses PieceSize, MaxConns, HandshakeTimeout, Seed and
// Logger.
func NewOrigin(ln net.Listener, dir string, reg *upstream.Registry, trackerAddr string, up *bwlimit.Limiter, cfg Config) (*Origin, error) {
	n, err := newNode(ln, dir, up, nil, cfg, true)
	if err != nil {
		return nil, err
	}
	o := &Origin{
		n:         n,
		reg:       reg,
		tc:        newTrackerClient(trackerAddr),
		fetches:   map[string]*once[*MetaInfo]{},
		manifests: map[string]*once[manifestResponse]{},
	}
	n.mux.HandleFunc("GET /swarm/v1/metainfo/{digest}", o.handleMetaInfo)
	n.mux.HandleFunc("GET /swarm/v1/manifest", o.handleManifest)
	n.start()
	ctx, cancel := context.WithTimeout(n.ctx, 30*time.Second)
	defer cancel()
	if err := o.tc.registerOrigin(ctx, PeerInfo{ID: n.id, Addr: n.addr}); err != nil {
		o.Close()
		return nil, err
	}
	return o, nil
}

// Addr returns the origin's listening address.
func (o *Origin) Addr() string { return o.n.addr }

// ID returns the origin's peer id.
func (o *Origin) ID() string { return o.n.id }

// Egress returns the piece bytes the origin has uploaded to peers.
func (o *Origin) Egress() int64 { return o.n.stats.uploaded.Load() }

// RegistryBytes returns the blob bytes the origin has fetched from the
// registry.
func (o *Origin) RegistryBytes() int64 { return o.registryBytes.Load() }

// Close stops the origin: its listener, connections and fetches.
func (o *Origin) Close() error {
	err := o.n.close()
	o.tc.close()
	return err
}

func (o *Origin) handleMetaInfo(w http.ResponseWriter, r *http.Request) {
	digest := r.PathValue("digest")
	if _, err := upstream.ParseDigest(digest); err != nil {
		httpError(w, http.StatusBadRequest, "%v", err)
		return
	}
	repo, err := o.reg.Repository(r.URL.Query().Get("namespace"))
	if err != nil {
		httpError(w, http.StatusBadRequest, "%v", err)
		return
	}
	m, err := o.metaInfo(r.Context(), repo.Name(), digest)
	if err != nil {
		code := http.StatusBadGateway
		if errors.Is(err, upstream.ErrNotFound) {
			code = http.StatusNotFound
		}
		httpError(w, code, "%v", err)
		return
	}
	writeJSON(w, m)
}

// metaInfo returns the metainfo of digest, fetching the blob from repo in
// the registry the first time. Concurrent callers share one fetch, which
// runs on the origin's own context: a caller giving up does not stop it.
func (o *Origin) metaInfo(ctx context.Context, repo, digest string) (*MetaInfo, error) {
	if t := o.n.torrent(digest); t != nil {
		return t.meta, nil
	}
	o.mu.Lock()
	f := o.fetches[digest]
	if f == nil {
		f = newOnce[*MetaInfo]()
		o.fetches[digest] = f
		if !o.n.group.spawn(func() {
			m, err := o.fetch(repo, digest)
			if err != nil {
				o.mu.Lock()
				delete(o.fetches, digest) // the next request tries again
				o.mu.Unlock()
			}
			f.set(m, err)
		}) {
			delete(o.fetches, digest)
			f.set(nil, ErrClosed)
		}
	}
	o.mu.Unlock()
	return f.wait(ctx)
}

// fetch downloads the whole blob from the registry into a temporary file,
// computing its metainfo on the way, and adds it as a complete torrent.
func (o *Origin) fetch(repo, digest string) (*MetaInfo, error) {
	start := time.Now()
	ctx := o.n.ctx
	r, err := o.reg.Repository(repo)
	if err != nil {
		return nil, err
	}
	path, err := o.n.blobPath(digest)
	if err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(o.n.dir, "fetch-*")
	if err != nil {
		return nil, fmt.Errorf("swarm: origin: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	rc, err := o.reg.OpenBlob(ctx, r, digest, 0, -1)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	counted := &countingReader{r: rc, n: &o.registryBytes}
	m, err := computeMetaInfo(io.TeeReader(counted, tmp), digest, o.n.cfg.PieceSize)
	if err != nil {
		return nil, err
	}
	if err := tmp.Sync(); err != nil {
		return nil, fmt.Errorf("swarm: origin: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return nil, fmt.Errorf("swarm: origin: %w", err)
	}
	if _, _, err := o.n.addTorrent(m, true); err != nil {
		return nil, err
	}
	o.n.log.Debug("swarm: origin fetched blob", "blob", digest, "bytes", m.Length, "took", time.Since(start))
	return m, nil
}

func (o *Origin) handleManifest(w http.ResponseWriter, r *http.Request) {
	image := r.URL.Query().Get("image")
	if image == "" {
		httpError(w, http.StatusBadRequest, "missing image")
		return
	}
	o.mu.Lock()
	f := o.manifests[image]
	if f == nil {
		f = newOnce[manifestResponse]()
		o.manifests[image] = f
		if !o.n.group.spawn(func() {
			m, err := o.resolve(image)
			if err != nil {
				o.mu.Lock()
				delete(o.manifests, image)
				o.mu.Unlock()
			}
			f.set(m, err)
		}) {
			delete(o.manifests, image)
			f.set(manifestResponse{}, ErrClosed)
		}
	}
	o.mu.Unlock()
	m, err := f.wait(r.Context())
	if err != nil {
		code := http.StatusBadGateway
		if errors.Is(err, upstream.ErrNotFound) {
			code = http.StatusNotFound
		}
		httpError(w, code, "%v", err)
		return
	}
	writeJSON(w, m)
}

// resolve resolves image in the registry, once per origin: like Kraken's
// tag cache, later pulls of a tag get the same manifest.
func (o *Origin) resolve(image string) (manifestResponse, error) {
	im, err := o.reg.Resolve(o.n.ctx, image)
	if err != nil {
		return manifestResponse{}, err
	}
	return manifestResponse{
		Repository: im.Repository.Name(),
		Digest:     im.Descriptor.Digest.String(),
		MediaType:  string(im.Descriptor.MediaType),
		Manifest:   im.RawManifest,
	}, nil
}

// parseManifestResponse checks an origin's answer: the manifest hashes to
// its digest and is an image manifest.
func parseManifestResponse(b []byte) (manifestResponse, upstream.Manifest, error) {
	var mr manifestResponse
	if err := json.Unmarshal(b, &mr); err != nil {
		return mr, upstream.Manifest{}, fmt.Errorf("swarm: decoding manifest answer: %w", err)
	}
	d, err := upstream.ParseDigest(mr.Digest)
	if err != nil {
		return mr, upstream.Manifest{}, err
	}
	if d.Algorithm != "sha256" {
		return mr, upstream.Manifest{}, fmt.Errorf("swarm: manifest digest %s: only sha256 is supported", mr.Digest)
	}
	sum := sha256.Sum256(mr.Manifest)
	if hex.EncodeToString(sum[:]) != d.Hex {
		return mr, upstream.Manifest{}, fmt.Errorf("swarm: manifest does not match its digest %s", mr.Digest)
	}
	m, err := upstream.ParseManifest(mr.Manifest, mr.MediaType)
	if err != nil {
		return mr, upstream.Manifest{}, err
	}
	if m.IsIndex() {
		return mr, upstream.Manifest{}, fmt.Errorf("swarm: manifest %s is an index, want an image", mr.Digest)
	}
	return mr, m, nil
}

// manifest resolves image through the tracker.
func (c *trackerClient) manifest(ctx context.Context, image string) (manifestResponse, upstream.Manifest, error) {
	var raw json.RawMessage
	q := url.Values{"image": {image}}
	if err := c.do(ctx, http.MethodGet, "/swarm/v1/manifest?"+q.Encode(), nil, &raw, 2*upstream.MaxManifestSize); err != nil {
		return manifestResponse{}, upstream.Manifest{}, fmt.Errorf("swarm: resolving %s through tracker %s: %w", image, c.base, err)
	}
	return parseManifestResponse(raw)
}

// once is a value computed once by one goroutine and awaited by many.
type once[T any] struct {
	done chan struct{}
	v    T
	err  error
}

func newOnce[T any]() *once[T] { return &once[T]{done: make(chan struct{})} }

func (o *once[T]) set(v T, err error) {
	o.v, o.err = v, err
	close(o.done)
}

func (o *once[T]) wait(ctx context.Context) (T, error) {
	select {
	case <-o.done:
		return o.v, o.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}
