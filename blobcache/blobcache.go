// Package blobcache is a worker's on-disk cache of content-addressed blobs,
// filled block by block and read while it fills.
//
// A blob (manifest, config or layer) is named by its digest and cut into
// fixed-size blocks. The block size is the blob's own, chosen when the blob
// is created ([Cache.AcquireBlocks]) and kept on disk with its bitmap, so
// that the blobs of different images may be cut differently. Blocks arrive in any order, from a tree parent or from
// the registry, and go straight to a sparse file; a bitmap records which are
// present. Readers wait for the blocks they need (cut-through), so a worker
// forwards each block to its children as soon as it lands. When the last block
// arrives the blob is hashed against its digest: only then is it complete. On
// a mismatch every block is dropped and the blob fills again, so bad bytes
// from a peer never become a verified blob.
//
// The hash follows the contiguous prefix of present blocks as they arrive, so
// a blob received in order costs one block of hashing after its last block,
// not a second pass over the whole file.
//
// Blobs are reference counted: [Cache.Acquire] and [Cache.Lookup] take a
// reference, [Blob.Release] drops it. Past [Options.MaxBytes] the least
// recently used blobs without references are evicted, never one in use.
//
// Layout under the cache directory:
//
//	lock                             held (flock) while a Cache has the directory
//	blobs/<algorithm>/<hex>          a verified blob
//	blobs/<algorithm>/<hex>.partial  a blob being filled: sparse, full size
//	blobs/<algorithm>/<hex>.bitmap   the blocks of the .partial file that are on disk
//
// A block's bit is written only after its data has been synced, so after a
// crash a marked block is on disk and an unmarked one is fetched again. A
// blob is renamed to its final name only after its data has been synced and
// verified, so that name alone is the completion marker.
//
// The marker says the content was right when it was written, not that the
// file is still intact: a disk error or another program may have changed it
// since. So a verified blob kept from an earlier run is hashed again before
// it is first served: Open starts a background pass over them, most recently
// used first, and the first Acquire or Lookup of one not yet hashed hashes it
// (or waits for the pass to finish it). One that does not match is dropped,
// so it is fetched again like any missing blob.
package blobcache

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/faasnet/faasnet/digest"
)

// DefaultBlockSize is the block size FaaSNet uses (512 KiB): large enough to
// amortise a request per block, small enough that a hop costs little.
const DefaultBlockSize = 512 << 10

// maxBlockSize bounds Options.BlockSize: writers hold one block in memory.
const maxBlockSize = 64 << 20

// maxBlocks bounds the number of blocks of a blob, so that a wild size from
// a manifest cannot make the cache allocate a huge bitmap. At the default
// block size it allows 8 TiB.
const maxBlocks = 1 << 24

// defaultSyncBytes is how much newly written data a blob may have before its
// data file is synced and its bitmap written. It trades fsync cost against
// what a crash loses (those blocks are simply fetched again).
const defaultSyncBytes = 32 << 20

var (
	// ErrInvalidDigest reports a digest string that is not "<algorithm>:<hex>"
	// in canonical form with a supported algorithm (sha256, sha512). It is
	// digest.ErrInvalid: the cache parses names with package digest.
	ErrInvalidDigest = digest.ErrInvalid
	// ErrSizeMismatch reports an Acquire whose size differs from the cached blob's.
	ErrSizeMismatch = errors.New("blobcache: size mismatch")
	// ErrCorrupt reports that a blob's content did not match its digest. Its
	// blocks have been dropped and it can be filled again.
	ErrCorrupt = errors.New("blobcache: content does not match digest")
	// ErrNotPresent reports a read of a block that has not arrived.
	ErrNotPresent = errors.New("blobcache: block not present")
	// ErrNoSpace reports that the disk is full even after evicting every
	// blob not in use. Errors wrapping it also wrap syscall.ENOSPC.
	ErrNoSpace = errors.New("blobcache: no space left on device")
	// ErrClosed reports use of a closed Cache or of a blob of one.
	ErrClosed = errors.New("blobcache: cache closed")
	// ErrReleased reports use of a Blob after its Release.
	ErrReleased = errors.New("blobcache: blob released")
)

// errEvicted is what waiters of an evicted blob would see; none should exist,
// since a blob in use is never evicted.
var errEvicted = errors.New("blobcache: blob evicted")

