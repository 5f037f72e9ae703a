package blobcache

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
)

const benchSize = 64 << 20

var benchContent = sync.OnceValue(func() content { return newContent(rand.New(rand.NewPCG(1, 2)), benchSize) })

// benchCache opens a fresh cache for iteration i under root.
func benchCache(b *testing.B, root string, i int, syncBytes int64) *Cache {
	c, err := Open(filepath.Join(root, strconv.Itoa(i)), Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	c.syncBytes = syncBytes
	return c
}

// BenchmarkWrite writes a 64 MiB blob block by block, verification and the
// completion marker included. sync= is how much data may be written before
// the data is synced and the bitmap flushed; "end" syncs only at completion.
// order=random makes the hash trail the blocks and run mostly at the end.
func BenchmarkWrite(b *testing.B) {
	ct := benchContent()
	for _, bc := range []struct {
		name      string
		random    bool
		syncBytes int64
	}{
		{"order=seq/sync=32MiB", false, defaultSyncBytes},
		{"order=seq/sync=4MiB", false, 4 << 20},
		{"order=seq/sync=end", false, math.MaxInt64},
		{"order=random/sync=32MiB", true, defaultSyncBytes},
	} {
		b.Run(bc.name, func(b *testing.B) {
			root := b.TempDir()
			b.SetBytes(benchSize)
			i := 0
			for b.Loop() {
				b.StopTimer()
				c := benchCache(b, root, i, bc.syncBytes)
				blob, err := c.Acquire(ct.digest, benchSize)
				if err != nil {
					b.Fatal(err)
				}
				order := rand.New(rand.NewPCG(uint64(i), 0)).Perm(blob.Blocks())
				b.StartTimer()
				for k := range blob.Blocks() {
					j := k
					if bc.random {
						j = order[k]
					}
					if err := blob.WriteBlock(j, bytes.NewReader(ct.block(DefaultBlockSize, j))); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				if !blob.Complete() {
					b.Fatal("not complete")
				}
				blob.Release()
				c.Close()
				os.RemoveAll(filepath.Join(root, strconv.Itoa(i)))
				i++
				b.StartTimer()
			}
		})
	}
}

// BenchmarkCutThrough writes a 64 MiB blob in order while a Reader streams
// it out: the time until the reader has the last byte.
func BenchmarkCutThrough(b *testing.B) {
	ct := benchContent()
	root := b.TempDir()
	b.SetBytes(benchSize)
	i := 0
	for b.Loop() {
		b.StopTimer()
		c := benchCache(b, root, i, defaultSyncBytes)
		blob, err := c.Acquire(ct.digest, benchSize)
		if err != nil {
			b.Fatal(err)
		}
		r, err := blob.Reader(context.Background(), 0, benchSize)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		werr := make(chan error, 1)
		go func() {
			for j := range blob.Blocks() {
				if err := blob.WriteBlock(j, bytes.NewReader(ct.block(DefaultBlockSize, j))); err != nil {
					werr <- err
					return
				}
			}
			werr <- nil
		}()
		n, err := io.CopyBuffer(io.Discard, r, make([]byte, 256<<10))
		if err != nil || n != benchSize {
			b.Fatalf("read %d bytes: %v", n, err)
		}
		b.StopTimer()
		if err := <-werr; err != nil {
			b.Fatal(err)
		}
		r.Close()
		blob.Release()
		c.Close()
		os.RemoveAll(filepath.Join(root, strconv.Itoa(i)))
		i++
		b.StartTimer()
	}
}

// BenchmarkReadComplete streams a verified 64 MiB blob through Reader.
func BenchmarkReadComplete(b *testing.B) {
	ct := benchContent()
	c := benchCache(b, b.TempDir(), 0, defaultSyncBytes)
	defer c.Close()
	blob, err := c.Acquire(ct.digest, benchSize)
	if err != nil {
		b.Fatal(err)
	}
	defer blob.Release()
	for j := range blob.Blocks() {
		if err := blob.WriteBlock(j, bytes.NewReader(ct.block(DefaultBlockSize, j))); err != nil {
			b.Fatal(err)
		}
	}
	buf := make([]byte, 256<<10)
	b.SetBytes(benchSize)
	for b.Loop() {
		r, err := blob.Reader(context.Background(), 0, benchSize)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.CopyBuffer(io.Discard, r, buf); err != nil {
			b.Fatal(err)
		}
		r.Close()
	}
}
