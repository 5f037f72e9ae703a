package peer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"sync"
)

// memBlob is an in-memory Blob whose content the test makes available
// progressively, as a blob arriving from upstream would be.
type memBlob struct {
	data []byte

	mu      sync.Mutex
	avail   int64         // bytes [0, avail) are present
	err     error         // set when the blob failed
	changed chan struct{} // closed and replaced whenever avail or err change
}

func newMemBlob(data []byte, avail int64) *memBlob {
	return &memBlob{data: data, avail: avail, changed: make(chan struct{})}
}

func (b *memBlob) Size() int64 { return int64(len(b.data)) }

// fill makes bytes [0, upto) present.
func (b *memBlob) fill(upto int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.avail = max(b.avail, min(upto, int64(len(b.data))))
	close(b.changed)
	b.changed = make(chan struct{})
}

// fail makes the blob fail with err: readers past avail get err.
func (b *memBlob) fail(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.err = err
	close(b.changed)
	b.changed = make(chan struct{})
}

func (b *memBlob) available() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.avail
}

func (b *memBlob) Reader(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	return &memReader{ctx: ctx, b: b, pos: off, end: off + n}, nil
}

type memReader struct {
	ctx      context.Context
	b        *memBlob
	pos, end int64
}

func (r *memReader) Read(p []byte) (int, error) {
	if r.pos >= r.end {
		return 0, io.EOF
	}
	for {
		r.b.mu.Lock()
		avail, err, changed := r.b.avail, r.b.err, r.b.changed
		r.b.mu.Unlock()
		if r.pos < avail {
			n := copy(p, r.b.data[r.pos:min(avail, r.end)])
			r.pos += int64(n)
			return n, nil
		}
		if err != nil {
			return 0, err
		}
		select {
		case <-changed:
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		}
	}
}

func (r *memReader) Close() error { return nil }

// memSource serves memBlobs by digest and reports every release, so tests
// can tell when the server is done with a request.
type memSource struct {
	mu       sync.Mutex
	blobs    map[string]*memBlob
	opened   chan string // if set, receives each opened digest
	released chan string // if set, receives each released digest
	openErr  error       // if set, Open fails with it
}

func newMemSource() *memSource {
	return &memSource{blobs: map[string]*memBlob{}}
}

// add stores a blob with avail bytes present and returns its digest.
func (s *memSource) add(data []byte, avail int64) (string, *memBlob) {
	sum := sha256.Sum256(data)
	d := "sha256:" + hex.EncodeToString(sum[:])
	b := newMemBlob(data, avail)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.blobs[d] = b
	return d, b
}

func (s *memSource) Open(ctx context.Context, digest string) (Blob, func(), error) {
	if s.openErr != nil {
		return nil, nil, s.openErr
	}
	s.mu.Lock()
	b, ok := s.blobs[digest]
	s.mu.Unlock()
	if !ok {
		return nil, nil, ErrNotFound
	}
	if s.opened != nil {
		s.opened <- digest
	}
	release := func() {
		if s.released != nil {
			s.released <- digest
		}
	}
	return b, release, nil
}

// quiet is a logger for servers under test.
var quiet = slog.New(slog.DiscardHandler)
