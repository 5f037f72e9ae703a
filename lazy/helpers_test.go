package lazy

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"math/rand"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
)

// testChunkSize is small so that the large test file spans many chunks.
const testChunkSize = 64 << 10

var testMtime = time.Date(2021, 7, 14, 10, 0, 0, 0, time.UTC)

// tentry is one tar entry of a test layer.
type tentry struct {
	name         string
	typ          byte
	mode         int64
	body         string
	link         string
	uid, gid     int
	major, minor int64
	xattrs       map[string]string
}

func dir(name string, mode int64) tentry { return tentry{name: name, typ: tar.TypeDir, mode: mode} }
func reg(name, body string, mode int64) tentry {
	return tentry{name: name, typ: tar.TypeReg, mode: mode, body: body}
}
func symlink(name, target string) tentry {
	return tentry{name: name, typ: tar.TypeSymlink, mode: 0o777, link: target}
}

// bigBody is a file of seeded random bytes (incompressible) spanning many
// chunks, not a multiple of the chunk size.
var bigBody = func() string {
	b := make([]byte, 16*testChunkSize+12345)
	rand.New(rand.NewSource(42)).Read(b)
	return string(b)
}()

// testLayers is an image's layers, lowest first, exercising what merging
// must honour: whiteouts of files and directories, an opaque directory, a
// file replaced by a directory, a whiteout beside a new file of the same
// name, symlinks, a hardlink, a device, a fifo, an empty file, setuid, owners
// and an extended attribute.
func testLayers() [][]tentry {
	return [][]tentry{
		{
			dir("etc/", 0o755),
			reg("etc/passwd", "root:x:0:0\n", 0o644),
			dir("bin/", 0o755),
			reg("bin/sh", "#!fake shell\n", 0o755),
			dir("data/", 0o755),
			reg("data/big", bigBody, 0o644),
			dir("gone/", 0o755),
			reg("gone/file", "doomed", 0o644),
			dir("keep/", 0o755),
			reg("keep/a", "a", 0o644),
			reg("keep/b", "b", 0o644),
			dir("opaque/", 0o750),
			reg("opaque/old1", "old1", 0o644),
			dir("opaque/sub/", 0o755),
			reg("opaque/sub/old2", "old2", 0o644),
			dir("usr/", 0o755),
			dir("usr/lib/", 0o755),
			reg("usr/lib/libx.so.1", "\x7fELF fake library", 0o755),
			reg("readd", "old", 0o644),
			reg("swap", "a file", 0o644),
			dir("dev/", 0o755),
			{name: "dev/null", typ: tar.TypeChar, mode: 0o666, major: 1, minor: 3},
			{name: "dev/fifo", typ: tar.TypeFifo, mode: 0o600},
		},
		{
			reg(".wh.gone", "", 0o644),
			reg("keep/.wh.a", "", 0o644),
			dir("opaque/", 0o700),
			reg("opaque/.wh..wh..opq", "", 0o644),
			reg("opaque/new", "new", 0o644),
			symlink("usr/lib/libx.so", "libx.so.1"),
			dir("hl/", 0o755),
			{name: "hl/orig", typ: tar.TypeReg, mode: 0o640, body: "hardlinked content", uid: 1000, gid: 1000},
			{name: "hl/link", typ: tar.TypeLink, link: "hl/orig"},
			reg("empty", "", 0o644),
			reg("bin/suid", "suid", 0o4755),
			{name: "xattr", typ: tar.TypeReg, mode: 0o644, body: "x", xattrs: map[string]string{"user.test": "hello"}},
		},
		{
			reg(".wh.readd", "", 0o644),
			reg("readd", "new", 0o644),
			reg("etc/passwd", "root:x:0:0:changed\n", 0o644),
			dir("swap/", 0o755),
			reg("swap/x", "x", 0o644),
			symlink("abs", "/etc/passwd"),
		},
	}
}

// want is what the merged image holds at a path.
type want struct {
	typ  uint32 // syscall.S_IFREG and so on
	perm uint32 // mode & 07777
	body string // content or symlink target
}