// Options configure a Cache. The zero value is usable.
type Options struct {
	// BlockSize is the size of every block but the last (which is shorter)
	// of a blob created without a block size of its own (Acquire). Zero
	// means DefaultBlockSize. A blob kept from an earlier run keeps the
	// block size it was written with.
	BlockSize int64
	// MaxBytes bounds the sum of the sizes of the cached blobs. Zero means no
	// bound. Blobs in use are never evicted, so the bound can be exceeded.
	MaxBytes int64
	// Rehash makes Open hash every verified blob kept from an earlier run
	// before it returns, instead of in the background. Either way no such
	// blob is served before it has been hashed again.
	Rehash bool
	// Logger receives what the cache does on its own: removed garbage,
	// evictions, verification failures. Nil means slog.Default().
	Logger *slog.Logger
}

// Stats is a snapshot of a Cache's state and counters.
type Stats struct {
	// Bytes is the sum of the sizes of all cached blobs. A partial blob counts
	// in full: its space is reserved, even where its file is still sparse.
	Bytes int64
	// Reserved is the sum of the Reservations not released.
	Reserved int64
	MaxBytes int64
	// OverLimit reports Bytes + Reserved > MaxBytes: every blob that could
	// be evicted has been, and the rest are in use.
	OverLimit bool
	Blobs     int // cached blobs, partial or verified
	Verified  int // blobs that are complete and verified
	InUse     int // blobs with at least one reference
	// Counters since Open.
	Evictions      int64 // blobs evicted, for MaxBytes or for a full disk
	VerifyFailures int64 // blobs whose content did not match their digest
	Hits           int64 // Acquire or Lookup found a verified blob
	Misses         int64 // Acquire created a blob, or Lookup found none
}

// A Cache is a directory of blobs. It is safe for concurrent use. One
// directory belongs to one Cache at a time.
type Cache struct {
	root      string // <dir>/blobs
	opts      Options
	log       *slog.Logger
	lock      *os.File
	bufs      sync.Map // block size -> *sync.Pool of *[]byte of that size
	syncBytes int64

	mu      sync.Mutex
	closed  bool
	entries map[v1.Hash]*entry
	lru     *list.List // of *entry, most recently used at the front
	total   int64      // sum of the sizes in entries
	// reserved is the sum of the Reservations not released: counted
	// against MaxBytes with total.
	reserved int64

	evictions, failures, hits, misses atomic.Int64

	// Verified blobs kept from an earlier run are hashed again before use
	// (see the package doc). ctx ends those hashes when Close begins; wg
	// waits for the background pass, which closes checked when it is done.
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	checked chan struct{}
}

