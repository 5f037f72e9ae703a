package blobcache

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/faasnet/faasnet/digest"
)

// Bitmap file: a header, then one bit per block (bit i at byte i/8, mask
// 1<<(i%8)). The header records what the bits mean: the blob's block size,
// which it keeps across restarts, and its size.
//
//	magic     [8]byte "FNBMAP1\n"
//	blockSize uint64, little endian
//	size      uint64, little endian
const (
	bitmapMagic  = "FNBMAP1\n"
	bitmapHeader = 24
)

const (
	partialSuffix = ".partial"
	bitmapSuffix  = ".bitmap"
)

// path returns the name of e's file with suffix ("" for the verified blob).
func (e *entry) path(suffix string) string { return e.c.path(e.d, suffix) }

func (c *Cache) path(d v1.Hash, suffix string) string {
	return filepath.Join(c.root, d.Algorithm, d.Hex+suffix)
}

// matches reports whether sum, the output of digest.Hasher(d), is d.
func matches(d v1.Hash, sum []byte) bool { return hex.EncodeToString(sum) == d.Hex }

func encodeBitmap(blockSize, size int64, bits []byte) []byte {
	buf := make([]byte, bitmapHeader+len(bits))
	copy(buf, bitmapMagic)
	binary.LittleEndian.PutUint64(buf[8:], uint64(blockSize))
	binary.LittleEndian.PutUint64(buf[16:], uint64(size))
	copy(buf[bitmapHeader:], bits)
	return buf
}

// decodeBitmap parses a bitmap file. It returns the blob's block size and
// size and the bits, or an error saying why the file is unusable.
func decodeBitmap(buf []byte) (blockSize, size int64, bits []byte, err error) {
	if len(buf) < bitmapHeader || string(buf[:8]) != bitmapMagic {
		return 0, 0, nil, errors.New("not a bitmap file")
	}
	bs := binary.LittleEndian.Uint64(buf[8:])
	if bs == 0 || bs > maxBlockSize {
		return 0, 0, nil, fmt.Errorf("block size %d outside (0, %d]", bs, maxBlockSize)
	}
	blockSize = int64(bs)
	size = int64(binary.LittleEndian.Uint64(buf[16:]))
	if size < 0 || (size+blockSize-1)/blockSize > maxBlocks {
		return 0, 0, nil, fmt.Errorf("size %d out of range", size)
	}
	n := (size + blockSize - 1) / blockSize
	bits = buf[bitmapHeader:]
	if int64(len(bits)) != (n+7)/8 {
		return 0, 0, nil, fmt.Errorf("%d bitmap bytes for %d blocks", len(bits), n)
	}
	if n%8 != 0 && bits[len(bits)-1]>>(n%8) != 0 {
		return 0, 0, nil, errors.New("bits set past the last block")
	}
	return blockSize, size, bits, nil
}

