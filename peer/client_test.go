package peer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/faasnet/faasnet/bwlimit"
	"github.com/faasnet/faasnet/httprange"
)

var testDigest = "sha256:" + strings.Repeat("ab", 32)

// lyingPeer serves h as a peer would, and returns its address.
func lyingPeer(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return ts.Listener.Addr().String()
}

// answer writes a 2xx answer with the given headers and body.
func answer(status int, headers map[string]string, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for k, v := range headers {
			w.Header().Set(k, v)
		}
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

// The client trusts nothing: a peer answering other bytes than asked, or
// fewer, is an error, never a silently wrong block.
func TestClientChecksAnswer(t *testing.T) {
	hundred := strings.Repeat("x", 100)
	tests := []struct {
		name     string
		h        http.HandlerFunc
		off, n   int64
		openErr  string // substring of Open's error; "" if Open succeeds
		readErr  error  // what reading the body then fails with
		wantBody string
	}{
		{
			name: "honest range",
			h:    answer(206, map[string]string{"Content-Range": "bytes 100-199/1000"}, hundred),
			off:  100, n: 100, wantBody: hundred,
		},
		{
			name: "honest open-ended",
			h:    answer(206, map[string]string{"Content-Range": "bytes 900-999/1000"}, hundred),
			off:  900, n: -1, wantBody: hundred,
		},
		{
			name: "honest whole",
			h:    answer(200, nil, hundred),
			off:  0, n: -1, wantBody: hundred,
		},
		{
			name: "unknown total size is fine for a bounded range",
			h:    answer(206, map[string]string{"Content-Range": "bytes 100-199/*"}, hundred),
			off:  100, n: 100, wantBody: hundred,
		},
		{
			name: "whole blob for a range",
			h:    answer(200, nil, hundred),
			off:  100, n: 100,
			openErr: "answered 200 to a range request",
		},
		{
			name: "range for the whole blob",
			h:    answer(206, map[string]string{"Content-Range": "bytes 0-99/100"}, hundred),
			off:  0, n: -1,
			openErr: "answered 206 to a request for the whole blob",
		},
		{
			name: "other start",
			h:    answer(206, map[string]string{"Content-Range": "bytes 0-99/1000"}, hundred),
			off:  100, n: 100,
			openErr: "asked for bytes 100-199",
		},
		{
			name: "shorter range",
			h:    answer(206, map[string]string{"Content-Range": "bytes 100-149/1000"}, hundred[:50]),
			off:  100, n: 100,
			openErr: "asked for bytes 100-199",
		},
		{
			name: "open-ended not to the end",
			h:    answer(206, map[string]string{"Content-Range": "bytes 900-949/1000"}, hundred[:50]),
			off:  900, n: -1,
			openErr: "asked for bytes 900-999",
		},
		{
			name: "open-ended of unknown size",
			h:    answer(206, map[string]string{"Content-Range": "bytes 900-999/*"}, hundred),
			off:  900, n: -1,
			openErr: "without the complete length",
		},
		{
			name: "no Content-Range",
			h:    answer(206, nil, hundred),
			off:  100, n: 100,
			openErr: "malformed Content-Range",
		},
		{
			name: "Content-Range past its size",
			h:    answer(206, map[string]string{"Content-Range": "bytes 100-199/150"}, hundred),
			off:  100, n: 100,
			openErr: "malformed Content-Range",
		},
		{
			name: "Content-Length disagrees",
			h:    answer(206, map[string]string{"Content-Range": "bytes 100-199/1000", "Content-Length": "50"}, hundred[:50]),
			off:  100, n: 100,
			openErr: "Content-Length 50",
		},
		{
			name: "no Content-Length",
			h: func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(200)
				w.(http.Flusher).Flush() // chunked: no length
				io.WriteString(w, hundred)
			},
			off: 0, n: -1,
			openErr: "no Content-Length",
		},
		{
			name: "other digest",
			h:    answer(200, map[string]string{"Docker-Content-Digest": "sha256:" + strings.Repeat("0", 64)}, hundred),
			off:  0, n: -1,
			openErr: "Docker-Content-Digest",
		},
		{
			name: "short body",
			h: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Range", "bytes 100-199/1000")
				w.Header().Set("Content-Length", "100")
				w.WriteHeader(206)
				io.WriteString(w, hundred[:60]) // and hang up
			},
			off: 100, n: 100,
			readErr: io.ErrUnexpectedEOF,
		},
		{
			name: "long body",
			h: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Range", "bytes 100-199/1000")
				w.WriteHeader(206)
				w.(http.Flusher).Flush() // chunked: the body is not bounded
				io.WriteString(w, hundred+"and more")
			},
			off: 100, n: 100,
			readErr: httprange.ErrTooLong,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := lyingPeer(t, tt.h)
			var c Client
			rc, err := c.Open(testContext(t), addr, testDigest, tt.off, tt.n)
			if tt.openErr != "" {
				if err == nil {
					rc.Close()
					t.Fatalf("Open succeeded, want error %q", tt.openErr)
				}
				if !strings.Contains(err.Error(), tt.openErr) || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), testDigest) {
					t.Fatalf("Open error %q, want it to name %q, the peer and the digest", err, tt.openErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			body, err := io.ReadAll(rc)
			if tt.readErr != nil {
				if !errors.Is(err, tt.readErr) {
					t.Fatalf("read error %v, want %v", err, tt.readErr)
				}
				return
			}
			if err != nil || string(body) != tt.wantBody {
				t.Fatalf("read %q, %v", body, err)
			}
		})
	}
}

