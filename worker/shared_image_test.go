package worker

import (
	"testing"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/digest"
	"github.com/faasnet/faasnet/peer"
)

// TestRememberedImageIsClaimed: a function that finds its image's manifest
// remembered from another function claims the manifest blob too, so that
// releasing the other does not stop its fetch (the HA kill test saw a VM
// stuck fetching for ever that way).
func TestRememberedImageIsClaimed(t *testing.T) {
	w := newWorker(t, Config{})
	ref := "registry.example/app:v1"
	fns := map[string]*function{}
	for _, name := range []string{"a", "b"} {
		fns[name] = &function{name: name, image: ref, a: api.Assignment{Function: name, Image: ref},
			cancel: func() {}, parentChanged: make(chan struct{})}
	}
	w.mu.Lock()
	w.fns["a"], w.fns["b"] = fns["a"], fns["b"]
	w.mu.Unlock()
	d := peer.Descriptor{Digest: digest.Of([]byte("a manifest")).String(), Size: 10, MediaType: "application/vnd.oci.image.manifest.v1+json"}
	if _, err := w.rememberImage(fns["a"], ref, d, nil); err != nil {
		t.Fatal(err)
	}
	got, err := w.resolve(t.Context(), fns["b"])
	if err != nil || got.Digest != d.Digest {
		t.Fatalf("resolve = %+v, %v; want the remembered %s", got, err, d.Digest)
	}
	w.mu.Lock()
	w.stopFunction(fns["a"])
	needed := w.known[d.Digest].needed()
	w.mu.Unlock()
	if !needed {
		t.Error("after releasing a, nothing needs the manifest b waits for")
	}
}
