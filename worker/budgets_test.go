package worker

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/convert"
	"github.com/faasnet/faasnet/imagegen"
	"github.com/faasnet/faasnet/internal/testenv"
	"github.com/faasnet/faasnet/lazy"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// budgetCluster is one worker that runs containers, with a function "good"
// ready on it, to which hostile functions are added.
type budgetCluster struct {
	*cluster
	w   *Worker
	run string
}

func newBudgetCluster(t *testing.T) *budgetCluster {
	testenv.NeedContainers(t)
	c := &budgetCluster{cluster: newCluster(t, time.Hour), run: testenv.RunDir(t)}
	c.w = c.start("vm-0", func(cfg *Config) {
		cfg.Containers, cfg.RunDir = true, c.run
		cfg.Limits.MaxUnpackBytes = 32 << 20
	})
	c.waitRegistered(1)
	c.deploy(t, "good", c.pushImage(t, "good", testenv.ServerImage(t, 1<<20)))
	c.waitReady("good", []string{"vm-0"}, 2*time.Minute)
	return c
}

func (c *budgetCluster) pushImage(t *testing.T, fn string, img v1.Image) string {
	t.Helper()
	ref := c.reg + "/hostile/" + fn + ":v1"
	if err := imagegen.Push(c.ctx, img, ref); err != nil {
		t.Fatal(err)
	}
	return ref
}

func (c *budgetCluster) deploy(t *testing.T, fn, ref string) {
	t.Helper()
	spec, _ := json.Marshal(api.FunctionSpec{Readiness: &api.Readiness{Path: "/healthz"}, Memory: "128MiB"})
	if _, err := c.mgr.PutFunction(c.ctx, fn, api.FunctionRequest{Image: ref, Spec: spec}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.mgr.Scale(c.ctx, fn, api.ScaleRequest{VMs: []string{"vm-0"}}); err != nil {
		t.Fatal(err)
	}
}

// refused waits until fn failed on the worker and returns its error; then
// checks that "good" is still ready and its container still runs.
func (c *budgetCluster) refused(t *testing.T, fn string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(c.ctx, 2*time.Minute)
	defer cancel()
	if err := c.w.WaitState(ctx, fn, api.StateFailed); err != nil {
		t.Fatalf("the hostile function %s did not fail: %v", fn, err)
	}
	var msg string
	for _, r := range c.w.Functions() {
		switch r.Function {
		case fn:
			msg = r.Error
		case "good":
			if r.State != api.StateReady {
				t.Errorf("after %s failed, good is %s (%s), want ready", fn, r.State, r.Error)
			}
		}
	}
	out, err := exec.Command("runc", "--root", filepath.Join(c.run, "runc"), "list", "-q").Output()
	if err != nil || !strings.Contains(string(out), "faasnet-vm-0-good") {
		t.Errorf("after %s failed, the containers are %q (%v), want good's among them", fn, out, err)
	}
	t.Logf("%s failed: %s", fn, msg)
	c.managerSees(t, fn, api.StateFailed, msg)
	c.managerSees(t, "good", api.StateReady, "")
	return msg
}

// managerSees waits until the manager's status of fn shows vm-0 in state
// with error msg, as the worker reported it.
func (c *budgetCluster) managerSees(t *testing.T, fn, state, msg string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := c.mgr.Status(c.ctx, fn)
		if err == nil && len(st.VMs) == 1 && st.VMs[0].State == state && st.VMs[0].Error == msg {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the manager's status of %s is %+v (%v), want vm-0 %s with %q", fn, st, err, state, msg)
		}
		time.Sleep(20 * time.Millisecond) // polling the manager's state, with a deadline
	}
}

func wantAll(t *testing.T, msg string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(msg, p) {
			t.Errorf("error %q does not say %q", msg, p)
		}
	}
}

// TestGzipBombIsRefusedByTheUnpackCap deploys an image with a layer of
// 48 MiB of zeros in some 50 KiB on a worker that unpacks 32 MiB at most:
// the function fails naming the image and the flag, its partial rootfs is
// gone, and good stays ready.
func TestGzipBombIsRefusedByTheUnpackCap(t *testing.T) {
	c := newBudgetCluster(t)
	bomb, err := imagegen.GzipBomb(4, 12<<20)
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(testenv.ServerImage(t, 1<<20), bomb)
	if err != nil {
		t.Fatal(err)
	}
	ref := c.pushImage(t, "bomb", img)
	c.deploy(t, "bomb", ref)
	msg := c.refused(t, "bomb")
	wantAll(t, msg, "image "+c.reg+"/hostile/bomb", "over the unpack limit", "at most 33554432 in all", "--max-unpack-bytes")
	if _, err := os.Stat(filepath.Join(c.run, "rootfs", "bomb")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the bomb's partial rootfs is still there (stat: %v)", err)
	}
}

// rawManifest is a manifest pushed as it is.
type rawManifest struct {
	raw []byte
	mt  types.MediaType
}

func (m rawManifest) RawManifest() ([]byte, error)        { return m.raw, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return m.mt, nil }

