package lazy

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of Options.
const (
	DefaultReadTimeout = 30 * time.Second
	DefaultCacheSize   = 64 << 20
)

// Options configures Mount.
type Options struct {
	// ReadTimeout bounds each read: one not served in time fails with EIO
	// and is logged. Default DefaultReadTimeout.
	ReadTimeout time.Duration
	// CacheSize bounds the memory that verified, decompressed chunks are
	// kept in (LRU). Default DefaultCacheSize.
	CacheSize int64
	// Logger receives warnings about failed reads. Default slog.Default().
	Logger *slog.Logger
	// Limits bound each layer's TOC and chunks; a layer over them is not
	// mounted.
	Limits Limits
	// IDShift is added to every file's owner and group, so that a
	// container whose user namespace maps its root to host uid IDShift
	// sees the image's ownership. Zero shows the image's ids.
	IDShift uint32
	// OverlayWhiteouts shows the layers' whiteouts as overlayfs reads them
	// in a lowerdir, for a mount that is one layer of an overlay stack
	// (the snapshotter mounts each layer on its own): a deleted NAME is a
	// character device 0/0 named NAME, and an opaque directory has the
	// xattr trusted.overlay.opaque (user.overlay.opaque for a "userxattr"
	// overlay) set to "y". Without it, as for faasnet's own runtime, which
	// mounts all layers at once, the whiteouts are applied and hidden.
	OverlayWhiteouts bool
}

func (o Options) withDefaults() Options {
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = DefaultReadTimeout
	}
	if o.CacheSize <= 0 {
		o.CacheSize = DefaultCacheSize
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Stats counts what reading a mounted image cost.
type Stats struct {
	// BlobBytesRead is the number of bytes read from layer blobs, footers
	// and TOCs included.
	BlobBytesRead int64
	// ChunksFetched counts chunks fetched and verified.
	ChunksFetched int64
	// CacheHits counts chunks found in the cache.
	CacheHits int64
	// VerifyFailures counts fetched chunks that did not match their digest
	// (or did not decompress).
	VerifyFailures int64
	// Timeouts counts reads failed with EIO because ReadTimeout passed.
	Timeouts int64
	// ReadErrors counts reads failed with EIO for any other reason.
	ReadErrors int64
}

// errVerify marks a chunk whose bytes are not what the TOC promises.
var errVerify = errors.New("chunk failed verification")

// layerSource is where one layer's chunks come from.
type layerSource struct {
	digest  string
	ix      *Index
	blob    BlobReader
	refetch Refetcher // the blob's own reader, if it keeps what it reads
}

// reader serves the contents of files from their layers' chunks: from the
// cache, or fetched, decompressed and verified. Concurrent reads of one
// chunk share one fetch. Fetches run in goroutines the reader owns, each
// bounded by ReadTimeout; close cancels them and waits.
type reader struct {
	layers  []layerSource
	cache   *lru
	timeout time.Duration
	log     *slog.Logger

	ctx    context.Context // done when the reader is closed
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	inflight map[chunkKey]*fetchCall

	blobBytes, fetched, hits, verifyFailures, timeouts, readErrors atomic.Int64

	joined chan<- struct{} // tests: told when a read joins a fetch under way
}

type fetchCall struct {
	done chan struct{}
	data []byte
	err  error
}

func newReader(opts Options) *reader {
	ctx, cancel := context.WithCancel(context.Background())
	return &reader{
		cache:    newLRU(opts.CacheSize),
		timeout:  opts.ReadTimeout,
		log:      opts.Logger,
		ctx:      ctx,
		cancel:   cancel,
		inflight: map[chunkKey]*fetchCall{},
	}
}

// counted wraps b so that the reader counts the bytes read through it.
func (r *reader) counted(b BlobReader) BlobReader {
	return countingBlob{b, &r.blobBytes}
}

type countingBlob struct {
	BlobReader
	n *atomic.Int64
}

func (c countingBlob) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	n, err := c.BlobReader.ReadAt(ctx, p, off)
	if n > 0 {
		c.n.Add(int64(n))
	}
	return n, err
}

func (r *reader) stats() Stats {
	return Stats{
		BlobBytesRead:  r.blobBytes.Load(),
		ChunksFetched:  r.fetched.Load(),
		CacheHits:      r.hits.Load(),
		VerifyFailures: r.verifyFailures.Load(),
		Timeouts:       r.timeouts.Load(),
		ReadErrors:     r.readErrors.Load(),
	}
}

// close cancels every fetch and waits for them to end.
func (r *reader) close() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.cancel()
	r.wg.Wait()
}

// readFile copies the contents of the regular file n from off into dest
// and returns how many bytes it copied (fewer than len(dest) only at the end
// of the file). It waits at most ReadTimeout, and counts and logs failures.
func (r *reader) readFile(ctx context.Context, n *node, dest []byte, off int64) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	got, err := r.copyChunks(ctx, n, dest, off)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			r.timeouts.Add(1)
		} else {
			r.readErrors.Add(1)
		}
		r.log.Warn("lazy: read failed", "file", n.e.Name, "layer", r.layers[n.layer].digest,
			"offset", off, "length", len(dest), "err", err)
	}
	return got, err
}

