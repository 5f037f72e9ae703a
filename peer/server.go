package peer

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/faasnet/faasnet/bwlimit"
	"github.com/faasnet/faasnet/digest"
	"github.com/faasnet/faasnet/httprange"
)

// Defaults for ServerOptions.
const (
	DefaultBlockSize    = 512 << 10
	DefaultQueueTimeout = 10 * time.Second
	DefaultStallTimeout = 60 * time.Second
)

// maxPiece bounds the buffer a body is copied through, whatever the block
// size: a few uploads of huge blocks must not pin gigabytes.
const maxPiece = 1 << 20

// ServerOptions configures a Server. The zero value serves without limits.
type ServerOptions struct {
	// Upload limits the bytes per second of all blob bodies together;
	// nil means unlimited.
	Upload *bwlimit.Limiter

	// MaxUploads caps how many blob bodies are sent at once; 0 means no
	// cap. HEAD and resolve requests do not count.
	//
	// A GET over the cap waits in line for up to QueueTimeout and is then
	// refused with 503 and Retry-After. Waiting is kinder to a tree than
	// refusing at once: the child of a busy parent gets its blocks a
	// little later instead of falling back to the registry.
	MaxUploads int

	// QueueTimeout is how long a GET over MaxUploads waits for a slot;
	// 0 means DefaultQueueTimeout and a negative value refuses at once.
	// Clients must wait longer than this for response headers.
	QueueTimeout time.Duration

	// StallTimeout is how long writing one piece of a body to a child may
	// take once the upload limiter allowed it, so that a child that stopped
	// reading cannot hold an upload slot forever; 0 means
	// DefaultStallTimeout, negative means no limit.
	StallTimeout time.Duration

	// BlockSize is the blob block size, 0 meaning DefaultBlockSize. Body
	// pieces never span a block boundary, and the server flushes after
	// each, so a child gets every block as soon as the source has it.
	BlockSize int

	// Resolver, if set, answers resolve requests; without it they get 404.
	Resolver Resolver

	// Authorizer, if set, is asked before anything is opened or resolved
	// for a request; its refusals (ErrForbidden) are answered 403 at once.
	// Without it every request is served.
	Authorizer Authorizer

	// Logger receives debug logs of requests and warnings of failures;
	// nil means slog.Default().
	Logger *slog.Logger
}

// Stats are a Server's counters since it started, for metrics.
type Stats struct {
	Requests  int64 // requests of any kind
	BytesSent int64 // blob body bytes written
	Blobs     int64 // 200 answers to GET: whole blobs
	Ranges    int64 // 206 answers to GET: byte ranges
	Stripes   int64 // 200 answers to StripeHeader GETs: a stripe's blocks
	Blocks    int64 // body pieces flushed, at most one block each
	Errors    int64 // 4xx and 5xx answers except 503, and bodies cut short
	Rejected  int64 // 503 answers: no upload slot within QueueTimeout
	Forbidden int64 // 403 answers: the Authorizer refused
	Uploads   int64 // gauge: blob bodies being sent now
	Queued    int64 // gauge: GETs waiting for an upload slot now
}

// Server serves blobs from a Source to children, and resolves images
// through an optional Resolver. Mount it at PathPrefix. It is an
// http.Handler, safe for concurrent use.
//
// Every blob request, HEAD included, opens the blob at the Source, which
// may start fetching it upstream: a child asks for what it will read.
// Error answers are JSON {"error": "..."}: 400 for a malformed digest, 403
// for what the Authorizer refused, 404 for a blob the Source does not know, 416 (with Content-Range: bytes
// */size) for a range not served, 502 when the Source fails, 503 with
// Retry-After when no upload slot frees in time.
//
// The http.Server it runs in must not have a WriteTimeout shorter than
// the longest blob transfer; StallTimeout protects against stuck children
// instead.
type Server struct {
	src          Source
	opts         ServerOptions
	log          *slog.Logger
	slots        chan struct{} // nil when uploads are not capped
	pieceSize    int
	queueTimeout time.Duration
	stallTimeout time.Duration
	bufs         sync.Pool

	requests, bytesSent, blobs, ranges, stripes, blocks atomic.Int64
	failures, rejected, uploads, queued                 atomic.Int64
	forbidden                                           atomic.Int64

	// onQueue, if set, is called when a GET starts waiting for a slot; a
	// test hook.
	onQueue func()
}

