package blobcache

import "sync"

// A Reservation counts bytes that the worker keeps on disk beside the
// cache, such as an unpacked root filesystem or a container's log, against
// Options.MaxBytes: least recently used blobs without references are
// evicted to make room for it, as for a new blob. Like a blob in use, it is
// never evicted itself, so the bound can be exceeded; Release returns its
// bytes.
type Reservation struct {
	c    *Cache
	once sync.Once
	n    int64
}

// Reserve counts n bytes against MaxBytes until the Reservation is
// released, evicting unused blobs as needed.
func (c *Cache) Reserve(n int64) *Reservation {
	n = max(n, 0)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reserved += n
	c.evictLocked()
	return &Reservation{c: c, n: n}
}

// Release returns the reserved bytes. Calling it again does nothing.
func (r *Reservation) Release() {
	r.once.Do(func() {
		r.c.mu.Lock()
		r.c.reserved -= r.n
		r.c.mu.Unlock()
	})
}
