package blobcache

import (
	"fmt"
)

// checkAll hashes again every verified blob kept from an earlier run, most
// recently used first, until c closes. It closes c.checked when it ends.
func (c *Cache) checkAll() {
	defer close(c.checked)
	c.mu.Lock()
	var todo []*entry
	for el := c.lru.Front(); el != nil; el = el.Next() {
		if e := el.Value.(*entry); e.isUnchecked() {
			todo = append(todo, e)
		}
	}
	c.mu.Unlock()
	for _, e := range todo {
		if c.ctx.Err() != nil {
			return
		}
		// A blob that fails is dropped and logged by check; one evicted
		// meanwhile needs nothing.
		_ = c.ensureChecked(e)
	}
}

// ensureChecked returns nil once e may be served: at once for a blob that
// needs no check, after hashing it again for one kept from an earlier run.
// Concurrent callers share one hash. It returns an error if e was dropped
// (its content no longer matches, or it was evicted) or c is closing.
func (c *Cache) ensureChecked(e *entry) error {
	e.mu.Lock()
	for {
		switch {
		case e.dead != nil:
			err := e.dead
			e.mu.Unlock()
			return fmt.Errorf("blobcache: %s: %w", e.d, err)
		case !e.unchecked:
			e.mu.Unlock()
			return nil
		case c.ctx.Err() != nil:
			e.mu.Unlock()
			return fmt.Errorf("blobcache: %s: %w", e.d, ErrClosed)
		case !e.checking:
			e.checking = true
			e.mu.Unlock()
			c.check(e)
			e.mu.Lock()
			continue
		}
		// Another goroutine is hashing it: a local read, which Close
		// cuts short, so the wait needs no context of its own.
		ch := e.changed
		e.mu.Unlock()
		<-ch
		e.mu.Lock()
	}
}

// check hashes e's file and marks e verified, or drops e if the content does
// not match. The caller has set e.checking; check clears it, or drops e.
func (c *Cache) check(e *entry) {
	ok, err := hashFile(c.ctx, e.path(""), e.d)
	if c.ctx.Err() != nil && err != nil {
		// Closing: leave it unchecked, so that it is never served.
		e.mu.Lock()
		e.checking = false
		e.notifyLocked()
		e.mu.Unlock()
		return
	}
	if err == nil && ok {
		e.mu.Lock()
		e.unchecked, e.checking = false, false
		e.verified = true
		e.notifyLocked()
		e.mu.Unlock()
		e.c.log.Debug("blobcache: verified again after a restart", "digest", e.d.String(), "size", e.size)
		return
	}
	reason := fmt.Errorf("%w: hashed again after a restart", ErrCorrupt)
	if err != nil {
		reason = fmt.Errorf("cannot hash again after a restart: %w", err)
		c.log.Warn("blobcache: cannot hash a kept blob; dropped it", "digest", e.d.String(), "err", err)
	} else {
		c.failures.Add(1)
		c.log.Warn("blobcache: kept blob no longer matches its digest; dropped it", "digest", e.d.String(), "size", e.size)
	}
	// Dropping wakes the waiters; they see it dead, not merely unchecked,
	// so none of them hashes it again.
	c.mu.Lock()
	if c.entries[e.d] == e {
		c.dropLocked(e, reason)
	}
	c.mu.Unlock()
	e.mu.Lock()
	if e.dead == nil {
		// Gone from the map but alive: only Close does that, and it
		// marks every entry dead. Keep it unservable regardless.
		e.checking = false
		e.notifyLocked()
	}
	e.mu.Unlock()
}

func (e *entry) isUnchecked() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.unchecked
}
