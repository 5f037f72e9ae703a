package httprange

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/iotest"
)

// countingReader counts the bytes handed out by r.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// emptyReader returns neither bytes nor an error, forever.
type emptyReader struct{}

func (emptyReader) Read([]byte) (int, error) { return 0, nil }

func TestNewReader(t *testing.T) {
	errDisk := errors.New("disk on fire")
	tests := []struct {
		name    string
		r       io.Reader
		n       int64
		want    string
		wantErr error // nil: ends with io.EOF
	}{
		{name: "exact", r: strings.NewReader("0123456789"), n: 10, want: "0123456789"},
		{name: "exact, one byte a read", r: iotest.OneByteReader(strings.NewReader("0123456789")), n: 10, want: "0123456789"},
		{name: "exact, EOF with the data", r: iotest.DataErrReader(strings.NewReader("0123456789")), n: 10, want: "0123456789"},
		{name: "empty", r: strings.NewReader(""), n: 0, want: ""},
		{name: "short", r: strings.NewReader("01234"), n: 10, want: "01234", wantErr: io.ErrUnexpectedEOF},
		{name: "short, EOF with the data", r: iotest.DataErrReader(strings.NewReader("01234")), n: 10, want: "01234", wantErr: io.ErrUnexpectedEOF},
		{name: "long", r: strings.NewReader("0123456789abc"), n: 10, want: "0123456789", wantErr: ErrTooLong},
		{name: "long by one byte", r: strings.NewReader("01234567890"), n: 10, want: "0123456789", wantErr: ErrTooLong},
		{name: "anything for nothing", r: strings.NewReader("x"), n: 0, want: "", wantErr: ErrTooLong},
		{name: "failing", r: io.MultiReader(strings.NewReader("012"), iotest.ErrReader(errDisk)), n: 10, want: "012", wantErr: errDisk},
		{name: "failing at the end", r: io.MultiReader(strings.NewReader("0123456789"), iotest.ErrReader(errDisk)), n: 10, want: "0123456789", wantErr: errDisk},
		{name: "no progress at the end", r: io.MultiReader(strings.NewReader("0123456789"), emptyReader{}), n: 10, want: "0123456789", wantErr: io.ErrNoProgress},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := &countingReader{r: tt.r}
			r := NewReader(src, tt.n)
			got, err := io.ReadAll(r)
			if string(got) != tt.want {
				t.Errorf("read %q, want %q", got, tt.want)
			}
			if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("read error %v, want %v", err, tt.wantErr)
			}
			// Never past the promise: at most one byte more is asked for,
			// to tell a longer body, and it is not handed out.
			if src.n > tt.n+1 {
				t.Errorf("read %d bytes of the source for a promise of %d", src.n, tt.n)
			}
			if _, again := r.Read(make([]byte, 1)); err != nil && again != err {
				t.Errorf("error not sticky: %v, then %v", err, again)
			}
		})
	}
}

// serve answers every request with h and returns a client request's
// answer for a Range of n bytes from off.
func get(t *testing.T, h http.HandlerFunc, off, n int64) *http.Response {
	t.Helper()
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, ts.URL+"/blobs/x?sig=secret", nil)
	if err != nil {
		t.Fatal(err)
	}
	rh, err := Header(off, n)
	if err != nil {
		t.Fatal(err)
	}
	if rh != "" {
		req.Header.Set("Range", rh)
	}
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// answer writes status, headers and body; chunked flushes the headers
// first, so the answer has no Content-Length.
func answer(status int, headers map[string]string, body string, chunked bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for k, v := range headers {
			w.Header().Set(k, v)
		}
		w.WriteHeader(status)
		if chunked {
			w.(http.Flusher).Flush()
		}
		io.WriteString(w, body)
	}
}

