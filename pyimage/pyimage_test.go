package pyimage

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/faasnet/faasnet/internal/testenv"
	"github.com/faasnet/faasnet/runc"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// fakeSystem writes small layers into a cache entry, as a build would.
func fakeSystem(t *testing.T, cacheDir, key string) []layerInfo {
	t.Helper()
	scratch, err := os.MkdirTemp(cacheDir, "tmp-")
	if err != nil {
		t.Fatal(err)
	}
	var infos []layerInfo
	for i := range 3 {
		dir := t.TempDir()
		mustDo(t, os.WriteFile(filepath.Join(dir, fmt.Sprintf("file%d", i)), bytes.Repeat([]byte{byte(i)}, 1000*(i+1)), 0o644))
		info, err := writeLayerFile(filepath.Join(scratch, layerFile(i)), dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		info.CreatedBy = fmt.Sprint("step ", i)
		infos = append(infos, info)
	}
	if _, err := storeCache(cacheDir, key, scratch, infos); err != nil {
		t.Fatal(err)
	}
	return infos
}

func TestCache(t *testing.T) {
	cacheDir := t.TempDir()
	if _, err := loadCache(cacheDir, "k1"); err == nil {
		t.Fatal("loadCache of an empty cache succeeded")
	}
	infos := fakeSystem(t, cacheDir, "k1")
	layers, err := loadCache(cacheDir, "k1")
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != len(infos) {
		t.Fatalf("loaded %d layers, stored %d", len(layers), len(infos))
	}
	for i, l := range layers {
		if l.info != infos[i] {
			t.Errorf("layer %d: loaded %+v, stored %+v", i, l.info, infos[i])
		}
	}
	// A second build of the same key (a concurrent one) keeps the first.
	fakeSystem(t, cacheDir, "k1")
	if again, err := loadCache(cacheDir, "k1"); err != nil || again[0].info != infos[0] {
		t.Errorf("after a second store: %v, %v", again, err)
	}
	// A damaged entry is refused, so that Build rebuilds it.
	mustDo(t, os.Truncate(filepath.Join(cacheDir, "k1", layerFile(1)), 10))
	if _, err := loadCache(cacheDir, "k1"); err == nil {
		t.Error("loadCache accepted a truncated layer")
	}
	if _, err := parseCacheManifest([]byte(`{"key":"k2","layers":[]}`), "k2", cacheDir); err == nil {
		t.Error("a manifest without layers was accepted")
	}
	if _, err := parseCacheManifest([]byte(`{"key":"other"}`), "k2", cacheDir); err == nil {
		t.Error("a manifest of another key was accepted")
	}
}

// FuzzCacheManifest checks that a damaged manifest never panics and never
// yields layers without files of the recorded size.
func FuzzCacheManifest(f *testing.F) {
	f.Add([]byte(`{"key":"k","layers":[{"digest":"sha256:00","diff_id":"sha256:00","size":0}]}`))
	f.Add([]byte(`{"key":"k","layers":[{"digest":"x","size":-1}]}`))
	f.Add([]byte(`null`))
	dir := f.TempDir()
	os.WriteFile(filepath.Join(dir, layerFile(0)), nil, 0o644)
	f.Fuzz(func(t *testing.T, b []byte) {
		layers, err := parseCacheManifest(b, "k", dir)
		if err == nil && (len(layers) != 1 || layers[0].info.Size != 0) {
			t.Fatalf("parseCacheManifest(%q) = %d layers", b, len(layers))
		}
	})
}

func TestOptionsKey(t *testing.T) {
	base := Options{CacheDir: "/c", Mirror: "http://m/debian"}.defaults()
	if base.Suite != DefaultSuite || !slices.Equal(base.Packages, DefaultPackages) {
		t.Fatalf("defaults: %+v", base)
	}
	same := base
	same.CacheDir, same.Verbose = "/elsewhere", true
	if same.key() != base.key() {
		t.Error("the cache directory or verbosity changed the key")
	}
	for _, o := range []Options{
		{CacheDir: "/c", Mirror: "http://other/debian"},
		{CacheDir: "/c", Mirror: "http://m/debian", Suite: "trixie"},
		{CacheDir: "/c", Mirror: "http://m/debian", Packages: []string{"python3-numpy"}},
	} {
		if o.defaults().key() == base.key() {
			t.Errorf("options %+v have the default key", o)
		}
	}
}

// TestBuildFromCache builds the image around fake cached system layers: it
// needs no root and checks the image's shape and config.
func TestBuildFromCache(t *testing.T) {
	o := Options{CacheDir: t.TempDir(), Mirror: DefaultMirror}
	infos := fakeSystem(t, o.CacheDir, o.defaults().key())
	var progress bytes.Buffer
	o.Progress = &progress
	img, err := Build(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(progress.String(), "from cache") {
		t.Errorf("progress %q does not say the cache was used", progress.String())
	}
	if err := validate.Image(img); err != nil {
		t.Fatalf("invalid image: %v", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if !slices.Equal(c.Entrypoint, []string{"python3", "/app/handler.py"}) || !slices.Contains(c.Env, "PYTHONDONTWRITEBYTECODE=1") || c.WorkingDir != "/app" {
		t.Errorf("config %+v", c)
	}
	if _, ok := c.ExposedPorts["8080/tcp"]; !ok || cf.OS != "linux" || cf.Architecture == "" {
		t.Errorf("exposed ports %v, platform %s/%s", c.ExposedPorts, cf.OS, cf.Architecture)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 4 || len(cf.History) != 4 {
		t.Fatalf("%d layers, %d history entries; want 4", len(layers), len(cf.History))
	}
	for i, info := range infos {
		if d, _ := layers[i].Digest(); d != info.Digest || cf.History[i].CreatedBy != info.CreatedBy {
			t.Errorf("layer %d: %v %q, want %v %q", i, d, cf.History[i].CreatedBy, info.Digest, info.CreatedBy)
		}
	}
	rc, err := layers[3].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	var got []byte
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		if h.Name == "app/handler.py" {
			got = make([]byte, h.Size)
			tr.Read(got)
		}
	}
	if !bytes.Equal(got, handlerPy) {
		t.Errorf("handler layer holds %d bytes of handler.py, want %d", len(got), len(handlerPy))
	}
	// The handler layer is the same bytes on every build.
	img2, err := Build(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	if d1, _ := img.Digest(); func() bool { d2, _ := img2.Digest(); return d1 != d2 }() {
		t.Error("two builds from one cache differ")
	}
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// getJSON fetches url and decodes its JSON answer, returning the status.
func getJSON(t *testing.T, url string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, v
}

// TestHandler runs handler.py with the machine's python3.
func TestHandler(t *testing.T) {
	py := testenv.NeedTool(t, "python3")
	port := freePort(t)
	ctx, cancel := context.WithTimeout(t.Context(), testenv.ReadyTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, "-c", string(handlerPy))
	cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port), "HOST=127.0.0.1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		if t.Failed() {
			t.Logf("handler output:\n%s", out.String())
		}
	}()
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	if _, err := runc.WaitReady(ctx, base+"/healthz"); err != nil {
		t.Fatal(err)
	}
	status, v := getJSON(t, base+"/")
	if status != 200 || v["message"] != "hello from faasnet" || !strings.HasPrefix(fmt.Sprint(v["python"]), "3.") {
		t.Errorf("GET /: %d %v", status, v)
	}
	// numpy may be missing on this machine: then /compute says so in JSON.
	status, v = getJSON(t, base+"/compute")
	if (status == 200) == (v["numpy"] == nil) || (status != 200 && status != 500) {
		t.Errorf("GET /compute: %d %v", status, v)
	}
	if status, _ := getJSON(t, base+"/nope"); status != 404 {
		t.Errorf("GET /nope: %d, want 404", status)
	}
}

// fullBuild reports whether to run the real build: it takes minutes the
// first time, so only when asked (FAASNET_PYIMAGE=1) or in CI.
func fullBuild(t *testing.T) {
	t.Helper()
	if os.Getenv("FAASNET_PYIMAGE") != "1" && !testenv.InCI() {
		t.Skip("the real build takes minutes; set FAASNET_PYIMAGE=1 (CI runs it)")
	}
	testenv.NeedRoot(t)
	testenv.NeedTool(t, "debootstrap")
}

// TestBuildAndRun builds the real image (or loads it from the default
// cache), unpacks it, starts it with runc, and talks to the handler.
func TestBuildAndRun(t *testing.T) {
	fullBuild(t)
	testenv.NeedTool(t, "runc")
	var progress bytes.Buffer
	start := time.Now()
	img, err := Build(t.Context(), Options{Progress: &progress})
	t.Logf("build in %v:\n%s", time.Since(start).Round(time.Millisecond), progress.String())
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(img, validate.Fast); err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, l := range layers {
		size, _ := l.Size()
		total += size
	}
	t.Logf("%d layers, %d bytes compressed", len(layers), total)
	if len(layers) != 4 || total < 50<<20 {
		t.Errorf("%d layers, %d bytes; want 4 layers and a heavy image", len(layers), total)
	}

	rootfs := filepath.Join(t.TempDir(), "rootfs")
	start = time.Now()
	extract(t, layers, rootfs)
	t.Logf("unpacked in %v", time.Since(start).Round(time.Millisecond))
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rt := &runc.Runtime{Root: filepath.Join(dir, "runc"), StateDir: filepath.Join(dir, "bundles")}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	port := freePort(t)
	c, err := rt.Start(ctx, runc.Spec{ID: fmt.Sprintf("pyimage-%d", os.Getpid()), Rootfs: rootfs, Image: cf.Config, Env: []string{"HOST=127.0.0.1"}, Port: port, Limits: runc.Limits{Memory: 512 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := c.Stop(context.WithoutCancel(ctx)); err != nil {
			t.Error(err)
		}
		if err := rt.Cleanup(context.WithoutCancel(ctx)); err != nil {
			t.Error(err)
		}
	}()
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	ready, err := c.WaitReady(ctx, base+"/healthz")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ready %v after start", ready.Round(time.Millisecond))
	status, v := getJSON(t, base+"/")
	if status != 200 || !strings.HasPrefix(fmt.Sprint(v["python"]), "3.") {
		t.Errorf("GET /: %d %v", status, v)
	}
	status, v = getJSON(t, base+"/compute")
	if status != 200 || v["numpy"] == nil || v["determinant"] == nil {
		t.Errorf("GET /compute: %d %v", status, v)
	}
	t.Logf("GET /compute: %v", v)
}

// extract unpacks layers into rootfs with the system's tar. Not package
// unpack: under the race detector it takes over two minutes on these
// 800 MB, and its own tests cover it. tar does not apply whiteouts, so an
// image with any fails here rather than run with files it deleted.
func extract(t *testing.T, layers []v1.Layer, rootfs string) {
	t.Helper()
	testenv.NeedTool(t, "tar")
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.CommandContext(t.Context(), "tar", "-xz", "--same-owner", "--numeric-owner", "-C", rootfs)
		cmd.Stdin = rc
		out, err := cmd.CombinedOutput()
		rc.Close()
		if err != nil {
			t.Fatalf("tar -xz of layer %d: %v\n%s", i, err, out)
		}
	}
	err := filepath.WalkDir(rootfs, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".wh.") {
			return fmt.Errorf("whiteout %s: this test's tar cannot apply it", p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestLockKey(t *testing.T) {
	dir := t.TempDir()
	unlock, err := lockKey(t.Context(), dir, "k", func() { t.Error("the first lock waited") })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*lockPoll)
	defer cancel()
	waited := false
	if _, err := lockKey(ctx, dir, "k", func() { waited = true }); !errors.Is(err, context.DeadlineExceeded) || !waited {
		t.Fatalf("second lock while held: %v, waited %v; want a deadline error after waiting", err, waited)
	}
	if u, err := lockKey(t.Context(), dir, "other", func() { t.Error("another key waited") }); err != nil {
		t.Fatal(err)
	} else {
		u()
	}
	unlock()
	u, err := lockKey(t.Context(), dir, "k", func() { t.Error("waited for a released lock") })
	if err != nil {
		t.Fatal(err)
	}
	u()
}
