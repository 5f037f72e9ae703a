package swarm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// The peer protocol. Every message is a frame:
//
//	length  uint32, big endian: the bytes that follow
//	type    uint8
//	body    length-1 bytes, by type:
//	  handshake  version u8, flags u8, id (u8 length, bytes),
//	             digest (u8 length, bytes), pieces u32, bitfield
//	  have, request, cancel   index u32
//	  piece      index u32, then the piece's bytes
//	  error      index u32, code u8, text (the rest, UTF-8)
//	  complete   empty
//
// Each side sends its handshake first. A piece frame is the only large
// one; it is read as a header, after which its payload is streamed.
type msgType uint8

const (
	msgHandshake msgType = iota + 1
	msgHave
	msgRequest
	msgPiece
	msgCancel
	msgError
	msgComplete
)

func (t msgType) String() string {
	switch t {
	case msgHandshake:
		return "handshake"
	case msgHave:
		return "have"
	case msgRequest:
		return "request"
	case msgPiece:
		return "piece"
	case msgCancel:
		return "cancel"
	case msgError:
		return "error"
	case msgComplete:
		return "complete"
	}
	return fmt.Sprintf("msgType(%d)", uint8(t))
}

const (
	protocolVersion = 1

	// maxControlFrame bounds every frame but a piece: a handshake of
	// MaxPieces pieces fits.
	maxControlFrame = 64<<10 + MaxPieces/8
	// maxErrorText bounds the text of an error message.
	maxErrorText = 1 << 10

	flagOrigin = 1 << 0
)

// Error codes.
const (
	// codePieceUnavailable answers a request for a piece the peer lacks.
	codePieceUnavailable uint8 = iota + 1
	// codeRejected answers a handshake the peer refuses (unknown blob, no
	// room, duplicate connection); the connection closes after it.
	codeRejected
)

// noPiece is the index of an error that concerns no piece.
const noPiece = ^uint32(0)

// handshake is the first message on a connection, in each direction.
type handshake struct {
	id       string // the sender's peer id
	digest   string // the blob this connection is about
	origin   bool   // the sender is an origin
	bitfield bitfield
}

// message is a decoded frame. For a piece, payload bytes of the piece
// follow in the stream and must be consumed before the next message.
type message struct {
	typ     msgType
	index   uint32
	code    uint8
	text    string
	hs      handshake
	payload int64
}

var errFrame = errors.New("malformed frame")

// readMessage reads the next message from r. A piece's payload is left in
// r. Errors other than the stream's own say what is malformed.
func readMessage(r io.Reader) (message, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return message{}, err
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	m := message{typ: msgType(hdr[4])}
	if n == 0 {
		return message{}, fmt.Errorf("%w: empty frame", errFrame)
	}
	body := int64(n) - 1
	if m.typ == msgPiece {
		if body < 4 || body-4 > MaxPieceSize {
			return message{}, fmt.Errorf("%w: piece frame of %d bytes", errFrame, n)
		}
		var idx [4]byte
		if _, err := io.ReadFull(r, idx[:]); err != nil {
			return message{}, noEOF(err)
		}
		m.index = binary.BigEndian.Uint32(idx[:])
		m.payload = body - 4
		return m, nil
	}
	if body > maxControlFrame {
		return message{}, fmt.Errorf("%w: %s frame of %d bytes", errFrame, m.typ, n)
	}
	b := make([]byte, body)
	if _, err := io.ReadFull(r, b); err != nil {
		return message{}, noEOF(err)
	}
	if err := m.decodeBody(b); err != nil {
		return message{}, fmt.Errorf("%w: %s: %w", errFrame, m.typ, err)
	}
	return m, nil
}

