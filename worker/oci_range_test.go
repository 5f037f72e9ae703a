package worker

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/convert"
	"github.com/faasnet/faasnet/httprange"
	"github.com/faasnet/faasnet/imagegen"
	"github.com/faasnet/faasnet/lazy"
	"github.com/faasnet/faasnet/ociserve"
	"github.com/faasnet/faasnet/peer"
	"github.com/faasnet/faasnet/upstream"
)

// lazyImage is an eStargz image pushed to the test registry: its reference,
// its single layer's descriptor and bytes, and its index.
type lazyImage struct {
	ref   string
	layer v1.Descriptor
	blob  []byte
	ix    *lazy.Index
}

// pushLazyImage pushes a one-layer image of about size bytes as test/app:lazy,
// converted to eStargz with chunks of 256 KiB.
func pushLazyImage(t *testing.T, c *cluster, size int64, seed int64) lazyImage {
	t.Helper()
	plain, _ := c.push(imagegen.Spec{TotalSize: size, Layers: 1, Seed: seed})
	ref := c.reg + "/test/app:lazy"
	if _, err := convert.Convert(c.ctx, plain, ref, convert.WithChunkSize(256<<10)); err != nil {
		t.Fatal(err)
	}
	reg := upstream.New()
	im, err := reg.Resolve(c.ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	layer := im.Manifest.Layers[0]
	rc, err := reg.OpenBlob(c.ctx, im.Repository, layer.Digest.String(), 0, layer.Size)
	if err != nil {
		t.Fatal(err)
	}
	blob, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	ix, err := lazy.TOC(c.ctx, lazy.BytesReader(blob), layer.Size, layer.Annotations[lazy.TOCDigestAnnotation])
	if err != nil {
		t.Fatal(err)
	}
	return lazyImage{ref: ref, layer: layer, blob: blob, ix: ix}
}

// runFunction assigns function fn of image ref to the VMs and waits until
// vm's OCI endpoint serves its manifest (not its blobs: they may still be
// arriving).
func runFunction(t *testing.T, c *cluster, fn, ref string, vms []string, base string, client *http.Client) {
	t.Helper()
	if _, err := c.mgr.PutFunction(c.ctx, fn, api.FunctionRequest{Image: ref}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.mgr.Scale(c.ctx, fn, api.ScaleRequest{VMs: vms}); err != nil {
		t.Fatal(err)
	}
	tag := ref[strings.LastIndexByte(ref, ':')+1:]
	waitFor(t, "the endpoint serves the manifest of "+ref, func() bool {
		resp, _ := ociDo(t, client, http.MethodHead, base+"/v2/test/app/manifests/"+tag, nil)
		return resp.StatusCode == http.StatusOK
	})
}

// ociDo sends a request with headers hdr and returns the response and body.
func ociDo(t *testing.T, client *http.Client, method, url string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s %v: %v", method, url, hdr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s %v: reading the body: %v", method, url, hdr, err)
	}
	return resp, body
}

// complete reports whether w holds all of blob digest, verified.
func complete(w *Worker, digest string) bool {
	b, ok := w.cache.Lookup(digest)
	if !ok {
		return false
	}
	defer b.Release()
	return b.Complete()
}