// TestHugeConfigIsRefusedBeforeAnyRead pushes a manifest that claims a
// config of 1 GiB (the registry stores no such blob): the function fails
// naming the size and the limit, and the registry was never asked for the
// config.
func TestHugeConfigIsRefusedBeforeAnyRead(t *testing.T) {
	c := newBudgetCluster(t)
	img := testenv.ServerImage(t, 1<<20)
	ref := c.pushImage(t, "base", img) // its layer, which the manifest names
	layers, _ := img.Layers()
	layerDesc, err := partialDescriptor(layers[0])
	if err != nil {
		t.Fatal(err)
	}
	cfgDigest := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("ab", 32)}
	m := v1.Manifest{
		SchemaVersion: 2, MediaType: types.OCIManifestSchema1,
		Config: v1.Descriptor{MediaType: types.OCIConfigJSON, Size: 1 << 30, Digest: cfgDigest},
		Layers: []v1.Descriptor{layerDesc},
	}
	raw, _ := json.Marshal(m)
	ref = strings.Replace(ref, "/base:", "/bigconfig:", 1)
	r, _ := name.ParseReference(ref, name.Insecure)
	if err := remote.Put(r, rawManifest{raw, types.OCIManifestSchema1}, remote.WithContext(c.ctx)); err != nil {
		t.Fatal(err)
	}
	c.deploy(t, "bigconfig", ref)
	msg := c.refused(t, "bigconfig")
	wantAll(t, msg, "image "+c.reg+"/hostile/bigconfig", "config "+cfgDigest.String()+" of 1073741824 bytes", "limit of 8388608", "--max-config-size")
	c.counter.mu.Lock()
	defer c.counter.mu.Unlock()
	if n := c.counter.gets[cfgDigest.String()]; n != 0 {
		t.Errorf("the registry was asked %d times for the 1 GiB config", n)
	}
}

func partialDescriptor(l v1.Layer) (v1.Descriptor, error) {
	d, err := l.Digest()
	if err != nil {
		return v1.Descriptor{}, err
	}
	size, err := l.Size()
	if err != nil {
		return v1.Descriptor{}, err
	}
	mt, err := l.MediaType()
	return v1.Descriptor{MediaType: mt, Size: size, Digest: d}, err
}

// TestTOCClaimingAHugeChunkIsRefused deploys a lazy image whose TOC puts
// its one chunk 65 MiB before the TOC, over the default span limit: the
// mount is refused from the TOC alone, without fetching the chunk.
func TestTOCClaimingAHugeChunkIsRefused(t *testing.T) {
	c := newBudgetCluster(t)
	add, err := imagegen.HugeChunk(lazy.DefaultMaxChunkSpan + 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.Append(empty.Image, add)
	if err != nil {
		t.Fatal(err)
	}
	ref := c.pushImage(t, "hugechunk", img)
	c.counter.mu.Lock()
	c.counter.bytes = map[string]int64{}
	c.counter.mu.Unlock()
	c.deploy(t, "hugechunk", ref)
	msg := c.refused(t, "hugechunk")
	wantAll(t, msg, "image "+c.reg+"/hostile/hugechunk", "over the worker's limit", `file "f"`, fmt.Sprintf("at most %d allowed", lazy.DefaultMaxChunkSpan), "--max-chunk-span")
	d, _ := add.Layer.Digest()
	c.counter.mu.Lock()
	defer c.counter.mu.Unlock()
	if n := c.counter.bytes[d.String()]; n > 4<<20 {
		t.Errorf("the registry sent %d bytes of the layer, want only its TOC's blocks", n)
	}
}

// TestPasswdSymlinkToTheHostIsNotRead deploys images whose /etc/passwd is a
// symbolic link to a host file that names their user, unpacked and lazy:
// had the worker followed it, the user would resolve and the function
// start; it fails instead, naming the image's /etc/passwd.
func TestPasswdSymlinkToTheHostIsNotRead(t *testing.T) {
	c := newBudgetCluster(t)
	hostFile := filepath.Join(t.TempDir(), "passwd")
	if err := os.WriteFile(hostFile, []byte("intruder:x:0:0::/:/app/server\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	tw.WriteHeader(&tar.Header{Name: "etc/passwd", Typeflag: tar.TypeSymlink, Linkname: hostFile, Mode: 0o777})
	tw.Close()
	layer, err := tarball.LayerFromReader(bytes.NewReader(b.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(testenv.ServerImage(t, 1<<20), layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Config.User = "intruder"
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	plain := c.pushImage(t, "passwd", img)
	lazyRef := c.reg + "/hostile/passwd:lazy"
	if _, err := convert.Convert(c.ctx, plain, lazyRef, convert.WithCompressionLevel(1)); err != nil {
		t.Fatal(err)
	}
	for fn, ref := range map[string]string{"passwd-plain": plain, "passwd-lazy": lazyRef} {
		c.deploy(t, fn, ref)
		msg := c.refused(t, fn)
		wantAll(t, msg, "user \"intruder\"", "the image's /etc/passwd")
	}
}

// TestRunningFunctionsCountInTheCache: a running function's unpacked rootfs
// and its log at the limit are reserved in the cache's budget, and given
// back when the function is released from the VM.
func TestRunningFunctionsCountInTheCache(t *testing.T) {
	c := newBudgetCluster(t)
	var rootfs int64
	err := filepath.WalkDir(filepath.Join(c.run, "rootfs", "good"), func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			rootfs += fi.Size()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.w.cache.Stats().Reserved, rootfs+c.w.cfg.Limits.MaxLogSize; got != want {
		t.Errorf("the cache reserves %d bytes for good, want %d (rootfs %d, log %d)", got, want, rootfs, c.w.cfg.Limits.MaxLogSize)
	}
	if err := c.mgr.Release(c.ctx, "good", "vm-0"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for c.w.cache.Stats().Reserved != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the cache still reserves %d bytes after good was released", c.w.cache.Stats().Reserved)
		}
		time.Sleep(20 * time.Millisecond) // polling the worker's state, with a deadline
	}
}