func TestClientStatusErrors(t *testing.T) {
	src := newMemSource()
	digest, _ := src.add([]byte("hello"), 5)
	addr := startServer(t, newServer(src, ServerOptions{}))
	ctx := testContext(t)
	var c Client
	missing := "sha256:" + strings.Repeat("0", 64)

	_, err := c.Open(ctx, addr, missing, 0, -1)
	var se *StatusError
	if !errors.Is(err, ErrNotFound) || !errors.As(err, &se) || se.StatusCode != 404 || se.Peer != addr || !strings.Contains(se.Message, "not found") {
		t.Errorf("Open of a missing blob: %v", err)
	}
	if _, err := c.Stat(ctx, addr, missing); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat of a missing blob: %v", err)
	}
	_, err = c.Open(ctx, addr, digest, 5, 1)
	if !errors.As(err, &se) || se.StatusCode != http.StatusRequestedRangeNotSatisfiable || errors.Is(err, ErrNotFound) {
		t.Errorf("Open past the end: %v", err)
	}
	if size, err := c.Stat(ctx, addr, digest); err != nil || size != 5 {
		t.Errorf("Stat = %d, %v", size, err)
	}
	if _, err := c.Open(ctx, addr, "sha256:nothex", 0, 1); err == nil || !strings.Contains(err.Error(), "invalid digest") {
		t.Errorf("Open of an invalid digest: %v", err)
	}
	if _, err := c.Open(ctx, addr, digest, -1, 1); err == nil {
		t.Error("Open at a negative offset succeeded")
	}
	rc, err := c.Open(ctx, addr, digest, 3, 0)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(rc); err != nil || len(b) != 0 {
		t.Errorf("zero-length Open read %q, %v", b, err)
	}
}

func TestClientUnreachable(t *testing.T) {
	ts := httptest.NewServer(http.NotFoundHandler())
	addr := ts.Listener.Addr().String()
	ts.Close()
	var c Client
	_, err := c.Open(testContext(t), addr, testDigest, 0, -1)
	var se *StatusError
	if err == nil || errors.As(err, &se) || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), testDigest) {
		t.Errorf("Open from a dead peer: %v", err)
	}
}

func TestClientErrorMessage(t *testing.T) {
	tests := []struct {
		body, want string
	}{
		{`{"error":"blob gone"}`, "blob gone"},
		{"plain text\n", "plain text"},
		{"", ""},
		{strings.Repeat("y", 10000), strings.Repeat("y", maxErrorBody)},
	}
	for _, tt := range tests {
		if got := errorMessage(strings.NewReader(tt.body)); got != tt.want {
			t.Errorf("errorMessage(%.20q) = %.20q, want %.20q", tt.body, got, tt.want)
		}
	}
}

// The download limiter applies to bodies read through the client.
func TestDownloadLimit(t *testing.T) {
	const rate, size = 4 << 20, 1 << 20
	src := newMemSource()
	digest, _ := src.add(make([]byte, size), size)
	addr := startServer(t, newServer(src, ServerOptions{}))
	l := bwlimit.New(rate)
	c := Client{Download: l}
	start := time.Now()
	if got := readAll(t, &c, addr, digest, 0, -1); len(got) != size {
		t.Fatalf("read %d bytes", len(got))
	}
	if floor := time.Duration(float64(size-l.Burst()) / rate * float64(time.Second)); time.Since(start) < floor {
		t.Errorf("%d bytes at %d B/s took %v, less than %v", size, rate, time.Since(start), floor)
	}
}

