package swarm

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/faasnet/faasnet/imagegen"
	"github.com/faasnet/faasnet/upstream"
)

// pullAll makes every agent pull ref at once and returns their stats.
func pullAll(t testing.TB, agents []*Agent, ref string) []Stats {
	t.Helper()
	ctx := testContext(t)
	stats := make([]Stats, len(agents))
	errs := make([]error, len(agents))
	var wg sync.WaitGroup
	for i, a := range agents {
		wg.Go(func() { stats[i], errs[i] = a.Pull(ctx, ref) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("agent %d: %v", i, err)
		}
	}
	return stats
}

// TestPullConcurrent: eight agents pull one image at once through one
// origin whose upload is slow, so they must trade pieces among themselves.
func TestPullConcurrent(t *testing.T) {
	reg := newTestRegistry(t)
	ref, img := reg.push(t, "fn/concurrent", imagegen.Spec{TotalSize: 4 << 20, Layers: 3, Seed: 1})
	total := imageBytes(t, img)
	cfg := Config{PieceSize: 64 << 10, AnnounceInterval: 100 * time.Millisecond, Seed: 1}
	c := newCluster(t, reg, 8, cfg, limits{originUp: 4 << 20, agentUp: 8 << 20, agentDown: 8 << 20})

	stats := pullAll(t, c.agents, ref)

	var fromPeers, uploaded int64
	for i, a := range c.agents {
		checkBlobs(t, a, img)
		s := stats[i]
		if s.Bytes != total || s.Blobs != 4 {
			t.Errorf("agent %d: stats say %d blobs of %d bytes, image has 4 of %d", i, s.Blobs, s.Bytes, total)
		}
		if s.FromPeers+s.FromOrigin < total {
			t.Errorf("agent %d received %d+%d bytes, less than the image's %d", i, s.FromPeers, s.FromOrigin, total)
		}
		if s.BadPieces != 0 {
			t.Errorf("agent %d: %d bad pieces among honest peers", i, s.BadPieces)
		}
		fromPeers += s.FromPeers
		uploaded += a.Uploaded()
		t.Logf("agent %d: %+v", i, s)
	}
	if fromPeers == 0 || uploaded == 0 {
		t.Errorf("agents received %d bytes from each other and uploaded %d: no swarming", fromPeers, uploaded)
	}
	if got := c.origin.RegistryBytes(); got != total {
		t.Errorf("origin fetched %d bytes from the registry, want each blob once: %d", got, total)
	}
	if got := reg.blobBytes.Load(); got != total {
		t.Errorf("registry served %d blob bytes, want each blob once: %d", got, total)
	}
	// Once everything stopped, every byte an agent received, some peer
	// sent.
	c.close(t)
	var received, sent int64
	for _, a := range c.agents {
		received += a.n.stats.fromPeers.Load() + a.n.stats.fromOrigin.Load()
		sent += a.Uploaded()
	}
	if sent += c.origin.Egress(); received > sent {
		t.Errorf("agents received %d bytes, peers sent %d", received, sent)
	}
}

// TestPullAgain: a second pull of a complete image moves no bytes.
func TestPullAgain(t *testing.T) {
	reg := newTestRegistry(t)
	ref, img := reg.push(t, "fn/again", imagegen.Spec{TotalSize: 1 << 20, Layers: 2, Seed: 2})
	c := newCluster(t, reg, 1, Config{PieceSize: 64 << 10, Seed: 2}, limits{})
	a := c.agents[0]
	first, err := a.Pull(testContext(t), ref)
	if err != nil {
		t.Fatal(err)
	}
	if first.FromOrigin < imageBytes(t, img) {
		t.Errorf("first pull got %d bytes from the origin, want the image's %d", first.FromOrigin, imageBytes(t, img))
	}
	second, err := a.Pull(testContext(t), ref)
	if err != nil {
		t.Fatal(err)
	}
	if second.FromOrigin+second.FromPeers != 0 {
		t.Errorf("second pull received %+v, want nothing", second)
	}
	checkBlobs(t, a, img)
}

// TestCorruptPeer: a peer that serves bad pieces is caught, dropped, and
// its pieces are fetched again from the origin.
func TestCorruptPeer(t *testing.T) {
	reg := newTestRegistry(t)
	ref, img := reg.push(t, "fn/corrupt", imagegen.Spec{TotalSize: 1 << 20, Layers: 1, Seed: 3})
	cfg := Config{PieceSize: 32 << 10, AnnounceInterval: 100 * time.Millisecond, Seed: 3}
	// The origin is slow, so the liar (a seeder, handed out first) is
	// surely asked for pieces before the origin has sent them all.
	lim := limits{originUp: 2 << 20}
	c := newCluster(t, reg, 1, cfg, lim)
	liar := c.agents[0]
	if _, err := liar.Pull(testContext(t), ref); err != nil {
		t.Fatal(err)
	}
	liar.n.corruptUploads.Store(true)

	honest := c.addAgent(t, cfg, lim)
	s, err := honest.Pull(testContext(t), ref)
	if err != nil {
		t.Fatal(err)
	}
	checkBlobs(t, honest, img)
	if s.BadPieces == 0 {
		t.Errorf("honest agent saw no bad piece: %+v", s)
	}
	if s.FromOrigin < imageBytes(t, img) {
		t.Errorf("honest agent got %d bytes from the origin, want all %d: every good piece comes from there", s.FromOrigin, imageBytes(t, img))
	}
	t.Logf("%+v", s)
}

func TestPullUnknownImage(t *testing.T) {
	reg := newTestRegistry(t)
	c := newCluster(t, reg, 1, Config{}, limits{})
	_, err := c.agents[0].Pull(testContext(t), reg.host+"/fn/missing:v1")
	if err == nil {
		t.Fatal("pulling a missing image succeeded")
	}
	t.Log(err)
}

// TestCloseDuringPull: closing an agent ends its pull with an error.
func TestCloseDuringPull(t *testing.T) {
	reg := newTestRegistry(t)
	ref, _ := reg.push(t, "fn/close", imagegen.Spec{TotalSize: 2 << 20, Layers: 1, Seed: 4})
	// 64 KiB/s: the pull would take half a minute.
	c := newCluster(t, reg, 1, Config{PieceSize: 64 << 10}, limits{agentDown: 64 << 10})
	a := c.agents[0]
	a.n.testPieceDone = make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		_, err := a.Pull(context.Background(), ref)
		done <- err
	}()
	select {
	case <-a.n.testPieceDone: // the download is under way
	case err := <-done:
		t.Fatalf("pull ended before Close: %v", err)
	}
	a.Close()
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("pull ended with %v, want %v", err, ErrClosed)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("pull still running 10 s after Close")
	}
	if _, err := a.Pull(testContext(t), ref); !errors.Is(err, ErrClosed) {
		t.Errorf("pull after Close: %v, want %v", err, ErrClosed)
	}
}