// TestOCIRangesOfAnArrivingLayer asks the local runtime endpoint for parts
// of an eStargz layer that is still arriving (the download is throttled so
// that the whole layer takes half a minute, several times what the test
// needs): HEAD, the bytes=0-1 probe, the
// footer and TOC, chunks in the middle, with and without ?ns=, several
// ranges and an unsatisfiable one. Each answer is right and comes before
// the layer is complete: ranges are demands, served as they are verified.
func TestOCIRangesOfAnArrivingLayer(t *testing.T) {
	c := newCluster(t, time.Hour)
	img := pushLazyImage(t, c, 6<<20, 93)
	w := c.start("vm", func(cfg *Config) {
		cfg.OCI = listenLoopback(t)
		cfg.BlockSize = 64 << 10
		cfg.DownloadLimit = 192 << 10
	})
	c.waitRegistered(1)
	client := &http.Client{Timeout: 30 * time.Second}
	base := "http://" + w.OCIAddr()
	runFunction(t, c, "f", img.ref, []string{"vm"}, base, client)

	digest := img.layer.Digest.String()
	size := img.layer.Size
	path := base + "/v2/test/app/blobs/" + digest
	mid := img.ix.TOCOffset() / 2
	aligned := img.ix.TOCOffset() / 50_000 * 50_000
	full := "bytes */" + strconv.FormatInt(size, 10)
	cr := func(first, last int64) string {
		return httprange.ContentRange{First: first, Last: last, Size: size}.String()
	}
	tests := []struct {
		name         string
		method       string
		query        string
		rng          string
		status       int
		first, last  int64 // the bytes wanted, for 206
		contentRange string
	}{
		{"head", http.MethodHead, "", "", 200, 0, 0, ""},
		{"head with ns", http.MethodHead, "?ns=" + c.reg, "", 200, 0, 0, ""},
		{"probe", http.MethodGet, "", "bytes=0-1", 206, 0, 1, cr(0, 1)},
		{"footer and TOC, suffix", http.MethodGet, "", "bytes=-" + strconv.FormatInt(size-img.ix.TOCOffset(), 10), 206, img.ix.TOCOffset(), size - 1, cr(img.ix.TOCOffset(), size-1)},
		{"footer and TOC, open-ended", http.MethodGet, "?ns=" + c.reg, "bytes=" + strconv.FormatInt(size-100, 10) + "-", 206, size - 100, size - 1, cr(size-100, size-1)},
		{"middle", http.MethodGet, "", "bytes=" + strconv.FormatInt(mid, 10) + "-" + strconv.FormatInt(mid+99_999, 10), 206, mid, mid + 99_999, cr(mid, mid+99_999)},
		{"middle with ns", http.MethodGet, "?ns=" + c.reg, "bytes=" + strconv.FormatInt(mid/2, 10) + "-" + strconv.FormatInt(mid/2+49_999, 10), 206, mid / 2, mid/2 + 49_999, cr(mid/2, mid/2+49_999)},
		// As stargz-snapshotter asks for the TOC: from a multiple of
		// 50,000 bytes, so with the end of the last chunks.
		{"TOC aligned to 50,000", http.MethodGet, "", "bytes=" + strconv.FormatInt(aligned, 10) + "-" + strconv.FormatInt(size-1, 10), 206, aligned, size - 1, cr(aligned, size-1)},
		{"several ranges", http.MethodGet, "", "bytes=0-1,100-200", 400, 0, 0, ""},
		{"unsatisfiable", http.MethodGet, "", "bytes=" + strconv.FormatInt(size, 10) + "-", 416, 0, 0, full},
		{"other registry", http.MethodGet, "?ns=other.example.com", "bytes=0-1", 404, 0, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hdr map[string]string
			if tt.rng != "" {
				hdr = map[string]string{"Range": tt.rng}
			}
			start := time.Now()
			resp, body := ociDo(t, client, tt.method, path+tt.query, hdr)
			took := time.Since(start)
			if complete(w, digest) {
				t.Fatal("the layer is complete already: the test proves nothing (slower download needed)")
			}
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, body)
			}
			t.Logf("%s %s: %d in %v", tt.method, tt.rng, resp.StatusCode, took)
			if got := resp.Header.Get("Content-Range"); got != tt.contentRange {
				t.Errorf("Content-Range %q, want %q", got, tt.contentRange)
			}
			switch tt.status {
			case 200:
				if resp.ContentLength != size {
					t.Errorf("HEAD Content-Length %d, want the layer's %d", resp.ContentLength, size)
				}
				if got := resp.Header.Get("Docker-Content-Digest"); got != digest {
					t.Errorf("Docker-Content-Digest %q", got)
				}
			case 206:
				if !bytes.Equal(body, img.blob[tt.first:tt.last+1]) {
					t.Errorf("body of %d bytes is not bytes [%d, %d] of the layer", len(body), tt.first, tt.last)
				}
			}
		})
	}
	if complete(w, digest) {
		t.Error("the layer completed during the test: the ranges may have waited for it")
	}
	c.counter.mu.Lock()
	t.Logf("the registry sent %d bytes of the %d-byte layer in %d GETs by the end", c.counter.bytes[digest], size, c.counter.gets[digest])
	c.counter.mu.Unlock()
}

