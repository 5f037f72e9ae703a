package worker

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/imagegen"
	"github.com/faasnet/faasnet/internal/testenv"
	"github.com/faasnet/faasnet/peer"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	dto "github.com/prometheus/client_model/go"
)

// imageContent returns every blob of img by digest, the manifest included,
// and the manifest's descriptor.
func imageContent(t *testing.T, img v1.Image) (map[string][]byte, peer.Descriptor) {
	t.Helper()
	blobs, m := testenv.ImageBlobs(t, img)
	return blobs, peer.Descriptor{Digest: m.Digest.String(), Size: m.Size, MediaType: string(m.MediaType)}
}

// pinnedManifest is the manifest digest w's function fn provisioned.
func pinnedManifest(w *Worker, fn string) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if f := w.fns[fn]; f != nil && len(f.blobs) > 0 {
		return f.blobs[0]
	}
	return ""
}

// TestParentResolvingAnotherImageIsRefused: a parent that is a real peer
// server, honest about the bytes of another image, answers the child's
// resolve with that image's manifest. The child must refuse the answer,
// fetch none of the other image, count the refusal, and end with the image
// the manager pinned (from the registry, as a parent that lied is not
// trusted for this image again).
func TestParentResolvingAnotherImageIsRefused(t *testing.T) {
	c := newCluster(t, time.Hour)
	_, other := c.pushTag(imagegen.Spec{TotalSize: 1 << 20, Layers: 2, Seed: 21}, "other")
	ref, img := c.pushTag(imagegen.Spec{TotalSize: 1 << 20, Layers: 2, Seed: 22}, "v1")
	otherBlobs, otherDesc := imageContent(t, other)
	want, _ := img.Digest()

	var mu sync.Mutex
	var served []string // digests the rogue parent was asked for and served
	src := sourceFunc(func(ctx context.Context, digest string) (peer.Blob, func(), error) {
		b, ok := otherBlobs[digest]
		if !ok {
			return nil, nil, peer.ErrNotFound
		}
		mu.Lock()
		served = append(served, digest)
		mu.Unlock()
		return bytesBlob(b), func() {}, nil
	})
	var resolves sync.WaitGroup
	resolves.Add(1)
	var once sync.Once
	res := resolverFunc(func(ctx context.Context, image string) (peer.Descriptor, error) {
		once.Do(resolves.Done)
		return otherDesc, nil
	})
	mux := http.NewServeMux()
	mux.Handle(peer.PathPrefix, peer.NewServer(src, peer.ServerOptions{Resolver: res}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {})
	rogue := httptest.NewServer(mux)
	defer rogue.Close()
	if _, err := c.mgr.RegisterVM(c.ctx, "rogue", strings.TrimPrefix(rogue.URL, "http://"), nil); err != nil {
		t.Fatal(err)
	}
	w := c.start("child", nil)
	c.waitRegistered(2)
	def, err := c.mgr.PutFunction(c.ctx, "f", api.FunctionRequest{Image: ref})
	if err != nil {
		t.Fatal(err)
	}
	if def.Digest != want.String() {
		t.Fatalf("the manager pinned %s, the registry has %s", def.Digest, want)
	}
	// rogue becomes the root, child its child.
	if _, err := c.mgr.Scale(c.ctx, "f", api.ScaleRequest{VMs: []string{"rogue", "child"}}); err != nil {
		t.Fatal(err)
	}
	c.waitReady("f", []string{"child"}, time.Minute)
	resolves.Wait() // the child did ask the rogue parent

	if got := pinnedManifest(w, "f"); got != want.String() {
		t.Fatalf("the child provisioned manifest %s, want the pinned %s", got, want)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(served) > 0 {
		t.Errorf("the child fetched blobs of the other image from the rogue parent: %v", served)
	}
	mine := imageDigests(t, img)
	for d := range otherBlobs {
		if b, ok := w.cache.Lookup(d); ok {
			b.Release()
			if !mine[d] {
				t.Errorf("blob %s of the other image is in the child's cache", d)
			}
		}
	}
	var m dto.Metric
	w.metrics.notPinned.Write(&m)
	if n := m.GetCounter().GetValue(); n < 1 {
		t.Errorf("refused resolve answers counted: %v, want at least 1", n)
	}
}

// imageDigests is the set of img's blob digests, manifest included.
func imageDigests(t *testing.T, img v1.Image) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, d := range imageBlobs(t, img) {
		out[d] = true
	}
	return out
}

// TestRootFetchesThePinnedManifest: a tag moved in the registry after the
// function was defined changes nothing a VM runs, until the function is
// defined again.
func TestRootFetchesThePinnedManifest(t *testing.T) {
	c := newCluster(t, time.Hour)
	ref, first := c.pushTag(imagegen.Spec{TotalSize: 1 << 20, Layers: 1, Seed: 31}, "live")
	w := c.start("vm", nil)
	c.waitRegistered(1)
	if _, err := c.mgr.PutFunction(c.ctx, "f", api.FunctionRequest{Image: ref}); err != nil {
		t.Fatal(err)
	}
	_, moved := c.pushTag(imagegen.Spec{TotalSize: 1 << 20, Layers: 1, Seed: 32}, "live")
	if _, err := c.mgr.Scale(c.ctx, "f", api.ScaleRequest{VMs: []string{"vm"}}); err != nil {
		t.Fatal(err)
	}
	c.waitReady("f", []string{"vm"}, time.Minute)
	want, _ := first.Digest()
	if got := pinnedManifest(w, "f"); got != want.String() {
		t.Fatalf("the root provisioned %s, want the pinned %s (the tag now names another)", got, want)
	}

	// Defining the function again pins the moved tag and restarts it.
	if _, err := c.mgr.PutFunction(c.ctx, "f", api.FunctionRequest{Image: ref}); err != nil {
		t.Fatal(err)
	}
	next, _ := moved.Digest()
	deadline := time.Now().Add(time.Minute)
	for pinnedManifest(w, "f") != next.String() || w.Functions()[0].State != api.StateReady {
		if time.Now().After(deadline) {
			t.Fatalf("after defining again: %s %+v, want %s ready", pinnedManifest(w, "f"), w.Functions(), next)
		}
		time.Sleep(20 * time.Millisecond) // polling the worker's status, with a deadline
	}
}