// create makes the files of a new, empty blob: a sparse data file of the full
// size and a bitmap with no bit set. An empty blob is verified at once.
func (c *Cache) create(d v1.Hash, size, blockSize int64) (*entry, error) {
	e := c.newEntry(d, size, blockSize)
	if err := os.MkdirAll(filepath.Dir(e.path("")), 0o755); err != nil {
		return nil, fmt.Errorf("blobcache: create %s: %w", d, noSpace(err))
	}
	if size == 0 {
		return e, c.createEmpty(e)
	}
	f, err := os.OpenFile(e.path(partialSuffix), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("blobcache: create %s: %w", d, noSpace(err))
	}
	bm, err := os.OpenFile(e.path(bitmapSuffix), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err == nil {
		err = f.Truncate(size)
	}
	if err == nil {
		// Writing the whole bitmap now allocates its space, so flushes
		// never need more when the disk is full.
		_, err = bm.WriteAt(encodeBitmap(e.bs, size, e.bits), 0)
	}
	if err != nil {
		f.Close()
		if bm != nil {
			bm.Close()
		}
		os.Remove(e.path(partialSuffix))
		os.Remove(e.path(bitmapSuffix))
		return nil, fmt.Errorf("blobcache: create %s: %w", d, noSpace(err))
	}
	e.f, e.bm = f, bm
	return e, nil
}

// createEmpty records a blob of size 0, whose content is known.
func (c *Cache) createEmpty(e *entry) error {
	if !matches(e.d, digest.Hasher(e.d).Sum(nil)) {
		c.failures.Add(1)
		return fmt.Errorf("blobcache: create %s of 0 bytes: %w", e.d, ErrCorrupt)
	}
	f, err := os.OpenFile(e.path(""), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("blobcache: create %s: %w", e.d, noSpace(err))
	}
	if err := syncDir(filepath.Dir(e.path(""))); err != nil {
		f.Close()
		return fmt.Errorf("blobcache: create %s: %w", e.d, err)
	}
	e.f = f
	e.verified = true
	return nil
}

// openFiles opens the files of an entry loaded from disk, on its first use.
func (e *entry) openFiles() error {
	e.fmu.Lock()
	defer e.fmu.Unlock()
	if e.f != nil {
		return nil
	}
	if e.isVerified() || e.isUnchecked() {
		f, err := os.Open(e.path(""))
		if err != nil {
			return fmt.Errorf("blobcache: open %s: %w", e.d, err)
		}
		e.f = f
		return nil
	}
	f, err := os.OpenFile(e.path(partialSuffix), os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("blobcache: open %s: %w", e.d, err)
	}
	bm, err := os.OpenFile(e.path(bitmapSuffix), os.O_RDWR, 0)
	if err != nil {
		f.Close()
		return fmt.Errorf("blobcache: open %s: %w", e.d, err)
	}
	e.f, e.bm = f, bm
	return nil
}

// flush makes the bitmap on disk match memory: it syncs the data file first,
// so that a bit on disk always stands for data on disk.
func (e *entry) flush() error {
	e.fmu.Lock()
	defer e.fmu.Unlock()
	if e.gone || e.bm == nil {
		return nil
	}
	e.mu.Lock()
	if e.dirty == 0 || e.verified {
		e.mu.Unlock()
		return nil
	}
	// Every bit in this snapshot was set after its block's write returned,
	// so the sync below covers the data of all of them.
	snap := bytes.Clone(e.bits)
	dirty := e.dirty
	e.dirty = 0
	e.mu.Unlock()
	err := e.f.Sync()
	if err == nil {
		_, err = e.bm.WriteAt(snap, bitmapHeader)
	}
	if err != nil {
		e.mu.Lock()
		e.dirty += dirty
		e.mu.Unlock()
		return fmt.Errorf("blobcache: %s: flush bitmap: %w", e.d, noSpace(err))
	}
	return nil
}

// persistVerified records on disk that e's content is verified: data synced,
// then renamed to its final name (the completion marker), the directory
// synced, the bitmap removed.
func (e *entry) persistVerified() error {
	e.fmu.Lock()
	defer e.fmu.Unlock()
	if e.gone {
		return fmt.Errorf("blobcache: %s: verify: %w", e.d, ErrClosed)
	}
	if err := e.f.Sync(); err != nil {
		return fmt.Errorf("blobcache: %s: sync: %w", e.d, err)
	}
	if err := os.Rename(e.path(partialSuffix), e.path("")); err != nil {
		return fmt.Errorf("blobcache: %s: mark verified: %w", e.d, err)
	}
	if err := syncDir(filepath.Dir(e.path(""))); err != nil {
		return fmt.Errorf("blobcache: %s: mark verified: %w", e.d, err)
	}
	e.bm.Close()
	e.bm = nil
	if err := os.Remove(e.path(bitmapSuffix)); err != nil {
		// Harmless: Open removes a bitmap beside a verified blob.
		e.c.log.Warn("blobcache: remove bitmap", "digest", e.d.String(), "err", err)
	}
	return nil
}

// destroy closes e's files, removes them if remove, and wakes e's waiters
// with reason.
func (e *entry) destroy(reason error, remove bool) {
	e.fmu.Lock()
	if !e.gone {
		e.gone = true
		if e.f != nil {
			e.f.Close()
		}
		if e.bm != nil {
			e.bm.Close()
		}
		if remove {
			for _, suffix := range []string{"", partialSuffix, bitmapSuffix} {
				if err := os.Remove(e.path(suffix)); err != nil && !errors.Is(err, fs.ErrNotExist) {
					e.c.log.Warn("blobcache: remove", "digest", e.d.String(), "err", err)
				}
			}
		}
	}
	e.fmu.Unlock()
	e.mu.Lock()
	if e.dead == nil {
		e.dead = reason
	}
	e.notifyLocked()
	e.mu.Unlock()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// hashFile reports whether the file name has digest d. It syncs the file
// too, since a match is about to be recorded as durable. It stops early with
// ctx's error once ctx is done.
func hashFile(ctx context.Context, name string, d v1.Hash) (bool, error) {
	f, err := os.Open(name)
	if err != nil {
		return false, err
	}
	defer f.Close()
	h := digest.Hasher(d)
	if _, err := io.Copy(h, ctxReader{ctx, f}); err != nil {
		return false, fmt.Errorf("hash %s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		return false, fmt.Errorf("sync %s: %w", name, err)
	}
	return matches(d, h.Sum(nil)), nil
}

// ctxReader reads from r until ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

// loaded is an entry found on disk, with the time it was last written as a
// stand-in for its last use.
type loaded struct {
	e     *entry
	mtime time.Time
}

// load fills c with the blobs under c.root and removes everything else.
func (c *Cache) load() error {
	des, err := os.ReadDir(c.root)
	if err != nil {
		return fmt.Errorf("blobcache: read %s: %w", c.root, err)
	}
	var found []loaded
	for _, de := range des {
		if digest.Supported(de.Name()) && de.IsDir() {
			found = append(found, c.loadAlgo(de.Name())...)
			continue
		}
		c.removeGarbage(filepath.Join(c.root, de.Name()), "unknown name")
	}
	sort.Slice(found, func(i, j int) bool { return found[i].mtime.Before(found[j].mtime) })
	for _, l := range found {
		c.entries[l.e.d] = l.e
		l.e.elem = c.lru.PushFront(l.e)
		c.total += l.e.size
	}
	return nil
}

// blobFiles are the files found for one digest.
type blobFiles struct{ final, partial, bitmap bool }

func (c *Cache) loadAlgo(algo string) []loaded {
	dir := filepath.Join(c.root, algo)
	des, err := os.ReadDir(dir)
	if err != nil {
		c.log.Warn("blobcache: cannot read directory; ignoring it", "dir", dir, "err", err)
		return nil
	}
	byDigest := make(map[v1.Hash]*blobFiles)
	for _, de := range des {
		name := de.Name()
		enc, suffix, _ := strings.Cut(name, ".")
		if suffix != "" {
			suffix = "." + suffix
		}
		d, err := digest.Parse(algo + ":" + enc)
		if err != nil || !de.Type().IsRegular() || (suffix != "" && suffix != partialSuffix && suffix != bitmapSuffix) {
			c.removeGarbage(filepath.Join(dir, name), "unknown name")
			continue
		}
		bf := byDigest[d]
		if bf == nil {
			bf = &blobFiles{}
			byDigest[d] = bf
		}
		switch suffix {
		case "":
			bf.final = true
		case partialSuffix:
			bf.partial = true
		case bitmapSuffix:
			bf.bitmap = true
		}
	}
	var found []loaded
	for d, bf := range byDigest {
		if l, ok := c.loadBlob(d, *bf); ok {
			found = append(found, l)
		}
	}
	return found
}

// loadBlob makes an entry of the files found for d, or removes them.
func (c *Cache) loadBlob(d v1.Hash, bf blobFiles) (loaded, bool) {
	switch {
	case bf.final:
		// The final name is the completion marker; anything beside it is
		// left over from the moment it was written.
		if bf.partial {
			c.removeGarbage(c.path(d, partialSuffix), "left over beside a verified blob")
		}
		if bf.bitmap {
			c.removeGarbage(c.path(d, bitmapSuffix), "left over beside a verified blob")
		}
		return c.loadVerified(d)
	case bf.partial && bf.bitmap:
		return c.loadPartial(d)
	case bf.partial:
		c.removeGarbage(c.path(d, partialSuffix), "partial blob without bitmap")
	case bf.bitmap:
		c.removeGarbage(c.path(d, bitmapSuffix), "bitmap without partial blob")
	}
	return loaded{}, false
}

func (c *Cache) loadVerified(d v1.Hash) (loaded, bool) {
	name := c.path(d, "")
	fi, err := os.Stat(name)
	if err != nil {
		c.log.Warn("blobcache: cannot stat blob; ignoring it", "digest", d.String(), "err", err)
		return loaded{}, false
	}
	// All blocks are present, so nothing fetches them, but the blob is not
	// served before it has been hashed again.
	// Its blocks are all present: the size they are counted in matters
	// to nobody but readers, who see it in Blob.BlockSize.
	e := c.newEntry(d, fi.Size(), c.opts.BlockSize)
	for i := range e.n {
		set(e.bits, i)
	}
	e.present = e.n
	e.hashed = e.n
	e.unchecked = true
	return loaded{e, fi.ModTime()}, true
}

// loadPartial restores a partial blob's present blocks from its bitmap. A
// partial blob that is already full (its last block arrived, but the process
// stopped before the completion marker) is verified now.
func (c *Cache) loadPartial(d v1.Hash) (loaded, bool) {
	data, bitmap := c.path(d, partialSuffix), c.path(d, bitmapSuffix)
	drop := func(why string) (loaded, bool) {
		c.removeGarbage(data, why)
		c.removeGarbage(bitmap, why)
		return loaded{}, false
	}
	buf, err := os.ReadFile(bitmap)
	if err != nil {
		return drop(fmt.Sprintf("unreadable bitmap: %v", err))
	}
	bs, size, bits, err := decodeBitmap(buf)
	if err != nil {
		return drop("bitmap " + err.Error())
	}
	fi, err := os.Stat(data)
	if err != nil || fi.Size() != size {
		return drop(fmt.Sprintf("data file does not have the bitmap's size %d", size))
	}
	e := c.newEntry(d, size, bs)
	copy(e.bits, bits)
	for i := range e.n {
		if has(e.bits, i) {
			e.present++
		}
	}
	if e.present < e.n {
		return loaded{e, fi.ModTime()}, true
	}
	ok, err := hashFile(c.ctx, data, d)
	if err != nil {
		return drop(fmt.Sprintf("cannot verify: %v", err))
	}
	if !ok {
		c.failures.Add(1)
		c.log.Warn("blobcache: content does not match digest; dropped all blocks", "digest", d.String(), "size", size)
		clear(e.bits)
		e.present = 0
		if err := os.WriteFile(bitmap, encodeBitmap(e.bs, size, e.bits), 0o644); err != nil {
			return drop(fmt.Sprintf("cannot reset bitmap: %v", err))
		}
		return loaded{e, fi.ModTime()}, true
	}
	if err := os.Rename(data, e.path("")); err != nil {
		return drop(fmt.Sprintf("cannot mark verified: %v", err))
	}
	if err := syncDir(filepath.Dir(data)); err != nil {
		c.log.Warn("blobcache: sync directory", "dir", filepath.Dir(data), "err", err)
	}
	c.removeGarbage(bitmap, "bitmap of a blob verified at open")
	e.hashed = e.n
	e.verified = true
	return loaded{e, fi.ModTime()}, true
}

// removeGarbage removes name (a file or a tree) that the cache does not own.
func (c *Cache) removeGarbage(name, why string) {
	err := os.RemoveAll(name)
	c.log.Info("blobcache: removed", "path", name, "reason", why, "err", err)
}
