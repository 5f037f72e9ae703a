package swarm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/faasnet/faasnet/bwlimit"
	"github.com/faasnet/faasnet/imagegen"
	"github.com/faasnet/faasnet/upstream"
)

// testRegistry is ggcr's in-memory registry on 127.0.0.1 that counts the
// blob bytes it serves.
type testRegistry struct {
	host      string
	blobBytes atomic.Int64
}

func newTestRegistry(t testing.TB) *testRegistry {
	t.Helper()
	reg := &testRegistry{}
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			w = &countingWriter{ResponseWriter: w, n: &reg.blobBytes}
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	reg.host = strings.TrimPrefix(srv.URL, "http://")
	return reg
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// push generates the image of spec and pushes it as repo:tag; it returns
// the reference and the image.
func (r *testRegistry) push(t testing.TB, repo string, spec imagegen.Spec) (string, v1.Image) {
	t.Helper()
	img, err := imagegen.Image(spec)
	if err != nil {
		t.Fatal(err)
	}
	ref := fmt.Sprintf("%s/%s:v1", r.host, repo)
	if err := imagegen.Push(testContext(t), img, ref); err != nil {
		t.Fatal(err)
	}
	return ref, img
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// quietLogger keeps test output readable; failures say what went wrong.
var quietLogger = slog.New(slog.NewTextHandler(io.Discard, nil))

// nextIP hands out loopback addresses, one per emulated host.
var nextIP atomic.Int32

func listen(t testing.TB) net.Listener {
	t.Helper()
	ip := fmt.Sprintf("127.0.%d.%d", 20+nextIP.Load()/200, 10+nextIP.Add(1)%200)
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// cluster is a tracker, an origin and agents, closed at the end of the
// test.
type cluster struct {
	reg     *testRegistry
	tracker *Tracker
	origin  *Origin
	agents  []*Agent
}

// limits are the bandwidth limits of a cluster, bytes per second (0 is
// unlimited).
type limits struct {
	originUp  int64
	agentUp   int64
	agentDown int64
}

func newCluster(t testing.TB, reg *testRegistry, n int, cfg Config, lim limits) *cluster {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger
	}
	c := &cluster{reg: reg}
	tln := listen(t)
	c.tracker = NewTracker(tln, cfg)
	t.Cleanup(func() { c.tracker.Close() })
	up := upstream.New(upstream.WithKeychain(authn.NewMultiKeychain()))
	o, err := NewOrigin(listen(t), t.TempDir(), up, tln.Addr().String(), bwlimit.New(lim.originUp), cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.origin = o
	t.Cleanup(func() { o.Close() })
	for range n {
		c.addAgent(t, cfg, lim)
	}
	return c
}

func (c *cluster) addAgent(t testing.TB, cfg Config, lim limits) *Agent {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger
	}
	a, err := NewAgent(listen(t), t.TempDir(), c.tracker.Addr(), bwlimit.New(lim.agentUp), bwlimit.New(lim.agentDown), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	c.agents = append(c.agents, a)
	return a
}

// checkBlobs checks that agent a holds every blob of img, byte for byte.
func checkBlobs(t testing.TB, a *Agent, img v1.Image) {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		rc, err := a.OpenBlob(d.Digest.String())
		if err != nil {
			t.Errorf("agent %s: %v", a.ID(), err)
			continue
		}
		h := sha256.New()
		n, err := io.Copy(h, rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != d.Digest.String() || n != d.Size {
			t.Errorf("agent %s: blob %s: got %d bytes with digest %s", a.ID(), d.Digest, n, got)
		}
	}
}

// imageBytes returns the total size of img's config and layers.
func imageBytes(t testing.TB, img v1.Image) int64 {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	total := m.Config.Size
	for _, l := range m.Layers {
		total += l.Size
	}
	return total
}

// close closes every component of the cluster and checks that none of
// their goroutines outlives Close.
func (c *cluster) close(t testing.TB) {
	t.Helper()
	for _, a := range c.agents {
		if err := a.Close(); err != nil {
			t.Errorf("closing agent: %v", err)
		}
	}
	if err := c.origin.Close(); err != nil {
		t.Errorf("closing origin: %v", err)
	}
	if err := c.tracker.Close(); err != nil {
		t.Errorf("closing tracker: %v", err)
	}
	buf := make([]byte, 1<<20)
	stacks := strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n")
	for _, s := range stacks[1:] { // the first is this goroutine
		if strings.Contains(s, "swarm.(*") || strings.Contains(s, "swarm.(*group).spawn") {
			t.Errorf("goroutine left running after Close:\n%s", s)
		}
	}
}
