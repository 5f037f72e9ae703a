// Package digest parses and checks content digests, the names of blobs.
//
// A digest arrives from outside (a URL path, a peer's answer, a manifest, a
// file name in a cache) and becomes a file name, a URL and a log field, so
// it is parsed once, at the edge, into a v1.Hash, and only the OCI image
// spec's canonical form is accepted: "sha256:" with 64 or "sha512:" with 128
// lowercase hex digits. Nothing is normalised: "SHA256:AB..." names no blob.
package digest

import (
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"hash"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// ErrInvalid is wrapped by every error Parse and Check return.
var ErrInvalid = errors.New("invalid digest")

// algorithms maps each supported algorithm to its hex length and its hash.
var algorithms = map[string]struct {
	hexLen int
	hash   func() hash.Hash
}{
	"sha256": {64, sha256.New},
	"sha512": {128, sha512.New},
}

// Parse parses s, which must be a canonical digest.
func Parse(s string) (v1.Hash, error) {
	algo, enc, ok := strings.Cut(s, ":")
	if !ok {
		return v1.Hash{}, fmt.Errorf("%w %.80q: want <algorithm>:<hex>", ErrInvalid, s)
	}
	h := v1.Hash{Algorithm: algo, Hex: enc}
	if err := Check(h); err != nil {
		return v1.Hash{}, err
	}
	return h, nil
}

// Check reports whether h is canonical. Use it on a v1.Hash built by hand
// or decoded by other code: go-containerregistry's parser refuses uppercase
// hex but accepts any algorithm it can hash (sha512 of the wrong kind of
// content, say), and a literal v1.Hash{} is not checked at all.
func Check(h v1.Hash) error {
	a, ok := algorithms[h.Algorithm]
	if !ok {
		return fmt.Errorf("%w %.80q: unsupported algorithm, want sha256 or sha512", ErrInvalid, h.String())
	}
	if len(h.Hex) != a.hexLen {
		return fmt.Errorf("%w %.80q: %s needs %d hex digits, got %d", ErrInvalid, h.String(), h.Algorithm, a.hexLen, len(h.Hex))
	}
	for i := 0; i < len(h.Hex); i++ {
		if c := h.Hex[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return fmt.Errorf("%w %.80q: byte %d is not lowercase hex", ErrInvalid, h.String(), len(h.Algorithm)+1+i)
		}
	}
	return nil
}

// Supported reports whether algo is an algorithm Parse accepts.
func Supported(algo string) bool {
	_, ok := algorithms[algo]
	return ok
}

// Hasher returns a new hash of h's algorithm; h must have passed Check.
func Hasher(h v1.Hash) hash.Hash { return algorithms[h.Algorithm].hash() }

// Of returns the sha256 digest of b.
func Of(b []byte) v1.Hash {
	sum := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sum)}
}
