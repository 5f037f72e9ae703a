package blobcache

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"hash"
	"strings"
)

// digest is a parsed content digest "<algorithm>:<lowercase hex>", the name of
// a blob. Its parts are safe to use as path elements.
type digest struct {
	algo string
	hex  string
}

// algorithms maps each supported algorithm to the length of its hex encoding
// and its hash. OCI names sha256 (universal) and sha512 (rare but valid).
var algorithms = map[string]struct {
	hexLen int
	hash   func() hash.Hash
}{
	"sha256": {64, sha256.New},
	"sha512": {128, sha512.New},
}

// parseDigest parses s, which must be exactly "<algorithm>:<hex>" with a
// supported algorithm and an encoding of exactly that algorithm's length in
// lowercase hex (the OCI image spec's canonical form). Anything else, uppercase
// hex included, is rejected with an error wrapping ErrInvalidDigest: a digest
// becomes a file name, so it is never normalised or trusted.
func parseDigest(s string) (digest, error) {
	algo, enc, ok := strings.Cut(s, ":")
	if !ok {
		return digest{}, fmt.Errorf("%w %q: missing algorithm prefix", ErrInvalidDigest, s)
	}
	a, ok := algorithms[algo]
	if !ok {
		return digest{}, fmt.Errorf("%w %q: unsupported algorithm", ErrInvalidDigest, s)
	}
	if len(enc) != a.hexLen {
		return digest{}, fmt.Errorf("%w %q: %s needs %d hex digits, got %d", ErrInvalidDigest, s, algo, a.hexLen, len(enc))
	}
	for i := 0; i < len(enc); i++ {
		if c := enc[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return digest{}, fmt.Errorf("%w %q: byte %d is not lowercase hex", ErrInvalidDigest, s, len(algo)+1+i)
		}
	}
	return digest{algo: algo, hex: enc}, nil
}

func (d digest) String() string { return d.algo + ":" + d.hex }

func (d digest) newHash() hash.Hash { return algorithms[d.algo].hash() }

// matches reports whether sum, the output of d.newHash, is the digest d.
func (d digest) matches(sum []byte) bool { return hex.EncodeToString(sum) == d.hex }
