package pyimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/faasnet/faasnet/internal/testenv"
)

// node is what a layer or a tree says about one path.
type node struct {
	typ  byte // tar type flag
	mode int64
	data string // file content or link target
}

func (n node) String() string { return fmt.Sprintf("%c %o %q", n.typ, n.mode, n.data) }

// readLayer returns the entries of a gzip-compressed tar layer in order.
func readLayer(t *testing.T, b []byte) ([]string, map[string]node) {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var names []string
	nodes := map[string]node{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeSymlink || h.Typeflag == tar.TypeLink {
			data = []byte(h.Linkname)
		}
		name := strings.TrimSuffix(h.Name, "/")
		names = append(names, name)
		nodes[name] = node{typ: h.Typeflag, mode: h.Mode, data: string(data)}
	}
	return names, nodes
}

// layerOf writes the layer of dir over lower and checks its digests.
func layerOf(t *testing.T, dir string, lower []string) []byte {
	t.Helper()
	var buf bytes.Buffer
	info, err := writeLayer(&buf, func(tw *tar.Writer) error { return writeDir(tw, dir, lower) })
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprintf("%x", sha256.Sum256(buf.Bytes())); got != info.Digest.Hex || info.Size != int64(buf.Len()) {
		t.Errorf("layer digest %s size %d, recorded %s %d", got, buf.Len(), info.Digest.Hex, info.Size)
	}
	zr, _ := gzip.NewReader(bytes.NewReader(buf.Bytes()))
	tarBytes, _ := io.ReadAll(zr)
	if got := fmt.Sprintf("%x", sha256.Sum256(tarBytes)); got != info.DiffID.Hex || info.TarSize != int64(len(tarBytes)) {
		t.Errorf("layer diff id %s size %d, recorded %s %d", got, len(tarBytes), info.DiffID.Hex, info.TarSize)
	}
	return buf.Bytes()
}

func mustDo(t *testing.T, errs ...error) {
	t.Helper()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestWriteDirPlain checks an ordinary tree: every kind of entry, in order,
// with modes, links and content; it needs no privilege.
func TestWriteDirPlain(t *testing.T) {
	dir := t.TempDir()
	mustDo(t,
		os.MkdirAll(filepath.Join(dir, "usr/bin"), 0o755),
		os.WriteFile(filepath.Join(dir, "usr/bin/tool"), []byte("#!/bin/sh\n"), 0o755),
		os.Link(filepath.Join(dir, "usr/bin/tool"), filepath.Join(dir, "usr/bin/tool2")),
		os.Symlink("usr/bin", filepath.Join(dir, "bin")),
		os.Mkdir(filepath.Join(dir, "tmp"), 0o777),
		os.Chmod(filepath.Join(dir, "tmp"), os.ModeSticky|0o777), // Mkdir applies the umask
		syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o600),
		os.WriteFile(filepath.Join(dir, "a.txt"), []byte("hello"), 0o640),
	)
	names, nodes := readLayer(t, layerOf(t, dir, nil))
	want := []string{"a.txt", "bin", "fifo", "tmp", "usr", "usr/bin", "usr/bin/tool", "usr/bin/tool2"}
	if !slices.Equal(names, want) {
		t.Fatalf("entries %q, want %q", names, want)
	}
	for name, n := range map[string]node{
		"a.txt":         {tar.TypeReg, 0o640, "hello"},
		"bin":           {tar.TypeSymlink, 0o777, "usr/bin"},
		"fifo":          {tar.TypeFifo, 0o600, ""},
		"tmp":           {tar.TypeDir, 0o1777, ""},
		"usr/bin/tool":  {tar.TypeReg, 0o755, "#!/bin/sh\n"},
		"usr/bin/tool2": {tar.TypeLink, 0o755, "usr/bin/tool"},
	} {
		if got := nodes[name]; got != n {
			t.Errorf("%s: %v, want %v", name, got, n)
		}
	}
}

// TestWriteDirWhiteouts converts overlayfs markers made by hand: a 0:0
// character device and an opaque directory; it needs root for both.
func TestWriteDirWhiteouts(t *testing.T) {
	testenv.NeedRoot(t)
	lower, upper := t.TempDir(), t.TempDir()
	mustDo(t,
		os.MkdirAll(filepath.Join(lower, "etc/old"), 0o755),
		os.MkdirAll(filepath.Join(upper, "etc/old"), 0o755),
		os.MkdirAll(filepath.Join(upper, "new"), 0o755),
		syscall.Mknod(filepath.Join(upper, "etc/gone.conf"), syscall.S_IFCHR, 0),
		syscall.Mknod(filepath.Join(upper, "etc/null"), syscall.S_IFCHR|0o666, 1<<8|3),
		syscall.Setxattr(filepath.Join(upper, "etc/old"), "trusted.overlay.opaque", []byte("y"), 0),
		syscall.Setxattr(filepath.Join(upper, "new"), "trusted.overlay.opaque", []byte("y"), 0),
		os.WriteFile(filepath.Join(upper, "etc/old/kept"), nil, 0o644),
	)
	names, nodes := readLayer(t, layerOf(t, upper, []string{lower}))
	want := []string{"etc", "etc/.wh.gone.conf", "etc/null", "etc/old", "etc/old/.wh..wh..opq", "etc/old/kept", "new"}
	if !slices.Equal(names, want) {
		t.Fatalf("entries %q, want %q (no opaque marker in new/: nothing below it)", names, want)
	}
	if n := nodes["etc/null"]; n.typ != tar.TypeChar {
		t.Errorf("etc/null: %v, want a character device", n)
	}
}

