package upstream

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/faasnet/faasnet/httprange"
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
// The answer is checked by httprange.Body: a range other than the one asked
// for is an error, and the reader fails if the body is shorter or longer
// than its answer promised. It does not verify the digest: callers verify
// whole blobs. Reads are bound to ctx: cancelling it, or its deadline
// passing, ends a read that hangs. Errors name the registry, repository and
// digest, and wrap ErrNotFound (404) or ErrUnauthorized (401, 403) when the
// registry says so.
func (r *Registry) OpenBlob(ctx context.Context, repo name.Repository, digest string, off, n int64) (io.ReadCloser, error) {
	what := fmt.Sprintf("blob %s of repository %s in registry %s", digest, repo.RepositoryStr(), repo.RegistryStr())
	h, err := ParseDigest(digest)
	if err != nil {
		return nil, err
	}
	if n == 0 && off >= 0 {
		return io.NopCloser(strings.NewReader("")), nil
	}
	rh, err := httprange.Header(off, n)
	if err != nil {
		return nil, fmt.Errorf("upstream: %s: %w", what, err)
	}
	repo, err = r.normalize(repo)
	if err != nil {
		return nil, err
	}
	hdr := http.Header{}
	if rh != "" {
		hdr.Set("Range", rh)
	}
	resp, err := r.get(ctx, repo, "blobs", h.String(), hdr)
	if err != nil {
		return nil, fmt.Errorf("upstream: %s: %w", what, err)
	}
	body, err := r.checkBlobAnswer(repo, resp, off, n)
	if err != nil {
		resp.Body.Close()
		return nil, fmt.Errorf("upstream: %s: %w", what, err)
	}
	return body, nil
}

// checkBlobAnswer turns an error answer to a blob request for [off, off+n)
// into an error, and returns the body of any other.
func (r *Registry) checkBlobAnswer(repo name.Repository, resp *http.Response, off, n int64) (io.ReadCloser, error) {
	switch resp.StatusCode {
	case http.StatusOK, http.StatusPartialContent:
		return httprange.Body(resp, off, n)
	case http.StatusRequestedRangeNotSatisfiable:
		err := fmt.Errorf("range of %d bytes at %d not satisfiable", n, off)
		if cr, perr := httprange.ParseContentRange(resp.Header.Get("Content-Range")); perr == nil && cr.Unsatisfied() {
			err = fmt.Errorf("%w: the blob has %d bytes", err, cr.Size)
		}
		return nil, fmt.Errorf("%w: %w", err, r.checkResponse(repo, resp))
	}
	return nil, r.checkResponse(repo, resp, http.StatusOK, http.StatusPartialContent)
}
