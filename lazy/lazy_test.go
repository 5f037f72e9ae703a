package lazy

import (
	"strconv"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestLayerFromDescriptor(t *testing.T) {
	d := v1.Descriptor{Size: 10, Annotations: map[string]string{UncompressedSizeAnnotation: strconv.Itoa(20)}}
	if _, err := LayerFromDescriptor(d, BytesReader(nil)); err == nil {
		t.Error("a layer without a TOC digest was taken for eStargz")
	}
	if IsLazy(nil) || IsLazy([]v1.Descriptor{d}) {
		t.Error("IsLazy true without eStargz layers")
	}
	d.Annotations[TOCDigestAnnotation] = "sha256:" + strings.Repeat("a", 64)
	l, err := LayerFromDescriptor(d, BytesReader(nil))
	if err != nil || l.TOCDigest != d.Annotations[TOCDigestAnnotation] || l.Size != 10 {
		t.Errorf("LayerFromDescriptor = %+v, %v", l, err)
	}
	if n, ok := UncompressedSize(d); !ok || n != 20 {
		t.Errorf("UncompressedSize = %d, %v", n, ok)
	}
}
