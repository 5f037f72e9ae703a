package peer

import (
	"context"
	"crypto/tls"
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
	"github.com/faasnet/faasnet/digest"
	"github.com/faasnet/faasnet/grant"
	"github.com/faasnet/faasnet/httprange"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Client fetches blobs from a parent's Server. The zero value is usable.
type Client struct {
	// HTTP sends the requests; nil means a shared client from
	// NewHTTPClient.
	HTTP *http.Client
	// Download limits the bytes per second of all bodies read through
	// this client together; nil means unlimited.
	Download *bwlimit.Limiter

	tls bool // speak HTTPS (NewTLSClient)
}

// NewTLSClient returns a Client that speaks HTTPS to peers, dialing each
// with the TLS settings tlsFor returns for the VM the request's context
// names (WithAuth): a request without one is not sent, so that no caller
// forgets to check whom it talks to. tlsFor must verify that the server is
// that VM (pki.Verifier.PeerClient does).
func NewTLSClient(tlsFor func(serverVM string) *tls.Config, download *bwlimit.Limiter) *Client {
	c := NewHTTPClient()
	t := c.Transport.(*http.Transport)
	t.DialContext = nil
	t.DialTLSContext = dialTLS(tlsFor)
	return &Client{HTTP: c, Download: download, tls: true}
}

// dialTLS dials a peer and checks in the handshake that it is the VM the
// request expects. The check is made once per connection, and the
// transport pools connections by address only, so a kept-alive connection
// may later carry a request expecting another VM at the same address. That
// is harmless: the server was then verified as a cluster VM that was the
// expected parent at that address, and nothing a parent sends is trusted
// beyond that (every blob is checked against its digest, a resolve answer
// against the pinned manifest).
func dialTLS(tlsFor func(string) *tls.Config) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: dialTimeout, KeepAlive: tcpKeepAlive}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		vm := authFrom(ctx).ServerVM
		if vm == "" {
			return nil, fmt.Errorf("peer %s: no expected VM for a TLS connection", addr)
		}
		raw, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		conn := tls.Client(raw, tlsFor(vm))
		hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
		defer cancel()
		if err := conn.HandshakeContext(hctx); err != nil {
			raw.Close()
			return nil, fmt.Errorf("TLS handshake with VM %s at %s: %w", vm, addr, err)
		}
		return conn, nil
	}
}

func (c *Client) scheme() string {
	if c.tls {
		return "https"
	}
	return "http"
}

// newRequest makes a request to a peer carrying the grant of ctx's Auth.
func (c *Client) newRequest(ctx context.Context, method string, u *url.URL) (*http.Request, error) {
	u.Scheme = c.scheme()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		return nil, err
	}
	if g := authFrom(ctx).Grant; g != "" {
		req.Header.Set(grant.Header, g)
	}
	return req, nil
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

