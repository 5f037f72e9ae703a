package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/imagegen"
	"github.com/faasnet/faasnet/internal/testenv"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// setup starts a real docker-registry behind a counting proxy, pushes a
// generated image through it, and starts a manager and n workers as
// processes. It returns the image reference (through the proxy).
type env struct {
	t       *testing.T
	ref     string
	img     v1.Image
	counter *testenv.Counter
	proxy   string
	mgr     *manager
	client  *api.Client
	workers map[string]*proc
}

func setup(t *testing.T, n int, spec imagegen.Spec, workerArgs ...string) *env {
	t.Helper()
	reg := testenv.StartRegistry(t)
	proxy, counter := testenv.CountingProxy(t, reg)
	img, err := imagegen.Image(spec)
	if err != nil {
		t.Fatal(err)
	}
	ref := proxy + "/e2e/app:v1"
	if err := imagegen.Push(context.Background(), img, ref); err != nil {
		t.Fatal(err)
	}
	counter.Reset()
	e := &env{t: t, ref: ref, img: img, counter: counter, proxy: proxy, workers: map[string]*proc{}}
	e.mgr = startManager(t, "--vm-timeout", "2s")
	e.client = e.mgr.admin(t)
	for i := range n {
		id := fmt.Sprintf("vm-%d", i)
		args := append(e.mgr.workerArgs(t, id), "--oci-listen", "127.0.0.1:0", "--heartbeat", "200ms", "--parent-timeout", "3s", "--stall-timeout", "3s")
		args = append(args, workerArgs...)
		e.workers[id] = start(t, id, args...)
	}
	return e
}

// blobs maps every blob digest of the image (config and layers) to its size.
func (e *env) blobs() map[string]int64 {
	out := map[string]int64{}
	layers, _ := e.img.Layers()
	for _, l := range layers {
		d, _ := l.Digest()
		s, _ := l.Size()
		out[d.String()] = s
	}
	cfg, _ := e.img.ConfigName()
	raw, _ := e.img.RawConfigFile()
	out[cfg.String()] = int64(len(raw))
	return out
}

