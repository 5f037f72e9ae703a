package upstream

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/faasnet/faasnet/httprange"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

func readAll(t *testing.T, r io.Reader) []byte {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("reading: %v", err)
	}
	return b
}

// readRange opens and reads [off, off+n) of a blob.
func readRange(ctx context.Context, r *Registry, repo name.Repository, digest string, off, n int64) ([]byte, error) {
	rc, err := r.OpenBlob(ctx, repo, digest, off, n)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// TestOpenBlobRanges reads seeded random ranges of every layer of an image in
// ggcr's registry and compares them with the layers' bytes.
func TestOpenBlobRanges(t *testing.T) {
	_, host := newRegistry(t)
	img := ociImage(t, 11)
	push(t, host+"/fn/ranges:v1", img)
	r := New(anonymous)
	im, err := r.Resolve(t.Context(), host+"/fn/ranges:v1")
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(42))
	for i, l := range layers {
		blob := layerBytes(t, l)
		size := int64(len(blob))
		digest := im.Manifest.Layers[i].Digest.String()
		type span struct{ off, n int64 }
		spans := []span{{0, size}, {0, 1}, {size - 1, 1}, {0, -1}, {3, 0}}
		for range 20 {
			off := rng.Int63n(size)
			spans = append(spans, span{off, 1 + rng.Int63n(size-off)})
		}
		for _, s := range spans {
			got, err := readRange(t.Context(), r, im.Repository, digest, s.off, s.n)
			if err != nil {
				t.Fatalf("layer %d [%d,+%d): %v", i, s.off, s.n, err)
			}
			end := s.off + s.n
			if s.n < 0 {
				end = size
			}
			if !bytes.Equal(got, blob[s.off:end]) {
				t.Fatalf("layer %d [%d,+%d): got %d bytes, not the blob's", i, s.off, s.n, len(got))
			}
		}
	}

	t.Run("beyond the end", func(t *testing.T) {
		_, err := readRange(t.Context(), r, im.Repository, im.Manifest.Layers[0].Digest.String(), 0, im.Manifest.Layers[0].Size+1)
		if err == nil || !strings.Contains(err.Error(), "not satisfiable") {
			t.Errorf("error = %v, want not satisfiable", err)
		}
	})
	t.Run("unknown blob", func(t *testing.T) {
		_, err := readRange(t.Context(), r, im.Repository, d1, 0, 10)
		if !errors.Is(err, ErrNotFound) {
			t.Fatalf("error = %v, want ErrNotFound", err)
		}
		for _, part := range []string{host, "fn/ranges", d1} {
			if !strings.Contains(err.Error(), part) {
				t.Errorf("error %q does not name %q", err, part)
			}
		}
	})
	t.Run("bad arguments", func(t *testing.T) {
		if _, err := r.OpenBlob(t.Context(), im.Repository, "sha256:short", 0, 1); err == nil {
			t.Error("malformed digest accepted")
		}
		if _, err := r.OpenBlob(t.Context(), im.Repository, d1, -1, 1); err == nil {
			t.Error("negative offset accepted")
		}
	})
}

// blobServer is a registry of one blob served by http.ServeContent, which
// knows open-ended and clamped ranges; ignoreRange makes it answer 200 with
// the whole blob as registries without Range support do.
type blobServer struct {
	blob        []byte
	ignoreRange bool
	ranges      atomic.Int32 // requests that carried a Range header
}

func (b *blobServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v2/" {
		return
	}
	if !strings.Contains(r.URL.Path, "/blobs/") {
		http.NotFound(w, r)
		return
	}
	if r.Header.Get("Range") != "" {
		b.ranges.Add(1)
	}
	if b.ignoreRange {
		r.Header.Del("Range")
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b.blob))
}

func start(t *testing.T, h http.Handler) (*Registry, name.Repository) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	r := New(anonymous)
	repo, err := r.Repository(strings.TrimPrefix(srv.URL, "http://") + "/fn/app")
	if err != nil {
		t.Fatal(err)
	}
	return r, repo
}

