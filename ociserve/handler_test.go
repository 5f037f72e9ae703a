package ociserve

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"

	"github.com/google/go-containerregistry/pkg/crane"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// memContent is an in-memory Content: manifests by repository and reference,
// blobs by repository and digest. It records the ns of every call.
type memContent struct {
	manifests map[string]map[string]Manifest // repo -> tag or digest
	blobs     map[string]map[string][]byte   // repo -> digest
	fail      error                          // returned by every call if set

	mu  sync.Mutex
	nss []string
}

func newMemContent() *memContent {
	return &memContent{manifests: map[string]map[string]Manifest{}, blobs: map[string]map[string][]byte{}}
}

func (c *memContent) record(ns string) {
	c.mu.Lock()
	c.nss = append(c.nss, ns)
	c.mu.Unlock()
}

func (c *memContent) Manifest(_ context.Context, ns, repo, ref string) (Manifest, error) {
	c.record(ns)
	if c.fail != nil {
		return Manifest{}, c.fail
	}
	ms, ok := c.manifests[repo]
	if !ok {
		return Manifest{}, ErrNameUnknown
	}
	m, ok := ms[ref]
	if !ok {
		return Manifest{}, ErrNotFound
	}
	return m, nil
}

type nopCloser struct{ io.ReadSeeker }

func (nopCloser) Close() error { return nil }

func (c *memContent) Blob(_ context.Context, ns, repo, digest string) (io.ReadSeekCloser, error) {
	c.record(ns)
	if c.fail != nil {
		return nil, c.fail
	}
	bs, ok := c.blobs[repo]
	if !ok {
		return nil, ErrNameUnknown
	}
	b, ok := bs[digest]
	if !ok {
		return nil, ErrNotFound
	}
	return nopCloser{bytes.NewReader(b)}, nil
}

type manifester interface {
	RawManifest() ([]byte, error)
	MediaType() (types.MediaType, error)
	Digest() (v1.Hash, error)
}

// addManifest stores m under its digest and under tag (if not empty).
func (c *memContent) addManifest(t *testing.T, repo, tag string, m manifester) {
	t.Helper()
	raw, err := m.RawManifest()
	must(t, err)
	mt, err := m.MediaType()
	must(t, err)
	d, err := m.Digest()
	must(t, err)
	if c.manifests[repo] == nil {
		c.manifests[repo] = map[string]Manifest{}
		c.blobs[repo] = map[string][]byte{}
	}
	entry := Manifest{MediaType: string(mt), Digest: d.String(), Body: raw}
	c.manifests[repo][d.String()] = entry
	if tag != "" {
		c.manifests[repo][tag] = entry
	}
}

// addImage stores an image's manifest, config and layers.
func (c *memContent) addImage(t *testing.T, repo, tag string, img v1.Image) {
	t.Helper()
	c.addManifest(t, repo, tag, img)
	cfg, err := img.RawConfigFile()
	must(t, err)
	cd, err := img.ConfigName()
	must(t, err)
	c.blobs[repo][cd.String()] = cfg
	layers, err := img.Layers()
	must(t, err)
	for _, l := range layers {
		d, err := l.Digest()
		must(t, err)
		c.blobs[repo][d.String()] = compressed(t, l)
	}
}