// TestOCIRangeOfAPlainLayerWaitsForIt asks for a range of a layer that is
// not eStargz: nothing can verify a part of it, so the answer comes once
// the whole layer is complete and verified.
func TestOCIRangeOfAPlainLayerWaitsForIt(t *testing.T) {
	c := newCluster(t, time.Hour)
	ref, im := c.push(imagegen.Spec{TotalSize: 2 << 20, Layers: 1, Seed: 94})
	w := c.start("vm", func(cfg *Config) {
		cfg.OCI = listenLoopback(t)
		cfg.BlockSize = 64 << 10
		cfg.DownloadLimit = 1 << 20
	})
	c.waitRegistered(1)
	client := &http.Client{Timeout: 30 * time.Second}
	base := "http://" + w.OCIAddr()
	runFunction(t, c, "f", ref, []string{"vm"}, base, client)
	layers, err := im.Layers()
	if err != nil {
		t.Fatal(err)
	}
	d, _ := layers[0].Digest()
	rc, _ := layers[0].Compressed()
	blob, _ := io.ReadAll(rc)
	rc.Close()
	if complete(w, d.String()) {
		t.Fatal("the layer is complete already: the test proves nothing")
	}
	resp, body := ociDo(t, client, http.MethodGet, base+"/v2/test/app/blobs/"+d.String(), map[string]string{"Range": "bytes=10-19"})
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, blob[10:20]) {
		t.Fatalf("range of a plain layer: status %d, %d bytes; want 206 and bytes 10-19", resp.StatusCode, len(body))
	}
	if !complete(w, d.String()) {
		t.Error("a range of a plain layer was served before the layer was complete and verified")
	}
	// Complete now: ranges come from the cache.
	for rng, want := range map[string][]byte{"bytes=0-1": blob[:2], "bytes=-7": blob[len(blob)-7:], "bytes=5-": blob[5:]} {
		resp, body := ociDo(t, client, http.MethodGet, base+"/v2/test/app/blobs/"+d.String(), map[string]string{"Range": rng})
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, want) {
			t.Errorf("%s of the complete layer: status %d, %d bytes; want 206 and %d bytes", rng, resp.StatusCode, len(body), len(want))
		}
	}
}

// corruptingProxy forwards a worker's peer API and flips one byte of a blob
// in every answer that holds it, counting them.
type corruptingProxy struct {
	target  atomic.Pointer[url.URL]
	digest  string
	bad     int64 // offset in the blob
	flipped atomic.Int64
}

func (p *corruptingProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rp := &httputil.ReverseProxy{
		ErrorLog: nopLog(), // the child cancels its reads as it likes
		Rewrite:  func(pr *httputil.ProxyRequest) { pr.SetURL(p.target.Load()) },
		ModifyResponse: func(resp *http.Response) error {
			if !strings.Contains(resp.Request.URL.Path, p.digest) || resp.Request.Method != http.MethodGet {
				return nil
			}
			first := int64(0)
			if resp.StatusCode == http.StatusPartialContent {
				cr, err := httprange.ParseContentRange(resp.Header.Get("Content-Range"))
				if err != nil {
					return err
				}
				first = cr.First
			}
			resp.Body = &flipper{rc: resp.Body, pos: first, p: p}
			return nil
		},
	}
	rp.ServeHTTP(w, r)
}

type flipper struct {
	rc  io.ReadCloser
	pos int64
	p   *corruptingProxy
}

func (f *flipper) Read(b []byte) (int, error) {
	n, err := f.rc.Read(b)
	if f.pos <= f.p.bad && f.p.bad < f.pos+int64(n) {
		b[f.p.bad-f.pos] ^= 0xff
		f.p.flipped.Add(1)
	}
	f.pos += int64(n)
	return n, err
}

func (f *flipper) Close() error { return f.rc.Close() }

