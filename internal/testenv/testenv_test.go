package testenv

import (
	"fmt"
	"io"
	"log"
	"maps"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/faasnet/faasnet/imagegen"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// recorder is a testing.TB that records Skipf and Fatalf instead of acting.
type recorder struct {
	testing.TB
	skipped, failed bool
	msg             string
}

func (r *recorder) Helper() {}

func (r *recorder) Skipf(format string, args ...any) {
	r.skipped, r.msg = true, fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.failed, r.msg = true, fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// call runs f with a recorder in its own goroutine, as Skipf and Fatalf end
// the goroutine that calls them.
func call(t *testing.T, f func(testing.TB)) *recorder {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r
}

func TestNeedTool(t *testing.T) {
	for _, tc := range []struct {
		name, ci, tool    string
		path              bool // PATH keeps its value
		skipped, failed   bool
		msgHas            string
		wantPathSuffixHas string
	}{
		{name: "present", tool: "sh", path: true, wantPathSuffixHas: "/sh"},
		{name: "missing", tool: "no-such-tool-faasnet", path: true, skipped: true, msgHas: "no-such-tool-faasnet not installed"},
		{name: "missing in CI", ci: "true", tool: "no-such-tool-faasnet", path: true, failed: true, msgHas: "CI=true"},
		{name: "package named", tool: "docker-registry", skipped: true, msgHas: "apt-get install docker-registry"},
		{name: "ctr from containerd", tool: "ctr", skipped: true, msgHas: "apt-get install containerd"},
		{name: "CI=false skips", ci: "false", tool: "no-such-tool-faasnet", path: true, skipped: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("CI", tc.ci)
			if !tc.path {
				t.Setenv("PATH", t.TempDir()) // tools in /usr/bin vanish; sbin is still searched
			}
			var got string
			r := call(t, func(tb testing.TB) { got = NeedTool(tb, tc.tool) })
			if r.skipped != tc.skipped || r.failed != tc.failed || !strings.Contains(r.msg, tc.msgHas) {
				t.Errorf("NeedTool(%q): skipped %v failed %v msg %q; want skipped %v failed %v msg containing %q",
					tc.tool, r.skipped, r.failed, r.msg, tc.skipped, tc.failed, tc.msgHas)
			}
			if !strings.HasSuffix(got, tc.wantPathSuffixHas) || (tc.wantPathSuffixHas != "") != (got != "") {
				t.Errorf("NeedTool(%q) = %q, want a path ending in %q", tc.tool, got, tc.wantPathSuffixHas)
			}
		})
	}
}

func TestParsePath(t *testing.T) {
	const d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, tc := range []struct {
		path      string
		kind      route
		repo, ref string
	}{
		{"/v2/", routeOther, "", ""},
		{"/v2/fn/hello/blobs/" + d, routeBlob, "fn/hello", d},
		{"/v2/hello/manifests/v1", routeManifest, "hello", "v1"},
		{"/v2/a/b/c/manifests/" + d, routeManifest, "a/b/c", d},
		{"/v2/fn/blobs/uploads/", routeOther, "", ""},
		{"/v2/fn/blobs/uploads/5f0c-uuid", routeOther, "", ""},
		{"/v2/blobs/blobs/" + d, routeBlob, "blobs", d},
		{"/v2/x/manifests/y/blobs/" + d, routeBlob, "x/manifests/y", d},
		{"/v2/x/blobs/y/manifests/latest", routeManifest, "x/blobs/y", "latest"},
		{"/v2//blobs/" + d, routeOther, "", ""},
		{"/v2/fn/blobs/notadigest", routeOther, "", ""},
		{"/v2/fn/tags/list", routeOther, "", ""},
		{"/v3/fn/blobs/" + d, routeOther, "", ""},
		{"/v2/fn/manifests/", routeOther, "", ""},
	} {
		kind, repo, ref := parsePath(tc.path)
		if kind != tc.kind || repo != tc.repo || ref != tc.ref {
			t.Errorf("parsePath(%q) = %v %q %q, want %v %q %q", tc.path, kind, repo, ref, tc.kind, tc.repo, tc.ref)
		}
	}
}

// FuzzParsePath checks that parsePath never panics and that what it returns
// rebuilds the path it parsed.
func FuzzParsePath(f *testing.F) {
	for _, s := range []string{"/v2/", "/v2/a/blobs/sha256:ab", "/v2/a/b/manifests/latest", "/v2/a/blobs/uploads/x", "/v2//manifests/x", "/v2/blobs/manifests/blobs/sha256:00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		kind, repo, ref := parsePath(path)
		var rebuilt string
		switch kind {
		case routeBlob:
			rebuilt = "/v2/" + repo + "/blobs/" + ref
		case routeManifest:
			rebuilt = "/v2/" + repo + "/manifests/" + ref
		default:
			if repo != "" || ref != "" {
				t.Fatalf("parsePath(%q) = other with %q %q", path, repo, ref)
			}
			return
		}
		if rebuilt != path || repo == "" || ref == "" || strings.Contains(ref, "/") {
			t.Fatalf("parsePath(%q) = %v %q %q", path, kind, repo, ref)
		}
	})
}

