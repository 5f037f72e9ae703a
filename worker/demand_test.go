package worker

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/convert"
	"github.com/faasnet/faasnet/imagegen"
	"github.com/faasnet/faasnet/internal/testenv"
	"github.com/faasnet/faasnet/lazy"
	"github.com/faasnet/faasnet/peer"
	"github.com/faasnet/faasnet/upstream"
)

// lyingBlob serves a blob with one byte flipped, and counts the reads that
// cover it.
type lyingBlob struct {
	data     []byte
	bad      int64
	badReads atomic.Int64
}

func (l *lyingBlob) Size() int64 { return int64(len(l.data)) }
func (l *lyingBlob) Reader(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	p := bytes.Clone(l.data[off : off+n])
	if off <= l.bad && l.bad < off+n {
		p[l.bad-off] ^= 0xff
		l.badReads.Add(1)
	}
	return io.NopCloser(bytes.NewReader(p)), nil
}

// A parent that serves wrong bytes inside one chunk of a lazily read layer:
// the chunk fails verification, its blocks are dropped and fetched again,
// from the parent once (wrong again) and then from the registry, and the
// file reads right. The bad blocks are gone from the cache.
func TestLazyChunkFromLyingParentIsRefetched(t *testing.T) {
	testenv.NeedRoot(t)
	testenv.NeedTool(t, "fusermount3")
	if _, err := os.Stat("/dev/fuse"); err != nil {
		if testenv.InCI() {
			t.Fatalf("no /dev/fuse: %v", err)
		}
		t.Skipf("no /dev/fuse (%v); skipping", err)
	}
	c := newCluster(t, time.Hour)
	plain, _ := c.push(imagegen.Spec{TotalSize: 4 << 20, Layers: 1, Seed: 9})
	lazyRef := c.reg + "/test/app:lazy"
	if _, err := convert.Convert(c.ctx, plain, lazyRef, convert.WithChunkSize(256<<10)); err != nil {
		t.Fatal(err)
	}
	reg := upstream.New()
	im, err := reg.Resolve(c.ctx, lazyRef)
	if err != nil {
		t.Fatal(err)
	}
	layer := im.Manifest.Layers[0]
	digest := layer.Digest.String()
	rc, err := reg.OpenBlob(c.ctx, im.Repository, digest, 0, layer.Size)
	if err != nil {
		t.Fatal(err)
	}
	blob, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	name, want := largestFile(t, blob)
	ix, err := lazy.TOC(c.ctx, lazy.BytesReader(blob), layer.Size, layer.Annotations[lazy.TOCDigestAnnotation])
	if err != nil {
		t.Fatal(err)
	}
	rs, err := ix.Ranges(name)
	if err != nil || len(rs) == 0 || rs[0].Length < 4<<20/8 {
		t.Fatalf("ranges of %s: %v, %v; want several chunks", name, rs, err)
	}
	// A byte in the middle of the file: inside one of its chunks.
	liar := &lyingBlob{data: blob, bad: rs[0].Offset + rs[0].Length/2}

	src := sourceFunc(func(ctx context.Context, d string) (peer.Blob, func(), error) {
		if d != digest {
			return nil, nil, peer.ErrNotFound
		}
		return liar, func() {}, nil
	})
	mux := http.NewServeMux()
	mux.Handle(peer.PathPrefix, peer.NewServer(src, peer.ServerOptions{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {})
	parent := httptest.NewServer(mux)
	defer parent.Close()

	// A worker that hosts f with the lying parent; it is not served, so
	// nothing but the filesystem's reads fetches anything.
	w := newWorker(t, Config{ID: "child", Manager: c.mgr.Base, BlockSize: 64 << 10,
		ParentTimeout: 2 * time.Second, StallTimeout: 3 * time.Second})
	w.mu.Lock()
	f := &function{name: "f", parentChanged: make(chan struct{}),
		a: api.Assignment{Parent: &api.Peer{VM: "liar", Addr: strings.TrimPrefix(parent.URL, "http://")}}}
	w.fns["f"] = f
	w.learn(f, digest, layer.Size, string(layer.MediaType), false, im.Repository)
	w.mu.Unlock()
	c.counter.mu.Lock()
	gets := c.counter.gets[digest]
	c.counter.mu.Unlock()

	layers, err := w.lazyLayers([]v1.Descriptor{layer})
	if err != nil {
		t.Fatal(err)
	}
	fsys, err := lazy.Mount(c.ctx, t.TempDir(), layers, lazy.Options{Logger: w.log})
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(fsys.Mountpoint(), name))
	if cerr := fsys.Close(); cerr != nil {
		t.Errorf("unmount: %v", cerr)
	}
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("reading %s through the lying parent: %d bytes, %v; want its %d bytes", name, len(got), err, len(want))
	}
	if n := liar.badReads.Load(); n != 2 {
		t.Errorf("the parent served the bad byte %d times, want 2 (the first fetch and one refetch)", n)
	}
	c.counter.mu.Lock()
	regGets := c.counter.gets[digest] - gets
	c.counter.mu.Unlock()
	if regGets < 1 {
		t.Error("the registry was never asked for the bad chunk")
	}
	b, ok := w.cache.Lookup(digest)
	if !ok {
		t.Fatal("layer not in the cache")
	}
	defer b.Release()
	p := make([]byte, 1)
	if _, err := b.ReadAt(p, liar.bad); err != nil || p[0] != blob[liar.bad] {
		t.Errorf("cached byte at %d: %#x, %v; want the registry's %#x", liar.bad, p[0], err, blob[liar.bad])
	}
	if s := w.cache.Stats(); s.InUse != 1 {
		t.Errorf("cache holds %d blobs in use, want only the test's own reference", s.InUse)
	}
}

// largestFile returns the name and contents of the largest regular file of
// a tar.gz layer.
func largestFile(t *testing.T, layer []byte) (string, []byte) {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(layer))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var name string
	var body []byte
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg || h.Size <= int64(len(body)) {
			continue
		}
		if body, err = io.ReadAll(tr); err != nil {
			t.Fatal(err)
		}
		name = h.Name
	}
	if name == "" {
		t.Fatal("no regular file in the layer")
	}
	return name, body
}
