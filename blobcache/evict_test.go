package blobcache

import (
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/faasnet/faasnet/digest"
)

// evictScript runs ops on a cache of blobs named by one letter, each of
// blobSize bytes. An op is "+X" (Acquire X), "-X" (release one reference to
// X), "?X" (Lookup X, taking a reference if found), "RX" (Reserve blobSize
// bytes as X) or "rX" (release reservation X).
type evictScript struct {
	name    string
	max     int // in blobs
	ops     string
	want    string // blobs cached at the end, sorted
	evicted int64
	over    bool
}

const blobSize = 2 * testBS

func TestEviction(t *testing.T) {
	tests := []evictScript{
		{"under limit", 3, "+A -A +B -B +C -C", "ABC", 0, false},
		{"evicts least recently used", 3, "+A -A +B -B +C -C +D -D", "BCD", 1, false},
		{"lookup refreshes", 3, "+A -A +B -B +C -C ?A -A +D -D", "ACD", 1, false},
		{"acquire refreshes", 3, "+A -A +B -B +C -C +A -A +D", "ACD", 1, false},
		{"in use is never evicted", 2, "+A +B +C", "ABC", 0, true},
		{"released when over goes", 2, "+A +B +C -C", "AB", 1, false},
		{"oldest unused goes first", 2, "+A -A +B -B +C +D", "CD", 2, false},
		{"partly in use", 2, "+A +B -B +C", "AC", 1, false},
		{"two refs", 1, "+A ?A -A +B", "AB", 0, true},
		{"two refs released", 1, "+A ?A -A +B -A", "B", 1, false},
		{"lookup of evicted misses", 1, "+A -A +B -B ?A", "B", 1, false},
		{"unlimited", 0, "+A -A +B -B +C -C +D -D", "ABCD", 0, false},
		{"reservation evicts", 3, "+A -A +B -B +C -C RX", "BC", 1, false},
		{"reservations count with blobs", 3, "RX RY +A -A +B -B", "B", 1, false},
		{"reservation never evicts in use", 2, "+A +B RX", "AB", 0, true},
		{"released reservation makes room", 3, "RX RY +A -A rY +B -B", "AB", 0, false},
		{"reservation over the limit", 1, "RX RY", "", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := openCache(t, t.TempDir(), Options{BlockSize: testBS, MaxBytes: int64(tt.max) * blobSize})
			blobs := map[byte]content{}
			held := map[byte][]*Blob{}
			reserved := map[byte]*Reservation{}
			for _, op := range strings.Fields(tt.ops) {
				name := op[1]
				switch op[0] {
				case 'R':
					reserved[name] = c.Reserve(blobSize)
					continue
				case 'r':
					reserved[name].Release()
					reserved[name].Release() // a second time does nothing
					continue
				}
				ct, ok := blobs[name]
				if !ok {
					ct = newContent(rand.New(rand.NewPCG(uint64(name), 0)), blobSize)
					blobs[name] = ct
				}
				switch op[0] {
				case '+':
					held[name] = append(held[name], mustAcquire(t, c, ct))
				case '?':
					if b, ok := c.Lookup(ct.digest); ok {
						held[name] = append(held[name], b)
					}
				case '-':
					held[name][0].Release()
					held[name] = held[name][1:]
				}
			}
			var got []byte
			for name, ct := range blobs {
				if b, ok := c.Lookup(ct.digest); ok {
					got = append(got, name)
					b.Release()
				} else if _, err := os.Stat(c.path(mustParse(t, ct.digest), partialSuffix)); !os.IsNotExist(err) {
					t.Errorf("evicted blob %c: data file still there (%v)", name, err)
				}
			}
			slices.Sort(got)
			s := c.Stats()
			if string(got) != tt.want || s.Evictions != tt.evicted || s.OverLimit != tt.over {
				t.Errorf("cached %q, evictions %d, over %v; want %q, %d, %v", got, s.Evictions, s.OverLimit, tt.want, tt.evicted, tt.over)
			}
		})
	}
}

