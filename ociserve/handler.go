// Package ociserve serves the read side of the OCI distribution API, so that
// the local container runtime (containerd through a hosts.toml mirror,
// skopeo, crane, docker) pulls images through the worker instead of from the
// registry.
//
// It answers GET and HEAD of "/v2/", manifests by tag or digest and blobs by
// digest (with single Range requests), from a Content the worker provides.
// A RangeContent answers HEAD and Range requests of a blob before the blob
// is complete, as a lazy snapshotter asks.
// Everything else is refused the way the spec says: writes with 405, unknown
// content with 404, both with the spec's JSON error body.
package ociserve

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/faasnet/faasnet/digest"
	"github.com/faasnet/faasnet/httprange"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Manifest is a manifest or index as served: its bytes, media type and digest.
type Manifest struct {
	// MediaType is the Content-Type to serve it with.
	MediaType string
	// Digest is the digest of Body ("sha256:..."); if empty, the handler
	// computes the sha256 digest. If set, the handler checks it.
	Digest string
	Body   []byte
}

// Content is what the endpoint serves; the worker implements it.
type Content interface {
	// Manifest returns a manifest (or index) of repo by tag or digest. ns is
	// the upstream registry host from containerd's "?ns=" (may be "").
	Manifest(ctx context.Context, ns, repo, reference string) (Manifest, error)
	// Blob opens the complete, verified blob of repo with the given digest;
	// the handler seeks it (to learn its size and serve a Range) and closes
	// it. Returning a fresh *os.File itself (not wrapped) lets the kernel
	// copy it to the socket (sendfile), ranges included; content behind an
	// io.ReaderAt fits as an io.NewSectionReader plus a Close.
	Blob(ctx context.Context, ns, repo, digest string) (io.ReadSeekCloser, error)
}

// RangeContent is a Content that can serve a blob in part before it is
// complete: a lazy pull (stargz-snapshotter) asks the size with HEAD, then
// single ranges as files are read, and must not wait for the whole layer.
type RangeContent interface {
	Content
	// BlobSize returns the size of a blob of repo, at once: from the
	// manifest's descriptor, not from the bytes.
	BlobSize(ctx context.Context, ns, repo, digest string) (int64, error)
	// BlobRange opens the n bytes of the blob from off (within its size),
	// verified before they are returned. The reader fails, rather than
	// return a byte it could not verify.
	BlobRange(ctx context.Context, ns, repo, digest string, off, n int64) (io.ReadCloser, error)
}

var (
	// ErrNotFound is returned by Content for unknown content: the handler
	// answers 404 MANIFEST_UNKNOWN or BLOB_UNKNOWN.
	ErrNotFound = errors.New("content not found")
	// ErrNameUnknown is returned by Content for an unknown repository: the
	// handler answers 404 NAME_UNKNOWN. It is also an ErrNotFound.
	ErrNameUnknown = fmt.Errorf("%w: repository name unknown", ErrNotFound)
)

// Error codes of the distribution spec that the handler answers with.
const (
	codeBlobUnknown     = "BLOB_UNKNOWN"
	codeManifestUnknown = "MANIFEST_UNKNOWN"
	codeNameUnknown     = "NAME_UNKNOWN"
	codeNameInvalid     = "NAME_INVALID"
	codeDigestInvalid   = "DIGEST_INVALID"
	codeUnsupported     = "UNSUPPORTED"
	codeUnknown         = "UNKNOWN"
	// codeRangeInvalid is the distribution spec's code for a bad range
	// of a blob upload; the closest there is for a bad read range.
	codeRangeInvalid = "RANGE_INVALID"
)

// nsRE is the form of containerd's ns parameter: a host with optional port.
var nsRE = regexp.MustCompile(`^(?:[a-zA-Z0-9.-]+|\[[0-9a-fA-F:.]+\])(?::[0-9]{1,5})?$`)

// validNS reports whether ns, from containerd's "?ns=", is absent or a
// registry host: it reaches Content, which may dial it.
func validNS(ns string) bool {
	if ns == "" {
		return true
	}
	if len(ns) > 255 || !nsRE.MatchString(ns) {
		return false
	}
	// The pattern admits any hex and dots in brackets; only an IPv6
	// address belongs there.
	if rest, ok := strings.CutPrefix(ns, "["); ok {
		literal, _, _ := strings.Cut(rest, "]")
		addr, err := netip.ParseAddr(literal)
		return err == nil && addr.Is6()
	}
	return true
}

type handler struct {
	content Content
	log     *slog.Logger
}