// testMerged is the merged tree of testLayers, written out by hand.
func testMerged() map[string]want {
	d := func(perm uint32) want { return want{syscall.S_IFDIR, perm, ""} }
	f := func(body string, perm uint32) want { return want{syscall.S_IFREG, perm, body} }
	l := func(target string) want { return want{syscall.S_IFLNK, 0o777, target} }
	return map[string]want{
		"etc":               d(0o755),
		"etc/passwd":        f("root:x:0:0:changed\n", 0o644),
		"bin":               d(0o755),
		"bin/sh":            f("#!fake shell\n", 0o755),
		"bin/suid":          f("suid", 0o4755),
		"data":              d(0o755),
		"data/big":          f(bigBody, 0o644),
		"keep":              d(0o755),
		"keep/b":            f("b", 0o644),
		"opaque":            d(0o700),
		"opaque/new":        f("new", 0o644),
		"usr":               d(0o755),
		"usr/lib":           d(0o755),
		"usr/lib/libx.so.1": f("\x7fELF fake library", 0o755),
		"usr/lib/libx.so":   l("libx.so.1"),
		"readd":             f("new", 0o644),
		"swap":              d(0o755),
		"swap/x":            f("x", 0o644),
		"dev":               d(0o755),
		"dev/null":          {syscall.S_IFCHR, 0o666, ""},
		"dev/fifo":          {syscall.S_IFIFO, 0o600, ""},
		"hl":                d(0o755),
		"hl/orig":           f("hardlinked content", 0o640),
		"hl/link":           f("hardlinked content", 0o640),
		"empty":             f("", 0o644),
		"xattr":             f("x", 0o644),
		"abs":               l("/etc/passwd"),
	}
}

// tarOf writes entries as a tar archive.
func tarOf(t testing.TB, entries []tentry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{
			Name: e.name, Typeflag: e.typ, Mode: e.mode, Size: int64(len(e.body)),
			Linkname: e.link, Uid: e.uid, Gid: e.gid, ModTime: testMtime,
			Devmajor: e.major, Devminor: e.minor, Format: tar.FormatPAX,
		}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		for k, v := range e.xattrs {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("tar header %s: %v", e.name, err)
		}
		if h.Size > 0 {
			if _, err := io.WriteString(tw, e.body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// esgz converts a tar archive to an eStargz blob and returns it with its
// TOC digest.
func esgz(t testing.TB, tarBytes []byte, opts ...estargz.Option) ([]byte, string) {
	t.Helper()
	opts = append([]estargz.Option{estargz.WithChunkSize(testChunkSize), estargz.WithParallelism(2)}, opts...)
	blob, err := estargz.Build(io.NewSectionReader(bytes.NewReader(tarBytes), 0, int64(len(tarBytes))), opts...)
	if err != nil {
		t.Fatalf("estargz.Build: %v", err)
	}
	defer blob.Close()
	b, err := io.ReadAll(blob)
	if err != nil {
		t.Fatal(err)
	}
	return b, blob.TOCDigest().String()
}

// testBlobs returns testLayers as eStargz blobs and their TOC digests,
// built once: the blobs are read only.
func testBlobs(t testing.TB) ([][]byte, []string) {
	t.Helper()
	built.Do(func() {
		for _, l := range testLayers() {
			b, d := esgz(t, tarOf(t, l))
			built.blobs = append(built.blobs, b)
			built.digests = append(built.digests, d)
		}
	})
	if len(built.blobs) != len(testLayers()) {
		t.Fatal("building the test blobs failed")
	}
	return built.blobs, built.digests
}

var built struct {
	sync.Once
	blobs   [][]byte
	digests []string
}

// countingReader is a BlobReader over a blob in memory that counts the
// bytes it serves.
type countingReader struct {
	b     BytesReader
	n     atomic.Int64
	calls atomic.Int64
}

func (c *countingReader) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	n, err := c.b.ReadAt(ctx, p, off)
	c.n.Add(int64(n))
	c.calls.Add(1)
	return n, err
}
