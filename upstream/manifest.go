package upstream

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"strings"

	"github.com/faasnet/faasnet/digest"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const (
	// MaxManifestSize is the largest manifest or index we accept, in bytes.
	// Registries commonly refuse more than 4 MiB, and a manifest is parsed
	// in memory, so a larger one is an attack, not an image.
	MaxManifestSize = 4 << 20
	// MaxDescriptors is the largest number of layers in a manifest, or of
	// manifests in an index.
	MaxDescriptors = 1000
)

// Manifest is a validated image manifest or index.
type Manifest struct {
	// MediaType is one of the OCI or Docker v2 manifest or index types.
	MediaType types.MediaType
	// Config and Layers are set for an image manifest. Layer media types are
	// passed through (gzip, zstd, uncompressed, foreign, ...): we move bytes.
	Config v1.Descriptor
	Layers []v1.Descriptor
	// Manifests is set for an index (or Docker manifest list).
	Manifests []v1.Descriptor
}

// IsIndex reports whether m is an index rather than an image manifest.
func (m Manifest) IsIndex() bool { return m.MediaType.IsIndex() }

// wireManifest is the union of the fields of a manifest and an index; the
// pointers tell a field that is absent from one that is empty.
type wireManifest struct {
	SchemaVersion *int             `json:"schemaVersion"`
	MediaType     string           `json:"mediaType"`
	Config        *v1.Descriptor   `json:"config"`
	Layers        *[]v1.Descriptor `json:"layers"`
	Manifests     *[]v1.Descriptor `json:"manifests"`
}

// ParseManifest validates b, a manifest or index from outside, and returns
// its parts. mediaType is the Content-Type it came with; parameters are
// ignored, and an empty or generic one ("application/json", "text/plain",
// "application/octet-stream") defers to the document's mediaType field, or to
// its shape when that is missing too.
//
// It accepts OCI image manifests and indexes and Docker v2 schema 2 manifests
// and manifest lists of at most MaxManifestSize bytes and MaxDescriptors
// entries, whose descriptors carry a well-formed media type, a sha256 or
// sha512 digest and a non-negative size. It refuses Docker schema 1, a media
// type field that contradicts mediaType, and a document that is both a
// manifest and an index (the OCI rule against ambiguous documents).
func ParseManifest(b []byte, mediaType string) (Manifest, error) {
	if len(b) > MaxManifestSize {
		return Manifest{}, fmt.Errorf("upstream: manifest of %d bytes exceeds the limit of %d", len(b), MaxManifestSize)
	}
	var w wireManifest
	if err := json.Unmarshal(b, &w); err != nil {
		return Manifest{}, fmt.Errorf("upstream: manifest is not valid JSON: %w", err)
	}
	mt, err := manifestType(mediaType, w)
	if err != nil {
		return Manifest{}, err
	}
	if w.SchemaVersion == nil || *w.SchemaVersion != 2 {
		return Manifest{}, fmt.Errorf("upstream: %s: schemaVersion must be 2", mt)
	}
	if mt.IsIndex() {
		return parseIndex(mt, w)
	}
	return parseImage(mt, w)
}

// manifestType decides which kind of document w is (see ParseManifest).
func manifestType(contentType string, w wireManifest) (types.MediaType, error) {
	mt := types.MediaType(w.MediaType)
	if ct := normalizeMediaType(contentType); !isGeneric(ct) {
		if w.MediaType != "" && types.MediaType(w.MediaType) != ct {
			return "", fmt.Errorf("upstream: manifest says mediaType %q but came as %q", w.MediaType, ct)
		}
		mt = ct
	}
	if mt == "" {
		// OCI allows omitting mediaType; the shape then tells.
		switch {
		case w.Manifests != nil:
			mt = types.OCIImageIndex
		case w.Config != nil:
			mt = types.OCIManifestSchema1
		default:
			return "", errors.New("upstream: document has no mediaType and is neither a manifest nor an index")
		}
	}
	switch {
	case mt.IsSchema1():
		return "", fmt.Errorf("upstream: unsupported manifest type %s (Docker schema 1 is deprecated)", mt)
	case !mt.IsImage() && !mt.IsIndex():
		return "", fmt.Errorf("upstream: unsupported manifest type %q", mt)
	}
	return mt, nil
}

