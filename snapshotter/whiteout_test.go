package snapshotter

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io/fs"
	"maps"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/faasnet/faasnet/internal/testenv"
)

// tarLayer writes a layer: names ending in "/" are directories, the rest
// files holding their own name.
func tarLayer(t *testing.T, names ...string) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, n := range names {
		h := &tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(n)), ModTime: time.Unix(1, 0)}
		if n[len(n)-1] == '/' {
			h.Typeflag, h.Mode, h.Size = tar.TypeDir, 0o755, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte(n))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestWhiteoutsThroughOverlay pulls a two-layer eStargz image as CRI does
// (each layer a remote snapshot, mounted lazily on its own) and mounts a
// container's root from the mounts the snapshotter returns, with the
// kernel's overlayfs over the FUSE layer mounts. The upper layer deletes a
// file and makes a directory opaque: the container must not see the file
// or the directory's lower entries. Overlayfs reads the opaque mark from
// trusted.overlay.opaque, or from user.overlay.opaque when mounted with
// "userxattr" (the library adds it in a user namespace); both are tried.
func TestWhiteoutsThroughOverlay(t *testing.T) {
	testenv.NeedFUSE(t)
	lower := tarLayer(t, "etc/", "etc/gone", "etc/kept", "opq/", "opq/old", "opq/sub/", "opq/sub/old2", "dir/", "dir/x")
	upper := tarLayer(t, "etc/", "etc/.wh.gone", "opq/", "opq/.wh..wh..opq", "opq/new", ".wh.dir")
	fw := newFakeWorkerLayers(t, lower, upper)
	srv := httptest.NewServer(fw)
	defer srv.Close()
	s := open(t, t.TempDir(), srv.Listener.Addr().String())
	defer s.close()
	ctx := context.Background()

	parent := ""
	for i, l := range fw.ldigests {
		labels := maps.Clone(fw.layerLabels("registry.test:5000", l))
		chain := "layer-" + string(rune('1'+i))
		labels["containerd.io/snapshot.ref"] = chain
		if _, err := s.sn.Prepare(ctx, "extract-"+chain, parent, snapshots.WithLabels(labels)); !errdefs.IsAlreadyExists(err) {
			t.Fatalf("Prepare %s = %v, want already exists (a remote snapshot)", chain, err)
		}
		parent = chain
	}
	mounts, err := s.sn.Prepare(ctx, "container", parent)
	if err != nil {
		t.Fatalf("Prepare the container's snapshot: %v", err)
	}
	if len(mounts) != 1 || mounts[0].Type != "overlay" {
		t.Fatalf("mounts %+v, want one overlay", mounts)
	}

	for _, tc := range []struct {
		name  string
		extra []string // mount options added
	}{
		{name: "trusted.overlay"},
		{name: "user.overlay", extra: []string{"userxattr"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := mounts[0]
			m.Options = append(slices.Clone(m.Options), tc.extra...)
			if tc.extra == nil && slices.Contains(m.Options, "userxattr") {
				t.Fatalf("the snapshotter asked for userxattr as root: %v", m.Options)
			}
			rootfs := t.TempDir()
			if err := mount.All([]mount.Mount{m}, rootfs); err != nil {
				t.Fatalf("mounting the container's root %+v: %v", m, err)
			}
			defer unix.Unmount(rootfs, unix.MNT_DETACH)
			for _, tc := range []struct {
				path string
				want bool // present
			}{
				{"etc/kept", true},
				{"etc/gone", false},
				{"opq/new", true},
				{"opq/old", false},
				{"opq/sub", false},
				{"dir", false},
			} {
				_, err := os.Lstat(filepath.Join(rootfs, tc.path))
				if tc.want && err != nil {
					t.Errorf("%s: %v, want it present", tc.path, err)
				}
				if !tc.want && !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("%s: %v, want it deleted by the upper layer", tc.path, err)
				}
			}
			ents, err := os.ReadDir(filepath.Join(rootfs, "opq"))
			if err != nil || len(ents) != 1 || ents[0].Name() != "new" {
				t.Errorf("opq lists %v, %v; want only the upper layer's new", ents, err)
			}
			ents, err = os.ReadDir(filepath.Join(rootfs, "etc"))
			if err != nil || len(ents) != 1 || ents[0].Name() != "kept" {
				t.Errorf("etc lists %v, %v; want only kept", ents, err)
			}
		})
	}
}
