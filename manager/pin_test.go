package manager

import (
	"context"
	"errors"
	"io"
	"log"
	"math/rand"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/digest"
	"github.com/faasnet/faasnet/manager/store"
	"github.com/faasnet/faasnet/stripe"
	"github.com/faasnet/faasnet/upstream"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// fakePins pins every image to the digest of its reference's text. It stands
// in for the registry in the tests of everything but pinning, whose images
// exist nowhere; the tests below pin through a real registry.
var fakePins = PinFunc(func(_ context.Context, image string) (string, error) {
	return digest.Of([]byte(image)).String(), nil
})

// pinRegistry starts ggcr's in-memory registry on 127.0.0.1 (plain HTTP, as
// the workers speak to loopback registries) and returns its host:port.
func pinRegistry(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// pushRandom pushes a random image to ref and returns its manifest digest.
func pushRandom(t *testing.T, ref string, seed int64) string {
	t.Helper()
	img, err := random.Image(1000, 2, random.WithSource(rand.NewSource(seed)))
	if err != nil {
		t.Fatal(err)
	}
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// registryManager is a manager that pins through the real registry client,
// with no credentials from the machine.
func registryManager(t *testing.T, st store.Store) *Manager {
	t.Helper()
	m, err := New(context.Background(), st, Options{VMTimeout: time.Hour,
		Registry: []upstream.Option{upstream.WithKeychain(authn.NewMultiKeychain())}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

func TestPinTagToRegistryDigest(t *testing.T) {
	ctx := context.Background()
	reg := pinRegistry(t)
	v1 := pushRandom(t, reg+"/app:v1", 1)
	v2 := pushRandom(t, reg+"/app:v2", 2)
	m := registryManager(t, store.NewMemory())
	register(t, m, "a")

	got, err := m.PutFunction(ctx, "f", api.FunctionRequest{Image: reg + "/app:v1"})
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != v1 {
		t.Fatalf("pinned %q, the registry has %s", got.Digest, v1)
	}
	if _, err := m.Scale(ctx, "f", api.ScaleRequest{VMs: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	a := onlyAssignment(t, m, "a")
	if a.Digest != v1 {
		t.Fatalf("assignment carries %q, want %s", a.Digest, v1)
	}
	if fs := m.Functions(); len(fs) != 1 || fs[0].Digest != v1 {
		t.Fatalf("listing: %+v, want digest %s", fs, v1)
	}

	// Updating to another tag pins again, and the VM gets a new generation.
	if _, err := m.PutFunction(ctx, "f", api.FunctionRequest{Image: reg + "/app:v2"}); err != nil {
		t.Fatal(err)
	}
	b := onlyAssignment(t, m, "a")
	if b.Digest != v2 || b.Generation <= a.Generation {
		t.Fatalf("after the update: digest %s generation %d, want %s and above %d", b.Digest, b.Generation, v2, a.Generation)
	}
}

func TestPinSurvivesTagMove(t *testing.T) {
	ctx := context.Background()
	reg := pinRegistry(t)
	old := pushRandom(t, reg+"/app:live", 1)
	st := store.NewMemory()
	m := registryManager(t, st)
	register(t, m, "a")
	if _, err := m.PutFunction(ctx, "f", api.FunctionRequest{Image: reg + "/app:live"}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Scale(ctx, "f", api.ScaleRequest{VMs: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	moved := pushRandom(t, reg+"/app:live", 2)
	if moved == old {
		t.Fatal("the test needs two different images")
	}
	before := onlyAssignment(t, m, "a")
	if before.Digest != old {
		t.Fatalf("assignment digest %s, want the one pinned at definition %s", before.Digest, old)
	}
	// Nor does a restart of the manager re-resolve the tag.
	m2 := registryManager(t, st)
	if a := onlyAssignment(t, m2, "a"); a.Digest != old {
		t.Fatalf("after a restart the assignment digest is %s, want %s", a.Digest, old)
	}
	// Defining it again is how an operator takes the moved tag.
	if _, err := m2.PutFunction(ctx, "f", api.FunctionRequest{Image: reg + "/app:live"}); err != nil {
		t.Fatal(err)
	}
	if a := onlyAssignment(t, m2, "a"); a.Digest != moved || a.Generation <= before.Generation {
		t.Fatalf("after defining again: digest %s generation %d, want %s and above %d", a.Digest, a.Generation, moved, before.Generation)
	}
}

func TestPinByDigestNeedsNoRegistry(t *testing.T) {
	ctx := context.Background()
	asked := 0
	m, err := New(ctx, store.NewMemory(), Options{Pinner: PinFunc(func(context.Context, string) (string, error) {
		asked++
		return "", errors.New("the registry must not be asked")
	})})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	d := digest.Of([]byte("a manifest")).String()
	for _, image := range []string{"unreachable.invalid/app@" + d, "unreachable.invalid/app:v1@" + d} {
		got, err := m.PutFunction(ctx, "f", api.FunctionRequest{Image: image})
		if err != nil {
			t.Fatalf("%s: %v", image, err)
		}
		if got.Digest != d || got.Image != image {
			t.Fatalf("%s: got %+v, want the image as given pinned to %s", image, got, d)
		}
	}
	if asked != 0 {
		t.Fatalf("the pinner was asked %d times", asked)
	}
}

func TestPinRefusalChangesNothing(t *testing.T) {
	ctx := context.Background()
	reg := pinRegistry(t)
	v1 := pushRandom(t, reg+"/app:v1", 1)
	// A port nothing listens on: the registry cannot be reached.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String()
	ln.Close()

	m := registryManager(t, store.NewMemory())
	register(t, m, "a")
	if _, err := m.PutFunction(ctx, "f", api.FunctionRequest{Image: reg + "/app:v1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Scale(ctx, "f", api.ScaleRequest{VMs: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	before := onlyAssignment(t, m, "a")
	tests := []struct {
		fn, image string
		code      int
	}{
		{"f", reg + "/app:nope", http.StatusBadRequest},
		{"f", reg + "/nothing:v1", http.StatusBadRequest},
		{"f", down + "/app:v1", http.StatusBadGateway},
		{"g", reg + "/app:nope", http.StatusBadRequest},
		{"g", down + "/app:v1", http.StatusBadGateway},
		{"g", reg + "/app@sha256:ABC", http.StatusBadRequest},
	}
	for _, tt := range tests {
		_, err := m.PutFunction(ctx, tt.fn, api.FunctionRequest{Image: tt.image})
		if code := StatusCode(err); code != tt.code {
			t.Errorf("%s %s: %d (%v), want %d", tt.fn, tt.image, code, err, tt.code)
		}
	}
	if fs := m.Functions(); len(fs) != 1 || fs[0].Function != "f" || fs[0].Digest != v1 || fs[0].Image != reg+"/app:v1" {
		t.Fatalf("functions after the refusals: %+v", fs)
	}
	if a := onlyAssignment(t, m, "a"); a.Digest != before.Digest || a.Generation != before.Generation {
		t.Fatalf("assignment changed: %+v, was %+v", a, before)
	}
}

// TestPinOverHTTP checks the API's answers: the digest in PUT and GET, JSON
// errors with the refusal's code.
func TestPinOverHTTP(t *testing.T) {
	reg := pinRegistry(t)
	v1 := pushRandom(t, reg+"/app:v1", 1)
	m := registryManager(t, store.NewMemory())
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	c := api.NewClient(srv.URL)
	ctx := context.Background()
	f, err := c.PutFunction(ctx, "f", api.FunctionRequest{Image: reg + "/app:v1"})
	if err != nil {
		t.Fatal(err)
	}
	if f.Digest != v1 {
		t.Fatalf("PUT answered digest %q, want %s", f.Digest, v1)
	}
	_, err = c.PutFunction(ctx, "g", api.FunctionRequest{Image: reg + "/app:missing"})
	var apiErr *api.StatusError
	if !errors.As(err, &apiErr) || apiErr.Code != http.StatusBadRequest {
		t.Fatalf("unknown tag: %v, want a 400", err)
	}
	fs, err := c.Functions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(fs) != 1 || fs[0].Digest != v1 {
		t.Fatalf("GET /functions: %+v", fs)
	}
}

func onlyAssignment(t *testing.T, m *Manager, vm string) api.Assignment {
	t.Helper()
	doc, _, err := m.Assignments(vm)
	if err != nil {
		t.Fatal(err)
	}
	if len(doc.Assignments) != 1 {
		t.Fatalf("%s has %d assignments, want 1", vm, len(doc.Assignments))
	}
	return doc.Assignments[0]
}

// FuzzPin drives the pinning of an image reference from a request: a
// reference by digest is pinned to that digest without the registry, and
// whatever is pinned is a canonical digest.
func FuzzPin(f *testing.F) {
	for _, s := range []string{"reg/x:1", "reg/x@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		"reg/x:1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "reg/x@sha256:ABCD", "reg/x@sha512:00", "", "@", "x@y:z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, image string) {
		asked := false
		m := &Manager{opts: Options{Pinner: PinFunc(func(_ context.Context, image string) (string, error) {
			asked = true
			return fakePins(context.Background(), image)
		})}}
		got, err := m.pin(context.Background(), image)
		if err != nil {
			if code := StatusCode(err); code != http.StatusBadRequest {
				t.Fatalf("%q: %d %v, want a 400", image, code, err)
			}
			return
		}
		if _, err := digest.Parse(got); err != nil {
			t.Fatalf("%q pinned to %q: %v", image, got, err)
		}
		if i := strings.LastIndex(image, "@"); i >= 0 {
			if asked || got != image[i+1:] {
				t.Fatalf("%q by digest: pinned to %q, registry asked: %v", image, got, asked)
			}
		}
	})
}

// TestRegistryPinnerSizesTheImage checks that pinning through the registry
// reports what the manifest says: config plus layer bytes and the number
// of layers, from which the manager picks the block.
func TestRegistryPinnerSizesTheImage(t *testing.T) {
	reg := pinRegistry(t)
	img, err := random.Image(3000, 3, random.WithSource(rand.NewSource(5)))
	if err != nil {
		t.Fatal(err)
	}
	r, _ := name.ParseReference(reg+"/app:v1", name.Insecure)
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	mf, _ := img.Manifest()
	want := Pinned{Layers: len(mf.Layers), Size: mf.Config.Size}
	for _, l := range mf.Layers {
		want.Size += l.Size
	}
	d, _ := img.Digest()
	want.Digest = d.String()
	p := RegistryPinner{upstream.New(upstream.WithKeychain(authn.NewMultiKeychain()))}
	got, err := p.PinSize(t.Context(), reg+"/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("PinSize = %+v, want %+v", got, want)
	}
	m := registryManager(t, store.NewMemory())
	f, err := m.PutFunction(t.Context(), "f", api.FunctionRequest{Image: reg + "/app:v1"})
	if err != nil {
		t.Fatal(err)
	}
	if b := stripe.BlockFor(want.Size, want.Layers, 2, 1); f.BlockSize != b {
		t.Errorf("block %d, want %d", f.BlockSize, b)
	}
}
