package snapshotter

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// maxManifest bounds a manifest read from the worker, as registries do.
const maxManifest = 4 << 20

// ErrWorker marks a failure to reach the node's worker or a refusal from
// it. The snapshotter never goes around the worker: containerd then falls
// back to pulling the layer through its hosts.toml mirror, which is the
// worker too.
var ErrWorker = errors.New("faasnet worker")

// workerClient reads manifests and blob ranges from the worker's local
// runtime endpoint (its --oci-listen address), plain HTTP on loopback.
type workerClient struct {
	addr string // host:port
	http *http.Client
	read atomic.Int64 // blob bytes received, for tests and logs
}

func (c *workerClient) url(repo, kind, ref, ns string) string {
	u := url.URL{Scheme: "http", Host: c.addr, Path: "/v2/" + repo + "/" + kind + "/" + ref}
	if ns != "" {
		u.RawQuery = url.Values{"ns": {ns}}.Encode()
	}
	return u.String()
}

// manifest fetches the image manifest dgst of repo and checks its bytes
// against dgst: the worker is trusted to be there, not to be right.
func (c *workerClient) manifest(ctx context.Context, ns, repo, dgst string) (*v1.Manifest, error) {
	want, err := v1.NewHash(dgst)
	if err != nil || want.Algorithm != "sha256" {
		return nil, fmt.Errorf("manifest digest %q: want sha256:HEX", dgst)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url(repo, "manifests", dgst, ns), nil)
	if err != nil {
		return nil, fmt.Errorf("manifest %s of %s: %w", dgst, repo, err)
	}
	req.Header.Set("Accept", strings.Join([]string{
		"application/vnd.oci.image.manifest.v1+json",
		"application/vnd.docker.distribution.manifest.v2+json",
	}, ", "))
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w at %s: manifest %s of %s: %w", ErrWorker, c.addr, dgst, repo, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w at %s: manifest %s of %s: %s", ErrWorker, c.addr, dgst, repo, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxManifest+1))
	if err != nil {
		return nil, fmt.Errorf("%w at %s: manifest %s of %s: %w", ErrWorker, c.addr, dgst, repo, err)
	}
	if len(body) > maxManifest {
		return nil, fmt.Errorf("manifest %s of %s: over %d bytes", dgst, repo, maxManifest)
	}
	sum := sha256.Sum256(body)
	if hex.EncodeToString(sum[:]) != want.Hex {
		return nil, fmt.Errorf("manifest %s of %s: the worker sent bytes of another digest", dgst, repo)
	}
	m, err := v1.ParseManifest(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("manifest %s of %s: %w", dgst, repo, err)
	}
	return m, nil
}

// blob reads one layer blob through the worker with Range requests: each
// is a demand that the worker fetches through the function tree ahead of
// its background streaming, and checks against the layer's TOC before it
// answers. The lazy filesystem checks every chunk again.
type blob struct {
	c              *workerClient
	ns, repo, dgst string
	size           int64
}

// ReadAt implements lazy.BlobReader.
func (b *blob) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 || off >= b.size {
		return 0, io.EOF
	}
	n := int64(len(p))
	if off+n > b.size {
		n = b.size - off
	}
	if n == 0 {
		return 0, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.c.url(b.repo, "blobs", b.dgst, b.ns), nil)
	if err != nil {
		return 0, fmt.Errorf("blob %s: %w", b.dgst, err)
	}
	req.Header.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-"+strconv.FormatInt(off+n-1, 10))
	resp, err := b.c.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%w at %s: blob %s bytes %d+%d: %w", ErrWorker, b.c.addr, b.dgst, off, n, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent {
		return 0, fmt.Errorf("%w at %s: blob %s bytes %d+%d: %s, want 206", ErrWorker, b.c.addr, b.dgst, off, n, resp.Status)
	}
	if err := checkContentRange(resp.Header.Get("Content-Range"), off, n, b.size); err != nil {
		return 0, fmt.Errorf("%w at %s: blob %s: %w", ErrWorker, b.c.addr, b.dgst, err)
	}
	got, err := io.ReadFull(resp.Body, p[:n])
	b.c.read.Add(int64(got))
	if err != nil {
		return got, fmt.Errorf("%w at %s: blob %s bytes %d+%d: %w", ErrWorker, b.c.addr, b.dgst, off, n, err)
	}
	if got < len(p) {
		return got, io.EOF
	}
	return got, nil
}

// checkContentRange checks that a 206 answer holds exactly the range asked
// for: "bytes FIRST-LAST/SIZE". A server that ignored the range (or sent
// another one, as some mirrors do) must not have its bytes taken for these.
func checkContentRange(h string, off, n, size int64) error {
	want := fmt.Sprintf("bytes %d-%d/", off, off+n-1)
	rest, ok := strings.CutPrefix(h, want)
	if !ok {
		return fmt.Errorf("Content-Range %q, want %s%d", h, want, size)
	}
	if rest != "*" && rest != strconv.FormatInt(size, 10) {
		return fmt.Errorf("Content-Range %q: size %q, want %d", h, rest, size)
	}
	return nil
}