func mustParse(t *testing.T, s string) v1.Hash {
	t.Helper()
	d, err := digest.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// Property: random Acquire/Lookup/Release sequences evict exactly what a
// simple LRU model evicts, and never a blob in use.
func TestEvictionModel(t *testing.T) {
	seeds := uint64(30)
	if testing.Short() {
		seeds = 8
	}
	for seed := range seeds {
		rng := rand.New(rand.NewPCG(seed, 30))
		maxBlobs := 1 + rng.IntN(4)
		c := openCache(t, t.TempDir(), Options{BlockSize: testBS, MaxBytes: int64(maxBlobs) * blobSize})
		var contents []content
		for range 6 {
			contents = append(contents, newContent(rng, blobSize))
		}
		// The model: names most recently used first, and references.
		var order []int
		refs := map[int]int{}
		held := map[int][]*Blob{}
		touch := func(i int) {
			order = slices.DeleteFunc(order, func(j int) bool { return j == i })
			order = slices.Insert(order, 0, i)
		}
		evict := func() {
			for len(order) > maxBlobs {
				victim := -1
				for p := len(order) - 1; p >= 0; p-- {
					if refs[order[p]] == 0 {
						victim = p
						break
					}
				}
				if victim < 0 {
					return
				}
				order = slices.Delete(order, victim, victim+1)
			}
		}
		for step := range 200 {
			i := rng.IntN(len(contents))
			switch op := rng.IntN(3); {
			case op == 0 || (op == 2 && len(held[i]) == 0):
				held[i] = append(held[i], mustAcquire(t, c, contents[i]))
				refs[i]++
				touch(i)
			case op == 1:
				b, ok := c.Lookup(contents[i].digest)
				if ok != slices.Contains(order, i) {
					t.Fatalf("seed %d step %d: Lookup(%d) = %v, model has %v", seed, step, i, ok, order)
				}
				if ok {
					held[i] = append(held[i], b)
					refs[i]++
					touch(i)
				}
			default:
				held[i][0].Release()
				held[i] = held[i][1:]
				refs[i]--
				touch(i)
			}
			evict()
			got := cachedSet(c, contents)
			want := slices.Sorted(slices.Values(order))
			if !slices.Equal(got, want) {
				t.Fatalf("seed %d step %d: cached %v, model %v", seed, step, got, want)
			}
			for j, hs := range held {
				if len(hs) > 0 && !slices.Contains(got, j) {
					t.Fatalf("seed %d step %d: blob %d in use was evicted", seed, step, j)
				}
			}
		}
		for _, hs := range held {
			for _, b := range hs {
				b.Release()
			}
		}
		if s := c.Stats(); s.OverLimit || s.InUse != 0 || s.Blobs > maxBlobs {
			t.Fatalf("seed %d: after releasing all, Stats = %+v", seed, s)
		}
	}
}

// cachedSet lists which contents c holds, without touching the LRU order.
func cachedSet(c *Cache, contents []content) []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var got []int
	for i, ct := range contents {
		d, _ := digest.Parse(ct.digest)
		if _, ok := c.entries[d]; ok {
			got = append(got, i)
		}
	}
	return got
}

func TestStatsCounts(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 31))
	a, b := newContent(rng, blobSize), newContent(rng, blobSize)
	c := openCache(t, t.TempDir(), Options{BlockSize: testBS})
	ba := mustAcquire(t, c, a) // miss
	fill(t, ba, a)
	bb := mustAcquire(t, c, b)                               // miss
	ba2 := mustAcquire(t, c, a)                              // hit
	ba3, _ := c.Lookup(a.digest)                             // hit
	bb2, _ := c.Lookup(b.digest)                             // miss: partial
	if _, ok := c.Lookup(sha256Digest([]byte("none"))); ok { // miss
		t.Fatal("Lookup of an unknown blob succeeded")
	}
	s := c.Stats()
	want := Stats{Bytes: 2 * blobSize, Blobs: 2, Verified: 1, InUse: 2, Hits: 2, Misses: 4}
	if s != want {
		t.Errorf("Stats = %+v\nwant    %+v", s, want)
	}
	for _, h := range []*Blob{ba, bb, ba2, ba3, bb2} {
		h.Release()
	}
	if s := c.Stats(); s.InUse != 0 {
		t.Errorf("InUse = %d after releases", s.InUse)
	}
}