// NewServer returns a Server of the blobs of src.
func NewServer(src Source, opts ServerOptions) *Server {
	s := &Server{src: src, opts: opts, log: opts.Logger}
	if s.log == nil {
		s.log = slog.Default()
	}
	if opts.BlockSize <= 0 {
		s.opts.BlockSize = DefaultBlockSize
	}
	s.pieceSize = min(s.opts.BlockSize, maxPiece)
	s.bufs.New = func() any {
		b := make([]byte, s.pieceSize)
		return &b
	}
	if opts.MaxUploads > 0 {
		s.slots = make(chan struct{}, opts.MaxUploads)
	}
	s.queueTimeout = opts.QueueTimeout
	if s.queueTimeout == 0 {
		s.queueTimeout = DefaultQueueTimeout
	}
	s.stallTimeout = opts.StallTimeout
	if s.stallTimeout == 0 {
		s.stallTimeout = DefaultStallTimeout
	}
	return s
}

// Stats returns a snapshot of the server's counters.
func (s *Server) Stats() Stats {
	return Stats{
		Requests:  s.requests.Load(),
		BytesSent: s.bytesSent.Load(),
		Blobs:     s.blobs.Load(),
		Ranges:    s.ranges.Load(),
		Stripes:   s.stripes.Load(),
		Blocks:    s.blocks.Load(),
		Errors:    s.failures.Load(),
		Rejected:  s.rejected.Load(),
		Forbidden: s.forbidden.Load(),
		Uploads:   s.uploads.Load(),
		Queued:    s.queued.Load(),
	}
}

// ServeHTTP routes a peer request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	rest, ok := strings.CutPrefix(r.URL.Path, PathPrefix)
	switch {
	case !ok:
		s.fail(w, http.StatusNotFound, "not a peer protocol path")
	case r.Method != http.MethodGet && r.Method != http.MethodHead:
		w.Header().Set("Allow", "GET, HEAD")
		s.fail(w, http.StatusMethodNotAllowed, "the peer protocol is read-only")
	case rest == "resolve":
		s.serveResolve(w, r)
	case strings.HasPrefix(rest, "blobs/"):
		s.serveBlob(w, r, strings.TrimPrefix(rest, "blobs/"))
	default:
		s.fail(w, http.StatusNotFound, "unknown peer protocol path")
	}
}

// fail answers an error as JSON {"error": msg}, the form of every error
// faasnet's HTTP APIs give.
func (s *Server) fail(w http.ResponseWriter, code int, msg string) {
	if code == http.StatusServiceUnavailable {
		s.rejected.Add(1)
	} else {
		s.failures.Add(1)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(struct {
		Error string `json:"error"`
	}{msg})
}

// denied answers an Authorizer's error, and reports whether there was one.
// A refusal is 403; anything else (the Authorizer waited for content that
// did not come, or the child left) is answered as a Source's error would be.
func (s *Server) denied(w http.ResponseWriter, r *http.Request, err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, ErrForbidden):
		s.forbidden.Add(1)
		s.fail(w, http.StatusForbidden, err.Error())
	case errors.Is(err, ErrNotFound):
		s.fail(w, http.StatusNotFound, err.Error())
	case r.Context().Err() != nil:
	default:
		s.fail(w, http.StatusInternalServerError, err.Error())
	}
	return true
}

func (s *Server) serveResolve(w http.ResponseWriter, r *http.Request) {
	if s.opts.Resolver == nil {
		s.fail(w, http.StatusNotFound, "this peer does not resolve images")
		return
	}
	image := r.URL.Query().Get("image")
	if image == "" || len(image) > maxImageRef {
		s.fail(w, http.StatusBadRequest, "resolve needs ?image=REFERENCE")
		return
	}
	authz := s.opts.Authorizer
	if authz != nil && s.denied(w, r, authz.AuthorizeResolve(r, image)) {
		return
	}
	d, err := s.opts.Resolver.Resolve(r.Context(), image)
	if err == nil {
		err = d.validate()
	}
	if err == nil && authz != nil && s.denied(w, r, authz.AuthorizeManifest(r, d)) {
		return
	}
	switch {
	case errors.Is(err, ErrNotFound):
		s.fail(w, http.StatusNotFound, err.Error())
		return
	case r.Context().Err() != nil:
		return // the child left; nobody reads an answer
	case err != nil:
		s.log.Warn("peer: resolve failed", "image", image, "err", err)
		s.fail(w, http.StatusBadGateway, "resolve "+image+": "+err.Error())
		return
	}
	body, _ := json.Marshal(d) // a Descriptor always marshals
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Write(body)
}