// NewHandler returns the endpoint serving c. Mount it at "/v2/" without
// stripping the prefix: it parses the whole path. A nil logger logs nothing.
func NewHandler(c Content, logger *slog.Logger) http.Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &handler{content: c, log: logger}
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, codeUnsupported, "this registry mirror is read-only")
		return
	}
	req, err := ParsePath(r.URL.Path)
	if err != nil {
		status, code := parseErrorStatus(err)
		writeError(w, status, code, err.Error())
		return
	}
	ns := r.URL.Query().Get("ns")
	if !validNS(ns) {
		writeError(w, http.StatusBadRequest, codeNameInvalid, fmt.Sprintf("invalid ns %q", ns))
		return
	}
	switch req.Kind {
	case KindBase:
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "2")
		io.WriteString(w, "{}")
	case KindManifest:
		h.serveManifest(w, r, ns, req)
	case KindBlob:
		h.serveBlob(w, r, ns, req)
	}
}

// parseErrorStatus maps a ParsePath error to a status and error code. A tag
// that cannot exist names a manifest that does not.
func parseErrorStatus(err error) (int, string) {
	switch {
	case errors.Is(err, ErrNameInvalid):
		return http.StatusBadRequest, codeNameInvalid
	case errors.Is(err, ErrDigestInvalid):
		return http.StatusBadRequest, codeDigestInvalid
	case errors.Is(err, ErrReferenceInvalid):
		return http.StatusNotFound, codeManifestUnknown
	}
	return http.StatusNotFound, codeUnsupported
}

func (h *handler) serveManifest(w http.ResponseWriter, r *http.Request, ns string, req Request) {
	m, err := h.content.Manifest(r.Context(), ns, req.Name, req.Reference)
	if err != nil {
		h.contentError(w, r, ns, req, err, codeManifestUnknown)
		return
	}
	digest, err := checkManifest(m, req)
	if err != nil {
		h.contentError(w, r, ns, req, err, codeManifestUnknown)
		return
	}
	w.Header().Set("Content-Type", m.MediaType)
	w.Header().Set("Docker-Content-Digest", digest)
	serveContent(w, r, digest, bytes.NewReader(m.Body))
	h.log.DebugContext(r.Context(), "served manifest", "ns", ns, "repo", req.Name, "reference", req.Reference, "digest", digest, "method", r.Method)
}

// checkManifest returns the digest of m, computed or checked, so that we
// never serve bytes under a digest they do not have.
func checkManifest(m Manifest, req Request) (string, error) {
	if m.MediaType == "" {
		return "", errors.New("manifest has no media type")
	}
	want := req.Digest
	if m.Digest != "" {
		h, err := digest.Parse(m.Digest)
		if err != nil {
			return "", fmt.Errorf("manifest digest: %w", err)
		}
		if req.IsDigest() && h != req.Digest {
			return "", fmt.Errorf("asked for manifest %s, content returned %s", req.Digest, h)
		}
		want = h
	}
	if want == (v1.Hash{}) {
		return digest.Of(m.Body).String(), nil
	}
	hh := digest.Hasher(want)
	hh.Write(m.Body)
	if got := hex.EncodeToString(hh.Sum(nil)); got != want.Hex {
		return "", fmt.Errorf("manifest body has digest %s:%s, not %s", want.Algorithm, got, want)
	}
	return want.String(), nil
}

func (h *handler) serveBlob(w http.ResponseWriter, r *http.Request, ns string, req Request) {
	if rc, ok := h.content.(RangeContent); ok && (r.Method == http.MethodHead || wantsRange(r, req.Reference)) {
		h.servePart(w, r, rc, ns, req)
		return
	}
	blob, err := h.content.Blob(r.Context(), ns, req.Name, req.Reference)
	if err != nil {
		h.contentError(w, r, ns, req, err, codeBlobUnknown)
		return
	}
	defer blob.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Docker-Content-Digest", req.Reference)
	serveContent(w, r, req.Reference, blob)
	h.log.DebugContext(r.Context(), "served blob", "ns", ns, "repo", req.Name, "digest", req.Reference,
		"method", r.Method, "range", r.Header.Get("Range"))
}

// serveContent serves content named by digest with http.ServeContent, which
// answers HEAD, a single Range (206, or 416 outside the content) and
// conditional requests on the ETag (content by digest never changes). A
// multi-range request is answered 400: RFC 9110 would allow 200 with
// everything, but a lazy client takes a 200 for the range it asked
// (dfdaemon's 200 made stargz-snapshotter read a footer at offset 0).
func serveContent(w http.ResponseWriter, r *http.Request, digest string, content io.ReadSeeker) {
	if strings.Contains(r.Header.Get("Range"), ",") && wantsRange(r, digest) {
		if r.Method == http.MethodHead {
			// http.ServeContent would copy the ranges to a pipe no one
			// reads: a HEAD gets the size instead.
			r.Header.Del("Range")
		} else {
			writeError(w, http.StatusBadRequest, codeRangeInvalid, "only a single range is served")
			return
		}
	}
	w.Header().Set("ETag", `"`+digest+`"`)
	http.ServeContent(w, r, "", time.Time{}, content)
}