// Open opens the cache in dir, creating it if needed. It keeps what an earlier
// Cache left there: verified blobs, and the present blocks of partial blobs
// (verified when their last block arrives; a partial blob already full is
// verified now). It removes, with a log line, everything it does not
// recognise. It fails if another Cache holds dir.
func Open(dir string, opts Options) (*Cache, error) {
	if opts.BlockSize == 0 {
		opts.BlockSize = DefaultBlockSize
	}
	if opts.BlockSize < 0 || opts.BlockSize > maxBlockSize {
		return nil, fmt.Errorf("blobcache: block size %d outside (0, %d]", opts.BlockSize, maxBlockSize)
	}
	if opts.MaxBytes < 0 {
		return nil, fmt.Errorf("blobcache: negative MaxBytes %d", opts.MaxBytes)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	root := filepath.Join(dir, "blobs")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("blobcache: open %s: %w", dir, err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	c := &Cache{
		root:      root,
		opts:      opts,
		log:       opts.Logger.With("cache", dir),
		lock:      lock,
		syncBytes: defaultSyncBytes,
		entries:   make(map[v1.Hash]*entry),
		lru:       list.New(),
		checked:   make(chan struct{}),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if err := c.load(); err != nil {
		c.cancel()
		lock.Close()
		return nil, err
	}
	c.mu.Lock()
	c.evictLocked()
	c.log.Debug("blobcache opened", "blobs", len(c.entries), "bytes", c.total)
	c.mu.Unlock()
	if opts.Rehash {
		c.checkAll()
	} else {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.checkAll()
		}()
	}
	return c, nil
}

// BlockSize returns the block size of the blobs created without one of
// their own (Options.BlockSize).
func (c *Cache) BlockSize() int64 { return c.opts.BlockSize }

// buf returns a pooled buffer of n bytes; put it back with putBuf(n, ...).
// Blocks of one size share a pool: a blob's writers and its hash need one
// block each, and the block sizes in use are few.
func (c *Cache) buf(n int64) *[]byte {
	p, ok := c.bufs.Load(n)
	if !ok {
		p, _ = c.bufs.LoadOrStore(n, &sync.Pool{New: func() any {
			b := make([]byte, n)
			return &b
		}})
	}
	return p.(*sync.Pool).Get().(*[]byte)
}

func (c *Cache) putBuf(n int64, b *[]byte) {
	if p, ok := c.bufs.Load(n); ok {
		p.(*sync.Pool).Put(b)
	}
}

// Acquire is AcquireBlocks with the cache's block size (Options.BlockSize)
// for a blob it creates.
func (c *Cache) Acquire(dgst string, size int64) (*Blob, error) {
	return c.AcquireBlocks(dgst, size, 0)
}

// AcquireBlocks returns the blob named dgst, creating an empty one of size
// bytes cut into blocks of blockSize (0: Options.BlockSize) if there is
// none, and takes a reference to it. An existing blob keeps its own block
// size (Blob.BlockSize), whatever blockSize says: its present blocks and
// its readers count in those. An existing blob of another size is an error
// wrapping ErrSizeMismatch. Creating a blob may evict others. A blob of
// size 0 is verified at once. A blob kept from an earlier run is hashed
// again first, if it has not been yet; if it fails, AcquireBlocks returns
// an empty blob in its place.
func (c *Cache) AcquireBlocks(dgst string, size, blockSize int64) (*Blob, error) {
	d, err := digest.Parse(dgst)
	if err != nil {
		return nil, fmt.Errorf("blobcache: acquire: %w", err)
	}
	if blockSize == 0 {
		blockSize = c.opts.BlockSize
	}
	if blockSize < 0 || blockSize > maxBlockSize {
		return nil, fmt.Errorf("blobcache: acquire %s: block size %d outside (0, %d]", dgst, blockSize, maxBlockSize)
	}
	if size < 0 || (size+blockSize-1)/blockSize > maxBlocks {
		return nil, fmt.Errorf("blobcache: acquire %s: size %d outside [0, %d]", dgst, size, maxBlocks*blockSize)
	}
	for {
		b, existing, err := c.acquire(d, size, blockSize)
		if err != nil || !existing {
			return b, err
		}
		if err := c.ensureChecked(b.e); err != nil {
			b.Release()
			if c.ctx.Err() != nil {
				return nil, fmt.Errorf("blobcache: acquire %s: %w", dgst, ErrClosed)
			}
			continue // it failed its check and was dropped: create it afresh
		}
		c.countUse(b.e)
		return b, nil
	}
}

// acquire is Acquire but for the check of an existing blob, which it reports.
func (c *Cache) acquire(d v1.Hash, size, blockSize int64) (b *Blob, existing bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, false, ErrClosed
	}
	if e, ok := c.entries[d]; ok {
		if e.size != size {
			return nil, false, fmt.Errorf("blobcache: acquire %s of %d bytes: %w with cached %d bytes", d, size, ErrSizeMismatch, e.size)
		}
		b, err := c.refExisting(e)
		return b, err == nil, err
	}
	c.misses.Add(1)
	e, err := c.create(d, size, blockSize)
	if err != nil {
		return nil, false, err
	}
	c.entries[d] = e
	e.elem = c.lru.PushFront(e)
	c.total += size
	b = c.refLocked(e)
	c.evictLocked()
	return b, false, nil
}

// Lookup returns the blob named dgst, partial or verified, with a reference
// taken, or false if c has no such blob (or dgst is not a valid digest). A
// blob kept from an earlier run is hashed again first, if it has not been
// yet; if it fails, it is dropped and Lookup returns false.
func (c *Cache) Lookup(dgst string) (*Blob, bool) {
	d, err := digest.Parse(dgst)
	if err != nil {
		return nil, false
	}
	c.mu.Lock()
	e, ok := c.entries[d]
	if c.closed || !ok {
		c.misses.Add(1)
		c.mu.Unlock()
		return nil, false
	}
	b, err := c.refExisting(e)
	c.mu.Unlock()
	if err != nil {
		c.log.Warn("blobcache: lookup failed", "digest", dgst, "err", err)
		return nil, false
	}
	if err := c.ensureChecked(e); err != nil {
		b.Release()
		c.misses.Add(1)
		return nil, false
	}
	c.countUse(e)
	return b, true
}

// refExisting takes a reference to a cached entry, opening its files on first
// use. An entry whose files cannot be opened is dropped.
func (c *Cache) refExisting(e *entry) (*Blob, error) {
	if err := e.openFiles(); err != nil {
		c.removeLocked(e, "files unreadable")
		return nil, err
	}
	return c.refLocked(e), nil
}

// countUse counts a use of an existing blob as a hit or a miss.
func (c *Cache) countUse(e *entry) {
	if e.isVerified() {
		c.hits.Add(1)
	} else {
		c.misses.Add(1)
	}
}

func (c *Cache) refLocked(e *entry) *Blob {
	e.refs++
	c.lru.MoveToFront(e.elem)
	return &Blob{c: c, e: e}
}

// unref drops a reference. The last one flushes the blob's bitmap and lets
// the blob be evicted.
func (c *Cache) unref(e *entry) {
	c.mu.Lock()
	e.refs--
	last := e.refs == 0
	if e.elem != nil && c.entries[e.d] == e {
		c.lru.MoveToFront(e.elem)
	}
	c.mu.Unlock()
	if !last {
		return
	}
	if err := e.flush(); err != nil {
		c.log.Warn("blobcache: bitmap flush failed", "digest", e.d.String(), "err", err)
	}
	c.mu.Lock()
	c.evictLocked()
	c.mu.Unlock()
}

// evictLocked evicts least recently used blobs without references until the
// total fits MaxBytes or nothing more can go.
func (c *Cache) evictLocked() {
	for !c.closed && c.opts.MaxBytes > 0 && c.total+c.reserved > c.opts.MaxBytes {
		victim := c.oldestUnusedLocked()
		if victim == nil {
			return
		}
		c.removeLocked(victim, "over MaxBytes")
		c.evictions.Add(1)
	}
}

func (c *Cache) oldestUnusedLocked() *entry {
	for el := c.lru.Back(); el != nil; el = el.Prev() {
		if e := el.Value.(*entry); e.refs == 0 {
			return e
		}
	}
	return nil
}

// reclaim evicts the least recently used blob without references to free
// disk space, reporting whether there was one.
func (c *Cache) reclaim() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	victim := c.oldestUnusedLocked()
	if c.closed || victim == nil {
		return false
	}
	c.removeLocked(victim, "disk full")
	c.evictions.Add(1)
	return true
}