func TestBody(t *testing.T) {
	const blob = "0123456789abcdefghijklmnopqrstuvwxyz"
	cr := func(v string) map[string]string { return map[string]string{"Content-Range": v} }
	tests := []struct {
		name    string
		h       http.HandlerFunc
		off, n  int64
		openErr string // substring of Body's error; "" if it succeeds
		want    string
		readErr error
	}{
		{name: "range", h: answer(206, cr("bytes 10-19/36"), blob[10:20], false), off: 10, n: 10, want: blob[10:20]},
		{name: "range to the end", h: answer(206, cr("bytes 30-35/36"), blob[30:], false), off: 30, n: -1, want: blob[30:]},
		{name: "range of unknown complete length", h: answer(206, cr("bytes 10-19/*"), blob[10:20], false), off: 10, n: 10, want: blob[10:20]},
		{name: "range, chunked", h: answer(206, cr("bytes 10-19/36"), blob[10:20], true), off: 10, n: 10, want: blob[10:20]},
		{name: "whole", h: answer(200, nil, blob, false), off: 0, n: -1, want: blob},
		{name: "ignored range", h: answer(200, nil, blob, false), off: 10, n: 5, want: blob[10:15]},
		{name: "ignored range to the end", h: answer(200, nil, blob, false), off: 30, n: -1, want: blob[30:]},
		{name: "ignored range up to the end", h: answer(200, nil, blob, false), off: 30, n: 6, want: blob[30:]},

		{name: "range longer than its Content-Range", h: answer(206, cr("bytes 10-19/36"), blob[10:25], true), off: 10, n: 10, want: blob[10:20], readErr: ErrTooLong},
		{name: "range shorter than its Content-Range", h: answer(206, cr("bytes 10-19/36"), blob[10:15], true), off: 10, n: 10, want: blob[10:15], readErr: io.ErrUnexpectedEOF},
		{
			name: "body shorter than its Content-Length",
			h:    answer(206, map[string]string{"Content-Range": "bytes 10-19/36", "Content-Length": "10"}, blob[10:15], false),
			off:  10, n: 10, want: blob[10:15], readErr: io.ErrUnexpectedEOF,
		},

		{name: "206 for the whole", h: answer(206, cr("bytes 0-35/36"), blob, false), off: 0, n: -1, openErr: "answered 206 to a request for the whole blob"},
		{name: "other start", h: answer(206, cr("bytes 0-9/36"), blob[:10], false), off: 10, n: 10, openErr: "asked for bytes 10-19"},
		{name: "fewer bytes", h: answer(206, cr("bytes 10-14/36"), blob[10:15], false), off: 10, n: 10, openErr: "asked for bytes 10-19"},
		{name: "more bytes", h: answer(206, cr("bytes 10-24/36"), blob[10:25], false), off: 10, n: 10, openErr: "asked for bytes 10-19"},
		{name: "clamped", h: answer(206, cr("bytes 30-35/36"), blob[30:], false), off: 30, n: 10, openErr: "asked for bytes 30-39"},
		{name: "not to the end", h: answer(206, cr("bytes 30-34/36"), blob[30:35], false), off: 30, n: -1, openErr: "asked for bytes 30-35"},
		{name: "to the end of unknown length", h: answer(206, cr("bytes 30-35/*"), blob[30:], false), off: 30, n: -1, openErr: "without the complete length"},
		{name: "no Content-Range", h: answer(206, nil, blob[10:20], false), off: 10, n: 10, openErr: "malformed Content-Range"},
		{name: "unsatisfied Content-Range", h: answer(206, cr("bytes */36"), "", false), off: 10, n: 10, openErr: "answered 206 with Content-Range"},
		{name: "Content-Range past its length", h: answer(206, cr("bytes 10-19/15"), blob[10:20], false), off: 10, n: 10, openErr: "malformed Content-Range"},
		{
			name: "Content-Length disagrees",
			h:    answer(206, map[string]string{"Content-Range": "bytes 10-19/36", "Content-Length": "5"}, blob[10:15], false),
			off:  10, n: 10, openErr: "Content-Length 5",
		},
		{name: "whole without Content-Length", h: answer(200, nil, blob, true), off: 0, n: -1, openErr: "no Content-Length"},
		{name: "ignored range past the end", h: answer(200, nil, blob, false), off: 40, n: 1, openErr: "answer has 36 bytes"},
		{name: "ignored range beyond the end", h: answer(200, nil, blob, false), off: 30, n: 10, openErr: "answer has 36 bytes"},
		{name: "error status", h: answer(500, nil, "disk on fire", false), off: 0, n: -1, openErr: "answered 500"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := get(t, tt.h, tt.off, tt.n)
			rc, err := Body(resp, tt.off, tt.n)
			if tt.openErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.openErr) {
					t.Fatalf("Body error %v, want %q", err, tt.openErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			got, err := io.ReadAll(rc)
			if string(got) != tt.want {
				t.Errorf("read %q, want %q", got, tt.want)
			}
			if tt.readErr == nil && err != nil || tt.readErr != nil && !errors.Is(err, tt.readErr) {
				t.Fatalf("read error %v, want %v", err, tt.readErr)
			}
			if err != nil && (!strings.Contains(err.Error(), "/blobs/x") || strings.Contains(err.Error(), "secret")) {
				t.Errorf("read error %q does not name the URL, or names its query", err)
			}
		})
	}
}

// TestBodyNamesFirstURL checks that after a redirect to storage, read
// errors name the URL asked for, not the storage's signed one.
func TestBodyNamesFirstURL(t *testing.T) {
	storage := httptest.NewServer(answer(206, map[string]string{"Content-Range": "bytes 0-9/10"}, "01234", true))
	t.Cleanup(storage.Close)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, storage.URL+"/bucket/data?X-Signature=secret", http.StatusTemporaryRedirect)
	}))
	t.Cleanup(front.Close)
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, front.URL+"/v2/app/blobs/d", nil)
	req.Header.Set("Range", "bytes=0-9")
	resp, err := front.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rc, err := Body(resp, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(rc)
	if !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), front.URL+"/v2/app/blobs/d") || strings.Contains(err.Error(), "secret") {
		t.Errorf("read error %v, want unexpected EOF naming %s/v2/app/blobs/d", err, front.URL)
	}
}