func compressed(t *testing.T, l v1.Layer) []byte {
	t.Helper()
	rc, err := l.Compressed()
	must(t, err)
	defer rc.Close()
	b, err := io.ReadAll(rc)
	must(t, err)
	return b
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func randomImage(t *testing.T, seed int64, layers int) v1.Image {
	t.Helper()
	img, err := random.Image(2048, int64(layers), random.WithSource(rand.NewSource(seed)))
	must(t, err)
	return img
}

// fixture serves a content with a Docker image "library/app:v1" and an OCI
// index "multi/arch/app:v1" of an amd64 and an arm64 image.
type fixture struct {
	content       *memContent
	host          string // 127.0.0.1:port
	img, amd, arm v1.Image
	idx           v1.ImageIndex
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{content: newMemContent(), img: randomImage(t, 1, 3), amd: randomImage(t, 2, 2)}
	f.arm = mutate.ConfigMediaType(mutate.MediaType(randomImage(t, 3, 2), types.OCIManifestSchema1), types.OCIConfigJSON)
	f.idx = mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: f.amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: f.arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}})
	f.content.addImage(t, "library/app", "v1", f.img)
	f.content.addImage(t, "multi/arch/app", "", f.amd)
	f.content.addImage(t, "multi/arch/app", "", f.arm)
	f.content.addManifest(t, "multi/arch/app", "v1", f.idx)

	mux := http.NewServeMux()
	mux.Handle("/v2/", NewHandler(f.content, nil))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	f.host = strings.TrimPrefix(srv.URL, "http://")
	return f
}

func (f *fixture) ref(t *testing.T, s string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(f.host + "/" + s)
	must(t, err)
	return ref
}

// sameImage compares a pulled image with the original: digest, manifest,
// config and every layer's bytes, which must also hash to their digests.
// (ggcr's validate package would need go-cmp, which go.mod lacks.)
func sameImage(t *testing.T, got, want v1.Image) {
	t.Helper()
	gd, err := got.Digest()
	must(t, err)
	wd, err := want.Digest()
	must(t, err)
	if gd != wd {
		t.Fatalf("digest %s, want %s", gd, wd)
	}
	gc, err := got.RawConfigFile()
	must(t, err)
	wc, err := want.RawConfigFile()
	must(t, err)
	if !bytes.Equal(gc, wc) {
		t.Errorf("config differs")
	}
	gl, err := got.Layers()
	must(t, err)
	wl, err := want.Layers()
	must(t, err)
	if len(gl) != len(wl) {
		t.Fatalf("%d layers, want %d", len(gl), len(wl))
	}
	for i := range gl {
		b := compressed(t, gl[i])
		d, err := wl[i].Digest()
		must(t, err)
		if h, _, _ := v1.SHA256(bytes.NewReader(b)); h != d || !bytes.Equal(b, compressed(t, wl[i])) {
			t.Errorf("layer %d differs", i)
		}
	}
}

func TestPullWithGGCR(t *testing.T) {
	f := newFixture(t)
	t.Run("crane pull by tag", func(t *testing.T) {
		img, err := crane.Pull(f.host+"/library/app:v1", crane.WithContext(t.Context()))
		must(t, err)
		sameImage(t, img, f.img)
	})
	t.Run("crane digest uses HEAD", func(t *testing.T) {
		d, err := crane.Digest(f.host+"/library/app:v1", crane.WithContext(t.Context()))
		must(t, err)
		if want, _ := f.img.Digest(); d != want.String() {
			t.Errorf("crane.Digest = %s, want %s", d, want)
		}
	})
	t.Run("remote image by digest", func(t *testing.T) {
		d, _ := f.img.Digest()
		img, err := remote.Image(f.ref(t, "library/app@"+d.String()), remote.WithContext(t.Context()))
		must(t, err)
		sameImage(t, img, f.img)
	})
	t.Run("remote index", func(t *testing.T) {
		idx, err := remote.Index(f.ref(t, "multi/arch/app:v1"), remote.WithContext(t.Context()))
		must(t, err)
		gd, _ := idx.Digest()
		wd, _ := f.idx.Digest()
		gm, _ := idx.IndexManifest()
		if gd != wd || len(gm.Manifests) != 2 {
			t.Errorf("index digest %s with %d manifests, want %s with 2", gd, len(gm.Manifests), wd)
		}
	})
	t.Run("remote image picks platform from index", func(t *testing.T) {
		img, err := remote.Image(f.ref(t, "multi/arch/app:v1"), remote.WithContext(t.Context()),
			remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "arm64"}))
		must(t, err)
		sameImage(t, img, f.arm)
	})
	t.Run("unknown tag", func(t *testing.T) {
		_, err := crane.Pull(f.host+"/library/app:v2", crane.WithContext(t.Context()))
		if err == nil || !strings.Contains(err.Error(), "MANIFEST_UNKNOWN") {
			t.Errorf("crane.Pull(unknown tag) error = %v", err)
		}
	})
	t.Run("push refused", func(t *testing.T) {
		err := crane.Push(f.img, f.host+"/library/app:v9", crane.WithContext(t.Context()))
		if err == nil || !strings.Contains(err.Error(), "UNSUPPORTED") {
			t.Errorf("crane.Push error = %v", err)
		}
	})
}