// removeLocked forgets e and deletes its files.
func (c *Cache) removeLocked(e *entry, why string) {
	c.dropLocked(e, errEvicted)
	c.log.Info("blobcache: evicted", "digest", e.d.String(), "size", e.size, "reason", why)
}

// dropLocked forgets e, deletes its files and wakes its waiters with reason.
func (c *Cache) dropLocked(e *entry, reason error) {
	delete(c.entries, e.d)
	c.lru.Remove(e.elem)
	e.elem = nil
	c.total -= e.size
	e.destroy(reason, true)
}

// Stats returns a snapshot of c's state and counters.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := Stats{
		Bytes:          c.total,
		Reserved:       c.reserved,
		MaxBytes:       c.opts.MaxBytes,
		OverLimit:      c.opts.MaxBytes > 0 && c.total+c.reserved > c.opts.MaxBytes,
		Blobs:          len(c.entries),
		Evictions:      c.evictions.Load(),
		VerifyFailures: c.failures.Load(),
		Hits:           c.hits.Load(),
		Misses:         c.misses.Load(),
	}
	for _, e := range c.entries {
		if e.isVerified() {
			s.Verified++
		}
		if e.refs > 0 {
			s.InUse++
		}
	}
	return s
}

// Close flushes every partial blob's bitmap, closes all files and releases
// dir. Waiters on any blob return ErrClosed; so does every later use of c or
// of its blobs, except Release, which stays safe.
func (c *Cache) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, e := range c.entries {
		if err := e.flush(); err != nil {
			errs = append(errs, err)
		}
		e.destroy(ErrClosed, false)
	}
	if err := c.lock.Close(); err != nil {
		errs = append(errs, fmt.Errorf("blobcache: unlock: %w", err))
	}
	return errors.Join(errs...)
}

// lockDir takes an exclusive flock on dir/lock so that two Caches (in one
// process or two) never share a directory.
func lockDir(dir string) (*os.File, error) {
	name := filepath.Join(dir, "lock")
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("blobcache: lock %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("blobcache: lock %s (in use by another Cache?): %w", dir, err)
	}
	return f, nil
}

// noSpace wraps err with ErrNoSpace when it is ENOSPC, so callers can tell a
// full disk from other failures without knowing syscall.
func noSpace(err error) error {
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("%w: %w", ErrNoSpace, err)
	}
	return err
}
