package lazy

import (
	"container/list"
	"sync"
)

// chunkKey names a verified chunk: its layer and its place in the blob.
type chunkKey struct {
	layer   int
	blobOff int64
	inner   int64
}

// lru holds decompressed, verified chunks up to max bytes in all, evicting
// the least recently used. It is safe for concurrent use. Values are shared
// and must not be modified.
type lru struct {
	mu    sync.Mutex
	max   int64
	size  int64
	order *list.List // of *lruItem, most recent first
	items map[chunkKey]*list.Element
}

type lruItem struct {
	key  chunkKey
	data []byte
}

func newLRU(max int64) *lru {
	return &lru{max: max, order: list.New(), items: map[chunkKey]*list.Element{}}
}

func (c *lru) get(k chunkKey) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[k]
	if !ok {
		return nil, false
	}
	c.order.MoveToFront(el)
	return el.Value.(*lruItem).data, true
}

// add stores data under k; data larger than the whole cache is not kept.
func (c *lru) add(k chunkKey, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if int64(len(data)) > c.max {
		return
	}
	if el, ok := c.items[k]; ok {
		c.order.MoveToFront(el)
		return
	}
	c.items[k] = c.order.PushFront(&lruItem{k, data})
	c.size += int64(len(data))
	for c.size > c.max {
		el := c.order.Back()
		it := el.Value.(*lruItem)
		c.order.Remove(el)
		delete(c.items, it.key)
		c.size -= int64(len(it.data))
	}
}

// bytes returns how many bytes the cache holds.
func (c *lru) bytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.size
}
