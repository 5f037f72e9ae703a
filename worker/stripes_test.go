package worker

import (
	"fmt"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/imagegen"
)

// TestStripedTreesShareTheUploads scales a function with two stripe trees
// onto seven workers. Block i must come down stripe i mod 2: each stripe's
// root fetches its half from the registry, so the registry still sends
// every byte once, and no VM sends much more than one image's worth (in
// one binary tree an interior VM sends the image to each of its two
// children, twice the image).
func TestStripedTreesShareTheUploads(t *testing.T) {
	for _, k := range []int{1, 2} {
		t.Run(fmt.Sprintf("stripes=%d", k), func(t *testing.T) {
			c := newCluster(t, 10*time.Second)
			ref, img := c.push(imagegen.Spec{TotalSize: 6 << 20, Layers: 3, Seed: 7})
			names := ids(7)
			for _, id := range names {
				c.start(id, func(cfg *Config) { cfg.BlockSize = 64 << 10; cfg.DownloadLimit = 16 << 20; cfg.UploadLimit = 16 << 20 })
			}
			c.waitRegistered(7)
			if _, err := c.mgr.PutFunction(c.ctx, "f", api.FunctionRequest{Image: ref, Stripes: k}); err != nil {
				t.Fatal(err)
			}
			if _, err := c.mgr.Scale(c.ctx, "f", api.ScaleRequest{VMs: names}); err != nil {
				t.Fatal(err)
			}
			c.waitReady("f", names, time.Minute)

			var image int64
			layers, _ := img.Layers()
			for _, l := range layers {
				sz, _ := l.Size()
				d, _ := l.Digest()
				image += sz
				c.counter.mu.Lock()
				if got := c.counter.bytes[d.String()]; got != sz {
					t.Errorf("registry sent %d bytes of layer %s, want its %d bytes once", got, d, sz)
				}
				c.counter.mu.Unlock()
			}
			tree, err := c.mgr.Tree(c.ctx, "f")
			if err != nil {
				t.Fatal(err)
			}
			roots := map[string]bool{}
			for _, st := range tree.StripeTrees() {
				roots[*st.Root] = true
			}
			var most, streams int64
			for _, id := range names {
				streams += c.workers[id].peerSrv.Stats().Stripes
				sent := c.workers[id].peerSrv.Stats().BytesSent
				most = max(most, sent)
				for _, r := range c.workers[id].Functions() {
					if r.BytesFromRegistry > 0 && !roots[id] {
						t.Errorf("%s, the root of no stripe, fetched %d bytes from the registry", id, r.BytesFromRegistry)
					}
				}
			}
			t.Logf("%d stripes: the busiest VM sent %.2f images; %d stripe streams", k, float64(most)/float64(image), streams)
			// A child streams its stripe of each blob in one answer, not a
			// request per block: about a stream per child, blob and stripe.
			if k == 2 && (streams == 0 || streams > int64(3*len(names)*(len(layers)+2))) {
				t.Errorf("%d stripe streams served, want one per child, stripe and blob", streams)
			}
			switch {
			case k == 1 && most < 3*image/2:
				t.Errorf("one tree: the busiest VM sent %d bytes, want about twice the image's %d (an interior VM feeds two children)", most, image)
			case k == 2 && most > 5*image/4:
				t.Errorf("two stripes: the busiest VM sent %d bytes, want about one image's %d", most, image)
			}
		})
	}
}

// TestBlockSizeFollowsTheAssignment starts workers whose caches default to
// 512 KiB blocks and a manager that picks smaller ones for a small image:
// every VM must cut the image's layers into the assigned blocks, so that
// parent and child number a stripe's blocks alike.
func TestBlockSizeFollowsTheAssignment(t *testing.T) {
	c := newCluster(t, 10*time.Second)
	ref, img := c.push(imagegen.Spec{TotalSize: 4 << 20, Layers: 2, Seed: 8})
	names := ids(5)
	for _, id := range names {
		c.start(id, func(cfg *Config) { cfg.DownloadLimit = 16 << 20; cfg.UploadLimit = 16 << 20 })
	}
	c.waitRegistered(5)
	fn, err := c.mgr.PutFunction(c.ctx, "f", api.FunctionRequest{Image: ref, Stripes: 2})
	if err != nil {
		t.Fatal(err)
	}
	if fn.BlockSize <= 0 || fn.BlockSize == c.workers[names[0]].cache.BlockSize() {
		t.Fatalf("the manager assigned blocks of %d bytes; the test needs other than the caches' %d", fn.BlockSize, c.workers[names[0]].cache.BlockSize())
	}
	if _, err := c.mgr.Scale(c.ctx, "f", api.ScaleRequest{VMs: names}); err != nil {
		t.Fatal(err)
	}
	c.waitReady("f", names, time.Minute)
	layers, _ := img.Layers()
	for _, id := range names {
		for _, l := range layers {
			d, _ := l.Digest()
			b, ok := c.workers[id].cache.Lookup(d.String())
			if !ok {
				t.Fatalf("%s: layer %s not cached", id, d)
			}
			if b.BlockSize() != fn.BlockSize {
				t.Errorf("%s: layer %s cut into blocks of %d bytes, assigned %d", id, d, b.BlockSize(), fn.BlockSize)
			}
			b.Release()
		}
	}
}
