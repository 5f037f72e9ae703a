package blobcache

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// content is a blob's bytes and digest.
type content struct {
	data   []byte
	digest string
}

func newContent(rng *rand.Rand, size int) content {
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	return content{data, sha256Digest(data)}
}

func sha256Digest(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// block returns block i of c for block size bs.
func (c content) block(bs int64, i int) []byte {
	off := int64(i) * bs
	return c.data[off:min(off+bs, int64(len(c.data)))]
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// openCache opens a cache in dir that the test closes at its end.
func openCache(t testing.TB, dir string, opts Options) *Cache {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	c, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func mustAcquire(t testing.TB, c *Cache, ct content) *Blob {
	t.Helper()
	b, err := c.Acquire(ct.digest, int64(len(ct.data)))
	if err != nil {
		t.Fatalf("Acquire(%s): %v", ct.digest, err)
	}
	return b
}

func mustWrite(t testing.TB, b *Blob, ct content, i int) {
	t.Helper()
	if err := b.WriteBlock(i, bytes.NewReader(ct.block(b.BlockSize(), i))); err != nil {
		t.Fatalf("WriteBlock(%d): %v", i, err)
	}
}

// fill writes every block of ct in order.
func fill(t testing.TB, b *Blob, ct content) {
	t.Helper()
	for i := range b.Blocks() {
		mustWrite(t, b, ct, i)
	}
}

// readAll reads all of b with ReadAt.
func readAll(t testing.TB, b *Blob) []byte {
	t.Helper()
	got := make([]byte, b.Size())
	n, err := b.ReadAt(got, 0)
	if err != nil && err != io.EOF {
		t.Fatalf("ReadAt: %d, %v", n, err)
	}
	return got[:n]
}

// copyPartial copies the files of b, a partial blob of c holding ct, into a
// new cache directory, as a crash would leave them, and returns it.
func copyPartial(t *testing.T, c *Cache, b *Blob, ct content) string {
	t.Helper()
	crashed := t.TempDir()
	sha := filepath.Join(crashed, "blobs", "sha256")
	if err := os.MkdirAll(sha, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, suffix := range []string{partialSuffix, bitmapSuffix} {
		data, err := os.ReadFile(c.path(b.e.d, suffix))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(sha, hexOf(ct)+suffix), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return crashed
}