func (r *reader) copyChunks(ctx context.Context, n *node, dest []byte, off int64) (int, error) {
	size := n.e.Size
	if off < 0 || off >= size || len(dest) == 0 {
		return 0, nil
	}
	end := min(off+int64(len(dest)), size)
	chunks := n.e.chunks
	i := sort.Search(len(chunks), func(i int) bool { return chunks[i].fileOff+chunks[i].size > off })
	for pos := off; pos < end; i++ {
		c := &chunks[i]
		data, err := r.chunk(ctx, n.layer, c)
		if err != nil {
			return 0, err
		}
		copy(dest[pos-off:end-off], data[pos-c.fileOff:])
		pos = c.fileOff + c.size
	}
	return int(end - off), nil
}

// chunk returns the verified contents of c of the given layer.
func (r *reader) chunk(ctx context.Context, layer int, c *chunk) ([]byte, error) {
	k := chunkKey{layer, c.blobOff, c.inner}
	if data, ok := r.cache.get(k); ok {
		r.hits.Add(1)
		return data, nil
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, errors.New("file system closed")
	}
	call := r.inflight[k]
	if call == nil {
		call = &fetchCall{done: make(chan struct{})}
		r.inflight[k] = call
		r.wg.Add(1)
		go r.fetch(k, c, call)
	} else if r.joined != nil {
		r.joined <- struct{}{}
	}
	r.mu.Unlock()
	select {
	case <-call.done:
		return call.data, call.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// fetch runs one shared fetch of c, not bound to any one reader's context
// so that a reader giving up does not fail the others.
func (r *reader) fetch(k chunkKey, c *chunk, call *fetchCall) {
	defer r.wg.Done()
	ctx, cancel := context.WithTimeout(r.ctx, r.timeout)
	defer cancel()
	call.data, call.err = r.fetchVerified(ctx, k.layer, c)
	if call.err == nil {
		r.fetched.Add(1)
		r.cache.add(k, call.data)
	}
	r.mu.Lock()
	delete(r.inflight, k)
	r.mu.Unlock()
	close(call.done)
}

// fetchVerified fetches c and verifies it; bytes that fail verification are
// never returned. A source that keeps what it reads (a Refetcher) drops the
// chunk's bytes and fetches them again, first as before (the first bytes may
// have been damaged on the way) and then from the origin (the relay may be
// what damages them); another source is read once more. Then it gives up.
func (r *reader) fetchVerified(ctx context.Context, layer int, c *chunk) ([]byte, error) {
	src := r.layers[layer]
	retries := []bool{false} // for each retry, whether it goes to the origin
	if src.refetch != nil {
		retries = []bool{false, true}
	}
	for attempt := 0; ; attempt++ {
		data, err := fetchChunk(ctx, src.blob, c)
		if !errors.Is(err, errVerify) {
			return data, err
		}
		r.verifyFailures.Add(1)
		r.log.Warn("lazy: chunk failed verification", "layer", src.digest,
			"blob_offset", c.blobOff, "attempt", attempt+1, "err", err)
		if attempt == len(retries) {
			return nil, err
		}
		if src.refetch == nil {
			continue
		}
		if err := src.refetch.Refetch(ctx, c.blobOff, c.blobEnd-c.blobOff, retries[attempt]); err != nil {
			return nil, fmt.Errorf("fetching blob range [%d, %d) again after it failed verification: %w", c.blobOff, c.blobEnd, err)
		}
	}
}

// fetchChunk reads c's gzip member from blob, decompresses the chunk and
// checks its digest. Errors about the bytes themselves wrap errVerify.
func fetchChunk(ctx context.Context, blob BlobReader, c *chunk) ([]byte, error) {
	buf := make([]byte, c.blobEnd-c.blobOff)
	if err := readFull(ctx, blob, buf, c.blobOff); err != nil {
		return nil, fmt.Errorf("reading blob range [%d, %d): %w", c.blobOff, c.blobEnd, err)
	}
	bad := func(what string, err error) ([]byte, error) {
		return nil, fmt.Errorf("%w: gzip member at %d: %s: %w", errVerify, c.blobOff, what, err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(buf))
	if err != nil {
		return bad("gzip header", err)
	}
	if _, err := io.CopyN(io.Discard, zr, c.inner); err != nil {
		return bad("skipping to the chunk", err)
	}
	data := make([]byte, c.size)
	if _, err := io.ReadFull(zr, data); err != nil {
		return bad("decompressing", err)
	}
	if sha256.Sum256(data) != c.digest {
		return bad("digest", fmt.Errorf("content of %d bytes does not match the TOC", c.size))
	}
	return data, nil
}
