package swarm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

// randomMessage returns a random valid message and its encoding (with its
// payload, for a piece).
func randomMessage(rng *rand.Rand) (message, []byte) {
	switch typ := msgType(1 + rng.IntN(7)); typ {
	case msgHandshake:
		n := rng.IntN(100)
		h := handshake{id: randomString(rng, 1+rng.IntN(60)), digest: randomString(rng, rng.IntN(80)), origin: rng.IntN(2) == 0, bitfield: newBitfield(n)}
		for i := range n {
			if rng.IntN(2) == 0 {
				h.bitfield.set(i)
			}
		}
		return message{typ: typ, hs: h}, appendHandshake(nil, h)
	case msgHave, msgRequest, msgCancel:
		i := rng.IntN(1 << 20)
		return message{typ: typ, index: uint32(i)}, appendIndexMsg(nil, typ, i)
	case msgPiece:
		i, n := rng.IntN(1000), rng.Int64N(5000)
		payload := make([]byte, n)
		for j := range payload {
			payload[j] = byte(rng.Uint32())
		}
		return message{typ: typ, index: uint32(i), payload: n}, append(appendPieceHeader(nil, i, n), payload...)
	case msgError:
		m := message{typ: typ, index: rng.Uint32(), code: uint8(rng.IntN(256)), text: randomString(rng, rng.IntN(100))}
		return m, appendError(nil, m.index, m.code, m.text)
	default:
		return message{typ: msgComplete}, appendComplete(nil)
	}
}

func randomString(rng *rand.Rand, n int) string {
	var b strings.Builder
	for range n {
		b.WriteByte(byte('!' + rng.IntN(90)))
	}
	return b.String()
}

// TestWireRoundTrip: a seeded random sequence of messages decodes to what
// was encoded, payloads included.
func TestWireRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	var stream []byte
	var want []message
	var payloads [][]byte
	for range 500 {
		m, b := randomMessage(rng)
		stream = append(stream, b...)
		want = append(want, m)
		if m.typ == msgPiece {
			payloads = append(payloads, b[len(b)-int(m.payload):])
		}
	}
	r := bytes.NewReader(stream)
	for i, w := range want {
		got, err := readMessage(r)
		if err != nil {
			t.Fatalf("message %d (%s): %v", i, w.typ, err)
		}
		if got.typ == msgPiece {
			p := make([]byte, got.payload)
			if _, err := io.ReadFull(r, p); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(p, payloads[0]) {
				t.Fatalf("message %d: piece payload differs", i)
			}
			payloads = payloads[1:]
		}
		if !reflect.DeepEqual(got, w) {
			t.Fatalf("message %d: got %+v, want %+v", i, got, w)
		}
	}
	if _, err := readMessage(r); err != io.EOF {
		t.Errorf("after the last message: %v, want EOF", err)
	}
}

func frame(t msgType, body ...byte) []byte {
	return appendFrame(nil, t, body)
}

func TestReadMessageErrors(t *testing.T) {
	hs := appendHandshake(nil, handshake{id: "p", digest: "d", bitfield: bf(3, 0)})
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"empty frame", []byte{0, 0, 0, 0, 1}, errFrame},
		{"unknown type", frame(99), errFrame},
		{"short have", frame(msgHave, 1, 2), errFrame},
		{"long request", frame(msgRequest, 1, 2, 3, 4, 5), errFrame},
		{"complete with body", frame(msgComplete, 0), errFrame},
		{"short error", frame(msgError, 0, 0, 0, 1), errFrame},
		{"huge control frame", append(binary.BigEndian.AppendUint32(nil, maxControlFrame+2), byte(msgHandshake)), errFrame},
		{"huge piece", append(binary.BigEndian.AppendUint32(nil, MaxPieceSize+6), byte(msgPiece)), errFrame},
		{"piece without index", append(binary.BigEndian.AppendUint32(nil, 3), byte(msgPiece), 0, 0), errFrame},
		{"handshake version", func() []byte { b := bytes.Clone(hs); b[5] = 9; return b }(), errFrame},
		{"handshake spare bits", func() []byte { b := bytes.Clone(hs); b[len(b)-1] |= 1; return b }(), errFrame},
		{"handshake short bitfield", frame(msgHandshake, protocolVersion, 0, 1, 'p', 0, 0, 0, 0, 9), errFrame},
		{"handshake without id", frame(msgHandshake, protocolVersion, 0, 0, 0, 0, 0, 0, 0), errFrame},
		{"truncated frame", hs[:len(hs)-1], io.ErrUnexpectedEOF},
		{"truncated header", hs[:3], io.ErrUnexpectedEOF},
		{"nothing", nil, io.EOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readMessage(bytes.NewReader(tc.in))
			if !errors.Is(err, tc.want) {
				t.Errorf("readMessage: %v, want %v", err, tc.want)
			}
		})
	}
}

// FuzzReadMessage: the decoder survives any input, and what it decodes
// encodes back to the same message.
func FuzzReadMessage(f *testing.F) {
	rng := rand.New(rand.NewPCG(1, 1))
	for range 20 {
		_, b := randomMessage(rng)
		f.Add(b)
	}
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, byte(msgHandshake)})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		for {
			m, err := readMessage(r)
			if err != nil {
				return
			}
			if m.typ == msgPiece {
				if _, err := io.CopyN(io.Discard, r, m.payload); err != nil {
					return
				}
				continue
			}
			var enc []byte
			switch m.typ {
			case msgHandshake:
				enc = appendHandshake(nil, m.hs)
			case msgHave, msgRequest, msgCancel:
				enc = appendIndexMsg(nil, m.typ, int(m.index))
			case msgError:
				enc = appendError(nil, m.index, m.code, m.text)
			case msgComplete:
				enc = appendComplete(nil)
			default:
				t.Fatalf("decoded unknown type %s", m.typ)
			}
			again, err := readMessage(bytes.NewReader(enc))
			if err != nil {
				t.Fatalf("re-decoding %+v: %v", m, err)
			}
			if !reflect.DeepEqual(again, m) {
				t.Fatalf("round trip: %+v became %+v", m, again)
			}
		}
	})
}