func normalizeMediaType(s string) types.MediaType {
	if mt, _, err := mime.ParseMediaType(s); err == nil {
		return types.MediaType(mt)
	}
	return types.MediaType(strings.ToLower(strings.TrimSpace(s)))
}

func isGeneric(mt types.MediaType) bool {
	switch mt {
	case "", "application/json", "text/plain", "application/octet-stream":
		return true
	}
	return false
}

func parseImage(mt types.MediaType, w wireManifest) (Manifest, error) {
	if w.Manifests != nil {
		return Manifest{}, fmt.Errorf("upstream: %s must not have manifests", mt)
	}
	if w.Config == nil {
		return Manifest{}, fmt.Errorf("upstream: %s has no config", mt)
	}
	if err := checkDescriptor(*w.Config); err != nil {
		return Manifest{}, fmt.Errorf("upstream: %s config: %w", mt, err)
	}
	var layers []v1.Descriptor
	if w.Layers != nil {
		layers = *w.Layers
	}
	if err := checkDescriptors(layers); err != nil {
		return Manifest{}, fmt.Errorf("upstream: %s layers: %w", mt, err)
	}
	return Manifest{MediaType: mt, Config: *w.Config, Layers: layers}, nil
}

func parseIndex(mt types.MediaType, w wireManifest) (Manifest, error) {
	if w.Config != nil || w.Layers != nil {
		return Manifest{}, fmt.Errorf("upstream: %s must not have config or layers", mt)
	}
	if w.Manifests == nil {
		return Manifest{}, fmt.Errorf("upstream: %s has no manifests", mt)
	}
	if err := checkDescriptors(*w.Manifests); err != nil {
		return Manifest{}, fmt.Errorf("upstream: %s manifests: %w", mt, err)
	}
	return Manifest{MediaType: mt, Manifests: *w.Manifests}, nil
}

func checkDescriptors(ds []v1.Descriptor) error {
	if len(ds) > MaxDescriptors {
		return fmt.Errorf("%d entries exceed the limit of %d", len(ds), MaxDescriptors)
	}
	for i, d := range ds {
		if err := checkDescriptor(d); err != nil {
			return fmt.Errorf("entry %d: %w", i, err)
		}
	}
	return nil
}

// checkDescriptor checks what the data plane relies on. v1.Hash checks a
// digest's form while decoding, by its own rules, and decodes an absent one
// to zero; faasnet's one rule is digest.Check.
func checkDescriptor(d v1.Descriptor) error {
	if d.Digest == (v1.Hash{}) {
		return errors.New("missing digest")
	}
	if err := digest.Check(d.Digest); err != nil {
		return err
	}
	if d.Size < 0 {
		return fmt.Errorf("%s: negative size %d", d.Digest, d.Size)
	}
	if !validMediaType(string(d.MediaType)) {
		return fmt.Errorf("%s: malformed media type %q", d.Digest, d.MediaType)
	}
	return nil
}

// validMediaType reports whether s is "type/subtype" in the grammar of
// RFC 6838 section 4.2 (no parameters).
func validMediaType(s string) bool {
	typ, sub, ok := strings.Cut(s, "/")
	return ok && restrictedName(typ) && restrictedName(sub)
}

func restrictedName(s string) bool {
	if len(s) == 0 || len(s) > 127 || !isAlnum(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if !isAlnum(s[i]) && strings.IndexByte("!#$&-^_.+", s[i]) < 0 {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// ParseDigest parses a digest with digest.Parse, the one parser of digests
// in faasnet: "sha256:<64 hex>" or "sha512:<128 hex>", lowercase.
func ParseDigest(s string) (v1.Hash, error) {
	h, err := digest.Parse(s)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("upstream: %w", err)
	}
	return h, nil
}

// verify returns an error unless b hashes to want, which has passed
// digest.Check.
func verify(b []byte, want v1.Hash) error {
	hasher := digest.Hasher(want)
	hasher.Write(b)
	got := v1.Hash{Algorithm: want.Algorithm, Hex: hex.EncodeToString(hasher.Sum(nil))}
	if got != want {
		return fmt.Errorf("content has digest %s, want %s", got, want)
	}
	return nil
}
