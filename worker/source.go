package worker

import (
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/bwlimit"
	"github.com/faasnet/faasnet/peer"
	"github.com/faasnet/faasnet/upstream"
)

// A source serves byte ranges of one blob. The tree parent and the registry
// are the two sources; a fetch only chooses between them.
type source interface {
	// Open returns bytes [off, off+n) of the blob.
	Open(ctx context.Context, off, n int64) (io.ReadCloser, error)
	// Parent is the parent that serves, nil for the registry.
	Parent() *api.Peer
}

// parentSource reads a blob from a tree parent's peer server, with the
// grant of a function whose image holds it.
type parentSource struct {
	peers  *peer.Client
	parent api.Peer
	grant  string
	digest string
}

func (s parentSource) Open(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	return s.peers.Open(toParent(ctx, s.parent, s.grant), s.parent.Addr, s.digest, off, n)
}

// toParent makes requests with ctx go to parent only (checked in the TLS
// handshake) and carry grant.
func toParent(ctx context.Context, parent api.Peer, grant string) context.Context {
	return peer.WithAuth(ctx, peer.Auth{ServerVM: parent.VM, Grant: grant})
}

func (s parentSource) Parent() *api.Peer { return &s.parent }

// registrySource reads a blob from the registry: a manifest whole from the
// manifest endpoint (registries serve manifests there only), anything else
// by range from the blob endpoint, limited to the worker's download rate.
type registrySource struct {
	reg    *upstream.Registry
	down   *bwlimit.Limiter
	digest string
	info   *blobInfo
}

func (s registrySource) Open(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	if !s.info.manifest {
		rc, err := s.reg.OpenBlob(ctx, s.info.repo, s.digest, off, n)
		if err != nil {
			return nil, err
		}
		return readCloser{bwlimit.NewReader(ctx, rc, s.down), rc}, nil
	}
	raw, _, err := s.reg.FetchManifest(ctx, s.info.repo, s.digest)
	if err != nil {
		return nil, err
	}
	if int64(len(raw)) != s.info.size {
		return nil, fmt.Errorf("manifest %s: got %d bytes, want %d", s.digest, len(raw), s.info.size)
	}
	if off < 0 || n < 0 || off+n > int64(len(raw)) {
		return nil, fmt.Errorf("manifest %s: range %d+%d outside its %d bytes", s.digest, off, n, len(raw))
	}
	return io.NopCloser(bytes.NewReader(raw[off : off+n])), nil
}

func (s registrySource) Parent() *api.Peer { return nil }

type readCloser struct {
	io.Reader
	io.Closer
}

// parentSource and registrySource are the sources of j's blob.
func (w *Worker) parentSource(j *job, p parentChoice) source {
	return parentSource{peers: w.peers, parent: *p.parent, grant: p.grant, digest: j.digest}
}

func (w *Worker) registrySource(j *job) source {
	return registrySource{reg: w.reg, down: w.down, digest: j.digest, info: j.info}
}