// do sends a request to the fixture and returns the response with its body.
func (f *fixture) do(t *testing.T, method, path string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, "http://"+f.host+path, nil)
	must(t, err)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	must(t, err)
	return resp, body
}

// rangeContent is a memContent that is also a RangeContent, and counts the
// calls of Blob: a range or HEAD must not need the whole blob.
type rangeContent struct {
	*memContent
	wholeOpens atomic.Int64
}

func (c *rangeContent) Blob(ctx context.Context, ns, repo, digest string) (io.ReadSeekCloser, error) {
	c.wholeOpens.Add(1)
	return c.memContent.Blob(ctx, ns, repo, digest)
}

func (c *rangeContent) BlobSize(ctx context.Context, ns, repo, digest string) (int64, error) {
	b, err := c.memContent.Blob(ctx, ns, repo, digest)
	if err != nil {
		return 0, err
	}
	return b.Seek(0, io.SeekEnd)
}

func (c *rangeContent) BlobRange(ctx context.Context, ns, repo, digest string, off, n int64) (io.ReadCloser, error) {
	b, err := c.memContent.Blob(ctx, ns, repo, digest)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(io.NewSectionReader(b.(nopCloser).ReadSeeker.(io.ReaderAt), off, n)), nil
}

// TestBlobRanges asks for parts of a blob, from a plain Content and from a
// RangeContent: the answers are the same, except that a RangeContent
// answers HEAD and ranges without opening the whole blob.
func TestBlobRanges(t *testing.T) {
	f := newFixture(t)
	rc := &rangeContent{memContent: f.content}
	mux := http.NewServeMux()
	mux.Handle("/v2/", NewHandler(rc, nil))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	ranged := &fixture{host: strings.TrimPrefix(srv.URL, "http://")}

	layers, err := f.img.Layers()
	must(t, err)
	blob := compressed(t, layers[1])
	d, err := layers[1].Digest()
	must(t, err)
	path := "/v2/library/app/blobs/" + d.String()
	size := len(blob)
	etag := `"` + d.String() + `"`
	tests := []struct {
		name         string
		method       string
		hdr          map[string]string
		status       int
		body         []byte
		contentRange string
		whole        bool // a RangeContent opens the whole blob
	}{
		{"whole", "GET", nil, 200, blob, "", true},
		{"probe", "GET", map[string]string{"Range": "bytes=0-1"}, 206, blob[:2], "bytes 0-1/" + itoa(size), false},
		{"range", "GET", map[string]string{"Range": "bytes=10-19"}, 206, blob[10:20], "bytes 10-19/" + itoa(size), false},
		{"open-ended", "GET", map[string]string{"Range": "bytes=100-"}, 206, blob[100:], "bytes 100-" + itoa(size-1) + "/" + itoa(size), false},
		{"suffix", "GET", map[string]string{"Range": "bytes=-5"}, 206, blob[size-5:], "bytes " + itoa(size-5) + "-" + itoa(size-1) + "/" + itoa(size), false},
		{"clamped end", "GET", map[string]string{"Range": "bytes=0-99999999"}, 206, blob, "bytes 0-" + itoa(size-1) + "/" + itoa(size), false},
		{"not satisfiable", "GET", map[string]string{"Range": "bytes=" + itoa(size) + "-"}, 416, nil, "bytes */" + itoa(size), false},
		{"multi-range refused", "GET", map[string]string{"Range": "bytes=0-1,5-6"}, 400, nil, "", false},
		{"if-range matches", "GET", map[string]string{"Range": "bytes=0-1", "If-Range": etag}, 206, blob[:2], "bytes 0-1/" + itoa(size), false},
		{"if-range differs", "GET", map[string]string{"Range": "bytes=0-1", "If-Range": `"other"`}, 200, blob, "", true},
		{"head", "HEAD", nil, 200, nil, "", false},
		{"head range", "HEAD", map[string]string{"Range": "bytes=0-9"}, 206, nil, "bytes 0-9/" + itoa(size), false},
		{"head multi-range", "HEAD", map[string]string{"Range": "bytes=0-1,5-6"}, 200, nil, "", false},
	}
	for _, content := range []struct {
		name string
		f    *fixture
	}{{"Content", f}, {"RangeContent", ranged}} {
		for _, tt := range tests {
			t.Run(content.name+"/"+tt.name, func(t *testing.T) {
				opens := rc.wholeOpens.Load()
				resp, body := content.f.do(t, tt.method, path, tt.hdr)
				if resp.StatusCode != tt.status {
					t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tt.status, body)
				}
				if content.f == ranged && (rc.wholeOpens.Load() > opens) != tt.whole {
					t.Errorf("opened the whole blob: %v, want %v", rc.wholeOpens.Load() > opens, tt.whole)
				}
				if got := resp.Header.Get("Content-Range"); got != tt.contentRange {
					t.Errorf("Content-Range %q, want %q", got, tt.contentRange)
				}
				if tt.status >= 400 {
					return
				}
				if !bytes.Equal(body, tt.body) {
					t.Errorf("body of %d bytes, want %d", len(body), len(tt.body))
				}
				if got := resp.Header.Get("Docker-Content-Digest"); got != d.String() {
					t.Errorf("Docker-Content-Digest %q", got)
				}
				if tt.method == "HEAD" && resp.ContentLength <= 0 {
					t.Errorf("HEAD Content-Length %d", resp.ContentLength)
				}
				if tt.method == "HEAD" && tt.contentRange == "" && resp.ContentLength != int64(size) {
					t.Errorf("HEAD Content-Length %d, want the size %d", resp.ContentLength, size)
				}
				if resp.Header.Get("Content-Type") != "application/octet-stream" {
					t.Errorf("Content-Type %q", resp.Header.Get("Content-Type"))
				}
			})
		}
	}
}

