package peer

import (
	"bytes"
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

type markSource struct {
	mu     sync.Mutex
	demand []bool
}

type markBlob struct {
	s    *markSource
	data []byte
}

func (b markBlob) Size() int64 { return int64(len(b.data)) }
func (b markBlob) Reader(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	b.s.mu.Lock()
	b.s.demand = append(b.s.demand, IsDemand(ctx))
	b.s.mu.Unlock()
	return io.NopCloser(bytes.NewReader(b.data[off : off+n])), nil
}

func (s *markSource) Open(ctx context.Context, digest string) (Blob, func(), error) {
	return markBlob{s, []byte(strings.Repeat("x", 100))}, func() {}, nil
}

func TestDemandMarkReachesTheSource(t *testing.T) {
	src := &markSource{}
	srv := httptest.NewServer(NewServer(src, ServerOptions{}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	d := "sha256:" + strings.Repeat("a", 64)
	var c Client
	for _, ctx := range []context.Context{context.Background(), WithDemand(context.Background())} {
		rc, err := c.Open(ctx, addr, d, 10, 20)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, rc)
		rc.Close()
	}
	if len(src.demand) != 2 || src.demand[0] || !src.demand[1] {
		t.Errorf("demand marks seen by the source: %v, want [false true]", src.demand)
	}
}
