package lazy

import (
	"bufio"
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/faasnet/faasnet/internal/testenv"
)

// TestMain lets a test run a mount in a child process (this test binary,
// re-executed) that it then kills, to leave a stale mount behind.
func TestMain(m *testing.M) {
	if mp := os.Getenv("LAZY_TEST_MOUNT_AND_HANG"); mp != "" {
		mountAndHang(mp, os.Getenv("LAZY_TEST_BLOB"), os.Getenv("LAZY_TEST_TOC"))
		return
	}
	os.Exit(m.Run())
}

func mountAndHang(mp, blobFile, tocDigest string) {
	b, err := os.ReadFile(blobFile)
	if err != nil {
		panic(err)
	}
	layer := Layer{Digest: "test", Size: int64(len(b)), TOCDigest: tocDigest, Blob: BytesReader(b)}
	if _, err := Mount(context.Background(), mp, []Layer{layer}, Options{}); err != nil {
		panic(err)
	}
	os.Stdout.WriteString("mounted\n")
	select {} // until killed
}

// mountTest mounts layers under a temporary directory until the test ends.
func mountTest(t *testing.T, layers []Layer, opts Options) *FS {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quiet
	}
	fsys, err := Mount(context.Background(), filepath.Join(t.TempDir(), "rootfs"), layers, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := fsys.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return fsys
}

