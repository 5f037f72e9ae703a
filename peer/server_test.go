package peer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/faasnet/faasnet/bwlimit"
)

// testTimeout bounds every wait of these tests, so that a broken server
// fails a test instead of hanging it.
const testTimeout = 20 * time.Second

// startServer serves s on a loopback listener and returns its "host:port".
func startServer(t testing.TB, s *Server) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(PathPrefix, s)
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	return ts.Listener.Addr().String()
}

func newServer(src Source, opts ServerOptions) *Server {
	if opts.Logger == nil {
		opts.Logger = quiet
	}
	return NewServer(src, opts)
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func randomBytes(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

func TestServeBlob(t *testing.T) {
	src := newMemSource()
	data := randomBytes(1, 1000)
	digest, _ := src.add(data, 1000)
	empty, _ := src.add(nil, 0)
	addr := startServer(t, newServer(src, ServerOptions{}))
	blob := "http://" + addr + PathPrefix + "blobs/" + digest

	tests := []struct {
		name         string
		method, url  string
		rangeHdr     string
		wantStatus   int
		wantRange    string // Content-Range
		wantFrom     int    // the body is data[wantFrom:wantTo]
		wantTo       int
		wantNoDigest bool
	}{
		{name: "whole", url: blob, wantStatus: 200, wantTo: 1000},
		{name: "range", url: blob, rangeHdr: "bytes=0-99", wantStatus: 206, wantRange: "bytes 0-99/1000", wantTo: 100},
		{name: "one byte", url: blob, rangeHdr: "bytes=500-500", wantStatus: 206, wantRange: "bytes 500-500/1000", wantFrom: 500, wantTo: 501},
		{name: "open-ended", url: blob, rangeHdr: "bytes=900-", wantStatus: 206, wantRange: "bytes 900-999/1000", wantFrom: 900, wantTo: 1000},
		{name: "suffix", url: blob, rangeHdr: "bytes=-100", wantStatus: 206, wantRange: "bytes 900-999/1000", wantFrom: 900, wantTo: 1000},
		{name: "suffix longer than blob", url: blob, rangeHdr: "bytes=-5000", wantStatus: 206, wantRange: "bytes 0-999/1000", wantTo: 1000},
		{name: "end past blob clamped", url: blob, rangeHdr: "bytes=990-5000", wantStatus: 206, wantRange: "bytes 990-999/1000", wantFrom: 990, wantTo: 1000},
		{name: "blanks", url: blob, rangeHdr: "bytes= 10 - 19", wantStatus: 206, wantRange: "bytes 10-19/1000", wantFrom: 10, wantTo: 20},
		{name: "start at end", url: blob, rangeHdr: "bytes=1000-", wantStatus: 416, wantRange: "bytes */1000"},
		{name: "start past end", url: blob, rangeHdr: "bytes=2000-3000", wantStatus: 416, wantRange: "bytes */1000"},
		{name: "reversed", url: blob, rangeHdr: "bytes=5-4", wantStatus: 416, wantRange: "bytes */1000"},
		{name: "multi-range", url: blob, rangeHdr: "bytes=0-1,5-6", wantStatus: 416, wantRange: "bytes */1000"},
		{name: "other unit", url: blob, rangeHdr: "items=0-1", wantStatus: 416, wantRange: "bytes */1000"},
		{name: "empty suffix", url: blob, rangeHdr: "bytes=-0", wantStatus: 416, wantRange: "bytes */1000"},
		{name: "signed", url: blob, rangeHdr: "bytes=+1-2", wantStatus: 416, wantRange: "bytes */1000"},
		{name: "garbage", url: blob, rangeHdr: "bytes=abc", wantStatus: 416, wantRange: "bytes */1000"},
		{name: "overflow", url: blob, rangeHdr: "bytes=99999999999999999999-", wantStatus: 416, wantRange: "bytes */1000"},
		{name: "head", method: "HEAD", url: blob, wantStatus: 200, wantTo: 1000},
		{name: "head range", method: "HEAD", url: blob, rangeHdr: "bytes=-10", wantStatus: 206, wantRange: "bytes 990-999/1000", wantFrom: 990, wantTo: 1000},
		{name: "empty blob", url: "http://" + addr + PathPrefix + "blobs/" + empty, wantStatus: 200},
		{name: "empty blob range", url: "http://" + addr + PathPrefix + "blobs/" + empty, rangeHdr: "bytes=0-", wantStatus: 416, wantRange: "bytes */0"},
		{name: "unknown blob", url: "http://" + addr + PathPrefix + "blobs/sha256:" + strings.Repeat("0", 64), wantStatus: 404, wantNoDigest: true},
		{name: "bad digest", url: "http://" + addr + PathPrefix + "blobs/sha256:XYZ", wantStatus: 400, wantNoDigest: true},
		{name: "upper-case digest", url: "http://" + addr + PathPrefix + "blobs/" + strings.ToUpper(digest), wantStatus: 400, wantNoDigest: true},
		{name: "unknown path", url: "http://" + addr + PathPrefix + "manifests/x", wantStatus: 404, wantNoDigest: true},
		{name: "write", method: "PUT", url: blob, wantStatus: 405, wantNoDigest: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := cmpOr(tt.method, "GET")
			req, err := http.NewRequestWithContext(testContext(t), method, tt.url, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.rangeHdr != "" {
				req.Header.Set("Range", tt.rangeHdr)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			got, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tt.wantStatus, got)
			}
			if cr := resp.Header.Get("Content-Range"); cr != tt.wantRange {
				t.Errorf("Content-Range %q, want %q", cr, tt.wantRange)
			}
			if resp.StatusCode >= 400 {
				if ct := resp.Header.Get("Content-Type"); ct != "application/json" && method != "HEAD" {
					t.Errorf("error answered as %q", ct)
				}
				return
			}
			want := data[tt.wantFrom:tt.wantTo]
			if resp.ContentLength != int64(len(want)) {
				t.Errorf("Content-Length %d, want %d", resp.ContentLength, len(want))
			}
			if method == "HEAD" {
				want = nil
			}
			if !bytes.Equal(got, want) {
				t.Errorf("body %d bytes, want data[%d:%d]", len(got), tt.wantFrom, tt.wantTo)
			}
			if dcd := resp.Header.Get("Docker-Content-Digest"); !tt.wantNoDigest && !strings.HasPrefix(tt.url, "http://"+addr+PathPrefix+"blobs/"+dcd) {
				t.Errorf("Docker-Content-Digest %q", dcd)
			}
		})
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func TestSourceErrors(t *testing.T) {
	src := newMemSource()
	src.openErr = errors.New("registry unreachable")
	s := newServer(src, ServerOptions{})
	addr := startServer(t, s)
	var c Client
	_, err := c.Open(testContext(t), addr, "sha256:"+strings.Repeat("a", 64), 0, -1)
	var se *StatusError
	if !errors.As(err, &se) || se.StatusCode != http.StatusBadGateway || !strings.Contains(se.Message, "registry unreachable") {
		t.Errorf("Open with failing source: %v", err)
	}
	if st := s.Stats(); st.Errors != 1 || st.Requests != 1 {
		t.Errorf("stats %+v", st)
	}
}

// The heart of the protocol: a child reading block 0 gets it before block
// 1 exists at the parent.
func TestCutThrough(t *testing.T) {
	const block = 1024
	src := newMemSource()
	data := randomBytes(2, 3*block)
	digest, blob := src.add(data, 0)
	src.released = make(chan string, 1)
	s := newServer(src, ServerOptions{BlockSize: block})
	addr := startServer(t, s)
	ctx := testContext(t)

	var c Client
	// Open returns with nothing present: headers do not wait for data.
	rc, err := c.Open(ctx, addr, digest, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got := make([]byte, len(data))
	for i := range 3 {
		blob.fill(int64(i+1) * block)
		if _, err := io.ReadFull(rc, got[i*block:(i+1)*block]); err != nil {
			t.Fatalf("block %d: %v", i, err)
		}
		if avail := blob.available(); avail != int64(i+1)*block {
			t.Fatalf("read block %d while the parent had %d bytes", i, avail)
		}
	}
	if n, err := rc.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("read past the end: %d, %v", n, err)
	}
	if !bytes.Equal(got, data) {
		t.Error("body differs from the blob")
	}
	<-src.released // the handler is done counting
	if st := s.Stats(); st.Blocks != 3 || st.BytesSent != 3*block || st.Blobs != 1 {
		t.Errorf("stats %+v, want 3 blocks of %d bytes", st, block)
	}
}

// Pieces never span a block boundary, even when the source has more: a
// range starting mid-block is sent as the rest of that block, then whole
// blocks.
func TestPiecesAlignToBlocks(t *testing.T) {
	const block = 1000
	src := newMemSource()
	data := randomBytes(3, 10*block)
	digest, _ := src.add(data, int64(len(data)))
	src.released = make(chan string, 1)
	s := newServer(src, ServerOptions{BlockSize: block})
	addr := startServer(t, s)
	var c Client
	rc, err := c.Open(testContext(t), addr, digest, 1500, 3000) // 500 + 1000 + 1000 + 500
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, data[1500:4500]) {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	<-src.released
	if st := s.Stats(); st.Blocks != 4 || st.Ranges != 1 {
		t.Errorf("stats %+v, want 4 pieces in 1 range", st)
	}
}

// A blob that fails upstream cuts the body short: the child gets what was
// there, then an error, never a body that looks complete.
func TestBlobFailsMidway(t *testing.T) {
	src := newMemSource()
	data := randomBytes(4, 4096)
	digest, blob := src.add(data, 1024)
	src.released = make(chan string, 1)
	s := newServer(src, ServerOptions{BlockSize: 1024})
	addr := startServer(t, s)
	var c Client
	rc, err := c.Open(testContext(t), addr, digest, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got := make([]byte, 1024)
	if _, err := io.ReadFull(rc, got); err != nil || !bytes.Equal(got, data[:1024]) {
		t.Fatalf("first block: %v", err)
	}
	blob.fail(errors.New("upstream died"))
	_, err = io.ReadAll(rc)
	if !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), digest) {
		t.Errorf("reading a failed blob: %v", err)
	}
	<-src.released
	if st := s.Stats(); st.Errors != 1 || st.Uploads != 0 {
		t.Errorf("stats %+v", st)
	}
}

// A child that leaves while waiting for data ends its request at the
// parent: the handler returns and releases the blob.
func TestChildLeaves(t *testing.T) {
	src := newMemSource()
	digest, _ := src.add(randomBytes(5, 4096), 0)
	src.released = make(chan string, 1)
	s := newServer(src, ServerOptions{})
	addr := startServer(t, s)
	ctx, cancel := context.WithCancel(testContext(t))
	var c Client
	rc, err := c.Open(ctx, addr, digest, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := rc.Read(make([]byte, 10)); !errors.Is(err, context.Canceled) {
		t.Errorf("read after cancel: %v", err)
	}
	rc.Close()
	select {
	case <-src.released:
	case <-time.After(testTimeout):
		t.Fatal("the server kept the request of a child that left")
	}
}

// A child that stops reading must not hold an upload slot forever.
func TestStalledChild(t *testing.T) {
	if testing.Short() {
		t.Skip("fills socket buffers with 32 MiB")
	}
	src := newMemSource()
	data := make([]byte, 32<<20) // more than loopback socket buffers hold
	digest, _ := src.add(data, int64(len(data)))
	src.released = make(chan string, 1)
	s := newServer(src, ServerOptions{StallTimeout: 200 * time.Millisecond, MaxUploads: 1})
	addr := startServer(t, s)

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET %sblobs/%s HTTP/1.1\r\nHost: %s\r\n\r\n", PathPrefix, digest, addr)
	// Never read: the server's writes block once the buffers are full.
	select {
	case <-src.released:
	case <-time.After(testTimeout):
		t.Fatal("the server is still writing to a child that stopped reading")
	}
	if st := s.Stats(); st.Errors != 1 || st.Uploads != 0 || st.BytesSent >= int64(len(data)) {
		t.Errorf("stats %+v", st)
	}
}

func TestUploadCapRefuses(t *testing.T) {
	src := newMemSource()
	digest, blob := src.add(randomBytes(6, 4096), 0)
	s := newServer(src, ServerOptions{MaxUploads: 1, QueueTimeout: -1})
	addr := startServer(t, s)
	ctx := testContext(t)
	var c Client

	// A holds the only slot: its headers came, so it has it.
	a, err := c.Open(ctx, addr, digest, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	_, err = c.Open(ctx, addr, digest, 0, -1)
	var se *StatusError
	if !errors.As(err, &se) || se.StatusCode != http.StatusServiceUnavailable || se.RetryAfter != time.Second {
		t.Fatalf("second upload over the cap: %v", err)
	}
	// HEAD needs no slot.
	if size, err := c.Stat(ctx, addr, digest); err != nil || size != 4096 {
		t.Errorf("Stat during a full upload cap: %d, %v", size, err)
	}
	blob.fill(4096)
	if _, err := io.Copy(io.Discard, a); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Rejected != 1 || st.Errors != 0 || st.Blobs != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestUploadCapQueues(t *testing.T) {
	src := newMemSource()
	data := randomBytes(7, 4096)
	digest, blob := src.add(data, 0)
	s := newServer(src, ServerOptions{MaxUploads: 1, QueueTimeout: testTimeout})
	queued := make(chan struct{}, 1)
	s.onQueue = func() { queued <- struct{}{} }
	addr := startServer(t, s)
	ctx := testContext(t)
	var c Client

	a, err := c.Open(ctx, addr, digest, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	type result struct {
		body []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		b, err := c.Open(ctx, addr, digest, 0, -1)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer b.Close()
		body, err := io.ReadAll(b)
		done <- result{body, err}
	}()
	<-queued
	if st := s.Stats(); st.Queued != 1 || st.Uploads != 1 {
		t.Errorf("stats while B waits: %+v", st)
	}
	blob.fill(4096)
	if _, err := io.Copy(io.Discard, a); err != nil {
		t.Fatal(err)
	}
	a.Close()
	r := <-done
	if r.err != nil || !bytes.Equal(r.body, data) {
		t.Errorf("queued upload: %d bytes, %v", len(r.body), r.err)
	}
	if st := s.Stats(); st.Rejected != 0 || st.Blobs != 2 {
		t.Errorf("stats %+v", st)
	}
}

func TestUploadCapQueueTimeout(t *testing.T) {
	src := newMemSource()
	digest, _ := src.add(randomBytes(8, 4096), 0)
	s := newServer(src, ServerOptions{MaxUploads: 1, QueueTimeout: 50 * time.Millisecond})
	addr := startServer(t, s)
	ctx := testContext(t)
	var c Client
	a, err := c.Open(ctx, addr, digest, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	_, err = c.Open(ctx, addr, digest, 0, -1)
	if se := (*StatusError)(nil); !errors.As(err, &se) || se.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("upload after the queue timeout: %v", err)
	}
	if st := s.Stats(); st.Rejected != 1 || st.Queued != 0 {
		t.Errorf("stats %+v", st)
	}
}

// The upload limiter applies to bodies: 1 MiB at 4 MiB/s cannot take less
// than (1 MiB - burst) / 4 MiB/s.
func TestUploadLimit(t *testing.T) {
	const rate, size = 4 << 20, 1 << 20
	src := newMemSource()
	data := randomBytes(9, size)
	digest, _ := src.add(data, size)
	l := bwlimit.New(rate)
	addr := startServer(t, newServer(src, ServerOptions{Upload: l}))
	var c Client
	start := time.Now()
	got := readAll(t, &c, addr, digest, 0, -1)
	elapsed := time.Since(start)
	if !bytes.Equal(got, data) {
		t.Fatal("body differs")
	}
	if floor := time.Duration(float64(size-l.Burst()) / rate * float64(time.Second)); elapsed < floor {
		t.Errorf("%d bytes at %d B/s took %v, less than %v", size, rate, elapsed, floor)
	}
}

func readAll(t *testing.T, c *Client, addr, digest string, off, n int64) []byte {
	t.Helper()
	rc, err := c.Open(testContext(t), addr, digest, off, n)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Reading bodies to the end returns connections for reuse: sequential
// requests share one connection.
func TestKeepAlive(t *testing.T) {
	src := newMemSource()
	data := randomBytes(10, 100_000)
	digest, _ := src.add(data, int64(len(data)))
	mux := http.NewServeMux()
	mux.Handle(PathPrefix, newServer(src, ServerOptions{}))
	ts := httptest.NewUnstartedServer(mux)
	var conns atomic.Int32
	ts.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	ts.Start()
	defer ts.Close()
	addr := ts.Listener.Addr().String()
	c := Client{HTTP: NewHTTPClient()}
	for i := range 5 {
		off := int64(i * 1000)
		if got := readAll(t, &c, addr, digest, off, 1000); !bytes.Equal(got, data[off:off+1000]) {
			t.Fatalf("range %d differs", i)
		}
	}
	if _, err := c.Stat(testContext(t), addr, digest); err != nil {
		t.Fatal(err)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for sequential requests, want 1", n)
	}
}

// Property: any range of any blob reads back as the same bytes.
func TestRandomRanges(t *testing.T) {
	rng := rand.New(rand.NewSource(11))
	src := newMemSource()
	type blob struct {
		digest string
		data   []byte
	}
	var blobs []blob
	for i := range 5 {
		data := randomBytes(int64(100+i), 1+rng.Intn(200_000))
		d, _ := src.add(data, int64(len(data)))
		blobs = append(blobs, blob{d, data})
	}
	addr := startServer(t, newServer(src, ServerOptions{BlockSize: 1 + rng.Intn(64<<10)}))
	var c Client
	for range 200 {
		b := blobs[rng.Intn(len(blobs))]
		size := int64(len(b.data))
		off := rng.Int63n(size)
		n := 1 + rng.Int63n(size-off)
		end := off + n
		if rng.Intn(4) == 0 {
			n, end = -1, size // to the end
		}
		if got := readAll(t, &c, addr, b.digest, off, n); !bytes.Equal(got, b.data[off:end]) {
			t.Fatalf("Open(%d, %d) of %d bytes: got %d bytes, differing", off, n, size, len(got))
		}
	}
}