func TestOpenBlobServers(t *testing.T) {
	blob := make([]byte, 10000)
	rand.New(rand.NewSource(1)).Read(blob)
	tests := []struct {
		name      string
		ignore    bool
		off, n    int64
		want      []byte
		wantErr   string
		wantRange bool
	}{
		{name: "open-ended range", off: 9000, n: -1, want: blob[9000:], wantRange: true},
		{name: "range", off: 100, n: 50, want: blob[100:150], wantRange: true},
		{name: "clamped range", off: 9990, n: 20, wantErr: "Content-Range"},
		{name: "ignored range", ignore: true, off: 5000, n: 123, want: blob[5000:5123], wantRange: true},
		{name: "ignored open-ended range", ignore: true, off: 5000, n: -1, want: blob[5000:], wantRange: true},
		{name: "ignored range beyond the end", ignore: true, off: 9990, n: 20, wantErr: "answer has 10000 bytes"},
		{name: "ignored range past the end", ignore: true, off: 20000, n: 1, wantErr: "answer has 10000 bytes"},
		{name: "whole", off: 0, n: -1, want: blob},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := &blobServer{blob: blob, ignoreRange: tt.ignore}
			r, repo := start(t, srv)
			got, err := readRange(t.Context(), r, repo, d1, tt.off, tt.n)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tt.want) {
				t.Errorf("got %d bytes, want %d bytes of the blob", len(got), len(tt.want))
			}
			if (srv.ranges.Load() > 0) != tt.wantRange {
				t.Errorf("%d Range requests, want some: %v", srv.ranges.Load(), tt.wantRange)
			}
		})
	}
}

// TestOpenBlobRedirect follows a registry that sends blob reads to storage
// on another host, keeping the Range header.
func TestOpenBlobRedirect(t *testing.T) {
	storage := &blobServer{blob: []byte("0123456789abcdefghij")}
	st := httptest.NewServer(storage)
	t.Cleanup(st.Close)
	var redirected atomic.Int32
	r, repo := start(t, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/v2/" {
			return
		}
		redirected.Add(1)
		http.Redirect(w, req, st.URL+"/storage/blobs/x?sig=abc", http.StatusTemporaryRedirect)
	}))
	got, err := readRange(t.Context(), r, repo, d1, 10, 5)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "abcde" || redirected.Load() != 1 || storage.ranges.Load() != 1 {
		t.Errorf("got %q after %d redirects and %d range requests at storage", got, redirected.Load(), storage.ranges.Load())
	}
}

func TestOpenBlobServerError(t *testing.T) {
	r, repo := start(t, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/v2/" {
			return
		}
		http.Error(w, `{"errors":[{"code":"UNKNOWN","message":"disk on fire"}]}`, http.StatusInternalServerError)
	}))
	_, err := readRange(t.Context(), r, repo, d1, 0, 10)
	if err == nil {
		t.Fatal("OpenBlob succeeded against a failing registry")
	}
	var terr *transport.Error
	if !errors.As(err, &terr) || terr.StatusCode != http.StatusInternalServerError {
		t.Errorf("error %v does not carry the registry's 500", err)
	}
	for _, part := range []string{"500", "disk on fire", repo.RegistryStr(), "fn/app", d1} {
		if !strings.Contains(err.Error(), part) {
			t.Errorf("error %q does not name %q", err, part)
		}
	}
	if errors.Is(err, ErrNotFound) {
		t.Error("a 500 is not ErrNotFound")
	}
}

// hangingServer answers the ping, then blocks every other request (after
// sending head bytes of a 206, if head is set) until the client goes away or
// the test ends.
func hangingServer(t *testing.T, head []byte) (*Registry, name.Repository) {
	stop := make(chan struct{})
	r, repo := start(t, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/v2/" {
			return
		}
		if head != nil {
			w.Header().Set("Content-Range", "bytes 0-99/100")
			w.Header().Set("Content-Length", "100")
			w.WriteHeader(http.StatusPartialContent)
			w.Write(head)
			w.(http.Flusher).Flush()
		}
		select {
		case <-req.Context().Done():
		case <-stop:
		}
	}))
	t.Cleanup(func() { close(stop) }) // runs before the server's Close
	return r, repo
}

