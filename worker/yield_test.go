package worker

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/digest"
	"github.com/faasnet/faasnet/peer"
	"github.com/google/go-containerregistry/pkg/name"
)

// yieldParent is a tree parent serving fixed blobs; demanded reads of the
// gated blob wait until the test opens the gate. It counts the requests
// per blob, demanded or streamed.
type yieldParent struct {
	addr  string
	blobs map[string][]byte
	gated string
	gate  chan struct{}
	open  func() // opens the gate; again does nothing

	mu       sync.Mutex
	demanded map[string]int
	streamed map[string]int
	changed  chan struct{} // closed and replaced at every request
}

func newYieldParent(t *testing.T, blobs map[string][]byte, gated string) *yieldParent {
	t.Helper()
	p := &yieldParent{blobs: blobs, gated: gated, gate: make(chan struct{}),
		demanded: map[string]int{}, streamed: map[string]int{}, changed: make(chan struct{})}
	src := sourceFunc(func(ctx context.Context, d string) (peer.Blob, func(), error) {
		data, ok := p.blobs[d]
		if !ok {
			return nil, nil, peer.ErrNotFound
		}
		return yieldBlob{p: p, d: d, data: data}, func() {}, nil
	})
	mux := http.NewServeMux()
	mux.Handle(peer.PathPrefix, peer.NewServer(src, peer.ServerOptions{Logger: testLogger()}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {})
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	p.addr = strings.TrimPrefix(hs.URL, "http://")
	p.open = sync.OnceFunc(func() { close(p.gate) })
	return p
}

func (p *yieldParent) count(d string, demand bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if demand {
		p.demanded[d]++
	} else {
		p.streamed[d]++
	}
	close(p.changed)
	p.changed = make(chan struct{})
}

// requests returns the demanded and streamed requests for d so far, and a
// channel closed at the next request.
func (p *yieldParent) requests(d string) (demanded, streamed int, next <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.demanded[d], p.streamed[d], p.changed
}

type yieldBlob struct {
	p    *yieldParent
	d    string
	data []byte
}

func (b yieldBlob) Size() int64 { return int64(len(b.data)) }
func (b yieldBlob) Reader(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	demand := peer.IsDemand(ctx)
	b.p.count(b.d, demand)
	if demand && b.d == b.p.gated {
		select {
		case <-b.p.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return io.NopCloser(bytes.NewReader(b.data[off : off+n])), nil
}

func randomBlob(seed uint64, n int) (string, []byte) {
	data := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	return digest.Of(data).String(), data
}

// yieldWorker is a worker (not served: no manager) hosting function f
// under parent p, with a lazy layer gated and a blob streamed: streamedLazy
// says whether the streamed blob is a lazy layer too or one a start waits
// for whole (a config).
func yieldWorker(t *testing.T, p *yieldParent, stall time.Duration, gated, streamed string, streamedLazy bool) *Worker {
	t.Helper()
	w := newWorker(t, Config{ID: "child", BlockSize: 64 << 10, ParentTimeout: time.Hour, StallTimeout: stall})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { // before the cache closes (newWorker's cleanup)
		p.open()
		cancel()
		w.bg.Wait()
	})
	repo, err := name.NewRepository("127.0.0.1:1/test/app")
	if err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.ctx = ctx
	f := &function{name: "f", parentChanged: make(chan struct{}),
		a: api.Assignment{Function: "f", Parent: &api.Peer{VM: "parent", Addr: p.addr}}}
	w.fns["f"] = f
	layer := w.learn(f, gated, int64(len(p.blobs[gated])), "application/vnd.oci.image.layer.v1.tar+gzip", false, repo)
	layer.hold, layer.lazy = true, true
	other := w.learn(f, streamed, int64(len(p.blobs[streamed])), "application/vnd.oci.image.config.v1+json", false, repo)
	other.lazy = streamedLazy
	return w
}

// demandGated starts a demand of the gated layer's first bytes, as a lazy
// container's read, and returns once the parent holds it; the demand's
// error arrives on the channel when the gate opens.
func demandGated(t *testing.T, w *Worker, p *yieldParent) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- w.demand(context.Background(), p.gated, 0, 4096) }()
	for {
		n, _, next := p.requests(p.gated)
		if n > 0 {
			return done
		}
		select {
		case <-next:
		case <-time.After(30 * time.Second):
			t.Fatal("the demand never reached the parent")
		}
	}
}

// A config (a blob a start waits for whole) comes down while a demand is in
// flight: with stripe trees, a child whose config came down another stripe
// demands layer blocks from this VM before this VM has its own config, and
// the config must not wait for those demands to end (it waited for the
// whole subtree's reads, then for the stall timeout).
func TestConfigDoesNotYieldToDemands(t *testing.T) {
	layerD, layer := randomBlob(1, 256<<10)
	cfgD, cfg := randomBlob(2, 150<<10)
	p := newYieldParent(t, map[string][]byte{layerD: layer, cfgD: cfg}, layerD)
	// No stall timeout to rescue a stuck stream within the test.
	w := yieldWorker(t, p, time.Hour, layerD, cfgD, false)
	done := demandGated(t, w, p)

	w.mu.Lock()
	w.ensureJob(cfgD)
	w.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, err := w.cache.Acquire(cfgD, int64(len(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Release()
	if err := b.Wait(ctx); err != nil {
		t.Fatalf("the config did not come down while a demand was in flight: %v", err)
	}
	p.open()
	if err := <-done; err != nil {
		t.Fatalf("the demand: %v", err)
	}
}

// A lazy layer's background stream paused for a demand that lasts longer
// than the stall timeout is not a stall: the stream resumes once the demand
// is done, and the parent is asked for it once (a stream cut as stalled was
// asked for again, from the parent or the registry).
func TestStreamPausedForDemandIsNotAStall(t *testing.T) {
	const stall = 100 * time.Millisecond
	gatedD, gated := randomBlob(3, 256<<10)
	layerD, layer := randomBlob(4, 256<<10)
	p := newYieldParent(t, map[string][]byte{gatedD: gated, layerD: layer}, gatedD)
	w := yieldWorker(t, p, stall, gatedD, layerD, true)
	// A demand in flight, as a container's read waiting for a slow parent
	// (a real one would stall after the stall timeout itself).
	w.beginDemand()
	w.mu.Lock()
	w.ensureJob(layerD)
	w.mu.Unlock()
	// Hold the demand for many stall timeouts, or until the stream is
	// asked for a second time (the stall this test is about).
	bound := time.After(20 * stall)
wait:
	for {
		_, n, next := p.requests(layerD)
		if n > 1 {
			break
		}
		select {
		case <-next:
		case <-bound:
			break wait
		}
	}
	if _, n, _ := p.requests(layerD); n == 0 {
		t.Error("the layer was not streamed at all while the demand was in flight")
	}
	w.endDemand()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, err := w.cache.Acquire(layerD, int64(len(layer)))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Release()
	if err := b.Wait(ctx); err != nil {
		t.Fatalf("the streamed layer: %v", err)
	}
	if _, n, _ := p.requests(layerD); n != 1 {
		t.Errorf("the parent was asked for the paused stream %d times, want once: the pause counted as a stall", n)
	}
}
