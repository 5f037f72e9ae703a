package lazy

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/faasnet/faasnet/internal/testenv"
)

// rangeLog is a BlobReader over a blob in memory that keeps the ranges
// read from it.
type rangeLog struct {
	b      BytesReader
	mu     sync.Mutex
	ranges [][2]int64
}

func (r *rangeLog) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	r.mu.Lock()
	r.ranges = append(r.ranges, [2]int64{off, int64(len(p))})
	r.mu.Unlock()
	return r.b.ReadAt(ctx, p, off)
}

func (r *rangeLog) sorted() [][2]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := slices.Clone(r.ranges)
	slices.SortFunc(out, func(a, b [2]int64) int {
		if a[0] != b[0] {
			return int(a[0] - b[0])
		}
		return int(a[1] - b[1])
	})
	return out
}

func rangeLayers(t *testing.T) ([]Layer, []*rangeLog) {
	blobs, digests := testBlobs(t)
	var layers []Layer
	var logs []*rangeLog
	for i, b := range blobs {
		l := &rangeLog{b: b}
		logs = append(logs, l)
		layers = append(layers, Layer{Digest: digests[i], Size: int64(len(b)), TOCDigest: digests[i], Blob: l})
	}
	return layers, logs
}

// TestRecordAndReplay mounts an image with its reads recorded, reads some
// files through FUSE, and replays the log through fresh blob readers: the
// replay reads exactly the ranges the mount read, layer by layer, and
// nothing else; the log counts the bytes the blobs served.
func TestRecordAndReplay(t *testing.T) {
	testenv.NeedFUSE(t)
	layers, mounted := rangeLayers(t)
	var log ReadLog
	fsys := mountTest(t, log.Record(layers), Options{})
	for _, p := range []string{"data/big", "bin/sh", "etc/passwd"} {
		if _, err := os.ReadFile(filepath.Join(fsys.Mountpoint(), p)); err != nil {
			t.Fatal(err)
		}
	}
	reads := log.Reads()
	if len(reads) == 0 {
		t.Fatal("no reads recorded")
	}
	if got, want := log.Bytes(), fsys.Stats().BlobBytesRead; got != want {
		t.Errorf("log has %d bytes, the mount read %d", got, want)
	}
	for i, r := range reads {
		if r.After > i {
			t.Errorf("read %d waited for %d reads, more than started before it", i, r.After)
		}
	}

	replayed, logs := rangeLayers(t)
	n, err := Replay(context.Background(), replayed, reads)
	if err != nil {
		t.Fatal(err)
	}
	if n != log.Bytes() {
		t.Errorf("replay read %d bytes, the recording %d", n, log.Bytes())
	}
	for i := range logs {
		if got, want := logs[i].sorted(), mounted[i].sorted(); !slices.Equal(got, want) {
			t.Errorf("layer %d: replay read %v, the mount %v", i, got, want)
		}
	}
}

// gatedBlob blocks reads at gated offsets until released, and notes which
// reads started.
type gatedBlob struct {
	b       BytesReader
	gate    map[int64]chan struct{}
	started chan int64
}

func (g *gatedBlob) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	g.started <- off
	if ch := g.gate[off]; ch != nil {
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return g.b.ReadAt(ctx, p, off)
}

// TestReplayKeepsOrder: a read recorded after another completed waits for
// it in the replay; reads recorded together run together.
func TestReplayKeepsOrder(t *testing.T) {
	blob := make(BytesReader, 100)
	g := &gatedBlob{b: blob, gate: map[int64]chan struct{}{0: make(chan struct{}), 10: make(chan struct{})}, started: make(chan int64, 10)}
	layers := []Layer{{Size: 100, Blob: g}}
	reads := []BlobRead{
		{Off: 0, Len: 10, After: 0, Done: 1},  // runs with the next one
		{Off: 10, Len: 10, After: 0, Done: 0}, // completes first
		{Off: 20, Len: 10, After: 1, Done: 2}, // waited for read 1 only
		{Off: 30, Len: 10, After: 2, Done: 3}, // waited for reads 1 and 0
	}
	if n := Chain(reads); n != 2 {
		t.Errorf("chain of %d reads, want 2 (read 1, then 2 or 3)", n)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := Replay(context.Background(), layers, reads)
		errc <- err
	}()
	want := func(offs ...int64) {
		t.Helper()
		var got []int64
		for range offs {
			got = append(got, <-g.started)
		}
		slices.Sort(got)
		if !slices.Equal(got, offs) {
			t.Fatalf("started %v, want %v", got, offs)
		}
	}
	want(0, 10) // both before either completed
	close(g.gate[10])
	want(20) // read 0 still blocked
	select {
	case off := <-g.started:
		t.Fatalf("read at %d started before read 0 completed", off)
	default:
	}
	close(g.gate[0])
	want(30)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// TestReplayRefusesBadLogs: a log that does not fit the image, or could
// not have been recorded, is refused before any read.
func TestReplayRefusesBadLogs(t *testing.T) {
	layers := []Layer{{Size: 100, Blob: make(BytesReader, 100)}}
	tests := []struct {
		name  string
		reads []BlobRead
		want  string
	}{
		{"no such layer", []BlobRead{{Layer: 1, Len: 1}}, "layer 1"},
		{"past the end", []BlobRead{{Off: 90, Len: 11}}, "outside"},
		{"negative", []BlobRead{{Off: -1, Len: 1}}, "outside"},
		{"done twice", []BlobRead{{Len: 1}, {Len: 1, After: 0, Done: 0}}, "completed"},
		{"waits for itself", []BlobRead{{Len: 1, After: 1, Done: 0}}, "starts after it"},
		{"waits for a later read", []BlobRead{{Len: 1, After: 1, Done: 1}, {Len: 1, After: 1, Done: 0}}, "starts after it"},
		{"out of order", []BlobRead{{Len: 1, After: 1, Done: 1}, {Len: 1, After: 0, Done: 0}}, "out of order"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Replay(context.Background(), layers, tt.reads)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// FuzzReplay feeds Replay logs that no recording made: it refuses them or
// reads exactly their bytes, and never reads outside the blob or panics.
func FuzzReplay(f *testing.F) {
	f.Add([]byte{0, 10, 0, 0, 10, 10, 0, 1})
	f.Add([]byte{0, 200, 0, 0})
	f.Add([]byte{1, 1, 1, 1, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var reads []BlobRead
		for i := 0; i+4 <= len(b) && len(reads) < 32; i += 4 {
			reads = append(reads, BlobRead{Off: int64(int8(b[i])), Len: int64(b[i+1]), After: int(b[i+2] % 8), Done: int(b[i+3] % 8)})
		}
		layers := []Layer{{Size: 100, Blob: make(BytesReader, 100)}}
		n, err := Replay(context.Background(), layers, reads)
		if err == nil && n != ReadBytes(reads) {
			t.Errorf("replay read %d bytes of a %d-byte log", n, ReadBytes(reads))
		}
		if err == nil {
			Chain(reads) // and so can Chain
		}
	})
}
