package cluster

import (
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Blob names a blob of an image.
type Blob struct {
	Digest string
	Size   int64
}

// Image is an image pushed to the Registry.
type Image struct {
	Ref        string // host:port/repo:tag
	Repository string // repo, without the registry host
	Tag        string
	Manifest   Blob
	Config     Blob
	Layers     []Blob
}

// Blobs returns the config and the layers.
func (im Image) Blobs() []Blob { return append([]Blob{im.Config}, im.Layers...) }

// Bytes is what a VM must receive to hold the image: manifest, config and
// layers.
func (im Image) Bytes() int64 {
	n := im.Manifest.Size
	for _, b := range im.Blobs() {
		n += b.Size
	}
	return n
}

// describe records the digests and sizes of img.
func describe(ref, repo, tag string, img v1.Image) (Image, error) {
	fail := func(err error) (Image, error) { return Image{}, fmt.Errorf("describing %s: %w", ref, err) }
	im := Image{Ref: ref, Repository: repo, Tag: tag}
	raw, err := img.RawManifest()
	if err != nil {
		return fail(err)
	}
	d, err := img.Digest()
	if err != nil {
		return fail(err)
	}
	im.Manifest = Blob{d.String(), int64(len(raw))}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return fail(err)
	}
	cd, err := img.ConfigName()
	if err != nil {
		return fail(err)
	}
	im.Config = Blob{cd.String(), int64(len(cfg))}
	layers, err := img.Layers()
	if err != nil {
		return fail(err)
	}
	for _, l := range layers {
		ld, err := l.Digest()
		if err != nil {
			return fail(err)
		}
		sz, err := l.Size()
		if err != nil {
			return fail(err)
		}
		im.Layers = append(im.Layers, Blob{ld.String(), sz})
	}
	return im, nil
}
