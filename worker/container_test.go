package worker

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/internal/testenv"
	"github.com/faasnet/faasnet/lazy"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

var (
	serverOnce sync.Once
	serverBin  []byte
	serverErr  error
)

// functionLayer is a layer with a static HTTP server at /app/server, the
// mount points runc needs, and a large file the server never reads.
func functionLayer(t *testing.T, filler int) []byte {
	t.Helper()
	serverOnce.Do(func() {
		bin := filepath.Join(os.TempDir(), fmt.Sprintf("faasnet-worker-server-%d", os.Getpid()))
		cmd := exec.Command("go", "build", "-o", bin, "../runtime/testdata/server")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			serverErr = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		serverBin, serverErr = os.ReadFile(bin)
		os.Remove(bin)
	})
	if serverErr != nil {
		t.Fatal(serverErr)
	}
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, d := range []string{"proc", "sys", "dev", "tmp", "run", "etc", "app", "data"} {
		tw.WriteHeader(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: 0o755})
	}
	add := func(name string, data []byte, mode int64) {
		tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode, Size: int64(len(data))})
		tw.Write(data)
	}
	add("app/server", serverBin, 0o755)
	big := make([]byte, filler)
	rand.NewChaCha8([32]byte{1}).Read(big)
	add("data/unused.bin", big, 0o644)
	tw.Close()
	return b.Bytes()
}

// pushFunctionImage pushes a plain image and its eStargz conversion.
func (c *cluster) pushFunctionImage(t *testing.T, filler int) (plain, lazyRef string) {
	t.Helper()
	data := functionLayer(t, filler)
	layer, err := tarball.LayerFromReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := img.ConfigFile()
	cfg.Config.Entrypoint = []string{"/app/server"}
	cfg.OS, cfg.Architecture = "linux", "amd64"
	img, _ = mutate.ConfigFile(img, cfg)
	plain = c.reg + "/fn/server:plain"
	ref, _ := name.ParseReference(plain, name.Insecure)
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	lazyRef = c.reg + "/fn/server:lazy"
	if _, err := lazy.Convert(c.ctx, plain, lazyRef); err != nil {
		t.Fatal(err)
	}
	return plain, lazyRef
}

func needContainers(t *testing.T) {
	testenv.NeedRoot(t)
	testenv.NeedTool(t, "runc")
	testenv.NeedTool(t, "fusermount3")
	if _, err := os.Stat("/dev/fuse"); err != nil {
		if testenv.InCI() {
			t.Fatalf("/dev/fuse: %v", err)
		}
		t.Skipf("no /dev/fuse: %v", err)
	}
}

func TestContainersStartLazilyThroughTheTree(t *testing.T) {
	needContainers(t)
	c := newCluster(t, time.Hour)
	plain, lazyRef := c.pushFunctionImage(t, 16<<20)
	names := []string{"vm-0", "vm-1", "vm-2"}
	run := map[string]string{}
	for _, id := range names {
		run[id] = t.TempDir()
		c.start(id, func(cfg *Config) { cfg.Containers = true; cfg.RunDir = run[id]; cfg.BlockSize = 64 << 10 })
	}
	c.waitRegistered(3)
	spec, _ := json.Marshal(api.FunctionSpec{Readiness: &api.Readiness{Path: "/healthz"}, Memory: "128MiB"})
	for fn, ref := range map[string]string{"lazy": lazyRef, "plain": plain} {
		if _, err := c.mgr.PutFunction(c.ctx, fn, api.FunctionRequest{Image: ref, Spec: spec}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.mgr.Scale(c.ctx, fn, api.ScaleRequest{VMs: names}); err != nil {
			t.Fatal(err)
		}
		c.waitReady(fn, names, 2*time.Minute)
	}
	for _, id := range names {
		for _, r := range c.workers[id].Functions() {
			switch r.Function {
			case "lazy":
				t.Logf("%s: lazy container answered after fetching %d of %d bytes (%.1f%%)", id, r.BytesBeforeReady, r.ImageBytes, 100*float64(r.BytesBeforeReady)/float64(r.ImageBytes))
				if r.BytesBeforeReady*2 > r.ImageBytes {
					t.Errorf("%s: the lazy container needed %d of %d bytes before it answered", id, r.BytesBeforeReady, r.ImageBytes)
				}
				if r.Phases["mount"].IsZero() || r.Phases["started"].IsZero() {
					t.Errorf("%s: phases %v lack mount or started", id, r.Phases)
				}
			case "plain":
				if r.BytesBeforeReady < r.ImageBytes {
					t.Errorf("%s: plain image ready with %d of %d bytes", id, r.BytesBeforeReady, r.ImageBytes)
				}
			}
		}
	}
	// Releasing stops the containers and unmounts.
	for _, fn := range []string{"lazy", "plain"} {
		for _, id := range names {
			if err := c.mgr.Release(c.ctx, fn, id); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, id := range names {
		w := c.workers[id]
		deadline := time.Now().Add(30 * time.Second)
		for {
			out, _ := exec.Command("runc", "--root", w.runDir("runc"), "list", "-q").Output()
			mounted, _ := lazy.Mounted(w.runDir("mnt", "lazy"))
			w.mu.Lock()
			n := len(w.fns)
			w.mu.Unlock()
			if strings.TrimSpace(string(out)) == "" && !mounted && n == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s after release: containers %q, mounted %v, functions %d", id, out, mounted, n)
			}
			time.Sleep(50 * time.Millisecond) // polling the system's state, with a deadline
		}
	}
}