func TestOpenBlobHangs(t *testing.T) {
	const timeout = 200 * time.Millisecond
	t.Run("before the headers", func(t *testing.T) {
		r, repo := hangingServer(t, nil)
		ctx, cancel := context.WithTimeout(t.Context(), timeout)
		defer cancel()
		_, err := r.OpenBlob(ctx, repo, d1, 0, 100)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("error = %v, want the context's deadline", err)
		}
		if ctx.Err() == nil {
			t.Error("OpenBlob returned before the deadline")
		}
	})
	t.Run("in the body", func(t *testing.T) {
		r, repo := hangingServer(t, []byte("0123456789"))
		ctx, cancel := context.WithTimeout(t.Context(), timeout)
		defer cancel()
		rc, err := r.OpenBlob(ctx, repo, d1, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		got, err := io.ReadAll(rc)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("read error = %v, want the context's deadline", err)
		}
		if string(got) != "0123456789" || !strings.Contains(err.Error(), d1) {
			t.Errorf("read %q before %v", got, err)
		}
	})
	t.Run("resolve", func(t *testing.T) {
		r, repo := hangingServer(t, nil)
		ctx, cancel := context.WithTimeout(t.Context(), timeout)
		defer cancel()
		_, err := r.Resolve(ctx, repo.Tag("v1").String())
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("error = %v, want the context's deadline", err)
		}
	})
}

// TestTransportReused checks that many reads cost one ping, not one each.
func TestTransportReused(t *testing.T) {
	var pings atomic.Int32
	srv := &blobServer{blob: make([]byte, 100)}
	r, repo := start(t, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/v2/" {
			pings.Add(1)
		}
		srv.ServeHTTP(w, req)
	}))
	for i := range int64(10) {
		if _, err := readRange(t.Context(), r, repo, d1, i, 10); err != nil {
			t.Fatal(err)
		}
	}
	// The ping may race https against http on loopback; either way one round.
	if p := pings.Load(); p != 1 {
		t.Errorf("%d pings for 10 reads, want 1", p)
	}
}

// TestOpenBlobChecksAnswer serves answers a registry or its storage should
// not give: each must fail, never read as a silently short or shifted range.
func TestOpenBlobChecksAnswer(t *testing.T) {
	blob := strings.Repeat("0123456789", 10)
	// answer writes a 206 with the given Content-Range and body; chunked,
	// it has no Content-Length to bound the body.
	answer := func(cr, body string) http.HandlerFunc {
		return func(w http.ResponseWriter, req *http.Request) {
			if req.URL.Path == "/v2/" {
				return
			}
			if cr != "" {
				w.Header().Set("Content-Range", cr)
			}
			w.WriteHeader(http.StatusPartialContent)
			w.(http.Flusher).Flush()
			io.WriteString(w, body)
		}
	}
	tests := []struct {
		name    string
		h       http.HandlerFunc
		off, n  int64
		openErr string
		readErr error
	}{
		{name: "short body to the end", h: answer("bytes 50-99/100", blob[50:60]), off: 50, n: -1, readErr: io.ErrUnexpectedEOF},
		{name: "long body", h: answer("bytes 50-59/100", blob[50:70]), off: 50, n: 10, readErr: httprange.ErrTooLong},
		{name: "no Content-Range", h: answer("", blob[40:50]), off: 50, n: 10, openErr: "malformed Content-Range"},
		{name: "more than asked", h: answer("bytes 50-99/100", blob[50:]), off: 50, n: 10, openErr: "asked for bytes 50-59"},
		{name: "not to the end", h: answer("bytes 50-59/100", blob[50:60]), off: 50, n: -1, openErr: "asked for bytes 50-99"},
		{name: "no complete length", h: answer("bytes 50-59", blob[50:60]), off: 50, n: 10, openErr: "malformed Content-Range"},
		{name: "past the complete length", h: answer("bytes 50-59/55", blob[50:60]), off: 50, n: 10, openErr: "malformed Content-Range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, repo := start(t, tt.h)
			got, err := readRange(t.Context(), r, repo, d1, tt.off, tt.n)
			switch {
			case tt.openErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.openErr) || !strings.Contains(err.Error(), d1) {
					t.Fatalf("error = %v, want %q naming the digest", err, tt.openErr)
				}
			case !errors.Is(err, tt.readErr) || !strings.Contains(err.Error(), d1):
				t.Fatalf("read %d bytes, then error %v; want %v naming the digest", len(got), err, tt.readErr)
			}
		})
	}
}

func BenchmarkOpenBlob(b *testing.B) {
	blob := make([]byte, 512<<10)
	srv := httptest.NewServer(&blobServer{blob: blob})
	b.Cleanup(srv.Close)
	r := New(anonymous)
	repo, err := r.Repository(strings.TrimPrefix(srv.URL, "http://") + "/fn/app")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(blob)))
	for b.Loop() {
		rc, err := r.OpenBlob(b.Context(), repo, d1, 0, int64(len(blob)))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, rc); err != nil {
			b.Fatal(err)
		}
		rc.Close()
	}
}
