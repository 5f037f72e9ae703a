package worker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/digest"
	"github.com/faasnet/faasnet/imagegen"
	"github.com/faasnet/faasnet/internal/testenv"
	"github.com/faasnet/faasnet/peer"
	"github.com/faasnet/faasnet/upstream"
	dto "github.com/prometheus/client_model/go"
)

// junk is a blob of the right size and wrong content.
type junk struct{ size int64 }

func (j junk) Size() int64 { return j.size }
func (j junk) Reader(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(bytes.Repeat([]byte{0xa5}, int(n)))), nil
}

func TestParentServingWrongBytesIsDetected(t *testing.T) {
	c := newCluster(t, time.Hour)
	ref, _ := c.push(imagegen.Spec{TotalSize: 2 << 20, Layers: 2, Seed: 3})
	reg := upstream.New()
	im, err := reg.Resolve(c.ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	sizes := map[string]int64{im.Descriptor.Digest.String(): im.Descriptor.Size}
	for _, d := range im.Blobs() {
		sizes[d.Digest.String()] = d.Size
	}
	src := sourceFunc(func(ctx context.Context, digest string) (peer.Blob, func(), error) {
		size, ok := sizes[digest]
		if !ok {
			return nil, nil, peer.ErrNotFound
		}
		return junk{size}, func() {}, nil
	})
	res := resolverFunc(func(ctx context.Context, image string) (peer.Descriptor, error) {
		return peer.Descriptor{Digest: im.Descriptor.Digest.String(), Size: im.Descriptor.Size, MediaType: string(im.Descriptor.MediaType)}, nil
	})
	mux := http.NewServeMux()
	mux.Handle(peer.PathPrefix, peer.NewServer(src, peer.ServerOptions{Resolver: res}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {})
	evil := httptest.NewServer(mux)
	defer evil.Close()
	if _, err := c.mgr.RegisterVM(c.ctx, "evil", strings.TrimPrefix(evil.URL, "http://"), nil); err != nil {
		t.Fatal(err)
	}
	w := c.start("honest", nil)
	c.waitRegistered(2)
	c.mgr.PutFunction(c.ctx, "f", api.FunctionRequest{Image: ref})
	// evil becomes the root, honest its child.
	if _, err := c.mgr.Scale(c.ctx, "f", api.ScaleRequest{VMs: []string{"evil", "honest"}}); err != nil {
		t.Fatal(err)
	}
	c.waitReady("f", []string{"honest"}, time.Minute)
	var m dto.Metric
	w.metrics.verifyFailures.Write(&m)
	if n := m.GetCounter().GetValue(); n < 1 {
		t.Errorf("verification failures counted: %v, want at least 1", n)
	}
	for d := range sizes {
		b, ok := w.cache.Lookup(d)
		if !ok || !b.Complete() {
			t.Fatalf("blob %s not complete and verified", d)
		}
		b.Release()
	}
	r := w.Functions()[0]
	if r.BytesFromRegistry < r.ImageBytes {
		t.Errorf("after the parent lied, %d of %d bytes came from the registry", r.BytesFromRegistry, r.ImageBytes)
	}
}

type sourceFunc func(ctx context.Context, digest string) (peer.Blob, func(), error)

func (f sourceFunc) Open(ctx context.Context, d string) (peer.Blob, func(), error) { return f(ctx, d) }

type resolverFunc func(ctx context.Context, image string) (peer.Descriptor, error)

func (f resolverFunc) Resolve(ctx context.Context, image string) (peer.Descriptor, error) {
	return f(ctx, image)
}

// waitError waits until worker w reports fn with an error containing want.
func waitError(t *testing.T, w *Worker, fn, want string) api.FunctionReport {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, r := range w.Functions() {
			if r.Function == fn && strings.Contains(r.Error, want) {
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no error containing %q in %+v", want, w.Functions())
		}
		time.Sleep(20 * time.Millisecond) // polling the worker's status, with a deadline
	}
}

// TestRegistryFailuresAreReported: the root reports what went wrong when
// it fetches the pinned manifest. The images are given by digest, which the
// manager pins without asking the registry (it refuses an unknown tag).
func TestRegistryFailuresAreReported(t *testing.T) {
	badManifest := []byte(`{"schemaVersion": 2, "config": "nope"`)
	anyDigest := "@" + digest.Of([]byte("no such manifest")).String()
	cases := []struct {
		name   string
		handle func(w http.ResponseWriter, r *http.Request) bool // true: handled
		image  string                                            // repository path
		want   string
		state  string
	}{
		{"image does not exist", nil, "/nothing/here" + anyDigest, "not found", api.StateFailed},
		{"registry answers 500", func(w http.ResponseWriter, r *http.Request) bool {
			if strings.Contains(r.URL.Path, "/manifests/") {
				http.Error(w, "database on fire", http.StatusInternalServerError)
				return true
			}
			return false
		}, "/test/app" + anyDigest, "500", ""},
		{"manifest does not parse", func(w http.ResponseWriter, r *http.Request) bool {
			if strings.Contains(r.URL.Path, "/manifests/") {
				w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
				w.Write(badManifest)
				return true
			}
			return false
		}, "/test/app@" + digest.Of(badManifest).String(), "not valid JSON", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, time.Hour)
			ref, _ := c.push(imagegen.Spec{TotalSize: 1 << 20, Layers: 1, Seed: 4})
			host := ref[:strings.Index(ref, "/")]
			image := host + tc.image
			if tc.handle != nil {
				// A second registry front that misbehaves.
				front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.URL.Path == "/v2/" {
						return // the ping succeeds
					}
					if !tc.handle(w, r) {
						http.Error(w, "unexpected", http.StatusTeapot)
					}
				}))
				defer front.Close()
				image = strings.TrimPrefix(front.URL, "http://") + tc.image
			}
			w := c.start("vm", nil)
			c.waitRegistered(1)
			c.mgr.PutFunction(c.ctx, "f", api.FunctionRequest{Image: image})
			if _, err := c.mgr.Scale(c.ctx, "f", api.ScaleRequest{VMs: []string{"vm"}}); err != nil {
				t.Fatal(err)
			}
			r := waitError(t, w, "f", tc.want)
			if tc.state != "" && r.State != tc.state {
				t.Errorf("state %q, want %q (error %q)", r.State, tc.state, r.Error)
			}
			if r.State == api.StateReady {
				t.Errorf("ready despite %q", r.Error)
			}
		})
	}
}