// wantsRange reports whether r asks for part of the content named digest:
// it has a Range header, and no If-Range, or one naming this content (only
// a strong ETag can; a date never matches content served without one).
func wantsRange(r *http.Request, digest string) bool {
	if r.Header.Get("Range") == "" {
		return false
	}
	ir := r.Header.Get("If-Range")
	return ir == "" || ir == `"`+digest+`"`
}

// servePart answers HEAD and Range requests of a blob from a RangeContent,
// without waiting for the whole blob.
func (h *handler) servePart(w http.ResponseWriter, r *http.Request, rc RangeContent, ns string, req Request) {
	size, err := rc.BlobSize(r.Context(), ns, req.Name, req.Reference)
	if err != nil {
		h.contentError(w, r, ns, req, err, codeBlobUnknown)
		return
	}
	w.Header().Set("Docker-Content-Digest", req.Reference)
	if r.Method == http.MethodHead {
		w.Header().Set("Content-Type", "application/octet-stream")
		serveContent(w, r, req.Reference, sizeOnly(size))
		return
	}
	w.Header().Set("ETag", `"`+req.Reference+`"`)
	w.Header().Set("Accept-Ranges", "bytes")
	rng := r.Header.Get("Range")
	off, n, err := httprange.ParseRange(rng, size)
	switch {
	case errors.Is(err, httprange.ErrMultipleRanges):
		writeError(w, http.StatusBadRequest, codeRangeInvalid, "only a single range is served")
		return
	case err != nil:
		w.Header().Set("Content-Range", httprange.ContentRange{First: -1, Last: -1, Size: size}.String())
		writeError(w, http.StatusRequestedRangeNotSatisfiable, codeRangeInvalid, err.Error())
		return
	}
	body, err := rc.BlobRange(r.Context(), ns, req.Name, req.Reference, off, n)
	if err != nil {
		h.contentError(w, r, ns, req, err, codeBlobUnknown)
		return
	}
	defer body.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Range", httprange.ContentRange{First: off, Last: off + n - 1, Size: size}.String())
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	w.WriteHeader(http.StatusPartialContent)
	if sent, err := io.CopyN(w, body, n); err != nil {
		// The status is out: cut the connection, so that the client sees
		// a short body and never takes it for the range.
		h.log.WarnContext(r.Context(), "serving a blob range failed", "ns", ns, "repo", req.Name, "digest", req.Reference,
			"range", rng, "sent", sent, "err", err)
		panic(http.ErrAbortHandler)
	}
	h.log.DebugContext(r.Context(), "served blob range", "ns", ns, "repo", req.Name, "digest", req.Reference, "range", rng)
}

// sizeOnly is content of a known size that is never read: what
// http.ServeContent needs to answer HEAD.
type sizeOnly int64

func (s sizeOnly) Read([]byte) (int, error) { return 0, errors.New("sizeOnly content is not read") }

func (s sizeOnly) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
		return offset, nil
	case io.SeekEnd:
		return int64(s) + offset, nil
	}
	return 0, errors.New("sizeOnly: unsupported seek")
}

// contentError answers a failure of Content (or of what it returned): 404
// with notFoundCode or NAME_UNKNOWN, nothing when the client is gone, 500
// otherwise.
func (h *handler) contentError(w http.ResponseWriter, r *http.Request, ns string, req Request, err error, notFoundCode string) {
	attrs := []any{"ns", ns, "repo", req.Name, "reference", req.Reference, "err", err}
	switch {
	case errors.Is(err, ErrNameUnknown):
		writeError(w, http.StatusNotFound, codeNameUnknown, err.Error())
	case errors.Is(err, ErrNotFound):
		writeError(w, http.StatusNotFound, notFoundCode, err.Error())
	case r.Context().Err() != nil:
		h.log.DebugContext(r.Context(), "client went away", attrs...)
	default:
		h.log.ErrorContext(r.Context(), "serving "+req.Kind.String(), attrs...)
		writeError(w, http.StatusInternalServerError, codeUnknown, req.Kind.String()+" unavailable: "+err.Error())
	}
}

type errorBody struct {
	Errors []errorEntry `json:"errors"`
}

type errorEntry struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// writeError writes the spec's error body (HEAD requests get no body; the
// server drops it).
func writeError(w http.ResponseWriter, status int, code, msg string) {
	b, _ := json.Marshal(errorBody{Errors: []errorEntry{{Code: code, Message: msg}}}) // cannot fail
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", fmt.Sprint(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}