// noEOF turns an EOF inside a frame into io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func (m *message) decodeBody(b []byte) error {
	switch m.typ {
	case msgHave, msgRequest, msgCancel:
		if len(b) != 4 {
			return fmt.Errorf("body of %d bytes, want 4", len(b))
		}
		m.index = binary.BigEndian.Uint32(b)
	case msgError:
		if len(b) < 5 || len(b) > 5+maxErrorText {
			return fmt.Errorf("body of %d bytes", len(b))
		}
		m.index, m.code, m.text = binary.BigEndian.Uint32(b), b[4], string(b[5:])
	case msgComplete:
		if len(b) != 0 {
			return fmt.Errorf("body of %d bytes, want 0", len(b))
		}
	case msgHandshake:
		return m.hs.decode(b)
	default:
		return errors.New("unknown message type")
	}
	return nil
}

func (h *handshake) decode(b []byte) error {
	if len(b) < 2 {
		return errors.New("short handshake")
	}
	if b[0] != protocolVersion {
		return fmt.Errorf("protocol version %d, want %d", b[0], protocolVersion)
	}
	h.origin = b[1]&flagOrigin != 0
	b = b[2:]
	var ok bool
	if h.id, b, ok = cutString(b); !ok || h.id == "" {
		return errors.New("bad peer id")
	}
	if h.digest, b, ok = cutString(b); !ok {
		return errors.New("bad digest")
	}
	if len(b) < 4 {
		return errors.New("short handshake")
	}
	n := binary.BigEndian.Uint32(b)
	b = b[4:]
	if n > MaxPieces {
		return fmt.Errorf("%d pieces exceed %d", n, MaxPieces)
	}
	f := newBitfield(int(n))
	if len(b) != len(f.b) {
		return fmt.Errorf("bitfield of %d bytes for %d pieces", len(b), n)
	}
	copy(f.b, b)
	if n%8 != 0 && f.b[len(f.b)-1]&(0xff>>(n%8)) != 0 {
		return errors.New("bitfield has spare bits set")
	}
	h.bitfield = f
	return nil
}

// cutString cuts a u8-length-prefixed string off b.
func cutString(b []byte) (string, []byte, bool) {
	if len(b) < 1 || len(b) < 1+int(b[0]) {
		return "", b, false
	}
	return string(b[1 : 1+b[0]]), b[1+b[0]:], true
}

// appendFrame appends a frame of type t with the given body.
func appendFrame(buf []byte, t msgType, body ...[]byte) []byte {
	n := 1
	for _, p := range body {
		n += len(p)
	}
	buf = binary.BigEndian.AppendUint32(buf, uint32(n))
	buf = append(buf, byte(t))
	for _, p := range body {
		buf = append(buf, p...)
	}
	return buf
}

// appendIndexMsg appends a have, request or cancel message.
func appendIndexMsg(buf []byte, t msgType, index int) []byte {
	return appendFrame(buf, t, binary.BigEndian.AppendUint32(nil, uint32(index)))
}

// appendPieceHeader appends the header of a piece frame whose n payload
// bytes the caller writes next.
func appendPieceHeader(buf []byte, index int, n int64) []byte {
	buf = binary.BigEndian.AppendUint32(buf, uint32(1+4+n))
	buf = append(buf, byte(msgPiece))
	return binary.BigEndian.AppendUint32(buf, uint32(index))
}

// appendError appends an error message; text is truncated to fit.
func appendError(buf []byte, index uint32, code uint8, text string) []byte {
	if len(text) > maxErrorText {
		text = text[:maxErrorText]
	}
	b := binary.BigEndian.AppendUint32(nil, index)
	b = append(b, code)
	return appendFrame(buf, msgError, b, []byte(text))
}

func appendComplete(buf []byte) []byte { return appendFrame(buf, msgComplete) }

// appendHandshake appends h. Ids and digests longer than 255 bytes cannot
// be sent; callers never make them.
func appendHandshake(buf []byte, h handshake) []byte {
	var flags byte
	if h.origin {
		flags |= flagOrigin
	}
	b := []byte{protocolVersion, flags, byte(len(h.id))}
	b = append(b, h.id...)
	b = append(b, byte(len(h.digest)))
	b = append(b, h.digest...)
	b = binary.BigEndian.AppendUint32(b, uint32(h.bitfield.len()))
	return appendFrame(buf, msgHandshake, b, h.bitfield.b)
}