// TestPullCancel: cancelling the context ends the wait.
func TestPullCancel(t *testing.T) {
	reg := newTestRegistry(t)
	ref, _ := reg.push(t, "fn/cancel", imagegen.Spec{TotalSize: 2 << 20, Layers: 1, Seed: 5})
	c := newCluster(t, reg, 1, Config{PieceSize: 64 << 10}, limits{agentDown: 64 << 10})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.agents[0].Pull(ctx, ref); !errors.Is(err, context.Canceled) {
		t.Errorf("pull with a cancelled context: %v, want %v", err, context.Canceled)
	}
}

// TestTwoOrigins: the tracker splits blobs between origins; each blob is
// still fetched from the registry once.
func TestTwoOrigins(t *testing.T) {
	reg := newTestRegistry(t)
	ref, img := reg.push(t, "fn/two", imagegen.Spec{TotalSize: 1 << 20, Layers: 8, Seed: 6})
	cfg := Config{PieceSize: 64 << 10, AnnounceInterval: 100 * time.Millisecond, Logger: quietLogger}
	c := newCluster(t, reg, 3, cfg, limits{})
	up := upstream.New(upstream.WithKeychain(authn.NewMultiKeychain()))
	o2, err := NewOrigin(listen(t), t.TempDir(), up, c.tracker.Addr(), nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer o2.Close()
	pullAll(t, c.agents, ref)
	for _, a := range c.agents {
		checkBlobs(t, a, img)
	}
	total := imageBytes(t, img)
	if got := c.origin.RegistryBytes() + o2.RegistryBytes(); got != total {
		t.Errorf("origins fetched %d+%d bytes, want each blob once: %d", c.origin.RegistryBytes(), o2.RegistryBytes(), total)
	}
	if got := reg.blobBytes.Load(); got != total {
		t.Errorf("registry served %d blob bytes, want %d", got, total)
	}
}
