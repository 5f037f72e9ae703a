package worker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/imagegen"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// ociFixture is a worker serving one ready function "f", with the peer
// address, an HTTP client and base URL for its OCI endpoint, and the
// function's image.
type ociFixture struct {
	c      *cluster
	w      *Worker
	client *http.Client
	base   string // URL of the OCI endpoint
	repo   string
	img    v1.Image
}

// newOCIFixture starts a worker whose OCI endpoint listens on oci (from
// ListenOCI) and makes f, an image of the test registry, ready on it.
func newOCIFixture(t *testing.T, oci net.Listener) *ociFixture {
	t.Helper()
	c := newCluster(t, time.Hour)
	ref, img := c.push(imagegen.Spec{TotalSize: 1 << 20, Layers: 2, Seed: 90})
	w := c.start("vm", func(cfg *Config) { cfg.OCI = oci })
	c.waitRegistered(1)
	if _, err := c.mgr.PutFunction(c.ctx, "f", api.FunctionRequest{Image: ref}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.mgr.Scale(c.ctx, "f", api.ScaleRequest{VMs: []string{"vm"}}); err != nil {
		t.Fatal(err)
	}
	c.waitReady("f", []string{"vm"}, 30*time.Second)
	f := &ociFixture{c: c, w: w, client: &http.Client{Timeout: 10 * time.Second}, repo: "test/app", img: img}
	if path, ok := strings.CutPrefix(w.OCIAddr(), "unix:"); ok {
		// The host in the URL is a placeholder: every connection goes to
		// the socket.
		f.client.Transport = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		}}
		f.base = "http://oci.invalid"
	} else {
		f.base = "http://" + w.OCIAddr()
	}
	return f
}

// blobs is every blob digest of the image: config and layers.
func (f *ociFixture) blobs(t *testing.T) []string {
	t.Helper()
	cfg, err := f.img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return append([]string{cfg.String()}, imageBlobs(t, f.img)...)
}

// get does method on url and returns the status and the body's digest.
func get(t *testing.T, client *http.Client, method, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	h := sha256.New()
	if _, err := io.Copy(h, resp.Body); err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, url, err)
	}
	return resp.StatusCode, "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// checkServes checks that the OCI endpoint serves the image's manifest, by
// tag and digest, and every blob, byte for byte.
func (f *ociFixture) checkServes(t *testing.T) {
	t.Helper()
	manifest, err := f.img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"v1", manifest.String()} {
		url := f.base + "/v2/" + f.repo + "/manifests/" + ref
		if code, d := get(t, f.client, http.MethodGet, url); code != http.StatusOK || d != manifest.String() {
			t.Errorf("GET %s: status %d, digest %s; want 200 and %s", url, code, d, manifest)
		}
	}
	for _, b := range f.blobs(t) {
		url := f.base + "/v2/" + f.repo + "/blobs/" + b
		if code, d := get(t, f.client, http.MethodGet, url); code != http.StatusOK || d != b {
			t.Errorf("GET %s: status %d, digest %s; want 200 and the blob", url, code, d)
		}
	}
}

