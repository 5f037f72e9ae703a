package snapshotter

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/faasnet/faasnet/lazy"
)

// fakeWorker stands in for the worker's local runtime endpoint (package
// ociserve behind the worker), so that these tests can make it answer
// wrongly or go away; e2e/cri_test.go runs the snapshotter against real
// workers.
type fakeWorker struct {
	repo     string
	manifest []byte
	mdigest  string
	layer    []byte
	ldigest  string
	ranges   atomic.Int64 // Range requests served
	whole    bool         // answer blob ranges with 200 and the whole blob
	// blobs are all the image's layers by digest (layer is the first);
	// ldigests lists them lowest first.
	blobs    map[string][]byte
	ldigests []string
}

// newFakeWorker builds a one-layer eStargz image of files.
func newFakeWorker(t *testing.T, files map[string]string) *fakeWorker {
	t.Helper()
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body)), ModTime: time.Unix(1, 0)}); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, body)
	}
	tw.Close()
	return newFakeWorkerLayers(t, tb.Bytes())
}

// newFakeWorkerLayers builds an eStargz image of the tar archives, lowest
// layer first.
func newFakeWorkerLayers(t *testing.T, tars ...[]byte) *fakeWorker {
	t.Helper()
	f := &fakeWorker{repo: "fn/app", blobs: map[string][]byte{}}
	var diffIDs []string
	var descs []v1.Descriptor
	for _, tb := range tars {
		blob, err := estargz.Build(io.NewSectionReader(bytes.NewReader(tb), 0, int64(len(tb))), estargz.WithChunkSize(4096))
		if err != nil {
			t.Fatal(err)
		}
		layer, err := io.ReadAll(blob)
		blob.Close()
		if err != nil {
			t.Fatal(err)
		}
		ldigest := sha(layer)
		f.blobs[ldigest] = layer
		f.ldigests = append(f.ldigests, ldigest)
		diffIDs = append(diffIDs, `"`+blob.DiffID().String()+`"`)
		descs = append(descs, v1.Descriptor{
			MediaType: types.OCILayer, Size: int64(len(layer)), Digest: mustHash(t, ldigest),
			Annotations: map[string]string{lazy.TOCDigestAnnotation: blob.TOCDigest().String()},
		})
	}
	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[` + strings.Join(diffIDs, ",") + `]}}`)
	m := v1.Manifest{
		SchemaVersion: 2, MediaType: types.OCIManifestSchema1,
		Config: v1.Descriptor{MediaType: types.OCIConfigJSON, Size: int64(len(cfg)), Digest: mustHash(t, sha(cfg))},
		Layers: descs,
	}
	mb, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	f.manifest, f.mdigest = mb, sha(mb)
	f.ldigest, f.layer = f.ldigests[0], f.blobs[f.ldigests[0]]
	return f
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func mustHash(t *testing.T, s string) v1.Hash {
	h, err := v1.NewHash(s)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func (f *fakeWorker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/v2/" + f.repo + "/manifests/" + f.mdigest:
		w.Header().Set("Content-Type", string(types.OCIManifestSchema1))
		w.Write(f.manifest)
	default:
		layer, ok := f.blobs[strings.TrimPrefix(r.URL.Path, "/v2/"+f.repo+"/blobs/")]
		if !ok || !strings.HasPrefix(r.URL.Path, "/v2/"+f.repo+"/blobs/") {
			http.NotFound(w, r)
			return
		}
		if r.Header.Get("Range") != "" {
			f.ranges.Add(1)
		}
		if f.whole {
			w.Write(layer)
			return
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(layer))
	}
}

// labels are CRI's labels for the fake worker's layer, pulled from host.
func (f *fakeWorker) labels(host string) map[string]string {
	return f.layerLabels(host, f.ldigest)
}

// layerLabels are CRI's labels for layer ldigest of the fake worker's
// image, pulled from host.
func (f *fakeWorker) layerLabels(host, ldigest string) map[string]string {
	return map[string]string{
		LabelImageRef:       host + "/" + f.repo + ":v1",
		LabelManifestDigest: f.mdigest,
		LabelLayerDigest:    ldigest,
	}
}

func TestParseLabels(t *testing.T) {
	const d1 = "sha256:0000000000000000000000000000000000000000000000000000000000000001"
	const d2 = "sha256:0000000000000000000000000000000000000000000000000000000000000002"
	for _, tc := range []struct {
		name    string
		labels  map[string]string
		want    target
		notLazy bool // the error is ErrNotLazy
		fails   bool
	}{
		{name: "complete", labels: map[string]string{LabelImageRef: "127.0.0.1:5000/fn/py:v1", LabelManifestDigest: d1, LabelLayerDigest: d2},
			want: target{ns: "127.0.0.1:5000", repo: "fn/py", manifest: d1, layer: d2}},
		{name: "by digest", labels: map[string]string{LabelImageRef: "reg.example/a/b@" + d1, LabelManifestDigest: d1, LabelLayerDigest: d2},
			want: target{ns: "reg.example", repo: "a/b", manifest: d1, layer: d2}},
		{name: "no labels", labels: nil, notLazy: true, fails: true},
		{name: "no manifest digest", labels: map[string]string{LabelImageRef: "r/a:v1", LabelLayerDigest: d2}, notLazy: true, fails: true},
		{name: "bad reference", labels: map[string]string{LabelImageRef: "UPPER/../x", LabelManifestDigest: d1, LabelLayerDigest: d2}, fails: true},
		{name: "bad digest", labels: map[string]string{LabelImageRef: "r/a:v1", LabelManifestDigest: "sha256:zz", LabelLayerDigest: d2}, fails: true},
		{name: "other algorithm", labels: map[string]string{LabelImageRef: "r/a:v1", LabelManifestDigest: d1, LabelLayerDigest: "sha512:" + strings.Repeat("0", 128)}, fails: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseLabels(tc.labels)
			if tc.fails {
				if err == nil {
					t.Fatalf("parsed %+v, want an error", got)
				}
				if errors.Is(err, ErrNotLazy) != tc.notLazy {
					t.Errorf("error %v: ErrNotLazy %v, want %v", err, errors.Is(err, ErrNotLazy), tc.notLazy)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("parseLabels = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func FuzzParseLabels(f *testing.F) {
	f.Add("127.0.0.1:5000/fn/py:v1", "sha256:"+strings.Repeat("a", 64), "sha256:"+strings.Repeat("b", 64))
	f.Add("", "", "")
	f.Add("a/b@sha256:"+strings.Repeat("c", 64), "sha256:", "md5:00")
	f.Fuzz(func(t *testing.T, ref, m, l string) {
		got, err := parseLabels(map[string]string{LabelImageRef: ref, LabelManifestDigest: m, LabelLayerDigest: l})
		if err != nil {
			return
		}
		// What it accepts must make a well-formed worker URL.
		c := &workerClient{addr: "127.0.0.1:1"}
		if _, err := http.NewRequest(http.MethodGet, c.url(got.repo, "blobs", got.layer, got.ns), nil); err != nil {
			t.Errorf("labels %q %q %q accepted, but make a bad URL: %v", ref, m, l, err)
		}
		if got.manifest != m || got.layer != l {
			t.Errorf("digests changed: %+v", got)
		}
	})
}

func TestCheckContentRange(t *testing.T) {
	for _, tc := range []struct {
		header       string
		off, n, size int64
		ok           bool
	}{
		{"bytes 0-1/10", 0, 2, 10, true},
		{"bytes 5-9/*", 5, 5, 10, true},
		{"bytes 0-9/10", 5, 5, 10, false}, // the whole blob, not the range
		{"bytes 5-9/11", 5, 5, 10, false}, // another blob's size
		{"", 0, 2, 10, false},
		{"bytes 0-1/10, bytes 3-4/10", 0, 2, 10, false},
	} {
		err := checkContentRange(tc.header, tc.off, tc.n, tc.size)
		if (err == nil) != tc.ok {
			t.Errorf("checkContentRange(%q, %d, %d, %d) = %v, want ok %v", tc.header, tc.off, tc.n, tc.size, err, tc.ok)
		}
	}
}

func FuzzCheckContentRange(f *testing.F) {
	f.Add("bytes 0-1/10", int64(0), int64(2), int64(10))
	f.Add("bytes 5-9/*", int64(5), int64(5), int64(10))
	f.Fuzz(func(t *testing.T, h string, off, n, size int64) {
		if checkContentRange(h, off, n, size) != nil {
			return
		}
		var first, last int64
		var rest string
		// Accepted means it names exactly [off, off+n).
		if _, err := fmtSscanRange(h, &first, &last, &rest); err != nil || first != off || last != off+n-1 {
			t.Errorf("accepted %q for %d+%d", h, off, n)
		}
	})
}

// fmtSscanRange splits "bytes FIRST-LAST/REST".
func fmtSscanRange(h string, first, last *int64, rest *string) (int, error) {
	s, ok := strings.CutPrefix(h, "bytes ")
	if !ok {
		return 0, errors.New("no bytes prefix")
	}
	r, size, ok := strings.Cut(s, "/")
	if !ok {
		return 0, errors.New("no slash")
	}
	a, b, ok := strings.Cut(r, "-")
	if !ok {
		return 0, errors.New("no dash")
	}
	var err error
	if *first, err = parseInt(a); err != nil {
		return 0, err
	}
	if *last, err = parseInt(b); err != nil {
		return 0, err
	}
	*rest = size
	return 3, nil
}

func parseInt(s string) (int64, error) {
	var n int64
	if s == "" {
		return 0, errors.New("empty")
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, errors.New("not a digit")
		}
		n = n*10 + int64(c-'0')
	}
	return n, nil
}

func TestBlobReadAt(t *testing.T) {
	fw := newFakeWorker(t, map[string]string{"a.txt": "hello"})
	down := httptest.NewServer(http.NotFoundHandler())
	downAddr := down.Listener.Addr().String()
	down.Close()
	for _, tc := range []struct {
		name   string
		whole  bool
		addr   string // "" for the fake worker
		worker bool   // the error is ErrWorker
	}{
		{name: "range"},
		{name: "whole blob for a range", whole: true, worker: true},
		{name: "worker down", addr: downAddr, worker: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fw.whole = tc.whole
			srv := httptest.NewServer(fw)
			defer srv.Close()
			addr := srv.Listener.Addr().String()
			if tc.addr != "" {
				addr = tc.addr
			}
			b := &blob{c: &workerClient{addr: addr, http: srv.Client()}, ns: "reg", repo: fw.repo, dgst: fw.ldigest, size: int64(len(fw.layer))}
			p := make([]byte, 100)
			n, err := b.ReadAt(context.Background(), p, 10)
			if tc.worker {
				if !errors.Is(err, ErrWorker) {
					t.Fatalf("ReadAt = %d, %v; want an ErrWorker", n, err)
				}
				return
			}
			if err != nil || n != 100 || !bytes.Equal(p, fw.layer[10:110]) {
				t.Fatalf("ReadAt = %d, %v; want the blob's bytes 10 to 110", n, err)
			}
			// A read past the end is short, with io.EOF.
			n, err = b.ReadAt(context.Background(), p, int64(len(fw.layer))-5)
			if n != 5 || !errors.Is(err, io.EOF) || !bytes.Equal(p[:5], fw.layer[len(fw.layer)-5:]) {
				t.Fatalf("ReadAt at the end = %d, %v; want the last 5 bytes and io.EOF", n, err)
			}
		})
	}
}

func TestManifestChecksDigest(t *testing.T) {
	fw := newFakeWorker(t, map[string]string{"a.txt": "hello"})
	srv := httptest.NewServer(fw)
	defer srv.Close()
	c := &workerClient{addr: srv.Listener.Addr().String(), http: srv.Client()}
	if _, err := c.manifest(context.Background(), "reg", fw.repo, fw.mdigest); err != nil {
		t.Fatalf("manifest: %v", err)
	}
	good := fw.manifest
	fw.manifest = append(bytes.Clone(good), ' ') // served under the old digest
	if _, err := c.manifest(context.Background(), "reg", fw.repo, fw.mdigest); err == nil {
		t.Fatal("a manifest whose bytes do not match its digest was accepted")
	}
}
