package unpack

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/faasnet/faasnet/internal/testenv"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

type ent struct {
	name, body, link string
	typ              byte
	mode             int64
	uid              int
}

func tarOf(t testing.TB, es []ent) *bytes.Reader {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range es {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.link, Uid: e.uid, Size: int64(len(e.body)), ModTime: time.Unix(1e9, 0)}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e.body))
	}
	tw.Close()
	return bytes.NewReader(b.Bytes())
}

func TestTar(t *testing.T) {
	dir := t.TempDir()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	err = Tar(root, tarOf(t, []ent{
		{name: "app/handler.py", body: "print(1)", typ: tar.TypeReg, mode: 0o755},
		{name: "app/", typ: tar.TypeDir, mode: 0o700},
		{name: "bin/sh", link: "/usr/bin/dash", typ: tar.TypeSymlink, mode: 0o777},
		{name: "app/hard", link: "app/handler.py", typ: tar.TypeLink},
		{name: "./etc/../etc/motd", body: "hi", typ: tar.TypeReg, mode: 0o644},
	}), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "app/hard")); string(b) != "print(1)" {
		t.Errorf("hard link content %q", b)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "app/handler.py")); fi.Mode().Perm() != 0o755 {
		t.Errorf("mode %v, want 0755", fi.Mode())
	}
	if fi, _ := os.Stat(filepath.Join(dir, "app")); fi.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %v, want 0700 (applied after its files)", fi.Mode())
	}
	if l, _ := os.Readlink(filepath.Join(dir, "bin/sh")); l != "/usr/bin/dash" {
		t.Errorf("symlink target %q", l)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "etc/motd")); string(b) != "hi" {
		t.Errorf("motd %q", b)
	}
}

// TestTarSpecialBits checks that setuid, setgid and sticky bits survive
// unpacking, as a container runtime keeps them. Owners are set too (when
// root), since a chown after the chmod would clear setuid and setgid.
func TestTarSpecialBits(t *testing.T) {
	dir := t.TempDir()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	tests := []struct {
		e    ent
		want os.FileMode
	}{
		{ent{name: "usr/bin/su", body: "x", typ: tar.TypeReg, mode: 0o4755, uid: 1000}, os.ModeSetuid | 0o755},
		{ent{name: "usr/bin/wall", body: "x", typ: tar.TypeReg, mode: 0o2755, uid: 1000}, os.ModeSetgid | 0o755},
		{ent{name: "usr/bin/both", body: "x", typ: tar.TypeReg, mode: 0o6711}, os.ModeSetuid | os.ModeSetgid | 0o711},
		{ent{name: "usr/bin/plain", body: "x", typ: tar.TypeReg, mode: 0o755}, 0o755},
		{ent{name: "tmp/", typ: tar.TypeDir, mode: 0o1777}, os.ModeDir | os.ModeSticky | 0o777},
		{ent{name: "srv/shared/", typ: tar.TypeDir, mode: 0o2775, uid: 1000}, os.ModeDir | os.ModeSetgid | 0o775},
	}
	var es []ent
	for _, tc := range tests {
		es = append(es, tc.e)
	}
	if err := Tar(root, tarOf(t, es), Limits{}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		fi, err := os.Lstat(filepath.Join(dir, tc.e.name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != tc.want {
			t.Errorf("%s: mode %v, want %v (tar mode %#o)", tc.e.name, fi.Mode(), tc.want, tc.e.mode)
		}
	}
}

func TestTarCannotEscape(t *testing.T) {
	outside := t.TempDir()
	for name, es := range map[string][]ent{
		"dot-dot":         {{name: "../escaped", body: "x", typ: tar.TypeReg, mode: 0o644}},
		"through symlink": {{name: "evil", link: outside, typ: tar.TypeSymlink}, {name: "evil/escaped", body: "x", typ: tar.TypeReg, mode: 0o644}},
		"hard link out":   {{name: "h", link: "../../etc/passwd", typ: tar.TypeLink}},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			root, _ := os.OpenRoot(dir)
			defer root.Close()
			err := Tar(root, tarOf(t, es), Limits{})
			if err == nil && name != "dot-dot" {
				t.Errorf("escape attempt accepted")
			}
			if _, serr := os.Stat(filepath.Join(outside, "escaped")); serr == nil {
				t.Fatalf("an entry landed outside the root (err %v)", err)
			}
			if _, serr := os.Stat(filepath.Join(filepath.Dir(dir), "escaped")); serr == nil {
				t.Fatalf("an entry landed outside the root")
			}
		})
	}
}

func FuzzClean(f *testing.F) {
	for _, s := range []string{"a/b", "../x", "/etc/passwd", "./a/../../b", "", ".", "a//b/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		p, err := clean(name)
		if err != nil {
			return
		}
		if strings.HasPrefix(p, "/") || p == ".." || strings.HasPrefix(p, "../") {
			t.Fatalf("clean(%q) = %q escapes", name, p)
		}
	})
}

// TestImageIDShift unpacks with ownership shifted for a user-namespaced
// container: a file of uid 1000 belongs to host uid shift+1000, and the
// root directory to the shifted root.
func TestImageIDShift(t *testing.T) {
	testenv.NeedRoot(t) // ownership is kept only when unpacking as root
	const shift = 3_200_000
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(tarOf(t, []ent{
			{name: "etc/", typ: tar.TypeDir, mode: 0o755},
			{name: "etc/app", typ: tar.TypeReg, mode: 0o644, body: "x", uid: 1000},
			{name: "etc/link", typ: tar.TypeSymlink, link: "app", uid: 7},
		})), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "rootfs")
	if _, err := Image(img, dir, Options{IDShift: shift}); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]uint32{".": shift, "etc": shift, "etc/app": shift + 1000, "etc/link": shift + 7} {
		fi, err := os.Lstat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != want || st.Gid != shift { // the entries' gid is 0
			t.Errorf("%s: owner %d:%d, want %d:%d", name, st.Uid, st.Gid, want, shift)
		}
	}
}
