package unpack

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/faasnet/faasnet/imagegen"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func TestTarLimits(t *testing.T) {
	files := []ent{
		{name: "a", body: "12345", typ: tar.TypeReg, mode: 0o644},
		{name: "d/", typ: tar.TypeDir, mode: 0o755},
		{name: "d/b", body: "678", typ: tar.TypeReg, mode: 0o644},
		{name: "l", link: "a", typ: tar.TypeSymlink},
	}
	for _, tc := range []struct {
		name string
		lim  Limits
		want string // in the error; "" accepts
	}{
		{"defaults", Limits{}, ""},
		{"exactly", Limits{MaxBytes: 8, MaxFiles: 4}, ""},
		{"one byte over", Limits{MaxBytes: 7}, "d/b of 3 bytes after 5 bytes"},
		{"first file over", Limits{MaxBytes: 4}, "a of 5 bytes after 0 bytes"},
		{"one file over", Limits{MaxFiles: 3}, "more than 3 files"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			root, err := os.OpenRoot(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer root.Close()
			err = Tar(root, tarOf(t, files), tc.lim)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Tar within %+v: %v", tc.lim, err)
				}
				return
			}
			if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Tar with %+v: %v; want ErrLimit about %q", tc.lim, err, tc.want)
			}
		})
	}
}

// bombLayer is a gzip layer of n files bomb/0, bomb/1, ... of size bytes
// of zeros each: about a thousandth of its unpacked size compressed.
func bombLayer(t *testing.T, n int, size int64) v1.Layer {
	t.Helper()
	l, err := imagegen.GzipBomb(n, size)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestImageGzipBomb unpacks a layer of 4 files of 8 MiB of zeros (some
// 32 KiB compressed) with a cap of 20 MiB: it is refused once the third
// file would cross the cap, and the partial tree is gone.
func TestImageGzipBomb(t *testing.T) {
	img, err := mutate.AppendLayers(empty.Image, bombLayer(t, 4, 8<<20))
	if err != nil {
		t.Fatal(err)
	}
	if l, _ := img.Layers(); len(l) == 1 {
		if n, _ := l[0].Size(); n > 128<<10 {
			t.Fatalf("the bomb layer is %d bytes compressed, want under 128 KiB", n)
		}
	}
	dir := filepath.Join(t.TempDir(), "rootfs")
	_, err = Image(img, dir, Options{Limits: Limits{MaxBytes: 20 << 20}})
	if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), "bomb/2 of 8388608 bytes after 16777216 bytes of files, at most 20971520 in all") {
		t.Fatalf("Image of a gzip bomb: %v; want ErrLimit", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the partial tree %s is still there (stat: %v)", dir, err)
	}
}

// FuzzTar feeds arbitrary tar streams to Tar under small limits: it must
// not panic, and what it writes stays within them.
func FuzzTar(f *testing.F) {
	seed, _ := io.ReadAll(tarOf(f, []ent{
		{name: "a", body: "12345", typ: tar.TypeReg, mode: 0o644},
		{name: "d/", typ: tar.TypeDir},
		{name: "h", link: "a", typ: tar.TypeLink},
	}))
	f.Add(seed)
	f.Add([]byte{})
	lim := Limits{MaxBytes: 1 << 10, MaxFiles: 8}
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		root, err := os.OpenRoot(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer root.Close()
		Tar(root, bytes.NewReader(b), lim)
		var size int64
		seen := map[uint64]bool{} // hard links share an inode
		filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err != nil || p == dir {
				return nil
			}
			if fi, err := d.Info(); err == nil && fi.Mode().IsRegular() {
				if ino := fi.Sys().(*syscall.Stat_t).Ino; !seen[ino] {
					seen[ino] = true
					size += fi.Size()
				}
			}
			return nil
		})
		if size > lim.MaxBytes {
			t.Fatalf("wrote %d bytes of files, limit %d", size, lim.MaxBytes)
		}
	})
}

func TestImageReturnsBytesWritten(t *testing.T) {
	img, err := mutate.AppendLayers(empty.Image, bombLayer(t, 3, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	n, err := Image(img, filepath.Join(t.TempDir(), "rootfs"), Options{})
	if err != nil || n != 3<<20 {
		t.Fatalf("Image = %d, %v; want %d bytes written", n, err, 3<<20)
	}
}

// TestImageHiddenGzipBomb unpacks an image whose lower layer is a bomb of
// 32 MiB that the upper layer deletes: nothing of it would be written, but
// reading it is refused at the cap of 20 MiB.
func TestImageHiddenGzipBomb(t *testing.T) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	tw.WriteHeader(&tar.Header{Name: "bomb/.wh..wh..opq", Typeflag: tar.TypeReg, Mode: 0o644})
	tw.WriteHeader(&tar.Header{Name: "app", Typeflag: tar.TypeReg, Mode: 0o644})
	tw.Close()
	upper, err := tarball.LayerFromReader(bytes.NewReader(b.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, bombLayer(t, 4, 8<<20), upper)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		max  int64
		want string // in the error; "" accepts
	}{
		{64 << 20, ""},
		{20 << 20, "the layers hold more than 20971520 bytes uncompressed"},
	} {
		dir := filepath.Join(t.TempDir(), "rootfs")
		n, err := Image(img, dir, Options{Limits: Limits{MaxBytes: tc.max}})
		if tc.want == "" {
			if err != nil || n != 0 {
				t.Fatalf("Image within %d bytes: %d written, %v; want nothing of the hidden bomb written", tc.max, n, err)
			}
			continue
		}
		if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("Image with %d bytes: %v; want ErrLimit about %q", tc.max, err, tc.want)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the partial tree %s is still there (stat: %v)", dir, err)
		}
	}
}

// TestImageCorruptLayerFails unpacks an image whose lower layer's gzip is
// cut short: Image fails rather than leave a tree without that layer's
// later files.
func TestImageCorruptLayerFails(t *testing.T) {
	full := bombLayer(t, 2, 1<<20)
	rc, err := full.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	lower := cutLayer{full, b[:len(b)/2]}
	upper := bombLayer(t, 1, 10)
	img, err := mutate.AppendLayers(empty.Image, lower, upper)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "rootfs")
	if n, err := Image(img, dir, Options{Limits: Limits{}}); err == nil {
		t.Fatalf("Image of a cut layer: %d bytes written, no error", n)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the partial tree %s is still there (stat: %v)", dir, err)
	}
}

// cutLayer is a layer whose compressed bytes end early.
type cutLayer struct {
	v1.Layer
	cut []byte
}

func (l cutLayer) Uncompressed() (io.ReadCloser, error) {
	return gzip.NewReader(bytes.NewReader(l.cut))
}
