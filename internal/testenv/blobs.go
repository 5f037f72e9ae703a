package testenv

import (
	"io"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// ImageBlobs returns every blob of img by digest, the manifest included, and
// the manifest's digest, size and media type: what a fake peer or registry
// in a test serves.
func ImageBlobs(t testing.TB, img v1.Image) (blobs map[string][]byte, manifest v1.Descriptor) {
	t.Helper()
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	md, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	mt, err := img.MediaType()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cd, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	blobs = map[string][]byte{md.String(): raw, cd.String(): cfg}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		blobs[d.String()] = b
	}
	return blobs, v1.Descriptor{MediaType: mt, Size: int64(len(raw)), Digest: md}
}

// ReadAll reads what open returns to the end, failing t on any error: for
// go-containerregistry's Compressed and Uncompressed, and the like.
func ReadAll(t testing.TB, open func() (io.ReadCloser, error)) []byte {
	t.Helper()
	rc, err := open()
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
