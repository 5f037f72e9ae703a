package peer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/faasnet/faasnet/bwlimit"
)

// Client fetches blobs from a parent's Server. The zero value is usable.
type Client struct {
	// HTTP sends the requests; nil means a shared client from
	// NewHTTPClient.
	HTTP *http.Client
	// Download limits the bytes per second of all bodies read through
	// this client together; nil means unlimited.
	Download *bwlimit.Limiter
}

// StatusError is a peer's answer other than the expected 2xx.
type StatusError struct {
	Peer       string        // the peer's "host:port"
	Object     string        // what was asked: "blob sha256:..." or "resolve IMAGE"
	StatusCode int           // the HTTP status
	Message    string        // the peer's explanation, if it gave one
	RetryAfter time.Duration // for 503, how long the peer asked to wait
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("peer %s: %s: %d %s", e.Peer, e.Object, e.StatusCode, http.StatusText(e.StatusCode))
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

// Is makes a 404 answer match ErrNotFound.
func (e *StatusError) Is(target error) bool {
	return target == ErrNotFound && e.StatusCode == http.StatusNotFound
}

// Client defaults: see NewHTTPClient.
const (
	dialTimeout           = 5 * time.Second
	tcpKeepAlive          = 15 * time.Second
	responseHeaderTimeout = 30 * time.Second
	idleConnTimeout       = 90 * time.Second
	maxIdleConnsPerHost   = 32
	maxIdleConns          = 1024
	connBufferSize        = 64 << 10
)

// NewHTTPClient returns an http.Client tuned for the peer protocol:
//
//   - No proxy: peers are on the cluster network, and an HTTP_PROXY meant
//     for the registry must not divert tree traffic.
//   - HTTP/1.1, one stream per connection, so each stream has its own TCP
//     flow control and a slow one does not hold up the others.
//   - Up to 32 idle connections kept per peer: a child fetches several
//     blobs and ranges from its parent at once, and the default of 2 would
//     close and redial the rest after every burst.
//   - No overall timeout, which would cut off long transfers of large
//     layers; callers bound a transfer with their context. Connecting must
//     take less than 5 s, and response headers must come within 30 s (more
//     than a Server's DefaultQueueTimeout, since the server answers headers
//     as soon as it has an upload slot, before any data).
//   - No transparent compression: blobs are compressed already, and the
//     client checks Content-Length.
//   - 64 KiB connection buffers, for fewer system calls at high rates.
func NewHTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: dialTimeout, KeepAlive: tcpKeepAlive}).DialContext,
		ForceAttemptHTTP2:     false,
		MaxIdleConns:          maxIdleConns,
		MaxIdleConnsPerHost:   maxIdleConnsPerHost,
		IdleConnTimeout:       idleConnTimeout,
		ResponseHeaderTimeout: responseHeaderTimeout,
		DisableCompression:    true,
		WriteBufferSize:       connBufferSize,
		ReadBufferSize:        connBufferSize,
	}}
}

var defaultHTTP = sync.OnceValue(NewHTTPClient)

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return defaultHTTP()
}

// blobURL is the URL of a blob at a peer.
func blobURL(addr, digest string) string {
	return (&url.URL{Scheme: "http", Host: addr, Path: PathPrefix + "blobs/" + digest}).String()
}

// Open asks the peer at addr ("host:port") for n bytes of a blob from
// offset off, and returns the body as the peer streams it. A negative n
// means up to the end of the blob; n == 0 returns an empty body without
// asking.
//
// The answer must be exactly what was asked: 206 with a Content-Range of
// that range and a matching Content-Length (200 with a Content-Length when
// the whole blob was asked for). Reading is limited by c.Download, and a
// body that ends before the promised length fails with
// io.ErrUnexpectedEOF. Errors name the peer and the digest; a non-2xx
// answer is a *StatusError.
func (c *Client) Open(ctx context.Context, addr, digest string, off, n int64) (io.ReadCloser, error) {
	object := "blob " + digest
	if err := checkDigest(digest); err != nil {
		return nil, fmt.Errorf("peer %s: %w", addr, err)
	}
	if off < 0 {
		return nil, fmt.Errorf("peer %s: %s: negative offset %d", addr, object, off)
	}
	if n == 0 {
		return io.NopCloser(strings.NewReader("")), nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, blobURL(addr, digest), nil)
	if err != nil {
		return nil, fmt.Errorf("peer %s: %s: %w", addr, object, err)
	}
	if IsDemand(ctx) {
		req.Header.Set(DemandHeader, "1")
	}
	whole := off == 0 && n < 0
	switch {
	case whole:
	case n < 0:
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", off))
	default:
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+n-1))
	}
	resp, err := c.do(req, addr, object)
	if err != nil {
		return nil, err
	}
	length, err := checkBlobAnswer(resp, whole, off, n)
	if err == nil {
		err = checkDigestHeader(resp, digest)
	}
	if err != nil {
		resp.Body.Close()
		return nil, fmt.Errorf("peer %s: %s: %w", addr, object, err)
	}
	return &body{
		r:      bwlimit.NewReader(ctx, resp.Body, c.Download),
		c:      resp.Body,
		left:   length,
		peer:   addr,
		object: object,
	}, nil
}