// tree is a snapshot of a directory tree: path -> node.
type tree map[string]node

// snapshot reads the tree under dir.
func snapshot(t *testing.T, dir string) tree {
	t.Helper()
	tr := tree{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		n := node{mode: int64(fi.Mode().Perm())}
		switch {
		case fi.IsDir():
			n.typ = tar.TypeDir
		case fi.Mode()&fs.ModeSymlink != 0:
			n.typ = tar.TypeSymlink
			n.data, err = os.Readlink(p)
			n.mode = 0o777
		default:
			n.typ = tar.TypeReg
			var b []byte
			b, err = os.ReadFile(p)
			n.data = string(b)
		}
		tr[filepath.ToSlash(rel)] = n
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// apply applies a layer to a snapshot as an OCI runtime would unpack it.
func (tr tree) apply(t *testing.T, layer []byte) {
	t.Helper()
	removeTree := func(p string) {
		for k := range tr {
			if k == p || strings.HasPrefix(k, p+"/") {
				delete(tr, k)
			}
		}
	}
	names, nodes := readLayer(t, layer)
	added := map[string]bool{}
	for _, name := range names {
		dir, base := path.Split(name)
		dir = strings.TrimSuffix(dir, "/")
		switch {
		case base == opaqueWhiteout:
			for k := range tr {
				if strings.HasPrefix(k, dir+"/") && !added[k] {
					delete(tr, k)
				}
			}
		case strings.HasPrefix(base, whiteoutPrefix):
			removeTree(path.Join(dir, strings.TrimPrefix(base, whiteoutPrefix)))
		default:
			n := nodes[name]
			if n.typ == tar.TypeLink {
				n = tr[n.data]
			}
			if old, ok := tr[name]; ok && (old.typ != tar.TypeDir || n.typ != tar.TypeDir) {
				removeTree(name)
			}
			tr[name] = n
			added[name] = true
		}
	}
}

// TestOverlayLayerProperty runs seeded random file operations on a real
// overlayfs, turns its upper directory into a layer, and checks that the
// lower tree with the layer applied is exactly what the overlay showed.
func TestOverlayLayerProperty(t *testing.T) {
	testenv.NeedRoot(t)
	seeds := 12
	if testing.Short() {
		seeds = 3
	}
	for seed := range uint64(seeds) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
			base := t.TempDir()
			lower, upper, work, merged := filepath.Join(base, "lower"), filepath.Join(base, "upper"), filepath.Join(base, "work"), filepath.Join(base, "merged")
			for _, d := range []string{lower, upper, work, merged} {
				mustDo(t, os.Mkdir(d, 0o755))
			}
			randomOps(t, rng, lower, 40)
			want0 := snapshot(t, lower)
			opts := "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work + ",redirect_dir=off,metacopy=off"
			if err := syscall.Mount("overlay", merged, "overlay", 0, opts); err != nil {
				t.Skipf("cannot mount overlayfs here: %v", err)
			}
			mounted := true
			defer func() {
				if mounted {
					syscall.Unmount(merged, syscall.MNT_DETACH)
				}
			}()
			randomOps(t, rng, merged, 80)
			want := snapshot(t, merged)
			mustDo(t, syscall.Unmount(merged, 0))
			mounted = false

			got := want0
			got.apply(t, layerOf(t, upper, []string{lower}))
			for p, n := range want {
				if g, ok := got[p]; !ok || g != n {
					t.Errorf("%s: overlay shows %v, lower+layer has %v (present %v)", p, n, g, ok)
				}
			}
			for p, n := range got {
				if _, ok := want[p]; !ok {
					t.Errorf("%s: lower+layer has %v, the overlay had nothing", p, n)
				}
			}
		})
	}
}

// randomOps applies n random operations (create, overwrite, append,
// delete, mkdir, rm -r, chmod, symlink, hard link, rename a file, replace a
// directory by a file and back) under root. Failing operations (an
// existing name, a rename across directories overlayfs refuses) are fine:
// the point is the state they leave.
func randomOps(t *testing.T, rng *rand.Rand, root string, n int) {
	t.Helper()
	names := []string{"a", "b", "c", "d", "e"}
	randPath := func() string {
		parts := []string{names[rng.IntN(len(names))]}
		for rng.IntN(2) == 0 && len(parts) < 3 {
			parts = append(parts, names[rng.IntN(len(names))])
		}
		return filepath.Join(append([]string{root}, parts...)...)
	}
	content := func() []byte { return fmt.Appendf(nil, "data-%d\n", rng.IntN(1000)) }
	for range n {
		p := randPath()
		switch rng.IntN(10) {
		case 0, 1:
			os.MkdirAll(filepath.Dir(p), 0o755)
			os.WriteFile(p, content(), 0o644)
		case 2:
			if f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0); err == nil {
				f.Write(content())
				f.Close()
			}
		case 3:
			os.Remove(p)
		case 4:
			os.MkdirAll(p, 0o755)
		case 5:
			os.RemoveAll(p)
		case 6:
			os.Chmod(p, fs.FileMode(0o600+rng.IntN(0o100)))
		case 7:
			os.Symlink("target-"+names[rng.IntN(len(names))], p)
		case 8:
			os.Link(randPath(), p)
		case 9:
			if rng.IntN(2) == 0 {
				os.Rename(randPath(), p)
			} else { // a directory replaced by a file, or the reverse
				os.RemoveAll(p)
				if rng.IntN(2) == 0 {
					os.WriteFile(p, content(), 0o644)
				} else {
					os.Mkdir(p, 0o755)
				}
			}
		}
	}
}