func TestParseImagesLs(t *testing.T) {
	const d = "sha256:1d5c8b2e0f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c"
	out := "REF                              TYPE                                    DIGEST   SIZE    PLATFORMS   LABELS \n" +
		"127.0.0.1:5000/fn/a:v1           application/vnd.oci.image.manifest.v1+json " + d + " 1.0 MiB linux/amd64 -      \n" +
		"127.0.0.1:5000/fn/a:v1-other     application/vnd.oci.image.manifest.v1+json sha256:00 1.0 MiB linux/amd64 -\n"
	for _, tc := range []struct {
		ref, want string
		ok        bool
	}{
		{"127.0.0.1:5000/fn/a:v1", d, true},
		{"127.0.0.1:5000/fn/a:v1-other", "sha256:00", true},
		{"127.0.0.1:5000/fn/a", "", false},
		{"REF", "", false},
	} {
		got, ok := parseImagesLs([]byte(out), tc.ref)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseImagesLs(%q) = %q %v, want %q %v", tc.ref, got, ok, tc.want, tc.ok)
		}
	}
}

// FuzzParseImagesLs checks that parseImagesLs never panics and only returns
// digests.
func FuzzParseImagesLs(f *testing.F) {
	f.Add([]byte("REF TYPE DIGEST SIZE PLATFORMS LABELS\nr t sha256:ab 1 MiB linux/amd64 -\n"), "r")
	f.Add([]byte("\n\n  \n"), "")
	f.Fuzz(func(t *testing.T, out []byte, ref string) {
		if d, ok := parseImagesLs(out, ref); ok != (d != "") || (ok && !digestRE.MatchString(d)) {
			t.Fatalf("parseImagesLs(%q, %q) = %q %v", out, ref, d, ok)
		}
	})
}

func TestTransportRef(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:5000/fn/a:v1":          "docker://127.0.0.1:5000/fn/a:v1",
		"docker://127.0.0.1:5000/fn/a:v1": "docker://127.0.0.1:5000/fn/a:v1",
		"oci:/tmp/layout:v1":              "oci:/tmp/layout:v1",
		"dir:/tmp/x":                      "dir:/tmp/x",
		"localhost:5000/fn/a@sha256:00ab": "docker://localhost:5000/fn/a@sha256:00ab",
	} {
		if got := transportRef(in); got != want {
			t.Errorf("transportRef(%q) = %q, want %q", in, got, want)
		}
	}
}

// image is a small generated image and what a pull of it must fetch.
type image struct {
	v1.Image
	digest string
	blobs  map[string]int64 // config and layers: digest -> size
}

func newImage(t *testing.T, seed int64) image {
	t.Helper()
	img, err := imagegen.Image(imagegen.Spec{TotalSize: 2 << 20, Layers: 3, Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	blobs := map[string]int64{m.Config.Digest.String(): m.Config.Size}
	for _, l := range m.Layers {
		blobs[l.Digest.String()] = l.Size
	}
	return image{Image: img, digest: d.String(), blobs: blobs}
}

func (img image) push(t *testing.T, ref string) {
	t.Helper()
	if err := imagegen.Push(t.Context(), img, ref); err != nil {
		t.Fatal(err)
	}
}

// checkServedOnce asserts that c saw exactly one GET of each of img's blobs,
// carrying the whole blob, and nothing else.
func checkServedOnce(t *testing.T, c *Counter, img image) {
	t.Helper()
	got := c.Blobs()
	for d, size := range img.blobs {
		if bc := got[d]; bc.Gets != 1 || bc.Bytes != size {
			t.Errorf("blob %s: %d GETs, %d bytes; want 1 GET of %d bytes", d, bc.Gets, bc.Bytes, size)
		}
	}
	for d, bc := range got {
		if _, ok := img.blobs[d]; !ok && bc.Gets > 0 {
			t.Errorf("unexpected blob %s fetched: %+v", d, bc)
		}
	}
	var sum int64
	for _, size := range img.blobs {
		sum += size
	}
	if total := c.TotalBytes(); total < sum {
		t.Errorf("TotalBytes() = %d, less than the blobs' %d", total, sum)
	}
	var manifests int
	for _, n := range c.ManifestGets() {
		manifests += n
	}
	if manifests == 0 {
		t.Errorf("no manifest GET counted; requests %d", c.Requests())
	}
}

// TestCountingProxyInProcess runs the proxy in front of go-containerregistry's
// in-process registry, so it needs no installed tool.
func TestCountingProxyInProcess(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	addr, c := CountingProxy(t, srv.URL)
	img := newImage(t, 1)
	img.push(t, addr+"/fn/a:v1")
	for d := range img.blobs {
		if bc := c.Blobs()[d]; bc.Gets != 0 || bc.Heads == 0 {
			t.Errorf("after push, blob %s: %+v; want HEADs and no GET", d, bc)
		}
	}
	c.Reset()
	if c.Requests() != 0 || c.TotalBytes() != 0 || len(c.Blobs()) != 0 {
		t.Fatalf("Reset left requests %d bytes %d blobs %d", c.Requests(), c.TotalBytes(), len(c.Blobs()))
	}

	ref, err := name.ParseReference(addr + "/fn/a:v1")
	if err != nil {
		t.Fatal(err)
	}
	pulled, err := remote.Image(ref, remote.WithContext(t.Context()))
	if err != nil {
		t.Fatal(err)
	}
	layers, err := pulled.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, rc); err != nil {
			t.Fatal(err)
		}
		rc.Close()
	}
	if _, err := pulled.RawConfigFile(); err != nil {
		t.Fatal(err)
	}
	checkServedOnce(t, c, img)
	if n := c.ManifestGets()["fn/a:v1"]; n != 1 {
		t.Errorf("ManifestGets()[fn/a:v1] = %d, want 1 (%v)", n, c.ManifestGets())
	}
}