// checkTree compares the mounted tree at mp with testMerged, through the
// kernel.
func checkTree(t *testing.T, mp string) {
	t.Helper()
	wants := testMerged()
	seen := map[string]bool{}
	err := filepath.WalkDir(mp, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(mp, p)
		if rel == "." {
			return nil
		}
		seen[rel] = true
		w, ok := wants[rel]
		if !ok {
			t.Errorf("mounted tree has %s, which should not be there", rel)
			return nil
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		if st.Mode&syscall.S_IFMT != w.typ || st.Mode&0o7777 != w.perm {
			t.Errorf("%s: mode %o, want %o", rel, st.Mode, w.typ|w.perm)
		}
		switch w.typ {
		case syscall.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil || string(b) != w.body {
				t.Errorf("%s: read %d bytes, %v; want its %d bytes", rel, len(b), err, len(w.body))
			}
		case syscall.S_IFLNK:
			if target, err := os.Readlink(p); err != nil || target != w.body {
				t.Errorf("%s: link to %q, %v; want %q", rel, target, err, w.body)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for p := range wants {
		if !seen[p] {
			t.Errorf("mounted tree lacks %s", p)
		}
	}
}

func stat(t *testing.T, p string) syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func TestMount(t *testing.T) {
	testenv.NeedFUSE(t)
	blobs, digests := testBlobs(t)
	var layers []Layer
	var counters []*countingReader
	var tocBytes int64
	for i, b := range blobs {
		c := &countingReader{b: b}
		counters = append(counters, c)
		layers = append(layers, Layer{Digest: digests[i], Size: int64(len(b)), TOCDigest: digests[i], Blob: c})
		ix, err := TOC(context.Background(), BytesReader(b), int64(len(b)), digests[i])
		if err != nil {
			t.Fatal(err)
		}
		tocBytes += ix.Size() - ix.TOCOffset()
	}
	fsys := mountTest(t, layers, Options{})
	mp := fsys.Mountpoint()
	for i, ix := range fsys.Indexes() {
		if ix.Digest() != digests[i] {
			t.Errorf("Indexes()[%d] has TOC %s, want %s", i, ix.Digest(), digests[i])
		}
	}
	if got := fsys.Stats().BlobBytesRead; got != tocBytes {
		t.Errorf("mounting read %d bytes, want %d: footers and TOCs only", got, tocBytes)
	}

	// One small file costs its own gzip member, not the layer.
	before := counters[0].n.Load()
	if b, err := os.ReadFile(filepath.Join(mp, "bin/sh")); err != nil || string(b) != "#!fake shell\n" {
		t.Fatalf("reading bin/sh: %q, %v", b, err)
	}
	if read := counters[0].n.Load() - before; read <= 0 || read > testChunkSize || read > int64(len(blobs[0]))/10 {
		t.Errorf("reading a 13-byte file read %d bytes of a %d-byte layer; want at most one chunk (%d)",
			read, len(blobs[0]), testChunkSize)
	}

	checkTree(t, mp)

	orig, link := stat(t, filepath.Join(mp, "hl/orig")), stat(t, filepath.Join(mp, "hl/link"))
	if orig.Ino != link.Ino || orig.Nlink != 2 {
		t.Errorf("hardlinks: inodes %d and %d, %d links; want one inode with 2 links", orig.Ino, link.Ino, orig.Nlink)
	}
	if orig.Uid != 1000 || orig.Gid != 1000 {
		t.Errorf("hl/orig owned by %d:%d, want 1000:1000", orig.Uid, orig.Gid)
	}
	if dev := stat(t, filepath.Join(mp, "dev/null")); (dev.Rdev>>8)&0xfff != 1 || dev.Rdev&0xff != 3 {
		t.Errorf("dev/null is device %#x, want 1:3", dev.Rdev)
	}
	if st := stat(t, filepath.Join(mp, "etc/passwd")); st.Mtim.Sec != testMtime.Unix() {
		t.Errorf("etc/passwd mtime %d, want %d", st.Mtim.Sec, testMtime.Unix())
	}
	buf := make([]byte, 64)
	if n, err := syscall.Getxattr(filepath.Join(mp, "xattr"), "user.test", buf); err != nil || string(buf[:n]) != "hello" {
		t.Errorf("xattr user.test = %q, %v; want hello", buf[:max(n, 0)], err)
	}
	for _, name := range []string{".no.prefetch.landmark", ".prefetch.landmark", "stargz.index.json"} {
		if _, err := os.Lstat(filepath.Join(mp, name)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: %v, want it hidden", name, err)
		}
	}
	if err := os.WriteFile(filepath.Join(mp, "etc/passwd"), []byte("x"), 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("writing a file: %v, want EROFS", err)
	}
	if err := os.Mkdir(filepath.Join(mp, "new"), 0o755); !errors.Is(err, syscall.EROFS) {
		t.Errorf("making a directory: %v, want EROFS", err)
	}
	if s := fsys.Stats(); s.VerifyFailures != 0 || s.Timeouts != 0 || s.ReadErrors != 0 || s.ChunksFetched == 0 {
		t.Errorf("stats %+v", s)
	}
}

// faultyLayers returns the test image's layers with layer 0 served by a
// faultyBlob.
func faultyLayers(t *testing.T) ([]Layer, *faultyBlob) {
	t.Helper()
	blobs, digests := testBlobs(t)
	var layers []Layer
	var fb0 *faultyBlob
	for i, b := range blobs {
		ix, err := TOC(context.Background(), BytesReader(b), int64(len(b)), digests[i])
		if err != nil {
			t.Fatal(err)
		}
		fb := &faultyBlob{b: b, tocOffset: ix.TOCOffset()}
		if i == 0 {
			fb0 = fb
		}
		layers = append(layers, Layer{Digest: digests[i], Size: int64(len(b)), TOCDigest: digests[i], Blob: fb})
	}
	return layers, fb0
}

func TestMountCorruption(t *testing.T) {
	testenv.NeedFUSE(t)
	t.Run("persistent", func(t *testing.T) {
		layers, fb := faultyLayers(t)
		fb.corrupt.Store(-1)
		fsys := mountTest(t, layers, Options{})
		if b, err := os.ReadFile(filepath.Join(fsys.Mountpoint(), "data/big")); !errors.Is(err, syscall.EIO) {
			t.Errorf("reading a corrupt file: %d bytes, %v; want EIO", len(b), err)
		}
		if s := fsys.Stats(); s.VerifyFailures < 2 {
			t.Errorf("VerifyFailures = %d, want at least 2 (a fetch and its retry)", s.VerifyFailures)
		}
	})
	t.Run("transient", func(t *testing.T) {
		// The retry succeeds and the reader never knows.
		layers, fb := faultyLayers(t)
		fb.corrupt.Store(1)
		fsys := mountTest(t, layers, Options{})
		if b, err := os.ReadFile(filepath.Join(fsys.Mountpoint(), "bin/sh")); err != nil || string(b) != "#!fake shell\n" {
			t.Errorf("reading after a transient corruption: %q, %v", b, err)
		}
		if got := fsys.Stats().VerifyFailures; got != 1 {
			t.Errorf("VerifyFailures = %d, want 1", got)
		}
	})
}

func TestMountReadTimeout(t *testing.T) {
	testenv.NeedFUSE(t)
	layers, fb := faultyLayers(t)
	fb.block = make(chan struct{}) // layer 0's data never arrives
	fsys := mountTest(t, layers, Options{ReadTimeout: 200 * time.Millisecond})
	mp := fsys.Mountpoint()
	if _, err := os.ReadFile(filepath.Join(mp, "data/big")); !errors.Is(err, syscall.EIO) {
		t.Errorf("reading from a blob that never answers: %v, want EIO", err)
	}
	if s := fsys.Stats(); s.Timeouts == 0 {
		t.Errorf("Timeouts = %d, want some", s.Timeouts)
	}
	// The mount stays usable: names, attributes, and other layers' files.
	if st := stat(t, filepath.Join(mp, "data/big")); st.Size != int64(len(bigBody)) {
		t.Errorf("data/big size %d", st.Size)
	}
	if b, err := os.ReadFile(filepath.Join(mp, "opaque/new")); err != nil || string(b) != "new" {
		t.Errorf("reading another layer's file: %q, %v", b, err)
	}
}

func TestCloseUnmounts(t *testing.T) {
	testenv.NeedFUSE(t)
	blobs, digests := testBlobs(t)
	layer := Layer{Digest: digests[1], Size: int64(len(blobs[1])), TOCDigest: digests[1], Blob: BytesReader(blobs[1])}
	mp := filepath.Join(t.TempDir(), "rootfs")
	fsys, err := Mount(context.Background(), mp, []Layer{layer}, Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := Mounted(mp); !ok || err != nil {
		t.Fatalf("Mounted after Mount = %v, %v", ok, err)
	}
	if err := fsys.Close(); err != nil {
		t.Fatal(err)
	}
	if ok, err := Mounted(mp); ok || err != nil {
		t.Errorf("Mounted after Close = %v, %v; want false", ok, err)
	}
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mi), " "+mp+" ") {
		t.Errorf("%s still in /proc/self/mountinfo", mp)
	}
	if err := fsys.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := Unmount(mp); err != nil {
		t.Errorf("Unmount of nothing: %v", err)
	}
}

func TestUnmountStale(t *testing.T) {
	testenv.NeedFUSE(t)
	blobs, digests := testBlobs(t)
	dir := t.TempDir()
	blobFile, mp := filepath.Join(dir, "blob"), filepath.Join(dir, "rootfs")
	if err := os.WriteFile(blobFile, blobs[1], 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "LAZY_TEST_MOUNT_AND_HANG="+mp, "LAZY_TEST_BLOB="+blobFile, "LAZY_TEST_TOC="+digests[1])
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		Unmount(mp)
	})
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "mounted\n" {
		t.Fatalf("mounting child said %q, %v", line, err)
	}
	// The crash: the FUSE server dies, its mount stays.
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if ok, err := Mounted(mp); !ok || err != nil {
		t.Fatalf("Mounted after the server died = %v, %v; want a stale mount", ok, err)
	}
	if _, err := os.Stat(filepath.Join(mp, "opaque")); !errors.Is(err, syscall.ENOTCONN) {
		t.Logf("stat in the stale mount: %v (ENOTCONN expected)", err)
	}
	if err := Unmount(mp); err != nil {
		t.Fatal(err)
	}
	if ok, err := Mounted(mp); ok || err != nil {
		t.Errorf("Mounted after Unmount = %v, %v; want false", ok, err)
	}
}

// TestMountIDShift mounts with owners shifted for a user-namespaced
// container: the image's 1000:1000 shows as shift+1000, the root as shift.
func TestMountIDShift(t *testing.T) {
	testenv.NeedFUSE(t)
	const shift = 3_300_000
	blobs, digests := testBlobs(t)
	var layers []Layer
	for i, b := range blobs {
		layers = append(layers, Layer{Digest: digests[i], Size: int64(len(b)), TOCDigest: digests[i], Blob: BytesReader(b)})
	}
	mp := mountTest(t, layers, Options{IDShift: shift}).Mountpoint()
	if st := stat(t, filepath.Join(mp, "hl/orig")); st.Uid != shift+1000 || st.Gid != shift+1000 {
		t.Errorf("hl/orig owned by %d:%d, want %d:%d", st.Uid, st.Gid, shift+1000, shift+1000)
	}
	if st := stat(t, mp); st.Uid != shift || st.Gid != shift {
		t.Errorf("the root owned by %d:%d, want %d:%d", st.Uid, st.Gid, shift, shift)
	}
}
