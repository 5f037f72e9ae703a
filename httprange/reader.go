package httprange

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// ErrTooLong is wrapped by the error of a body that holds more bytes than
// its answer promised.
var ErrTooLong = errors.New("body longer than promised")

// maxEmptyReads bounds how often the end-of-body probe accepts a Read that
// returns neither bytes nor an error, as bufio does.
const maxEmptyReads = 100

// NewReader returns a reader of exactly n bytes of r. It never returns a
// byte past the n-th: once n have been read it asks r for one more, and if
// r has one, it fails with ErrTooLong instead of returning io.EOF. If r
// ends early, it fails with an error wrapping io.ErrUnexpectedEOF. Errors
// are sticky.
func NewReader(r io.Reader, n int64) io.Reader {
	return &reader{r: r, left: n, promised: n}
}

type reader struct {
	r        io.Reader
	left     int64 // bytes promised and not read yet
	promised int64
	// more means r legitimately goes on past the promise (a range cut
	// from a whole-blob answer): the end is not probed.
	more bool
	what string // the bytes and their URL, for errors; may be ""
	err  error
}

func (r *reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.left == 0 {
		r.err = r.end()
		return 0, r.err
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.r.Read(p)
	r.left -= int64(n)
	switch {
	case err == nil:
		return n, nil
	case err == io.EOF && r.left == 0:
		r.err = io.EOF
	case err == io.EOF:
		r.err = r.fail(fmt.Errorf("body ended after %d of %d bytes: %w", r.promised-r.left, r.promised, io.ErrUnexpectedEOF))
	default:
		r.err = r.fail(err)
	}
	return n, r.err
}

// end checks, once the promise is met, that r has nothing more.
func (r *reader) end() error {
	if r.more {
		return io.EOF
	}
	var b [1]byte
	for range maxEmptyReads {
		n, err := r.r.Read(b[:])
		switch {
		case n > 0:
			return r.fail(fmt.Errorf("%w: more than %d bytes", ErrTooLong, r.promised))
		case err == io.EOF:
			return io.EOF
		case err != nil:
			return r.fail(err)
		}
	}
	return r.fail(io.ErrNoProgress)
}

func (r *reader) fail(err error) error {
	if r.what == "" {
		return err
	}
	return fmt.Errorf("reading %s: %w", r.what, err)
}

// Body checks resp, the answer to a GET for n bytes from off (n < 0: to
// the end) made with Header(off, n), and returns its body as a reader of
// exactly those bytes (see NewReader). Closing it closes resp.Body. On
// error, resp.Body is left to the caller to close.
//
// A 206 answer must carry a Content-Range of exactly the bytes asked for
// (and the complete length, for a range to the end) and a Content-Length,
// if any, of as many bytes. A 200 answer, from a server that ignored the
// Range, must carry a Content-Length covering the bytes asked for; Body
// skips the bytes before off, which costs their download. Any other status
// is an error: callers turn error answers into errors of their own first.
//
// Read errors name the bytes and the URL first asked for, without its
// query, which may hold a storage signature after a redirect.
func Body(resp *http.Response, off, n int64) (io.ReadCloser, error) {
	if _, err := Header(off, n); err != nil {
		return nil, err
	}
	whole := off == 0 && n < 0
	var r *reader
	switch {
	case resp.StatusCode == http.StatusPartialContent && whole:
		return nil, fmt.Errorf("answered %d to a request for the whole blob", resp.StatusCode)
	case resp.StatusCode == http.StatusPartialContent:
		length, err := checkPartial(resp, off, n)
		if err != nil {
			return nil, err
		}
		r = &reader{r: resp.Body, left: length, promised: length}
	case resp.StatusCode == http.StatusOK:
		var err error
		if r, err = skipTo(resp, off, n); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("answered %d %s, want 200 or 206", resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	r.what = fmt.Sprintf("bytes %d-%d of %s", off, off+r.promised-1, origin(resp))
	return readCloser{r, resp.Body}, nil
}

// checkPartial checks a 206 answer to a request for [off, off+n) and
// returns the number of bytes its body must hold.
func checkPartial(resp *http.Response, off, n int64) (int64, error) {
	h := resp.Header.Get("Content-Range")
	cr, err := ParseContentRange(h)
	if err != nil {
		return 0, err
	}
	if cr.Unsatisfied() {
		return 0, fmt.Errorf("answered 206 with Content-Range %q", h)
	}
	last := off + n - 1
	if n < 0 {
		if cr.Size < 0 {
			return 0, fmt.Errorf("range to the end answered without the complete length: Content-Range %q", h)
		}
		last = cr.Size - 1
	}
	if cr.First != off || cr.Last != last {
		return 0, fmt.Errorf("asked for bytes %d-%d, got Content-Range %q", off, last, h)
	}
	if resp.ContentLength >= 0 && resp.ContentLength != cr.Len() {
		return 0, fmt.Errorf("Content-Length %d does not match Content-Range %q", resp.ContentLength, h)
	}
	return cr.Len(), nil
}

// skipTo checks a 200 answer, the whole content, against a request for
// [off, off+n), and reads it up to off.
func skipTo(resp *http.Response, off, n int64) (*reader, error) {
	size := resp.ContentLength
	if size < 0 {
		return nil, errors.New("answer has no Content-Length")
	}
	if off > size || n > size-off {
		return nil, fmt.Errorf("asked for %d bytes at %d, answer has %d bytes", n, off, size)
	}
	all := &reader{r: resp.Body, left: size, promised: size}
	if off > 0 {
		if _, err := io.CopyN(io.Discard, all, off); err != nil {
			return nil, fmt.Errorf("server ignored Range; skipping %d bytes of its whole answer: %w", off, err)
		}
	}
	if n < 0 {
		n = size - off
	}
	if n == size {
		return all, nil
	}
	return &reader{r: all, left: n, promised: n, more: off+n < size}, nil
}

// origin returns the URL first asked for by the request resp answers,
// without query or credentials.
func origin(resp *http.Response) string {
	req := resp.Request
	if req == nil || req.URL == nil {
		return "an answer without a request"
	}
	for req.Response != nil && req.Response.Request != nil {
		req = req.Response.Request
	}
	u := url.URL{Scheme: req.URL.Scheme, Host: req.URL.Host, Path: req.URL.Path, RawPath: req.URL.RawPath}
	return u.String()
}

type readCloser struct {
	*reader
	c io.Closer
}

func (rc readCloser) Close() error { return rc.c.Close() }