var itoa = strconv.Itoa

func TestManifestHeaders(t *testing.T) {
	f := newFixture(t)
	raw, _ := f.idx.RawManifest()
	d, _ := f.idx.Digest()
	for _, method := range []string{"GET", "HEAD"} {
		for _, ref := range []string{"v1", d.String()} {
			resp, body := f.do(t, method, "/v2/multi/arch/app/manifests/"+ref+"?ns=registry.example.com:5000", nil)
			if resp.StatusCode != 200 {
				t.Fatalf("%s %s: status %d: %s", method, ref, resp.StatusCode, body)
			}
			h := resp.Header
			if h.Get("Content-Type") != string(types.OCIImageIndex) || h.Get("Docker-Content-Digest") != d.String() ||
				resp.ContentLength != int64(len(raw)) || h.Get("Docker-Distribution-API-Version") != "registry/2.0" {
				t.Errorf("%s %s: headers %v, length %d", method, ref, h, resp.ContentLength)
			}
			if want := map[string][]byte{"GET": raw, "HEAD": {}}[method]; !bytes.Equal(body, want) {
				t.Errorf("%s %s: body of %d bytes", method, ref, len(body))
			}
		}
	}
	f.content.mu.Lock()
	defer f.content.mu.Unlock()
	for _, ns := range f.content.nss {
		if ns != "registry.example.com:5000" {
			t.Errorf("Content saw ns %q", ns)
		}
	}
}

