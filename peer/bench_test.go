package peer

import (
	"io"
	"testing"
)

// BenchmarkStream measures one stream of a complete 256 MiB blob from a
// server to a client over loopback, without limits: the protocol's own
// ceiling, and its allocations per blob.
func BenchmarkStream(b *testing.B) {
	const size = 256 << 20
	src := newMemSource()
	digest, _ := src.add(make([]byte, size), size)
	addr := startServer(b, newServer(src, ServerOptions{}))
	c := Client{HTTP: NewHTTPClient()}
	ctx := testContext(b)
	buf := make([]byte, 256<<10)
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		rc, err := c.Open(ctx, addr, digest, 0, -1)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{rc}, buf)
		rc.Close()
		if err != nil || n != size {
			b.Fatalf("read %d bytes: %v", n, err)
		}
	}
}