// checkBlobAnswer checks that a 2xx answer carries exactly the bytes asked
// for, and returns their number.
func checkBlobAnswer(resp *http.Response, whole bool, off, n int64) (int64, error) {
	if whole {
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("answered %d to a request for the whole blob", resp.StatusCode)
		}
		if resp.ContentLength < 0 {
			return 0, errors.New("answer has no Content-Length")
		}
		return resp.ContentLength, nil
	}
	if resp.StatusCode != http.StatusPartialContent {
		return 0, fmt.Errorf("answered %d to a range request", resp.StatusCode)
	}
	first, last, size, err := parseContentRange(resp.Header.Get("Content-Range"))
	if err != nil {
		return 0, err
	}
	wantLast := off + n - 1
	if n < 0 {
		if size < 0 {
			return 0, errors.New("open-ended range answered without the blob size")
		}
		wantLast = size - 1
	}
	if first != off || last != wantLast {
		return 0, fmt.Errorf("asked for bytes %d-%d, got Content-Range %q", off, wantLast, resp.Header.Get("Content-Range"))
	}
	if length := last - first + 1; resp.ContentLength != length {
		return 0, fmt.Errorf("Content-Length %d does not match Content-Range %q", resp.ContentLength, resp.Header.Get("Content-Range"))
	}
	return last - first + 1, nil
}

// checkDigestHeader checks Docker-Content-Digest, when the peer sent one.
func checkDigestHeader(resp *http.Response, digest string) error {
	if got := resp.Header.Get("Docker-Content-Digest"); got != "" && got != digest {
		return fmt.Errorf("peer sent Docker-Content-Digest %.80q", got)
	}
	return nil
}

// Stat asks the peer at addr for the size of a blob, which also tells
// that the peer can serve it (a missing blob is a *StatusError matching
// ErrNotFound).
func (c *Client) Stat(ctx context.Context, addr, digest string) (int64, error) {
	object := "blob " + digest
	if err := checkDigest(digest); err != nil {
		return 0, fmt.Errorf("peer %s: %w", addr, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, blobURL(addr, digest), nil)
	if err != nil {
		return 0, fmt.Errorf("peer %s: %s: %w", addr, object, err)
	}
	resp, err := c.do(req, addr, object)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode != http.StatusOK:
		err = fmt.Errorf("answered %d to HEAD", resp.StatusCode)
	case resp.ContentLength < 0:
		err = errors.New("answer has no Content-Length")
	default:
		err = checkDigestHeader(resp, digest)
	}
	if err != nil {
		return 0, fmt.Errorf("peer %s: %s: %w", addr, object, err)
	}
	return resp.ContentLength, nil
}

// Resolve asks the peer at addr for the manifest descriptor of image.
func (c *Client) Resolve(ctx context.Context, addr, image string) (Descriptor, error) {
	object := "resolve " + image
	u := url.URL{Scheme: "http", Host: addr, Path: PathPrefix + "resolve", RawQuery: url.Values{"image": {image}}.Encode()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return Descriptor{}, fmt.Errorf("peer %s: %s: %w", addr, object, err)
	}
	resp, err := c.do(req, addr, object)
	if err != nil {
		return Descriptor{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxDescriptorJSON+1))
	if err == nil && len(data) > maxDescriptorJSON {
		err = errors.New("descriptor too large")
	}
	var d Descriptor
	if err == nil {
		d, err = decodeDescriptor(data)
	}
	if err != nil {
		return Descriptor{}, fmt.Errorf("peer %s: %s: %w", addr, object, err)
	}
	return d, nil
}

// do sends req and turns transport failures and non-2xx answers into
// errors naming the peer and the object.
func (c *Client) do(req *http.Request, addr, object string) (*http.Response, error) {
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return nil, fmt.Errorf("peer %s: %s: %w", addr, object, err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	e := &StatusError{Peer: addr, Object: object, StatusCode: resp.StatusCode, Message: errorMessage(resp.Body)}
	if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs >= 0 {
		e.RetryAfter = time.Duration(secs) * time.Second
	}
	return nil, e
}

// maxErrorBody bounds how much of an error answer is read for its message.
const maxErrorBody = 4 << 10

// errorMessage extracts the explanation of an error answer: the "error"
// of faasnet's JSON form, or else the start of the text.
func errorMessage(r io.Reader) string {
	data, _ := io.ReadAll(io.LimitReader(r, maxErrorBody))
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(data, &e) == nil && e.Error != "" {
		return e.Error
	}
	return strings.TrimSpace(strings.ToValidUTF8(string(data), "?"))
}

// body is a blob body that holds its peer to the promised length.
type body struct {
	r      io.Reader // the response body, download-limited
	c      io.Closer // the response body
	left   int64     // bytes still promised
	peer   string
	object string
}

func (b *body) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	switch {
	case err == io.EOF && b.left > 0:
		err = io.ErrUnexpectedEOF
	case err == io.EOF:
		return n, io.EOF
	case err == nil:
		return n, nil
	}
	return n, fmt.Errorf("peer %s: %s: %w", b.peer, b.object, err)
}

func (b *body) Close() error {
	return b.c.Close()
}