func (e *env) scaleAll() {
	e.t.Helper()
	ctx := context.Background()
	if _, err := e.client.PutFunction(ctx, "app", api.FunctionRequest{Image: e.ref}); err != nil {
		e.t.Fatal(err)
	}
	var names []string
	for id := range e.workers {
		names = append(names, id)
	}
	// Workers register within a heartbeat of starting; scale once all have.
	deadline := time.Now().Add(10 * time.Second)
	for {
		vms, err := e.client.VMs(ctx)
		if err == nil && len(vms) == len(names) {
			break
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("only %d of %d workers registered", len(vms), len(names))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := e.client.Scale(ctx, "app", api.ScaleRequest{Count: len(names)}); err != nil {
		e.t.Fatal(err)
	}
}

func TestSevenWorkersThreeLevelsRealRegistry(t *testing.T) {
	e := setup(t, 7, imagegen.Spec{TotalSize: 24 << 20, Layers: 4, Seed: 7},
		"--download-limit", "16MiB/s", "--upload-limit", "16MiB/s", "--block-size", "256KiB")
	e.scaleAll()
	waitStatus(t, e.client, "app", 7, 2*time.Minute)

	tree, err := e.client.Tree(context.Background(), "app")
	if err != nil {
		t.Fatal(err)
	}
	if tree.Height != 2 || len(tree.Nodes) != 7 {
		t.Fatalf("want a 3-level tree of 7 VMs, got height %d with %d VMs", tree.Height, len(tree.Nodes))
	}
	// The registry served every blob exactly once: only the root asked.
	counts := e.counter.Blobs()
	for d, size := range e.blobs() {
		c := counts[d]
		if c.Bytes != size {
			t.Errorf("registry sent %d bytes of %s in %d GETs, want its %d bytes once", c.Bytes, d, c.Gets, size)
		}
	}

	// Pull through a leaf's OCI endpoint with skopeo and containerd: same
	// digests, and the registry is not asked again.
	var leaf, leafPeer string
	for _, n := range tree.Nodes {
		if n.Depth == tree.Height {
			leaf, leafPeer = e.workers[n.VM].oci, n.Addr
			break
		}
	}
	if leaf == "" {
		t.Fatal("the leaf logged no OCI endpoint")
	}
	before := e.counter.TotalBytes()
	wantManifest, _ := e.img.Digest()
	leafRef := leaf + "/e2e/app:v1"

	sk := testenv.Skopeo(t)
	got, err := sk.Inspect(leafRef)
	if err != nil {
		t.Fatal(err)
	}
	if got != wantManifest.String() {
		t.Errorf("skopeo inspect through the leaf: %s, want %s", got, wantManifest)
	}
	if got, err := sk.Inspect(leafPeer + "/e2e/app:v1"); err == nil {
		t.Errorf("skopeo inspect through the leaf's peer listener: %s, want a failure", got)
	}
	dir := t.TempDir()
	if err := sk.Copy("docker://"+leafRef, "dir:"+dir); err != nil {
		t.Fatal(err)
	}
	for d := range e.blobs() {
		data, err := os.ReadFile(filepath.Join(dir, strings.TrimPrefix(d, "sha256:")))
		if err != nil {
			t.Errorf("skopeo copy lacks blob %s: %v", d, err)
			continue
		}
		sum := sha256.Sum256(data)
		if "sha256:"+hex.EncodeToString(sum[:]) != d {
			t.Errorf("skopeo got wrong bytes for %s", d)
		}
	}

	testenv.NeedRoot(t)
	ctrd := testenv.StartContainerd(t)
	if err := ctrd.Mirror(e.proxy, leaf); err != nil {
		t.Fatal(err)
	}
	digest, err := ctrd.Pull(e.ref)
	if err != nil {
		t.Fatal(err)
	}
	if digest != wantManifest.String() {
		t.Errorf("containerd pulled %s, want %s", digest, wantManifest)
	}
	content, err := ctrd.ContentDigests()
	if err != nil {
		t.Fatal(err)
	}
	for d := range e.blobs() {
		if !strings.Contains(strings.Join(content, " "), d) {
			t.Errorf("containerd content store lacks %s", d)
		}
	}
	if after := e.counter.TotalBytes(); after != before {
		t.Errorf("pulls through the leaf made the registry send %d more bytes", after-before)
	}
}

func TestKillInteriorWorkerMidTransfer(t *testing.T) {
	e := setup(t, 7, imagegen.Spec{TotalSize: 24 << 20, Layers: 3, Seed: 8},
		"--download-limit", "4MiB/s", "--upload-limit", "8MiB/s", "--block-size", "256KiB")
	e.scaleAll()
	ctx := context.Background()
	tree, _ := e.client.Tree(ctx, "app")
	var victim string
	for _, n := range tree.Nodes {
		if n.Depth == 1 {
			victim = n.VM
			break
		}
	}
	// Wait until the victim is mid-transfer, then kill -9 it.
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, _ := e.client.Status(ctx, "app")
		var mine api.VMStatus
		for _, v := range s.VMs {
			if v.VM == victim {
				mine = v
			}
		}
		if mine.State == api.StateReady {
			t.Fatal("the victim finished before it could be killed; slow the transfer down")
		}
		if mine.BytesFetched > 4<<20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("victim made no progress: %+v", mine)
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.workers[victim].kill9(t)
	s := waitStatus(t, e.client, "app", 6, 3*time.Minute)
	for _, v := range s.VMs {
		if v.VM == victim {
			t.Errorf("killed VM %s still in the tree", victim)
		}
		if v.BytesFetched < v.ImageBytes {
			t.Errorf("%s ready with %d of %d bytes", v.VM, v.BytesFetched, v.ImageBytes)
		}
	}
}
