package upstream

import (
	"io"
	"log"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// anonymous keeps tests away from the machine's docker config.
var anonymous = WithKeychain(authn.NewMultiKeychain())

// newRegistry starts ggcr's in-memory registry on 127.0.0.1 and returns its
// handler (to share with other servers) and its host:port.
func newRegistry(t *testing.T) (http.Handler, string) {
	t.Helper()
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return h, strings.TrimPrefix(srv.URL, "http://")
}

// dockerImage is a random Docker schema 2 image with n layers.
func dockerImage(t *testing.T, seed int64, n int) v1.Image {
	t.Helper()
	img, err := random.Image(3000, int64(n), random.WithSource(rand.NewSource(seed)))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// ociImage is an OCI image with a gzip, a zstd and an uncompressed layer.
// The layers' bytes are tarballs whatever their media type says: a registry
// and this package only move bytes.
func ociImage(t *testing.T, seed int64) v1.Image {
	t.Helper()
	src := rand.NewSource(seed)
	var layers []v1.Layer
	for i, mt := range []types.MediaType{types.OCILayer, types.OCILayerZStd, types.OCIUncompressedLayer} {
		l, err := random.Layer(int64(1000*(i+2)), mt, random.WithSource(src))
		if err != nil {
			t.Fatal(err)
		}
		layers = append(layers, l)
	}
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	return mutate.ConfigMediaType(img, types.OCIConfigJSON)
}

// twoPlatforms is an OCI index of an amd64 and an arm64/v8 image.
func twoPlatforms(t *testing.T, amd64, arm64 v1.Image) v1.ImageIndex {
	t.Helper()
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	return mutate.AppendManifests(idx,
		mutate.IndexAddendum{Add: amd64, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm64, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}}},
	)
}

func parseRef(t *testing.T, s string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

func push(t *testing.T, ref string, img v1.Image) {
	t.Helper()
	if err := remote.Write(parseRef(t, ref), img); err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
}

func pushIndex(t *testing.T, ref string, idx v1.ImageIndex) {
	t.Helper()
	if err := remote.WriteIndex(parseRef(t, ref), idx); err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
}

func mustDigest(t *testing.T, d interface{ Digest() (v1.Hash, error) }) v1.Hash {
	t.Helper()
	h, err := d.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func layerBytes(t *testing.T, l v1.Layer) []byte {
	t.Helper()
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
