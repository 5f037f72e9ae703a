package worker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/digest"
	"github.com/faasnet/faasnet/enroll/enrolltest"
	"github.com/faasnet/faasnet/grant"
	"github.com/faasnet/faasnet/imagegen"
	"github.com/faasnet/faasnet/internal/testenv"
	"github.com/faasnet/faasnet/peer"
	"github.com/faasnet/faasnet/pki"
	"github.com/google/go-containerregistry/pkg/name"
)

// storeBlob puts raw, complete, in w's cache, known as a blob of no
// function (a manifest if mediaType is set).
func storeBlob(t *testing.T, w *Worker, raw []byte, mediaType string) string {
	t.Helper()
	d := digest.Of(raw).String()
	w.mu.Lock()
	info := w.learn(nil, d, int64(len(raw)), mediaType, mediaType != "", name.Repository{})
	w.mu.Unlock()
	b, err := w.cache.Acquire(d, int64(len(raw)))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Release()
	if err := w.writeAll(b, raw, &job{digest: d, info: info}); err != nil {
		t.Fatal(err)
	}
	return d
}

// host makes w host function fn pinned to manifest, as an assignment
// would (w is not serving: nothing else reads fns).
func host(w *Worker, fn, manifest string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.fns[fn] = &function{name: fn, a: api.Assignment{Function: fn, Digest: manifest}}
}

// What a grant covers is read from the granted manifest in the cache: its
// config and layers, and for an index its manifests and theirs. A granted
// manifest not in the cache yet is waited for, not refused.
func TestGrantCoverage(t *testing.T) {
	m := enrolltest.New(t)
	w := newWorker(t, Config{ID: "p", Manager: "https://127.0.0.1:1",
		Security: &Security{Keeper: pki.NewKeeper(m.Issue(t, "p", time.Now(), time.Hour)), CA: m.CA.Cert}})
	g := newGrants(w)
	img, err := imagegen.Image(imagegen.Spec{TotalSize: 64 << 10, Layers: 2, Seed: 61})
	if err != nil {
		t.Fatal(err)
	}
	blobs, md := testenv.ImageBlobs(t, img)
	manifest := md.Digest.String()
	layer := imageBlobs(t, img)[2]
	index := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":%q,"digest":%q,"size":%d}]}`,
		md.MediaType, manifest, md.Size))
	indexDigest := digest.Of(index).String()

	request := func(vm, fn, granted string) *http.Request {
		r := httptest.NewRequestWithContext(context.WithValue(t.Context(), identityKey{}, pki.Identity{VM: vm}), http.MethodGet, "/", nil)
		r.Header.Set(grant.Header, m.Grant(t, vm, fn, granted))
		return r
	}

	// A grant for a function this worker does not host, or for another
	// image of it, is refused at once: nothing here will ever cover it.
	start := time.Now()
	if err := g.AuthorizeBlob(request("x", "f", manifest), layer); !errors.Is(err, peer.ErrForbidden) || time.Since(start) > knownWait/2 {
		t.Fatalf("a grant for a function not hosted here: %v after %s, want a refusal at once", err, time.Since(start))
	}
	host(w, "f", indexDigest)
	start = time.Now()
	if err := g.AuthorizeBlob(request("x", "f", manifest), layer); !errors.Is(err, peer.ErrForbidden) || time.Since(start) > knownWait/2 {
		t.Fatalf("a grant for another image of a hosted function: %v after %s, want a refusal at once", err, time.Since(start))
	}

	// Not in the cache yet: the request waits for it (here until the
	// caller gives up), it is not refused; once it is here, it passes.
	host(w, "f", manifest)
	r := request("x", "f", manifest)
	start = time.Now() // before the deadline is set, which counts from then
	ctx, cancel := context.WithTimeout(r.Context(), 200*time.Millisecond)
	defer cancel()
	err = g.AuthorizeBlob(r.WithContext(ctx), layer)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) < 200*time.Millisecond {
		t.Fatalf("before the manifest is here: %v after %s, want a wait", err, time.Since(start))
	}
	storeBlob(t, w, blobs[manifest], string(md.MediaType))
	if err := g.AuthorizeBlob(request("x", "f", manifest), layer); err != nil {
		t.Fatalf("once the manifest is here: %v", err)
	}

	storeBlob(t, w, index, "application/vnd.oci.image.index.v1+json")
	other := digest.Of([]byte("another image's layer")).String()
	tests := []struct {
		name    string
		granted string
		blob    string
		ok      bool
	}{
		{"the manifest itself", manifest, manifest, true},
		{"its layer", manifest, layer, true},
		{"another blob", manifest, other, false},
		{"an index's manifest", indexDigest, manifest, true},
		{"an index's manifest's layer", indexDigest, layer, true},
		{"not in the index", indexDigest, other, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host(w, "f", tt.granted)
			start := time.Now()
			err := g.AuthorizeBlob(request("x", "f", tt.granted), tt.blob)
			if tt.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tt.ok && !errors.Is(err, peer.ErrForbidden) {
				t.Fatalf("got %v, want a refusal", err)
			}
			if time.Since(start) > knownWait/2 {
				t.Errorf("took %s", time.Since(start))
			}
		})
	}
}
