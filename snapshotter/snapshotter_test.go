package snapshotter

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"

	"github.com/faasnet/faasnet/internal/testenv"
)

// open starts a snapshotter on root reading through the worker at addr,
// without serving (the tests call its snapshots.Snapshotter directly, as
// containerd's proxy does through snapshotservice).
func open(t *testing.T, root, addr string) *Snapshotter {
	t.Helper()
	s, err := New(t.Context(), Config{Root: root, Socket: filepath.Join(root, "s.sock"), Worker: addr, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// onlyMount returns the one lazy mount s holds.
func onlyMount(t *testing.T, s *Snapshotter) string {
	t.Helper()
	s.fs.mu.Lock()
	defer s.fs.mu.Unlock()
	if len(s.fs.mounts) != 1 {
		t.Fatalf("%d lazy mounts, want 1", len(s.fs.mounts))
	}
	for mp := range s.fs.mounts {
		return mp
	}
	return ""
}

// TestRemoteSnapshotThroughWorkerAndRestart prepares a layer as CRI does
// (target label, CRI's labels): the snapshotter mounts it lazily and
// answers "already exists", its files read through the worker. Closed and
// opened again on the same root, it keeps the snapshot and mounts it again.
// With the worker gone, a layer cannot be mounted and the error says it was
// the worker; the snapshotter still starts, and the snapshot is reported
// unavailable rather than served from anywhere else.
func TestRemoteSnapshotThroughWorkerAndRestart(t *testing.T) {
	testenv.NeedFUSE(t)
	fw := newFakeWorker(t, map[string]string{"app/hello.txt": "hello from the tree\n"})
	srv := httptest.NewServer(fw)
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	root := t.TempDir()
	ctx := context.Background()

	labels := fw.labels("registry.test:5000")
	prepLabels := maps.Clone(labels)
	prepLabels["containerd.io/snapshot.ref"] = "layer-1"

	s := open(t, root, addr)
	_, err := s.sn.Prepare(ctx, "extract-1", "", snapshots.WithLabels(prepLabels))
	if !errdefs.IsAlreadyExists(err) {
		t.Fatalf("Prepare with a target = %v, want already exists (a remote snapshot)", err)
	}
	info, err := s.sn.Stat(ctx, "layer-1")
	if err != nil || info.Kind != snapshots.KindCommitted {
		t.Fatalf("Stat(layer-1) = %+v, %v; want a committed snapshot", info, err)
	}
	readHello := func(s *Snapshotter) {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(onlyMount(t, s), "app", "hello.txt"))
		if err != nil || string(b) != "hello from the tree\n" {
			t.Fatalf("reading the lazy layer: %q, %v", b, err)
		}
	}
	before := fw.ranges.Load()
	readHello(s)
	if fw.ranges.Load() == before {
		t.Error("reading a file made no Range request to the worker")
	}
	if err := s.close(); err != nil {
		t.Fatalf("close: %v", err)
	}

	s = open(t, root, addr)
	if _, err := s.sn.Stat(ctx, "layer-1"); err != nil {
		t.Fatalf("after a restart: Stat(layer-1): %v", err)
	}
	readHello(s)
	if _, err := s.sn.View(ctx, "view-1", "layer-1"); err != nil {
		t.Errorf("after a restart: View on the layer: %v", err)
	}
	if err := s.close(); err != nil {
		t.Fatalf("close: %v", err)
	}

	srv.Close()
	s = open(t, root, addr)
	defer s.close()
	err = s.fs.Mount(ctx, filepath.Join(t.TempDir(), "mnt"), labels)
	if !errors.Is(err, ErrWorker) || !strings.Contains(err.Error(), addr) {
		t.Errorf("mounting with the worker down: %v, want an ErrWorker naming %s", err, addr)
	}
	if _, err := s.sn.View(ctx, "view-2", "layer-1"); !errdefs.IsUnavailable(err) {
		t.Errorf("View on the layer with the worker down: %v, want unavailable", err)
	}
}
