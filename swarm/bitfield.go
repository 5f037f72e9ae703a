package swarm

import "math/bits"

// bitfield is a set of piece indexes in BitTorrent's wire layout: piece i
// is bit 7-(i%8) of byte i/8, spare bits zero.
type bitfield struct {
	n int
	b []byte
}

func newBitfield(n int) bitfield {
	return bitfield{n: n, b: make([]byte, (n+7)/8)}
}

func (f bitfield) len() int { return f.n }

func (f bitfield) has(i int) bool {
	return i >= 0 && i < f.n && f.b[i/8]&(0x80>>(i%8)) != 0
}

// set sets bit i and reports whether it was clear.
func (f bitfield) set(i int) bool {
	if f.has(i) {
		return false
	}
	f.b[i/8] |= 0x80 >> (i % 8)
	return true
}

func (f bitfield) count() int {
	c := 0
	for _, x := range f.b {
		c += bits.OnesCount8(x)
	}
	return c
}

func (f bitfield) complete() bool { return f.count() == f.n }

func (f bitfield) clone() bitfield {
	return bitfield{n: f.n, b: append([]byte(nil), f.b...)}
}
