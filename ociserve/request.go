package ociserve

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
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
}

// IsDigest reports whether the request names content by digest.
func (r Request) IsDigest() bool { return strings.Contains(r.Reference, ":") }

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
	digestRE      = regexp.MustCompile(`^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$`)
	lowerHexRE    = regexp.MustCompile(`^[0-9a-f]+$`)
)

// maxNameLength bounds a repository name: clients refuse more than 255
// characters for registry host plus name, so no real name is longer.
const maxNameLength = 255

// ParsePath parses the path of a request to the read side of the
// distribution API: "/v2/" (or "/v2"), "/v2/<name>/manifests/<reference>"
// and "/v2/<name>/blobs/<digest>". A name may have several components
// ("library/foo/bar", even "a/manifests/b": the reference is the last
// component, so the kind is the one before it). It validates name, tag and
// digest against the spec's grammar; digests of the registered algorithms
// sha256 and sha512 must be lowercase hex of the right length.
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
	if req.Kind == KindBlob || req.IsDigest() {
		if err := validDigest(req.Reference); err != nil {
			return Request{}, err
		}
		return req, nil
	}
	if !tagRE.MatchString(req.Reference) {
		return Request{}, fmt.Errorf("%w: %q", ErrReferenceInvalid, req.Reference)
	}
	return req, nil
}

// validDigest checks a digest against the spec's grammar and, for the
// registered algorithms, the form of their encoding.
func validDigest(d string) error {
	if !digestRE.MatchString(d) {
		return fmt.Errorf("%w: %q", ErrDigestInvalid, d)
	}
	algo, enc, _ := strings.Cut(d, ":")
	want := map[string]int{"sha256": 64, "sha512": 128}[algo]
	if want != 0 && (len(enc) != want || !lowerHexRE.MatchString(enc)) {
		return fmt.Errorf("%w: %q is not %d lowercase hex digits", ErrDigestInvalid, d, want)
	}
	return nil
}