func listenLoopback(t *testing.T) net.Listener {
	t.Helper()
	ln, err := ListenOCI(t.Context(), "127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// TestPeerListenerAnswersNothingUnderV2 asks the peer listener for what the
// OCI endpoint serves: every path under /v2/ is 404 there.
func TestPeerListenerAnswersNothingUnderV2(t *testing.T) {
	f := newOCIFixture(t, listenLoopback(t))
	f.checkServes(t) // the content exists, on the other listener
	manifest, _ := f.img.Digest()
	paths := []string{"/v2/", "/v2/" + f.repo + "/manifests/v1", "/v2/" + f.repo + "/manifests/" + manifest.String()}
	for _, b := range f.blobs(t) {
		paths = append(paths, "/v2/"+f.repo+"/blobs/"+b)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	for _, p := range paths {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			if code, _ := get(t, client, method, "http://"+f.w.Addr()+p); code != http.StatusNotFound {
				t.Errorf("%s %s on the peer listener: status %d, want 404", method, p, code)
			}
		}
	}
}

// TestOCIEndpointServesOnlyThisVMsFunctions reads a ready function's image
// through the OCI endpoint, on TCP and on a unix socket; writes are refused,
// unknown content is not found, and once the function is released from the
// VM its manifest and blobs are not found although they are still cached.
func TestOCIEndpointServesOnlyThisVMsFunctions(t *testing.T) {
	tests := []struct {
		name   string
		listen func(t *testing.T) net.Listener
	}{
		{"tcp", listenLoopback},
		{"unix", func(t *testing.T) net.Listener {
			// A short path: unix socket paths are limited to ~108 bytes.
			dir, err := os.MkdirTemp("", "oci")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			ln, err := ListenOCI(t.Context(), "unix:"+filepath.Join(dir, "oci.sock"), false)
			if err != nil {
				t.Fatal(err)
			}
			return ln
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newOCIFixture(t, tt.listen(t))
			f.checkServes(t)
			blobs := f.blobs(t)
			manifest, _ := f.img.Digest()

			for _, method := range []string{http.MethodPut, http.MethodPost, http.MethodDelete, http.MethodPatch} {
				for _, p := range []string{"/v2/" + f.repo + "/manifests/v1", "/v2/" + f.repo + "/blobs/" + blobs[0], "/v2/" + f.repo + "/blobs/uploads/"} {
					if code, _ := get(t, f.client, method, f.base+p); code != http.StatusMethodNotAllowed {
						t.Errorf("%s %s: status %d, want 405", method, p, code)
					}
				}
			}
			unknown := "sha256:" + strings.Repeat("0", 64)
			for _, p := range []string{
				"/v2/" + f.repo + "/blobs/" + unknown,
				"/v2/" + f.repo + "/manifests/" + unknown,
				"/v2/" + f.repo + "/manifests/v2",
				"/v2/other/app/blobs/" + blobs[0],
				"/v2/other/app/manifests/v1",
				"/peer/v1/blobs/" + blobs[0],
				"/metrics",
			} {
				if code, _ := get(t, f.client, http.MethodGet, f.base+p); code != http.StatusNotFound {
					t.Errorf("GET %s: status %d, want 404", p, code)
				}
			}

			if err := f.c.mgr.Release(f.c.ctx, "f", "vm"); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the worker dropped f", func() bool { return len(f.w.Functions()) == 0 })
			for _, b := range blobs {
				c, ok := f.w.cache.Lookup(b)
				if !ok {
					t.Fatalf("blob %s left the cache on release: the 404s below would prove nothing", b)
				}
				c.Release()
				if code, _ := get(t, f.client, http.MethodGet, f.base+"/v2/"+f.repo+"/blobs/"+b); code != http.StatusNotFound {
					t.Errorf("GET blob %s of the released function: status %d, want 404", b, code)
				}
			}
			for _, ref := range []string{"v1", manifest.String()} {
				if code, _ := get(t, f.client, http.MethodGet, f.base+"/v2/"+f.repo+"/manifests/"+ref); code != http.StatusNotFound {
					t.Errorf("GET manifest %s of the released function: status %d, want 404", ref, code)
				}
			}
		})
	}
}

// TestListenOCI checks which addresses the OCI endpoint may listen on.
func TestListenOCI(t *testing.T) {
	dir, err := os.MkdirTemp("", "oci")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	tests := []struct {
		addr    string
		public  bool
		network string // "": no listener
		err     error  // nil: any error is a failure; errAny: some error
	}{
		{"", false, "", nil},
		{"none", false, "", nil},
		{"127.0.0.1:0", false, "tcp", nil},
		{"127.0.0.2:0", false, "tcp", nil},
		{"localhost:0", false, "tcp", nil},
		{"0.0.0.0:0", false, "", ErrNotLoopback},
		{":0", false, "", ErrNotLoopback},
		{"[::]:0", false, "", ErrNotLoopback},
		{"192.0.2.1:5050", false, "", ErrNotLoopback},
		{"0.0.0.0:0", true, "tcp", nil},
		{":0", true, "tcp", nil},
		{"127.0.0.1", false, "", errAny},
		{"unix:" + filepath.Join(dir, "a.sock"), false, "unix", nil},
		{filepath.Join(dir, "b.sock"), false, "unix", nil},
		{"unix:", false, "", errAny},
		{"unix:" + filepath.Join(dir, "missing", "c.sock"), false, "", errAny},
	}
	for _, tt := range tests {
		ln, err := ListenOCI(t.Context(), tt.addr, tt.public)
		switch {
		case tt.err == errAny && err == nil, tt.err != errAny && !errors.Is(err, tt.err):
			t.Errorf("ListenOCI(%q, public=%v): error %v, want %v", tt.addr, tt.public, err, tt.err)
		case ln == nil && tt.network != "", ln != nil && ln.Addr().Network() != tt.network:
			t.Errorf("ListenOCI(%q, public=%v): listener %v, want network %q", tt.addr, tt.public, ln, tt.network)
		}
		if ln == nil {
			continue
		}
		if tt.network == "unix" {
			if fi, err := os.Stat(ln.Addr().String()); err != nil || fi.Mode().Perm() != 0o660 {
				t.Errorf("ListenOCI(%q): socket %v (%v), want mode 0660", tt.addr, fi, err)
			}
		}
		ln.Close()
	}
}

var errAny = errors.New("any error")

// TestListenOCIUnixSocket replaces a socket a crashed worker left, and
// refuses one that still answers.
func TestListenOCIUnixSocket(t *testing.T) {
	dir, err := os.MkdirTemp("", "oci")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "oci.sock")

	live, err := ListenOCI(t.Context(), path, false)
	if err != nil {
		t.Fatal(err)
	}
	if ln, err := ListenOCI(t.Context(), path, false); err == nil {
		ln.Close()
		t.Error("a second endpoint took over a socket that still answers")
	}
	// A crash leaves the socket file behind: nothing answers on it.
	live.(*net.UnixListener).SetUnlinkOnClose(false)
	live.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
	ln, err := ListenOCI(t.Context(), path, false)
	if err != nil {
		t.Fatalf("restart on a stale socket: %v", err)
	}
	ln.Close()

	// Not a socket: never removed.
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if ln, err := ListenOCI(t.Context(), file, false); err == nil {
		ln.Close()
		t.Error("listened on a path holding a regular file")
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "keep" {
		t.Errorf("the regular file at the socket path: %q, %v", b, err)
	}
}
