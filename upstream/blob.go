package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// OpenBlob returns a reader of n bytes of the blob with the given digest in
// repo, starting at byte off; n < 0 reads to the end of the blob, n == 0
// returns an empty reader without asking the registry. The registry is asked
// with a Range request and may redirect it (to its storage, say).
//
// If the registry ignores Range and answers 200 with the whole blob, OpenBlob
// discards the first off bytes itself: correct, but it costs the download of
// those bytes, so callers reading many ranges of a blob from such a registry
// should read it whole instead.
//
// The reader returns io.ErrUnexpectedEOF if the blob ends before n bytes. It
// does not verify the digest: callers verify whole blobs. Reads are bound to
// ctx: cancelling it, or its deadline passing, ends a read that hangs. Errors
// name the registry, repository and digest, and wrap ErrNotFound (404) or
// ErrUnauthorized (401, 403) when the registry says so.
func (r *Registry) OpenBlob(ctx context.Context, repo name.Repository, digest string, off, n int64) (io.ReadCloser, error) {
	what := fmt.Sprintf("blob %s of repository %s in registry %s", digest, repo.RepositoryStr(), repo.RegistryStr())
	if _, err := ParseDigest(digest); err != nil {
		return nil, err
	}
	if off < 0 {
		return nil, fmt.Errorf("upstream: %s: negative offset %d", what, off)
	}
	if n == 0 {
		return io.NopCloser(strings.NewReader("")), nil
	}
	repo, err := r.normalize(repo)
	if err != nil {
		return nil, err
	}
	h := http.Header{}
	switch {
	case n > 0:
		h.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+n-1))
	case off > 0:
		h.Set("Range", fmt.Sprintf("bytes=%d-", off))
	}
	resp, err := r.get(ctx, repo, "blobs", digest, h)
	if err != nil {
		return nil, fmt.Errorf("upstream: %s: %w", what, err)
	}
	if err := r.startAt(repo, resp, off, n); err != nil {
		resp.Body.Close()
		return nil, fmt.Errorf("upstream: %s: %w", what, err)
	}
	return &blobReader{body: resp.Body, left: n, what: what}, nil
}

// startAt checks the response to a blob request for [off, off+n) and leaves
// its body positioned at off.
func (r *Registry) startAt(repo name.Repository, resp *http.Response, off, n int64) error {
	switch resp.StatusCode {
	case http.StatusPartialContent:
		return checkContentRange(resp.Header.Get("Content-Range"), off, n)
	case http.StatusOK:
		if _, err := io.CopyN(io.Discard, resp.Body, off); err != nil {
			return fmt.Errorf("registry ignored Range; skipping %d bytes of the whole blob: %w", off, err)
		}
		return nil
	case http.StatusRequestedRangeNotSatisfiable:
		return fmt.Errorf("range of %d bytes at %d not satisfiable: %w", n, off, r.checkResponse(repo, resp))
	}
	return r.checkResponse(repo, resp, http.StatusOK, http.StatusPartialContent)
}

// checkContentRange checks that a 206 answer starts at off and, if n > 0,
// holds n bytes. A missing header is trusted, as HTTP clients do.
func checkContentRange(cr string, off, n int64) error {
	if cr == "" {
		return nil
	}
	start, end, err := parseContentRange(cr)
	if err != nil {
		return err
	}
	if start != off || (n > 0 && end-start+1 < n) {
		return fmt.Errorf("asked for %d bytes at %d, registry sent Content-Range %q", n, off, cr)
	}
	return nil
}

// parseContentRange parses "bytes start-end/size" (size may be "*").
func parseContentRange(cr string) (start, end int64, err error) {
	bad := fmt.Errorf("malformed Content-Range %q", cr)
	spec, ok := strings.CutPrefix(cr, "bytes ")
	if !ok {
		return 0, 0, bad
	}
	rng, _, _ := strings.Cut(spec, "/")
	s, e, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, bad
	}
	start, err1 := strconv.ParseInt(s, 10, 64)
	end, err2 := strconv.ParseInt(e, 10, 64)
	if err1 != nil || err2 != nil || start < 0 || end < start {
		return 0, 0, bad
	}
	return start, end, nil
}

// blobReader reads at most left bytes of body (all of it if left < 0) and
// reports a body that ends early.
type blobReader struct {
	body io.ReadCloser
	left int64
	what string
}

func (b *blobReader) Read(p []byte) (int, error) {
	if b.left == 0 {
		return 0, io.EOF
	}
	if b.left > 0 && int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.body.Read(p)
	if b.left > 0 {
		b.left -= int64(n)
		if b.left == 0 {
			return n, io.EOF
		}
	}
	switch {
	case err == nil || (err == io.EOF && b.left < 0):
		return n, err
	case errors.Is(err, io.EOF):
		return n, fmt.Errorf("upstream: %s: body ended %d bytes early: %w", b.what, b.left, io.ErrUnexpectedEOF)
	}
	return n, fmt.Errorf("upstream: reading %s: %w", b.what, err)
}

func (b *blobReader) Close() error { return b.body.Close() }