func TestDiskFullIsReportedAndNothingPartialServed(t *testing.T) {
	testenv.NeedRoot(t)
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", dir).CombinedOutput(); err != nil {
		// Root but no mount (a container without CAP_SYS_ADMIN): CI
		// runs as full root, so there this is a broken setup.
		if testenv.InCI() {
			t.Fatalf("cannot mount a tmpfs to fill: %v: %s", err, out)
		}
		t.Skipf("cannot mount a tmpfs to fill: %v: %s", err, out)
	}
	defer exec.Command("umount", "-l", dir).Run()
	c := newCluster(t, time.Hour)
	ref, _ := c.push(imagegen.Spec{TotalSize: 3 << 20, Layers: 1, Seed: 5})
	w := c.start("vm", func(cfg *Config) { cfg.CacheDir = dir; cfg.OCI = listenLoopback(t) })
	c.waitRegistered(1)
	c.mgr.PutFunction(c.ctx, "f", api.FunctionRequest{Image: ref})
	if _, err := c.mgr.Scale(c.ctx, "f", api.ScaleRequest{VMs: []string{"vm"}}); err != nil {
		t.Fatal(err)
	}
	r := waitError(t, w, "f", "disk full")
	if r.State == api.StateReady {
		t.Fatal("ready on a full disk")
	}
	// The runtime endpoint serves no partial blob: it waits for the
	// verified blob, so a client gives up without getting bytes.
	repo := ref[strings.Index(ref, "/")+1 : strings.LastIndex(ref, ":")]
	im, _ := upstream.New().Resolve(c.ctx, ref)
	client := &http.Client{Timeout: time.Second}
	for _, d := range im.Blobs() {
		resp, err := client.Get("http://" + w.OCIAddr() + "/v2/" + repo + "/blobs/" + d.Digest.String())
		if err != nil {
			continue // no answer within the timeout: nothing served
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		sum := sha256.Sum256(body)
		if resp.StatusCode == http.StatusOK && (err != nil || "sha256:"+hex.EncodeToString(sum[:]) != d.Digest.String()) {
			t.Errorf("served %d bytes of %s that do not match its digest", len(body), d.Digest)
		}
	}
}
