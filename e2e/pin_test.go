package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/imagegen"
	"github.com/faasnet/faasnet/internal/testenv"
	"github.com/faasnet/faasnet/peer"
	"github.com/faasnet/faasnet/pki"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// rogueParent is a VM that tells its children another image's manifest: a
// real peer server, honest about the bytes of the image it serves, which is
// not the one the manager pinned. It records what it was asked.
type rogueParent struct {
	blobs map[string][]byte // the other image's blobs, manifest included
	desc  peer.Descriptor   // the other image's manifest

	mu       sync.Mutex
	resolves int
	served   []string
}

func newRogueParent(t *testing.T, img v1.Image) *rogueParent {
	t.Helper()
	blobs, m := testenv.ImageBlobs(t, img)
	r := &rogueParent{blobs: blobs, desc: peer.Descriptor{Digest: m.Digest.String(), Size: m.Size, MediaType: string(m.MediaType)}}
	return r
}

func (r *rogueParent) Resolve(ctx context.Context, image string) (peer.Descriptor, error) {
	r.mu.Lock()
	r.resolves++
	r.mu.Unlock()
	return r.desc, nil
}

func (r *rogueParent) Open(ctx context.Context, digest string) (peer.Blob, func(), error) {
	b, ok := r.blobs[digest]
	if !ok {
		return nil, nil, peer.ErrNotFound
	}
	r.mu.Lock()
	r.served = append(r.served, digest)
	r.mu.Unlock()
	return memBlob(b), func() {}, nil
}

type memBlob []byte

func (b memBlob) Size() int64 { return int64(len(b)) }
func (b memBlob) Reader(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(b[off : off+n])), nil
}

// TestAttackRogueParentResolvesAnotherImage: a rogue VM, root of a
// function's tree, answers its child's resolve with another image's
// manifest. The child (a real worker process) refuses it and fetches none
// of it, counts and logs the parent, gets the image from the registry, and
// serves the pinned manifest to its runtime.
func TestAttackRogueParentResolvesAnotherImage(t *testing.T) {
	reg := testenv.StartRegistry(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	push := func(spec imagegen.Spec, ref string) v1.Image {
		img, err := imagegen.Image(spec)
		if err != nil {
			t.Fatal(err)
		}
		if err := imagegen.Push(ctx, img, ref); err != nil {
			t.Fatal(err)
		}
		return img
	}
	ref := reg + "/attack/app:v1"
	img := push(imagegen.Spec{TotalSize: 4 << 20, Layers: 2, Seed: 12}, ref)
	other := push(imagegen.Spec{TotalSize: 3 << 20, Layers: 2, Seed: 13}, reg+"/attack/other:v1")
	pinned, _ := img.Digest()

	mgr := startManager(t, "--vm-timeout", "1h")
	client := mgr.admin(t)
	// The rogue is an enrolled VM: its certificate is genuine, its answers
	// are not.
	rogueCert := mgr.enroll(t, "rogue")
	rogue := newRogueParent(t, other)
	mux := http.NewServeMux()
	mux.Handle(peer.PathPrefix, peer.NewServer(rogue, peer.ServerOptions{Resolver: rogue}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {})
	rogueSrv := httptest.NewUnstartedServer(mux)
	rogueSrv.TLS = pki.NewVerifier(mgr.ca, nil).PeerServer(pki.NewKeeper(rogueCert))
	// StartTLS adds httptest's own certificate unless one is set, and
	// without SNI (peers dial addresses) that one would be served.
	rogueSrv.TLS.Certificates = []tls.Certificate{rogueCert}
	rogueSrv.StartTLS()
	defer rogueSrv.Close()
	if _, err := mgr.vm(rogueCert).RegisterVM(ctx, "rogue", strings.TrimPrefix(rogueSrv.URL, "https://"), nil); err != nil {
		t.Fatal(err)
	}
	child := start(t, "child", append(mgr.workerArgs(t, "child"), "--oci-listen", "127.0.0.1:0", "--heartbeat", "200ms", "--parent-timeout", "2s")...)
	waitVMs(t, client, 2)
	def, err := client.PutFunction(ctx, "app", api.FunctionRequest{Image: ref})
	if err != nil {
		t.Fatal(err)
	}
	if def.Digest != pinned.String() {
		t.Fatalf("the manager pinned %s, the registry has %s", def.Digest, pinned)
	}
	// rogue first: it becomes the root, child its child.
	if _, err := client.Scale(ctx, "app", api.ScaleRequest{VMs: []string{"rogue", "child"}}); err != nil {
		t.Fatal(err)
	}
	waitVMReady(t, client, "app", "child", time.Minute)

	rogue.mu.Lock()
	resolves, served := rogue.resolves, rogue.served
	rogue.mu.Unlock()
	if resolves == 0 {
		t.Fatal("the child never asked the rogue parent to resolve: the test proves nothing")
	}
	if len(served) > 0 {
		t.Errorf("the child fetched blobs of the other image from the rogue parent: %v", served)
	}
	// The runtime gets the pinned manifest for the tag.
	resp, err := http.Get("http://" + child.oci + "/v2/attack/app/manifests/v1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Content-Digest") != pinned.String() {
		t.Errorf("the child's runtime endpoint answers %d with digest %q, want the pinned %s",
			resp.StatusCode, resp.Header.Get("Docker-Content-Digest"), pinned)
	}
	if n := metric(t, mgr.peerClient(rogueCert, "child"), "https://"+child.addr+"/metrics", "faasnet_worker_unpinned_manifests_total"); n < 1 {
		t.Errorf("refused resolve answers counted: %v, want at least 1", n)
	}
	if !strings.Contains(child.tail(200), "parent=rogue@") {
		t.Errorf("the child's log does not name the rogue parent:\n%s", child.tail(40))
	}
}

// waitVMReady polls the manager until vm reports fn ready.
func waitVMReady(t *testing.T, c *api.Client, fn, vm string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s, err := c.Status(context.Background(), fn)
		for _, v := range s.VMs {
			if v.VM != vm {
				continue
			}
			switch v.State {
			case api.StateReady:
				return
			case api.StateFailed:
				t.Fatalf("%s failed: %s", vm, v.Error)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after %v: %+v (%v)", vm, timeout, s, err)
		}
		time.Sleep(100 * time.Millisecond) // polling the manager, with a deadline
	}
}

// metric reads one unlabelled counter or gauge from a Prometheus text page.
func metric(t *testing.T, c *http.Client, url, name string) float64 {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			return f
		}
	}
	t.Fatalf("%s: no %s", url, name)
	return 0
}