// TestOCIRangeNeverServesCorruptBytes puts a parent that corrupts one byte
// of an eStargz layer (in a chunk, or in the TOC) above the VM whose
// endpoint is asked for a range, while the layer is still arriving. What
// fails verification is fetched again (from the parent, then the
// registry), and the range comes out right, before the layer is complete.
func TestOCIRangeNeverServesCorruptBytes(t *testing.T) {
	tests := []struct {
		name string
		bad  func(img lazyImage) int64 // the offset the parent corrupts
		rng  func(img lazyImage, bad int64) (off, n int64)
	}{
		{"chunk", func(img lazyImage) int64 {
			// The middle of the largest file: inside a chunk.
			name, _ := largestFile(t, img.blob)
			rs, err := img.ix.Ranges(name)
			if err != nil || len(rs) == 0 {
				t.Fatalf("ranges of %s: %v, %v", name, rs, err)
			}
			return rs[0].Offset + rs[0].Length/2
		}, func(_ lazyImage, bad int64) (int64, int64) { return bad - 1000, 2000 }},
		{"TOC", func(img lazyImage) int64 { return img.ix.TOCOffset() + 100 },
			func(lazyImage, int64) (int64, int64) { return 0, 2 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { testCorruptParent(t, tt.bad, tt.rng) })
	}
}

func testCorruptParent(t *testing.T, badAt func(lazyImage) int64, rangeOf func(lazyImage, int64) (int64, int64)) {
	c := newCluster(t, time.Hour)
	img := pushLazyImage(t, c, 4<<20, 95)
	digest := img.layer.Digest.String()
	proxy := &corruptingProxy{digest: digest, bad: badAt(img)}
	front := httptest.NewServer(proxy)
	defer front.Close()

	cfg := testConfig(t, "vm-0", c.mgr.Base)
	cfg.Advertise = strings.TrimPrefix(front.URL, "http://")
	// The worker's own address, not the one it advertises: the proxy's.
	root, addr, cancel, done := serveWorker(t, c.ctx, cfg)
	c.workers["vm-0"], c.stops["vm-0"], c.dones["vm-0"] = root, cancel, done
	target, _ := url.Parse("http://" + addr)
	proxy.target.Store(target)
	c.waitRegistered(1)
	if _, err := c.mgr.PutFunction(c.ctx, "f", api.FunctionRequest{Image: img.ref}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.mgr.Scale(c.ctx, "f", api.ScaleRequest{VMs: []string{"vm-0"}}); err != nil {
		t.Fatal(err)
	}
	c.waitReady("f", []string{"vm-0"}, 30*time.Second)

	child := c.start("vm-1", func(cfg *Config) {
		cfg.OCI = listenLoopback(t)
		cfg.BlockSize = 64 << 10
		cfg.DownloadLimit = 256 << 10 // the 4 MiB layer takes 16 s
	})
	c.waitRegistered(2)
	client := &http.Client{Timeout: 60 * time.Second}
	base := "http://" + child.OCIAddr()
	if _, err := c.mgr.Scale(c.ctx, "f", api.ScaleRequest{VMs: []string{"vm-1"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "vm-1 serves the manifest", func() bool {
		resp, _ := ociDo(t, client, http.MethodHead, base+"/v2/test/app/manifests/lazy", nil)
		return resp.StatusCode == http.StatusOK
	})
	off, n := rangeOf(img, proxy.bad)
	resp, body := ociDo(t, client, http.MethodGet, base+"/v2/test/app/blobs/"+digest,
		map[string]string{"Range": "bytes=" + strconv.FormatInt(off, 10) + "-" + strconv.FormatInt(off+n-1, 10)})
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, img.blob[off:off+n]) {
		t.Fatalf("range [%d, %d): status %d, %d bytes, equal %v; want 206 and the layer's bytes",
			off, off+n, resp.StatusCode, len(body), bytes.Equal(body, img.blob[off:off+n]))
	}
	if proxy.flipped.Load() == 0 {
		t.Error("the parent never sent the corrupted byte: the test proves nothing")
	}
	if complete(child, digest) {
		t.Error("the layer was complete when the range was served: it did not come as a demand")
	}
	t.Logf("the parent corrupted the byte %d times", proxy.flipped.Load())
}

// TestOCIBlobRightAfterItsManifest asks for a blob of a function whose
// manifest is served but whose blobs are not recorded yet, as a runtime
// does at once after the manifest: the answer waits for them instead of a
// 404 (which would send containerd to the registry).
func TestOCIBlobRightAfterItsManifest(t *testing.T) {
	w := newWorker(t, Config{})
	rc := newRangeContent(w)
	waiting := make(chan struct{}, 1)
	rc.waiting = waiting
	const image, digest = "registry.example.com/test/app:v1", "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	f := &function{name: "f", a: api.Assignment{Image: image}}
	w.mu.Lock()
	w.fns["f"] = f
	w.images[image] = peer.Descriptor{Digest: "sha256:2222222222222222222222222222222222222222222222222222222222222222"}
	w.mu.Unlock()

	type answer struct {
		size int64
		err  error
	}
	got := make(chan answer, 1)
	go func() {
		size, err := rc.BlobSize(t.Context(), "", "test/app", digest)
		got <- answer{size, err}
	}()
	select {
	case <-waiting:
	case a := <-got:
		t.Fatalf("BlobSize answered %d, %v before the function recorded its blobs", a.size, a.err)
	}
	w.mu.Lock()
	f.blobs = []string{digest}
	w.learn(f, digest, 1234, "application/octet-stream", false, name.MustParseReference(image).Context())
	w.mu.Unlock()
	if a := <-got; a.err != nil || a.size != 1234 {
		t.Fatalf("BlobSize = %d, %v; want 1234", a.size, a.err)
	}
	// A blob no function has, once they all know theirs: not found at once.
	if _, err := rc.BlobSize(t.Context(), "", "test/app", "sha256:"+strings.Repeat("3", 64)); !errors.Is(err, ociserve.ErrNotFound) {
		t.Errorf("BlobSize of an unknown blob: %v, want ErrNotFound", err)
	}
}
