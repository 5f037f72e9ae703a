package ociserve

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/faasnet/faasnet/digest"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Kind is what a request asks for.
type Kind int

const (
	// KindBase is the API version check, "/v2/".
	KindBase Kind = iota + 1
	// KindManifest is "/v2/<name>/manifests/<reference>".
	KindManifest
	// KindBlob is "/v2/<name>/blobs/<digest>".
	KindBlob
)

func (k Kind) String() string {
	switch k {
	case KindBase:
		return "base"
	case KindManifest:
		return "manifest"
	case KindBlob:
		return "blob"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Request is a read request of the distribution API, parsed and validated.
type Request struct {
	Kind Kind
	// Name is the repository, e.g. "library/alpine" (empty for KindBase).
	Name string
	// Reference is a tag or a digest for KindManifest, a digest for KindBlob.
	Reference string
	// Digest is Reference parsed, when it is a digest.
	Digest v1.Hash
}

// IsDigest reports whether the request names content by digest.
func (r Request) IsDigest() bool { return r.Digest != v1.Hash{} }

// The reasons a path is not a valid request; ParsePath wraps one of them.
var (
	ErrUnknownPath      = errors.New("not a distribution API read path")
	ErrNameInvalid      = errors.New("invalid repository name")
	ErrReferenceInvalid = errors.New("invalid tag")
	ErrDigestInvalid    = errors.New("invalid digest")
)

// The grammar of the OCI distribution spec (v1.1, "Pulling manifests").
var (
	nameComponent = `[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*`
	nameRE        = regexp.MustCompile(`^` + nameComponent + `(?:/` + nameComponent + `)*$`)
	tagRE         = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
)

// maxNameLength bounds a repository name: clients refuse more than 255
// characters for registry host plus name, so no real name is longer.
const maxNameLength = 255

// ParsePath parses the path of a request to the read side of the
// distribution API: "/v2/" (or "/v2"), "/v2/<name>/manifests/<reference>"
// and "/v2/<name>/blobs/<digest>". A name may have several components
// ("library/foo/bar", even "a/manifests/b": the reference is the last
// component, so the kind is the one before it). It validates name and tag
// against the spec's grammar, and digests with digest.Parse: only sha256
// and sha512 in lowercase hex name content here, so any other digest,
// well-formed for the spec or not, is ErrDigestInvalid.
func ParsePath(path string) (Request, error) {
	if path == "/v2/" || path == "/v2" {
		return Request{Kind: KindBase}, nil
	}
	rest, ok := strings.CutPrefix(path, "/v2/")
	i := strings.LastIndexByte(rest, '/')
	if !ok || i < 0 {
		return Request{}, fmt.Errorf("%w: %q", ErrUnknownPath, path)
	}
	rest, ref := rest[:i], rest[i+1:]
	var req Request
	if name, ok := strings.CutSuffix(rest, "/manifests"); ok {
		req = Request{Kind: KindManifest, Name: name, Reference: ref}
	} else if name, ok := strings.CutSuffix(rest, "/blobs"); ok {
		req = Request{Kind: KindBlob, Name: name, Reference: ref}
	} else {
		return Request{}, fmt.Errorf("%w: %q", ErrUnknownPath, path)
	}
	if len(req.Name) > maxNameLength || !nameRE.MatchString(req.Name) {
		return Request{}, fmt.Errorf("%w: %q", ErrNameInvalid, req.Name)
	}
	// A tag has no colon: a reference with one is a digest or nothing.
	if req.Kind == KindBlob || strings.Contains(req.Reference, ":") {
		h, err := digest.Parse(req.Reference)
		if err != nil {
			return Request{}, fmt.Errorf("%w: %w", ErrDigestInvalid, err)
		}
		req.Digest = h
		return req, nil
	}
	if !tagRE.MatchString(req.Reference) {
		return Request{}, fmt.Errorf("%w: %q", ErrReferenceInvalid, req.Reference)
	}
	return req, nil
}