func TestStartRegistry(t *testing.T) {
	addr := StartRegistry(t)
	img := newImage(t, 2)
	img.push(t, addr+"/fn/a:v1")
	ref, err := name.ParseReference(addr + "/fn/a:v1")
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Get(ref, remote.WithContext(t.Context()))
	if err != nil {
		t.Fatal(err)
	}
	if got := desc.Digest.String(); got != img.digest {
		t.Errorf("registry serves %s, pushed %s", got, img.digest)
	}
}

// TestSkopeoThroughProxy copies an image from one real registry to another
// through a CountingProxy: skopeo must fetch each blob exactly once, and the
// copy keeps the digest.
func TestSkopeoThroughProxy(t *testing.T) {
	sk := Skopeo(t)
	src, dst := StartRegistry(t), StartRegistry(t)
	proxy, c := CountingProxy(t, src)
	img := newImage(t, 3)
	img.push(t, src+"/fn/a:v1")

	if err := sk.Copy(proxy+"/fn/a:v1", dst+"/fn/a:v1"); err != nil {
		t.Fatal(err)
	}
	checkServedOnce(t, c, img)
	for _, ref := range []string{dst + "/fn/a:v1", "docker://" + proxy + "/fn/a:v1"} {
		got, err := sk.Inspect(ref)
		if err != nil {
			t.Fatal(err)
		}
		if got != img.digest {
			t.Errorf("Inspect(%s) = %s, want %s", ref, got, img.digest)
		}
	}
	if err := sk.Copy(src+"/fn/missing:v1", dst+"/fn/b:v1"); err == nil {
		t.Error("copying a missing image succeeded")
	}
}

// TestContainerd pulls one image straight from a real registry and another
// through a CountingProxy configured as the mirror of a host name that does
// not resolve, so only the mirror can serve it.
func TestContainerd(t *testing.T) {
	ctrd := StartContainerd(t)
	reg := StartRegistry(t)

	t.Run("direct", func(t *testing.T) {
		img := newImage(t, 4)
		ref := reg + "/fn/direct:v1"
		img.push(t, ref)
		got, err := ctrd.Pull(ref)
		if err != nil {
			t.Fatal(err)
		}
		if got != img.digest {
			t.Errorf("Pull(%s) = %s, want %s", ref, got, img.digest)
		}
		content, err := ctrd.ContentDigests()
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range append(slices.Collect(maps.Keys(img.blobs)), img.digest) {
			if !slices.Contains(content, d) {
				t.Errorf("content store lacks %s: %v", d, content)
			}
		}
	})

	t.Run("mirror", func(t *testing.T) {
		proxy, c := CountingProxy(t, reg)
		const host = "registry.faasnet.invalid"
		if err := ctrd.Mirror(host, proxy); err != nil {
			t.Fatal(err)
		}
		img := newImage(t, 5)
		img.push(t, reg+"/fn/mirrored:v1")
		c.Reset() // the push went around the proxy; count the pull only
		got, err := ctrd.Pull(host + "/fn/mirrored:v1")
		if err != nil {
			t.Fatal(err)
		}
		if got != img.digest {
			t.Errorf("Pull through mirror = %s, want %s", got, img.digest)
		}
		checkServedOnce(t, c, img)
	})

	if _, err := ctrd.Pull(reg + "/fn/missing:v1"); err == nil {
		t.Error("pulling a missing image succeeded")
	}
}

// TestStartEtcd starts three members and checks that they form one cluster
// that keeps its quorum with one member killed and takes it back after a
// restart.
func TestStartEtcd(t *testing.T) {
	e := StartEtcd(t, 3)
	if got := len(e.Endpoints()); got != 3 {
		t.Fatalf("%d endpoints, want 3", got)
	}
	e.Kill(2)
	for _, m := range e.members[:2] {
		// If the killed member led, the others elect a new leader first.
		if err := m.proc.waitReady(func() error { return e.healthy(m) }); err != nil {
			t.Errorf("with one of three members killed: %v", err)
		}
	}
	if err := e.healthy(e.members[2]); err == nil {
		t.Error("the killed member still answers")
	}
	if err := e.Restart(2); err != nil {
		t.Fatal(err)
	}
	if err := e.Restart(2); err == nil {
		t.Error("Restart of a running member succeeded")
	}
}