func TestErrors(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		method, path string
		status       int
		code         string
	}{
		{"GET", "/v2/library/app/manifests/v2", 404, "MANIFEST_UNKNOWN"},
		{"GET", "/v2/library/app/manifests/" + sha, 404, "MANIFEST_UNKNOWN"},
		{"GET", "/v2/library/app/blobs/" + sha, 404, "BLOB_UNKNOWN"},
		{"GET", "/v2/library/nope/manifests/v1", 404, "NAME_UNKNOWN"},
		{"GET", "/v2/library/nope/blobs/" + sha, 404, "NAME_UNKNOWN"},
		{"GET", "/v2/library/app/tags/list", 404, "UNSUPPORTED"},
		{"GET", "/v2/_catalog", 404, "UNSUPPORTED"},
		{"GET", "/v2/Library/app/manifests/v1", 400, "NAME_INVALID"},
		{"GET", "/v2/library/app/blobs/sha256:beef", 400, "DIGEST_INVALID"},
		{"GET", "/v2/library/app/blobs/sha384:" + strings.Repeat("0", 96), 400, "DIGEST_INVALID"},
		{"GET", "/v2/library/app/blobs/sha256:" + strings.ToUpper(sha[7:]), 400, "DIGEST_INVALID"},
		{"GET", "/v2/library/app/manifests/sha256:" + strings.ToUpper(sha[7:]), 400, "DIGEST_INVALID"},
		{"GET", "/v2/library/app/manifests/-bad", 404, "MANIFEST_UNKNOWN"},
		{"GET", "/v2/library/app/manifests/v1?ns=bad/ns", 400, "NAME_INVALID"},
		{"GET", "/v2/library/app/manifests/v1?ns=[0]", 400, "NAME_INVALID"}, // found by FuzzValidNS
		{"POST", "/v2/library/app/blobs/uploads/", 405, "UNSUPPORTED"},
		{"PUT", "/v2/library/app/manifests/v1", 405, "UNSUPPORTED"},
		{"PATCH", "/v2/library/app/blobs/uploads/x", 405, "UNSUPPORTED"},
		{"DELETE", "/v2/library/app/manifests/" + sha, 405, "UNSUPPORTED"},
		{"OPTIONS", "/v2/", 405, "UNSUPPORTED"},
	}
	for _, tt := range tests {
		resp, body := f.do(t, tt.method, tt.path, nil)
		if resp.StatusCode != tt.status {
			t.Errorf("%s %s: status %d, want %d", tt.method, tt.path, resp.StatusCode, tt.status)
		}
		var eb errorBody
		if err := json.Unmarshal(body, &eb); err != nil || len(eb.Errors) != 1 || eb.Errors[0].Code != tt.code || eb.Errors[0].Message == "" {
			t.Errorf("%s %s: body %s, want code %s (%v)", tt.method, tt.path, body, tt.code, err)
		}
		if resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s %s: Content-Type %q", tt.method, tt.path, resp.Header.Get("Content-Type"))
		}
		if tt.status == 405 && resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s %s: Allow %q", tt.method, tt.path, resp.Header.Get("Allow"))
		}
	}
	// The mux outside the handler answers paths it does not route.
	if resp, _ := f.do(t, "GET", "/other", nil); resp.StatusCode != 404 {
		t.Errorf("GET /other: status %d", resp.StatusCode)
	}
}

func TestBase(t *testing.T) {
	f := newFixture(t)
	for _, p := range []string{"/v2/", "/v2"} {
		resp, body := f.do(t, "GET", p, nil)
		if resp.StatusCode != 200 || string(body) != "{}" || resp.Header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
			t.Errorf("GET %s: %d %q %v", p, resp.StatusCode, body, resp.Header)
		}
	}
}

