package testenv

import (
	"io"
	"log"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// BlobCount is what a CountingProxy saw for one blob.
type BlobCount struct {
	Gets  int   // GET requests, whatever their answer
	Heads int   // HEAD requests
	Bytes int64 // response body bytes sent for the GETs
}

// Counter counts the requests that went through a CountingProxy. It is safe
// for concurrent use; a request is counted once its response is complete.
type Counter struct {
	mu        sync.Mutex
	blobs     map[string]BlobCount
	manifests map[string]int
	requests  int
	total     int64
}

// Blobs returns a copy of the counts per blob digest ("sha256:..."), over
// every repository.
func (c *Counter) Blobs() map[string]BlobCount {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.blobs)
}

// ManifestGets returns a copy of the number of manifest GETs per reference,
// written REPO:TAG or REPO@DIGEST as in the request path.
func (c *Counter) ManifestGets() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.manifests)
}

// Requests returns how many requests of any kind went through.
func (c *Counter) Requests() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.requests
}

// TotalBytes returns the response body bytes sent for all requests: blobs,
// manifests and everything else, what the registry's link carried downward.
func (c *Counter) TotalBytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}

// Reset forgets everything counted so far.
func (c *Counter) Reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.blobs, c.manifests, c.requests, c.total = map[string]BlobCount{}, map[string]int{}, 0, 0
}

func (c *Counter) record(method, path string, n int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.requests++
	c.total += n
	kind, repo, ref := parsePath(path)
	switch {
	case kind == routeBlob && method == http.MethodGet:
		bc := c.blobs[ref]
		bc.Gets++
		bc.Bytes += n
		c.blobs[ref] = bc
	case kind == routeBlob && method == http.MethodHead:
		bc := c.blobs[ref]
		bc.Heads++
		c.blobs[ref] = bc
	case kind == routeManifest && method == http.MethodGet:
		sep := ":"
		if digestRE.MatchString(ref) {
			sep = "@"
		}
		c.manifests[repo+sep+ref]++
	}
}

// CountingProxy starts a reverse proxy on 127.0.0.1 in front of the registry
// at target (host:port or an http:// URL) and returns its host:port and the
// Counter it feeds. The proxy passes the client's Host header through, so
// upload locations the registry hands out point back at the proxy. It stops
// in t.Cleanup.
func CountingProxy(t testing.TB, target string) (string, *Counter) {
	t.Helper()
	if !strings.Contains(target, "://") {
		target = "http://" + target
	}
	u, err := url.Parse(target)
	if err != nil || u.Host == "" {
		t.Fatalf("testenv: CountingProxy target %q: not host:port or a URL (%v)", target, err)
	}
	c := &Counter{}
	c.Reset()
	// Its own transport, without transparent gzip, so bodies pass unchanged
	// and idle connections close with the proxy.
	transport := &http.Transport{Proxy: nil, DisableCompression: true, MaxIdleConnsPerHost: 16}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(u)
			r.Out.Host = r.In.Host
		},
		Transport: transport,
		ErrorLog:  log.New(io.Discard, "", 0), // the 502 answer tells the client
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cw := &countingWriter{ResponseWriter: w}
		// Deferred: a response the client hangs up on ends in a panic
		// (http.ErrAbortHandler), and what it sent counts all the same.
		defer func() { c.record(r.Method, r.URL.Path, cw.n) }()
		proxy.ServeHTTP(cw, r)
	}))
	t.Cleanup(func() {
		srv.Close()
		transport.CloseIdleConnections()
	})
	return srv.Listener.Addr().String(), c
}

// countingWriter counts the body bytes written through it.
type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (w *countingWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach Flush on the real writer.
func (w *countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

type route int

const (
	routeOther route = iota
	routeBlob
	routeManifest
)

// digestRE matches an OCI digest (algorithm:encoded, as in the image spec).
var digestRE = regexp.MustCompile(`^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$`)

// parsePath classifies a distribution API path: /v2/REPO/blobs/DIGEST
// (routeBlob, ref is the digest), /v2/REPO/manifests/REF (routeManifest, ref
// a tag or digest) or anything else, uploads included (routeOther). REPO may
// contain slashes, even a "blobs" component; the last marker wins.
func parsePath(path string) (kind route, repo, ref string) {
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		return routeOther, "", ""
	}
	b := strings.LastIndex(rest, "/blobs/")
	m := strings.LastIndex(rest, "/manifests/")
	switch {
	case b > 0 && b > m:
		repo, ref = rest[:b], rest[b+len("/blobs/"):]
		if digestRE.MatchString(ref) {
			return routeBlob, repo, ref
		}
	case m > 0:
		repo, ref = rest[:m], rest[m+len("/manifests/"):]
		if ref != "" && !strings.Contains(ref, "/") {
			return routeManifest, repo, ref
		}
	}
	return routeOther, "", ""
}
