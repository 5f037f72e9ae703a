// Package ociserve serves the read side of the OCI distribution API, so that
// the local container runtime (containerd through a hosts.toml mirror,
// skopeo, crane, docker) pulls images through the worker instead of from the
// registry.
//
// It answers GET and HEAD of "/v2/", manifests by tag or digest and blobs by
// digest (with single Range requests), from a Content the worker provides.
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
	"strings"
	"time"

	"github.com/faasnet/faasnet/digest"
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
// multi-range request is answered 200 with everything, as RFC 9110 allows:
// registry clients never send one and would not parse multipart/byteranges.
func serveContent(w http.ResponseWriter, r *http.Request, digest string, content io.ReadSeeker) {
	if strings.Contains(r.Header.Get("Range"), ",") {
		r.Header.Del("Range")
	}
	w.Header().Set("ETag", `"`+digest+`"`)
	http.ServeContent(w, r, "", time.Time{}, content)
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