func (s *Server) serveBlob(w http.ResponseWriter, r *http.Request, name string) {
	// A digest that parses is in canonical form, safe to pass on as is.
	if _, err := digest.Parse(name); err != nil {
		s.fail(w, http.StatusBadRequest, err.Error())
		return
	}
	if a := s.opts.Authorizer; a != nil && s.denied(w, r, a.AuthorizeBlob(r, name)) {
		return
	}
	ctx := r.Context()
	if r.Header.Get(DemandHeader) != "" {
		ctx = WithDemand(ctx)
	}
	b, release, err := s.src.Open(ctx, name)
	switch {
	case errors.Is(err, ErrNotFound):
		s.fail(w, http.StatusNotFound, "blob "+name+" not found")
		return
	case ctx.Err() != nil:
		if err == nil {
			release()
		}
		return
	case err != nil:
		s.log.Warn("peer: open blob failed", "digest", name, "err", err)
		s.fail(w, http.StatusBadGateway, "blob "+name+": "+err.Error())
		return
	}
	defer release()

	size := b.Size()
	if size < 0 {
		s.fail(w, http.StatusBadGateway, "blob "+name+": size unknown")
		return
	}
	if h := r.Header.Get(StripeHeader); h != "" {
		s.serveStripe(ctx, w, r, b, name, h)
		return
	}
	off, n, status := int64(0), size, http.StatusOK
	if h := r.Header.Get("Range"); h != "" {
		if off, n, err = httprange.ParseRange(h, size); err != nil {
			w.Header().Set("Content-Range", httprange.ContentRange{First: -1, Last: -1, Size: size}.String())
			s.fail(w, http.StatusRequestedRangeNotSatisfiable, err.Error())
			return
		}
		status = http.StatusPartialContent
	}
	if r.Method == http.MethodHead || n == 0 {
		s.writeHeader(w, r, status, name, off, n, size)
		return
	}

	if err := s.acquire(ctx); err != nil {
		if ctx.Err() == nil {
			w.Header().Set("Retry-After", "1")
			s.fail(w, http.StatusServiceUnavailable, "too many uploads; retry")
		}
		return
	}
	defer s.releaseSlot()
	rd, err := b.Reader(ctx, off, n)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("peer: read blob failed", "digest", name, "err", err)
			s.fail(w, http.StatusBadGateway, "blob "+name+": "+err.Error())
		}
		return
	}
	defer rd.Close()

	s.writeHeader(w, r, status, name, off, n, size)
	rc := http.NewResponseController(w)
	// Headers go out at once: the child learns the request was accepted
	// even if the first block is still on its way from upstream.
	rc.Flush()
	start := time.Now()
	if sourceFailed, err := s.stream(ctx, w, rc, rd, off, n); err != nil {
		s.failures.Add(1)
		// A child leaving is routine (failover, a reader done early); a
		// failing source or a child that stopped reading is worth a warning.
		lvl := slog.LevelDebug
		if sourceFailed || errors.Is(err, os.ErrDeadlineExceeded) {
			lvl = slog.LevelWarn
		}
		s.log.Log(ctx, lvl, "peer: blob body cut short", "digest", name, "offset", off, "length", n, "err", err)
		return
	}
	s.log.Debug("peer: served blob", "digest", name, "offset", off, "length", n, "duration", time.Since(start))
}

// serveStripe answers a StripeHeader request: the stripe's blocks back to
// back, each streamed as it arrives (cut-through), within one upload slot.
func (s *Server) serveStripe(ctx context.Context, w http.ResponseWriter, r *http.Request, b Blob, name, h string) {
	size := b.Size()
	st, err := ParseStripe(h, size)
	if err != nil {
		s.fail(w, http.StatusBadRequest, err.Error())
		return
	}
	if r.Method == http.MethodHead {
		s.fail(w, http.StatusBadRequest, StripeHeader+" with HEAD")
		return
	}
	if err := s.acquire(ctx); err != nil {
		if ctx.Err() == nil {
			w.Header().Set("Retry-After", "1")
			s.fail(w, http.StatusServiceUnavailable, "too many uploads; retry")
		}
		return
	}
	defer s.releaseSlot()
	s.stripes.Add(1)
	hd := w.Header()
	hd.Set("Content-Type", "application/octet-stream")
	hd.Set("Content-Length", strconv.FormatInt(st.Len(size), 10))
	hd.Set("Docker-Content-Digest", name)
	hd.Set(StripeHeader, st.String())
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	rc.Flush()
	for i := int64(st.From); i*st.Block < size; i += int64(st.K) {
		off := i * st.Block
		n := min(st.Block, size-off)
		sourceFailed, err := s.streamBlock(ctx, w, rc, b, off, n)
		if err != nil {
			s.failures.Add(1)
			lvl := slog.LevelDebug
			if sourceFailed || errors.Is(err, os.ErrDeadlineExceeded) {
				lvl = slog.LevelWarn
			}
			s.log.Log(ctx, lvl, "peer: stripe cut short", "digest", name, "stripe", st.String(), "block", i, "err", err)
			return
		}
	}
}

