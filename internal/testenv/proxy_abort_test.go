package testenv

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestCountingProxyCountsAbortedResponses: a client that stops reading a
// blob and hangs up (a worker that stops, or cuts a stream) still cost the
// registry what the proxy sent it. httputil.ReverseProxy ends such a
// response by panicking with http.ErrAbortHandler, so the count must not
// depend on ServeHTTP returning.
func TestCountingProxyCountsAbortedResponses(t *testing.T) {
	const size = 64 << 20
	chunk := make([]byte, 64<<10)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for sent := 0; sent < size; sent += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	t.Cleanup(backend.Close)
	addr, c := CountingProxy(t, backend.URL)
	blob := "sha256:" + strings.Repeat("a", 64)
	resp, err := http.Get("http://" + addr + "/v2/fn/a/blobs/" + blob)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(io.Discard, resp.Body, 1<<20); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close() // mid-body: the transport closes the connection
	deadline := time.Now().Add(10 * time.Second)
	for c.Blobs()[blob].Gets == 0 {
		if time.Now().After(deadline) {
			t.Fatal("a GET the client hung up on was never counted")
		}
		time.Sleep(10 * time.Millisecond) // polling the proxy's count, with a deadline
	}
	if got := c.Blobs()[blob].Bytes; got < 1<<20 || got >= size {
		t.Errorf("counted %d bytes of a response cut after the client read 1 MiB of %d", got, size)
	}
}