// TestContentFailures checks what the handler does when Content fails or
// returns a manifest that is not what was asked for.
func TestContentFailures(t *testing.T) {
	body := []byte(`{"schemaVersion":2}`)
	tests := []struct {
		name    string
		content *memContent
		path    string
		status  int
		code    string
	}{
		{"content error", &memContent{fail: errors.New("disk on fire")}, "/v2/a/manifests/v1", 500, "UNKNOWN"},
		{"blob error", &memContent{fail: errors.New("disk on fire")}, "/v2/a/blobs/" + sha, 500, "UNKNOWN"},
		{"wrapped not found", &memContent{fail: errors.Join(errors.New("peer gone"), ErrNotFound)}, "/v2/a/blobs/" + sha, 404, "BLOB_UNKNOWN"},
		{"wrong digest", &memContent{manifests: map[string]map[string]Manifest{"a": {"v1": {MediaType: "x/y", Digest: sha, Body: body}}}},
			"/v2/a/manifests/v1", 500, "UNKNOWN"},
		{"other digest than asked", &memContent{manifests: map[string]map[string]Manifest{"a": {sha: {MediaType: "x/y", Body: body}}}},
			"/v2/a/manifests/" + sha, 500, "UNKNOWN"},
		{"no media type", &memContent{manifests: map[string]map[string]Manifest{"a": {"v1": {Body: body}}}},
			"/v2/a/manifests/v1", 500, "UNKNOWN"},
		{"computed digest", &memContent{manifests: map[string]map[string]Manifest{"a": {"v1": {MediaType: "x/y", Body: body}}}},
			"/v2/a/manifests/v1", 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			NewHandler(tt.content, nil).ServeHTTP(rec, httptest.NewRequest("GET", tt.path, nil))
			if rec.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.status, rec.Body)
			}
			if tt.code == "" {
				if got := rec.Header().Get("Docker-Content-Digest"); !strings.HasPrefix(got, "sha256:") || !bytes.Equal(rec.Body.Bytes(), body) {
					t.Errorf("digest %q, body %q", got, rec.Body)
				}
				return
			}
			var eb errorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb.Errors[0].Code != tt.code {
				t.Errorf("body %s, want code %s", rec.Body, tt.code)
			}
		})
	}
}

func BenchmarkServeBlobRange(b *testing.B) {
	blob := make([]byte, 4<<20)
	c := &memContent{blobs: map[string]map[string][]byte{"a": {sha: blob}}}
	h := NewHandler(c, nil)
	b.SetBytes(512 << 10)
	for b.Loop() {
		req := httptest.NewRequest("GET", "/v2/a/blobs/"+sha, nil)
		req.Header.Set("Range", "bytes=1048576-1572863")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusPartialContent {
			b.Fatal(rec.Code)
		}
	}
}

// failingRanges serves ranges whose reader fails halfway, as a span that
// fails verification after the first ones were sent.
type failingRanges struct{ *memContent }

func (c failingRanges) BlobSize(context.Context, string, string, string) (int64, error) {
	return 100, nil
}

func (c failingRanges) BlobRange(_ context.Context, _, _, _ string, off, n int64) (io.ReadCloser, error) {
	return io.NopCloser(io.MultiReader(bytes.NewReader(make([]byte, n/2)), iotest.ErrReader(errors.New("span failed verification")))), nil
}

// A range whose bytes fail after the answer started is cut short: the
// client sees a broken answer (no headers, or a short body), never a
// complete one. (net/http alone would cut a body shorter than its
// Content-Length too; the handler's abort does not rest on it.)
func TestBlobRangeFailingMidway(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle("/v2/", NewHandler(failingRanges{newMemContent()}, nil))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	req, err := http.NewRequestWithContext(t.Context(), "GET", srv.URL+"/v2/library/app/blobs/sha256:"+strings.Repeat("a", 64), nil)
	must(t, err)
	req.Header.Set("Range", "bytes=0-49")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return // cut before the headers went out (they were still buffered)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil || len(body) >= 50 {
		t.Errorf("status %d, %d bytes, read error %v; want the body cut short", resp.StatusCode, len(body), err)
	}
}