// streamBlock streams [off, off+n) of b to the child as it arrives.
func (s *Server) streamBlock(ctx context.Context, w http.ResponseWriter, rc *http.ResponseController, b Blob, off, n int64) (sourceFailed bool, err error) {
	rd, err := b.Reader(ctx, off, n)
	if err != nil {
		return true, err
	}
	defer rd.Close()
	return s.stream(ctx, w, rc, rd, off, n)
}

// writeHeader writes the headers of a successful blob answer.
func (s *Server) writeHeader(w http.ResponseWriter, r *http.Request, status int, digest string, off, n, size int64) {
	if r.Method == http.MethodGet {
		if status == http.StatusOK {
			s.blobs.Add(1)
		} else {
			s.ranges.Add(1)
		}
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.FormatInt(n, 10))
	h.Set("Docker-Content-Digest", digest)
	h.Set("Accept-Ranges", "bytes")
	if status == http.StatusPartialContent {
		h.Set("Content-Range", httprange.ContentRange{First: off, Last: off + n - 1, Size: size}.String())
	}
	w.WriteHeader(status)
}

// stream copies [off, off+n) from rd to w in pieces that never span a
// block boundary, each charged to the upload limiter, written within the
// stall timeout and flushed. On failure it tells whether the source or
// the child side failed.
func (s *Server) stream(ctx context.Context, w http.ResponseWriter, rc *http.ResponseController, rd io.Reader, off, n int64) (sourceFailed bool, err error) {
	bp := s.bufs.Get().(*[]byte)
	defer s.bufs.Put(bp)
	buf := *bp
	if s.stallTimeout > 0 {
		// The connection outlives this request: leave no deadline behind
		// for the next one.
		defer rc.SetWriteDeadline(time.Time{})
	}
	blockSize := int64(s.opts.BlockSize)
	for pos, end := off, off+n; pos < end; {
		want := min(end-pos, blockSize-pos%blockSize, int64(len(buf)))
		got, rerr := rd.Read(buf[:want])
		if got > 0 {
			if err := s.send(ctx, w, rc, buf[:got]); err != nil {
				return false, err
			}
			pos += int64(got)
		}
		switch {
		case rerr == io.EOF && pos < end:
			return true, io.ErrUnexpectedEOF
		case rerr != nil && rerr != io.EOF:
			return ctx.Err() == nil, rerr
		}
	}
	return false, nil
}

// send writes one piece to the child and flushes it. The piece goes out
// in slices of at most the upload limiter's burst, each charged before it
// is written, so that a limited stream is paced smoothly rather than in
// bursts of whole blocks.
func (s *Server) send(ctx context.Context, w http.ResponseWriter, rc *http.ResponseController, p []byte) error {
	for len(p) > 0 {
		k := len(p)
		if burst := s.opts.Upload.Burst(); burst > 0 {
			k = min(k, burst)
		}
		if err := s.opts.Upload.WaitN(ctx, k); err != nil {
			return err
		}
		if s.stallTimeout > 0 {
			// Set after the limiter's wait, which may be long when many
			// children share the upload rate, and is not the child's
			// fault. Writers that cannot (ErrNotSupported) go without.
			rc.SetWriteDeadline(time.Now().Add(s.stallTimeout))
		}
		n, err := w.Write(p[:k])
		s.bytesSent.Add(int64(n))
		if err != nil {
			return err
		}
		p = p[k:]
	}
	if err := rc.Flush(); err != nil {
		return err
	}
	s.blocks.Add(1)
	return nil
}

// acquire takes an upload slot, waiting up to the queue timeout.
func (s *Server) acquire(ctx context.Context) error {
	if s.slots == nil {
		s.uploads.Add(1)
		return nil
	}
	select {
	case s.slots <- struct{}{}:
		s.uploads.Add(1)
		return nil
	default:
	}
	if s.queueTimeout < 0 {
		return errBusy
	}
	s.queued.Add(1)
	defer s.queued.Add(-1)
	if s.onQueue != nil {
		s.onQueue()
	}
	timer := time.NewTimer(s.queueTimeout)
	defer timer.Stop()
	select {
	case s.slots <- struct{}{}:
		s.uploads.Add(1)
		return nil
	case <-timer.C:
		return errBusy
	case <-ctx.Done():
		return ctx.Err()
	}
}

var errBusy = errors.New("peer: no upload slot")

func (s *Server) releaseSlot() {
	s.uploads.Add(-1)
	if s.slots != nil {
		<-s.slots
	}
}
