package worker

import (
	"bytes"
	"strings"
	"testing"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/digest"
	"github.com/google/go-containerregistry/pkg/name"
)

// TestOpenOfPartialBlobReleasesItsReference opens a blob for a child while
// it is still partial, as a parent does during cut-through: once the child
// is done, the cache must hold no reference to it.
func TestOpenOfPartialBlobReleasesItsReference(t *testing.T) {
	w := newWorker(t, Config{BlockSize: 1024})
	data := bytes.Repeat([]byte("partial "), 512)
	d := digest.Of(data).String()
	b, err := w.cache.Acquire(d, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.WriteBlock(0, bytes.NewReader(data[:1024])); err != nil {
		t.Fatal(err)
	}
	b.Release()
	w.mu.Lock()
	w.learn(nil, d, int64(len(data)), "application/octet-stream", false, name.Repository{})
	w.mu.Unlock()

	blob, release, err := w.Open(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	if blob.Size() != int64(len(data)) {
		t.Errorf("opened %d bytes, want %d", blob.Size(), len(data))
	}
	release()
	if n := w.cache.Stats().InUse; n != 0 {
		t.Errorf("after the child released the partial blob, %d cache references remain", n)
	}
}

// TestContentMatchTakesCanonicalDigestsOnly asks the runtime endpoint's
// matcher for an image by tag and by digests in several spellings: only
// the canonical form names a blob.
func TestContentMatchTakesCanonicalDigestsOnly(t *testing.T) {
	w := newWorker(t, Config{})
	layer := digest.Of([]byte("layer")).String()
	w.fns["f"] = &function{name: "f", a: api.Assignment{Function: "f", Image: "reg.example/test/app:v1"}, blobs: []string{layer}}
	tests := []struct {
		ref  string
		want bool
	}{
		{"v1", true},
		{layer, true},
		{strings.ToUpper(layer[:7]) + layer[7:], false},
		{layer[:7] + strings.ToUpper(layer[7:]), false},
		{layer[:len(layer)-1], false},
		{"v2", false},
	}
	for _, tt := range tests {
		if _, ok := (content{w}).match("", "test/app", tt.ref); ok != tt.want {
			t.Errorf("match(%q) = %v, want %v", tt.ref, ok, tt.want)
		}
	}
}
