package swarm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"

	"github.com/faasnet/faasnet/bwlimit"
)

const (
	// connBufSize is small because a node of a 1000-VM emulation may hold
	// thousands of connections; the limiters cut traffic into 16 KiB
	// pieces anyway.
	connBufSize = 16 << 10
	// maxQueuedPieces bounds the piece requests a peer may have queued on
	// one connection; a well-behaved peer has at most its pipeline limit.
	maxQueuedPieces = 256
)

var errQueueFull = errors.New("peer queued too many piece requests")

// conn is an established connection with one peer about one blob. A reader
// goroutine dispatches the peer's messages to the torrent; a writer
// goroutine sends queued messages, control messages before piece payloads.
// Reads pass through the node's download limiter, writes through its upload
// limiter.
type conn struct {
	t      *torrent
	nc     net.Conn
	r      *bufio.Reader
	w      *bufio.Writer
	ctx    context.Context // ends when the connection closes
	cancel context.CancelFunc

	peer   string // the remote peer's id
	origin bool   // the remote peer is an origin

	// remote is the peer's bitfield; the torrent's lock guards it.
	remote bitfield
	// told is the bitfield our handshake sent: pieces completed after it
	// are announced when the connection is added.
	told bitfield

	qmu    sync.Mutex
	ctrl   []byte // encoded control frames, in order
	pieces []int  // piece requests to serve, in order
	wake   chan struct{}

	closeOnce sync.Once
	closed    chan struct{}
	err       error // why it closed; set before closed is closed
}

// newConn wraps nc, whose first bytes may already sit in prefix (read ahead
// by an HTTP parser), in the node's limiters.
func newConn(parent context.Context, nc net.Conn, prefix []byte, up, down *bwlimit.Limiter) *conn {
	ctx, cancel := context.WithCancel(parent)
	var src io.Reader = nc
	if len(prefix) > 0 {
		src = io.MultiReader(bytes.NewReader(prefix), nc)
	}
	return &conn{
		nc:     nc,
		r:      bufio.NewReaderSize(bwlimit.NewReader(ctx, src, down), connBufSize),
		w:      bufio.NewWriterSize(bwlimit.NewWriter(ctx, nc, up), connBufSize),
		ctx:    ctx,
		cancel: cancel,
		wake:   make(chan struct{}, 1),
		closed: make(chan struct{}),
	}
}

func (c *conn) String() string { return fmt.Sprintf("conn(%s, %s)", c.peer, c.nc.RemoteAddr()) }

// writeHandshake sends h at once; the writer goroutine is not running yet.
func (c *conn) writeHandshake(h handshake) error {
	c.told = h.bitfield
	if _, err := c.w.Write(appendHandshake(nil, h)); err != nil {
		return err
	}
	return c.w.Flush()
}

// readHandshake reads the peer's handshake, or its refusal.
func (c *conn) readHandshake() (handshake, error) {
	m, err := readMessage(c.r)
	if err != nil {
		return handshake{}, err
	}
	switch m.typ {
	case msgHandshake:
		return m.hs, nil
	case msgError:
		return handshake{}, fmt.Errorf("peer refused the connection: %s", m.text)
	}
	return handshake{}, fmt.Errorf("%w: %s before handshake", errFrame, m.typ)
}

// reject tells the peer why it is refused, best effort, and closes.
func (c *conn) reject(reason string) {
	c.w.Write(appendError(nil, noPiece, codeRejected, reason))
	c.w.Flush()
	c.nc.Close()
	c.cancel()
}

// enqueue queues an encoded control frame.
func (c *conn) enqueue(frame []byte) {
	c.qmu.Lock()
	c.ctrl = append(c.ctrl, frame...)
	c.qmu.Unlock()
	c.notify()
}

func (c *conn) sendHave(i int)   { c.enqueue(appendIndexMsg(nil, msgHave, i)) }
func (c *conn) sendCancel(i int) { c.enqueue(appendIndexMsg(nil, msgCancel, i)) }
func (c *conn) sendComplete()    { c.enqueue(appendComplete(nil)) }
func (c *conn) sendRequests(pieces []int) {
	if len(pieces) == 0 {
		return
	}
	var b []byte
	for _, i := range pieces {
		b = appendIndexMsg(b, msgRequest, i)
	}
	c.enqueue(b)
}

// queuePiece queues piece i to be sent to the peer.
func (c *conn) queuePiece(i int) error {
	c.qmu.Lock()
	defer c.notify()
	defer c.qmu.Unlock()
	if len(c.pieces) >= maxQueuedPieces {
		return errQueueFull
	}
	c.pieces = append(c.pieces, i)
	return nil
}

// cancelPiece drops piece i from the send queue if it has not started.
func (c *conn) cancelPiece(i int) {
	c.qmu.Lock()
	c.pieces = slices.DeleteFunc(c.pieces, func(p int) bool { return p == i })
	c.qmu.Unlock()
}

func (c *conn) notify() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// next returns what to send next: all queued control frames, or else one
// piece (-1 if none); empty reports whether nothing is left after it.
func (c *conn) next() (ctrl []byte, piece int, empty bool) {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	piece = -1
	if len(c.ctrl) > 0 {
		ctrl, c.ctrl = c.ctrl, nil
	} else if len(c.pieces) > 0 {
		piece, c.pieces = c.pieces[0], c.pieces[1:]
	}
	return ctrl, piece, len(c.ctrl) == 0 && len(c.pieces) == 0
}

// writeLoop sends queued messages until the connection closes.
func (c *conn) writeLoop() {
	for {
		ctrl, piece, empty := c.next()
		var err error
		switch {
		case len(ctrl) > 0:
			_, err = c.w.Write(ctrl)
		case piece >= 0:
			err = c.t.writePiece(c, piece)
		default:
			// A cancel may have emptied the queue after a write that
			// left bytes buffered.
			if c.w.Buffered() > 0 {
				if err := c.w.Flush(); err != nil {
					c.close(fmt.Errorf("writing to peer: %w", err))
					return
				}
			}
			select {
			case <-c.wake:
				continue
			case <-c.closed:
				return
			}
		}
		if err == nil && empty {
			err = c.w.Flush()
		}
		if err != nil {
			c.close(fmt.Errorf("writing to peer: %w", err))
			return
		}
	}
}

// readLoop dispatches the peer's messages until the connection fails.
func (c *conn) readLoop() {
	for {
		m, err := readMessage(c.r)
		if err == nil {
			err = c.t.dispatch(c, m)
		}
		if err != nil {
			c.close(err)
			return
		}
	}
}

// close closes the connection once, for the reason err, and removes it
// from its torrent. It must not be called with the torrent's lock held.
func (c *conn) close(err error) {
	c.closeOnce.Do(func() {
		c.err = err
		c.cancel()
		c.nc.Close()
		close(c.closed)
		if c.t != nil {
			c.t.removeConn(c)
		}
	})
}

func (c *conn) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}
