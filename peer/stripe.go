package peer

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// StripeHeader asks for one stripe of a blob in one answer: blocks s,
// s+k, s+2k, ... of block bytes each (the last block of the blob may be
// shorter), from block From on, back to back. Its value is
// "s/k/block/from"; the answer (200) repeats it. A child of a stripe tree
// streams its stripe from its parent this way, with one request per blob
// rather than one per block.
const StripeHeader = "Faasnet-Stripe"

// Stripe is a StripeHeader's value.
type Stripe struct {
	S, K  int
	Block int64
	From  int // the first block index, in the stripe
}

// The bounds of a stripe request: more stripes than a function may have,
// or blocks outside what the workers' caches use, are a confused or
// hostile child.
const (
	maxStripes     = 16
	minStripeBlock = 4 << 10
	maxStripeBlock = 64 << 20
)

var errStripe = errors.New("malformed " + StripeHeader)

// ParseStripe parses a StripeHeader value for a blob of size bytes.
func ParseStripe(v string, size int64) (Stripe, error) {
	f := strings.Split(v, "/")
	if len(f) != 4 {
		return Stripe{}, fmt.Errorf("%w %.40q: want s/k/block/from", errStripe, v)
	}
	var n [4]int64
	for i, s := range f {
		x, err := strconv.ParseInt(s, 10, 64)
		if err != nil || x < 0 || s != strconv.FormatInt(x, 10) {
			return Stripe{}, fmt.Errorf("%w %.40q: field %d", errStripe, v, i+1)
		}
		n[i] = x
	}
	st := Stripe{S: int(n[0]), K: int(n[1]), Block: n[2]}
	switch {
	case n[1] < 1 || n[1] > maxStripes || n[0] >= n[1]:
		return Stripe{}, fmt.Errorf("%w %.40q: stripe %d of %d", errStripe, v, n[0], n[1])
	case n[2] < minStripeBlock || n[2] > maxStripeBlock:
		return Stripe{}, fmt.Errorf("%w %.40q: block of %d bytes", errStripe, v, n[2])
	case n[3] >= (size+n[2]-1)/n[2] || n[3]%n[1] != n[0]:
		return Stripe{}, fmt.Errorf("%w %.40q: block %d is not one of the stripe's in a blob of %d bytes", errStripe, v, n[3], size)
	}
	st.From = int(n[3])
	return st, nil
}

// String is the header value.
func (st Stripe) String() string {
	return fmt.Sprintf("%d/%d/%d/%d", st.S, st.K, st.Block, st.From)
}

// Blocks are the (offset, length) of the stripe's blocks from From on in a
// blob of size bytes.
func (st Stripe) Blocks(size int64) [][2]int64 {
	var out [][2]int64
	for i := int64(st.From); i*st.Block < size; i += int64(st.K) {
		off := i * st.Block
		out = append(out, [2]int64{off, min(st.Block, size-off)})
	}
	return out
}

// Len is the bytes of the stripe's blocks from From on.
func (st Stripe) Len(size int64) int64 {
	var n int64
	for _, b := range st.Blocks(size) {
		n += b[1]
	}
	return n
}