// Is makes a 404 answer match ErrNotFound, and a 403 ErrForbidden.
func (e *StatusError) Is(target error) bool {
	return target == ErrNotFound && e.StatusCode == http.StatusNotFound ||
		target == ErrForbidden && e.StatusCode == http.StatusForbidden
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
	handshakeTimeout      = 10 * time.Second
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
func blobURL(addr string, h v1.Hash) *url.URL {
	return &url.URL{Host: addr, Path: PathPrefix + "blobs/" + h.String()}
}

// Open asks the peer at addr ("host:port") for n bytes of a blob from
// offset off, and returns the body as the peer streams it. A negative n
// means up to the end of the blob; n == 0 returns an empty body without
// asking.
//
// The answer must be exactly what was asked: 206 with a Content-Range of
// that range (200 with a Content-Length when the whole blob was asked
// for), checked by httprange.Body. Reading is limited by c.Download, and a
// body shorter or longer than promised fails. Errors name the peer and the
// digest; a non-2xx answer is a *StatusError.
func (c *Client) Open(ctx context.Context, addr, digest string, off, n int64) (io.ReadCloser, error) {
	object := "blob " + digest
	h, err := parseDigest(digest)
	if err != nil {
		return nil, fmt.Errorf("peer %s: %w", addr, err)
	}
	if n == 0 && off >= 0 {
		return io.NopCloser(strings.NewReader("")), nil
	}
	rh, err := httprange.Header(off, n)
	if err != nil {
		return nil, fmt.Errorf("peer %s: %s: %w", addr, object, err)
	}
	req, err := c.newRequest(ctx, http.MethodGet, blobURL(addr, h))
	if err != nil {
		return nil, fmt.Errorf("peer %s: %s: %w", addr, object, err)
	}
	if IsDemand(ctx) {
		req.Header.Set(DemandHeader, "1")
	}
	if rh != "" {
		req.Header.Set("Range", rh)
	}
	resp, err := c.do(req, addr, object)
	if err != nil {
		return nil, err
	}
	body, err := checkBlobAnswer(ctx, resp, rh != "", digest, c.Download, off, n)
	if err != nil {
		resp.Body.Close()
		return nil, fmt.Errorf("peer %s: %s: %w", addr, object, err)
	}
	return body, nil
}

// OpenStripe asks the peer at addr for stripe st of a blob of size bytes
// (see StripeHeader) and returns the stripe's blocks back to back as the
// peer streams them. The answer must repeat the stripe and promise its
// exact length; reading is limited by c.Download and held to that length.
func (c *Client) OpenStripe(ctx context.Context, addr, digest string, st Stripe, size int64) (io.ReadCloser, error) {
	object := "blob " + digest + " stripe " + st.String()
	h, err := parseDigest(digest)
	if err != nil {
		return nil, fmt.Errorf("peer %s: %w", addr, err)
	}
	req, err := c.newRequest(ctx, http.MethodGet, blobURL(addr, h))
	if err != nil {
		return nil, fmt.Errorf("peer %s: %s: %w", addr, object, err)
	}
	if IsDemand(ctx) {
		req.Header.Set(DemandHeader, "1")
	}
	req.Header.Set(StripeHeader, st.String())
	resp, err := c.do(req, addr, object)
	if err != nil {
		return nil, err
	}
	want := st.Len(size)
	switch {
	case resp.StatusCode != http.StatusOK:
		err = fmt.Errorf("answered %d to a stripe request", resp.StatusCode)
	case resp.Header.Get(StripeHeader) != st.String():
		err = fmt.Errorf("answered stripe %.40q, asked %s", resp.Header.Get(StripeHeader), st)
	case resp.ContentLength != want:
		err = fmt.Errorf("promised %d bytes of a %d-byte stripe", resp.ContentLength, want)
	default:
		err = checkDigestHeader(resp, digest)
	}
	if err != nil {
		resp.Body.Close()
		return nil, fmt.Errorf("peer %s: %s: %w", addr, object, err)
	}
	body := httprange.NewReader(bwlimit.NewReader(ctx, resp.Body, c.Download), want)
	return limitedBody{body, resp.Body}, nil
}

// checkBlobAnswer checks a 2xx answer to a request for [off, off+n) and
// returns its body, download-limited and held to the promised length.
// Unlike a registry, a peer must honour a range: a whole blob sent in
// answer to one would be a confused peer pulling a layer in vain.
func checkBlobAnswer(ctx context.Context, resp *http.Response, ranged bool, digest string, limit *bwlimit.Limiter, off, n int64) (io.ReadCloser, error) {
	if ranged && resp.StatusCode != http.StatusPartialContent {
		return nil, fmt.Errorf("answered %d to a range request", resp.StatusCode)
	}
	if err := checkDigestHeader(resp, digest); err != nil {
		return nil, err
	}
	resp.Body = limitedBody{bwlimit.NewReader(ctx, resp.Body, limit), resp.Body}
	return httprange.Body(resp, off, n)
}

// limitedBody is a response body read through a download limiter.
type limitedBody struct {
	io.Reader
	io.Closer
}

// parseDigest is digest.Parse, for functions whose digest parameter
// hides the package.
func parseDigest(s string) (v1.Hash, error) { return digest.Parse(s) }

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
	h, err := parseDigest(digest)
	if err != nil {
		return 0, fmt.Errorf("peer %s: %w", addr, err)
	}
	req, err := c.newRequest(ctx, http.MethodHead, blobURL(addr, h))
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
	u := &url.URL{Host: addr, Path: PathPrefix + "resolve", RawQuery: url.Values{"image": {image}}.Encode()}
	req, err := c.newRequest(ctx, http.MethodGet, u)
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

// Healthy asks the peer at addr for /healthz: nil if it answers 200.
func (c *Client) Healthy(ctx context.Context, addr string) error {
	req, err := c.newRequest(ctx, http.MethodGet, &url.URL{Host: addr, Path: "/healthz"})
	if err != nil {
		return fmt.Errorf("peer %s: health: %w", addr, err)
	}
	resp, err := c.do(req, addr, "health")
	if err != nil {
		return err
	}
	// Read to the end, so that the connection is kept for reuse.
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
	resp.Body.Close()
	return nil
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
	e.RetryAfter = retryAfter(resp.Header.Get("Retry-After"))
	return nil, e
}

// retryAfter parses a Retry-After of delay-seconds (RFC 9110, section
// 10.2.3; peers send no dates), clamped to maxRetryAfter. Anything else
// means no wait was asked for.
func retryAfter(h string) time.Duration {
	// ParseUint reports a long number's overflow before a bad byte after
	// it, so the digits are checked first.
	if h == "" || strings.TrimLeft(h, "0123456789") != "" {
		return 0
	}
	secs, err := strconv.ParseUint(h, 10, 64)
	if err != nil || secs > uint64(maxRetryAfter/time.Second) {
		return maxRetryAfter // every error left is ErrRange
	}
	return time.Duration(secs) * time.Second
}

// maxRetryAfter bounds the wait a peer may ask for: a child kept waiting
// longer for its parent is better off at the registry.
const maxRetryAfter = time.Minute

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