type fakeResolver map[string]Descriptor

func (f fakeResolver) Resolve(ctx context.Context, image string) (Descriptor, error) {
	if image == "broken" {
		return Descriptor{}, errors.New("registry down")
	}
	d, ok := f[image]
	if !ok {
		return Descriptor{}, fmt.Errorf("image %s: %w", image, ErrNotFound)
	}
	return d, nil
}

func TestResolve(t *testing.T) {
	want := Descriptor{Digest: testDigest, Size: 1234, MediaType: "application/vnd.oci.image.manifest.v1+json"}
	res := fakeResolver{
		"registry.local/app:v1 with&odd=chars": want,
		"invalid":                              {Digest: "md5:xyz", Size: 1, MediaType: "x"},
	}
	s := newServer(newMemSource(), ServerOptions{Resolver: res})
	addr := startServer(t, s)
	bare := startServer(t, newServer(newMemSource(), ServerOptions{}))
	ctx := testContext(t)
	var c Client

	got, err := c.Resolve(ctx, addr, "registry.local/app:v1 with&odd=chars")
	if err != nil || got != want {
		t.Errorf("Resolve = %+v, %v; want %+v", got, err, want)
	}
	tests := []struct {
		addr, image string
		status      int
	}{
		{addr, "registry.local/app:v2", 404},
		{addr, "", 400},
		{addr, strings.Repeat("a", maxImageRef+1), 400},
		{addr, "broken", 502},
		{addr, "invalid", 502},
		{bare, "registry.local/app:v1", 404},
	}
	for _, tt := range tests {
		_, err := c.Resolve(ctx, tt.addr, tt.image)
		var se *StatusError
		if !errors.As(err, &se) || se.StatusCode != tt.status || !strings.Contains(err.Error(), "resolve") {
			t.Errorf("Resolve(%.20q) error %v, want status %d", tt.image, err, tt.status)
		}
	}
}

func TestResolveChecksAnswer(t *testing.T) {
	tests := []struct {
		body, wantErr string
	}{
		{`{"digest":"` + testDigest + `","size":10,"mediaType":"m"}`, ""},
		{`{"digest":"` + testDigest + `","size":10}`, "missing mediaType"},
		{`{"digest":"sha256:abc","size":10,"mediaType":"m"}`, "invalid digest"},
		{`{"digest":"` + testDigest + `","size":-1,"mediaType":"m"}`, "negative size"},
		{`not json`, "malformed descriptor"},
		{`{"digest":` + strings.Repeat(" ", maxDescriptorJSON) + `}`, "too large"},
	}
	for _, tt := range tests {
		addr := lyingPeer(t, answer(200, nil, tt.body))
		var c Client
		_, err := c.Resolve(testContext(t), addr, "img")
		if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("Resolve answered %.40q: error %v, want %q", tt.body, err, tt.wantErr)
		}
	}
}

// A busy parent's Retry-After reaches the caller as a duration that means
// what the parent said, and a number too large for a time.Duration does
// not wrap around to a negative wait.
func TestClientRetryAfter(t *testing.T) {
	tests := []struct {
		header string
		want   time.Duration
	}{
		{"1", time.Second},
		{"0", 0},
		{"59", 59 * time.Second},
		{"61", maxRetryAfter},
		{"", 0},
		{"-1", 0},
		{"+1", 0},
		{"1.5", 0},
		{"Wed, 21 Oct 2015 07:28:00 GMT", 0},
		{"3600", maxRetryAfter},
		{"10000000000", maxRetryAfter},
		{"99999999999999999999", maxRetryAfter},
		{"18700000000000000000A", 0}, // found by FuzzRetryAfter
	}
	for _, tt := range tests {
		addr := lyingPeer(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header()["Retry-After"] = []string{tt.header}
			w.WriteHeader(http.StatusServiceUnavailable)
		})
		var c Client
		_, err := c.Open(testContext(t), addr, testDigest, 0, -1)
		var se *StatusError
		if !errors.As(err, &se) || se.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("Retry-After %q: error %v, want a 503 StatusError", tt.header, err)
		}
		if se.RetryAfter != tt.want {
			t.Errorf("Retry-After %q: RetryAfter = %v, want %v", tt.header, se.RetryAfter, tt.want)
		}
	}
}
