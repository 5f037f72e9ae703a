package worker

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/digest"
	"github.com/faasnet/faasnet/imagegen"
	"github.com/faasnet/faasnet/peer"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// waitFor polls cond, a condition on another party's state, until it holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond) // polling, with a deadline
	}
}

// fetching reports whether w runs a fetch job for digest.
func (w *Worker) fetching(digest string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.jobs[digest]
	return ok
}

// complete reports whether w's cache holds digest complete and verified.
func (w *Worker) complete(digest string) bool {
	b, ok := w.cache.Lookup(digest)
	if !ok {
		return false
	}
	defer b.Release()
	return b.Complete()
}

// imageBlobs lists the digests of img's manifest, config and layers.
func imageBlobs(t *testing.T, img v1.Image) []string {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	md, _ := img.Digest()
	out := []string{md.String(), m.Config.Digest.String()}
	for _, l := range m.Layers {
		out = append(out, l.Digest.String())
	}
	return out
}

// TestReleasedVMStopsFetching releases a VM from a function while it is
// still pulling the image from its parent: its fetches of that image must
// stop, not run on to completion (nor fall back to the registry).
func TestReleasedVMStopsFetching(t *testing.T) {
	tests := []struct {
		name    string
		release func(c *cluster)
	}{
		{"scale-in", func(c *cluster) {
			if err := c.mgr.Release(c.ctx, "f", "vm-01"); err != nil {
				c.t.Fatal(err)
			}
		}},
		{"new image", func(c *cluster) {
			ref, _ := c.pushTag(imagegen.Spec{TotalSize: 1 << 20, Layers: 1, Seed: 71}, "v2")
			if _, err := c.mgr.PutFunction(c.ctx, "f", api.FunctionRequest{Image: ref}); err != nil {
				c.t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCluster(t, time.Hour)
			ref, img := c.push(imagegen.Spec{TotalSize: 8 << 20, Layers: 2, Seed: 70})
			c.start("vm-00", func(cfg *Config) { cfg.BlockSize = 64 << 10 })
			child := c.start("vm-01", func(cfg *Config) { cfg.BlockSize = 64 << 10; cfg.DownloadLimit = 1 << 20 })
			c.waitRegistered(2)
			c.mgr.PutFunction(c.ctx, "f", api.FunctionRequest{Image: ref})
			if _, err := c.mgr.Scale(c.ctx, "f", api.ScaleRequest{VMs: []string{"vm-00", "vm-01"}}); err != nil {
				t.Fatal(err)
			}
			c.waitProgress("vm-01", "f", 1<<20)
			tt.release(c)

			old := imageBlobs(t, img)
			waitFor(t, "vm-01 stops fetching the old image", func() bool {
				for _, d := range old {
					if child.fetching(d) {
						return false
					}
				}
				return true
			})
			incomplete := 0
			for _, d := range old[2:] {
				if !child.complete(d) {
					incomplete++
				}
			}
			if incomplete == 0 {
				t.Errorf("vm-01 fetched every layer of an image it was released from")
			}
			for _, d := range old {
				child.mu.Lock()
				n := child.known[d].fromReg.Load()
				child.mu.Unlock()
				if n != 0 {
					t.Errorf("vm-01 fetched %d bytes of %s from the registry", n, d)
				}
			}
		})
	}
}

// TestChildKeepsFetchAliveAfterRelease releases a VM from its function while
// a child still reads a layer from it: the fetch of that layer goes on while
// the child reads, and stops when the child leaves.
func TestChildKeepsFetchAliveAfterRelease(t *testing.T) {
	c := newCluster(t, time.Hour)
	ref, img := c.push(imagegen.Spec{TotalSize: 8 << 20, Layers: 1, Seed: 72})
	c.start("vm-00", func(cfg *Config) { cfg.BlockSize = 64 << 10 })
	mid := c.start("vm-01", func(cfg *Config) { cfg.BlockSize = 64 << 10; cfg.DownloadLimit = 2 << 20 })
	c.waitRegistered(2)
	c.mgr.PutFunction(c.ctx, "f", api.FunctionRequest{Image: ref})
	if _, err := c.mgr.Scale(c.ctx, "f", api.ScaleRequest{VMs: []string{"vm-00", "vm-01"}}); err != nil {
		t.Fatal(err)
	}
	c.waitProgress("vm-01", "f", 512<<10)
	layer := imageBlobs(t, img)[2]

	// The test is a child of vm-01 streaming the layer.
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	body, err := (&peer.Client{}).Open(ctx, mid.Addr(), layer, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.mgr.Release(c.ctx, "f", "vm-01"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "vm-01 has no function", func() bool { return len(mid.Functions()) == 0 })
	// Half the layer: vm-01 must fetch it for the child, as its function
	// no longer needs it.
	m, _ := img.Manifest()
	half := m.Layers[0].Size / 2
	if _, err := io.CopyN(io.Discard, body, half); err != nil {
		t.Fatalf("reading the layer from vm-01 after its release: %v", err)
	}
	body.Close()
	cancel()
	waitFor(t, "vm-01 stops fetching once the child left", func() bool { return !mid.fetching(layer) })
	if mid.complete(layer) {
		t.Errorf("vm-01 fetched the whole layer though its child read half and left")
	}
}

// gatedBlob is a blob whose bytes wait for a gate: an upload that holds a
// parent's only upload slot for as long as the test wants.
type gatedBlob struct{ gate chan struct{} }

func (g gatedBlob) Size() int64 { return 1 }
func (g gatedBlob) Reader(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	select {
	case <-g.gate:
		return io.NopCloser(strings.NewReader("x")), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

type bytesBlob []byte

func (b bytesBlob) Size() int64 { return int64(len(b)) }
func (b bytesBlob) Reader(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(b[off : off+n])), nil
}

// busyParent is a real peer server of img with one upload slot and no
// queue: while the slot is held, every request is answered 503 with
// Retry-After.
func busyParent(t *testing.T, img v1.Image) (srv *peer.Server, addr, gateDigest string, gate chan struct{}) {
	t.Helper()
	blobs, desc := imageContent(t, img)
	gate = make(chan struct{})
	gateDigest = digest.Of([]byte("gate")).String()
	src := sourceFunc(func(ctx context.Context, d string) (peer.Blob, func(), error) {
		if d == gateDigest {
			return gatedBlob{gate}, func() {}, nil
		}
		data, ok := blobs[d]
		if !ok {
			return nil, nil, peer.ErrNotFound
		}
		return bytesBlob(data), func() {}, nil
	})
	res := resolverFunc(func(ctx context.Context, image string) (peer.Descriptor, error) {
		return desc, nil
	})
	srv = peer.NewServer(src, peer.ServerOptions{MaxUploads: 1, QueueTimeout: -1, Resolver: res, Logger: testLogger()})
	mux := http.NewServeMux()
	mux.Handle(peer.PathPrefix, srv)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {})
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	return srv, strings.TrimPrefix(hs.URL, "http://"), gateDigest, gate
}

// TestBusyParent runs a child under a parent at its upload cap, which
// answers 503 with Retry-After: the child waits for it as it asks, and only
// past BusyTimeout does the registry serve.
func TestBusyParent(t *testing.T) {
	tests := []struct {
		name         string
		busyTimeout  time.Duration
		freeAfter    int64 // rejections after which the slot frees; 0: never
		fromRegistry bool
	}{
		// Four rejections a second apart outlast the ParentTimeout of
		// 1 s: a busy parent is not a failed one.
		{"busy parent is waited for", 30 * time.Second, 4, false},
		{"busy past BusyTimeout: the registry serves", 2 * time.Second, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCluster(t, time.Hour)
			ref, img := c.push(imagegen.Spec{TotalSize: 2 << 20, Layers: 2, Seed: 73})
			srv, addr, gateDigest, gate := busyParent(t, img)
			var freed bool
			free := func() {
				if !freed {
					freed = true
					close(gate)
				}
			}
			t.Cleanup(free)

			// Another child holds the one upload slot.
			ctx, cancel := context.WithCancel(c.ctx)
			t.Cleanup(cancel)
			hold := make(chan error, 1)
			go func() {
				body, err := (&peer.Client{}).Open(ctx, addr, gateDigest, 0, -1)
				if err == nil {
					_, err = io.Copy(io.Discard, body)
					body.Close()
				}
				hold <- err
			}()
			waitFor(t, "the parent's upload slot is taken", func() bool { return srv.Stats().Uploads == 1 })

			if _, err := c.mgr.RegisterVM(c.ctx, "busy", addr, nil); err != nil {
				t.Fatal(err)
			}
			w := c.start("child", func(cfg *Config) { cfg.ParentTimeout = time.Second; cfg.BusyTimeout = tt.busyTimeout })
			c.waitRegistered(2)
			c.mgr.PutFunction(c.ctx, "f", api.FunctionRequest{Image: ref})
			if _, err := c.mgr.Scale(c.ctx, "f", api.ScaleRequest{VMs: []string{"busy", "child"}}); err != nil {
				t.Fatal(err)
			}
			if tt.freeAfter > 0 {
				waitFor(t, "the parent refused the child", func() bool { return srv.Stats().Rejected >= tt.freeAfter })
				free()
				if err := <-hold; err != nil && !errors.Is(err, context.Canceled) {
					t.Fatalf("the slot holder: %v", err)
				}
			}
			c.waitReady("f", []string{"child"}, time.Minute)
			r := w.Functions()[0]
			if tt.fromRegistry && r.BytesFromRegistry == 0 {
				t.Errorf("a parent busy past BusyTimeout: nothing came from the registry")
			}
			if !tt.fromRegistry && (r.BytesFromRegistry != 0 || r.BytesFromParent != r.ImageBytes) {
				t.Errorf("from the busy parent %d bytes, from the registry %d, of %d; want all from the parent",
					r.BytesFromParent, r.BytesFromRegistry, r.ImageBytes)
			}
		})
	}
}
