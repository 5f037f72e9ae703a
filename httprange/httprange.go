// Package httprange reads and writes single HTTP byte ranges (RFC 9110,
// section 14) and checks that a body holds exactly the bytes its answer
// promised.
//
// Blob bytes cross two HTTP edges in faasnet, registry to root and parent to
// child, and a short or shifted range there becomes a corrupt block
// downstream. Both edges ask with Header, check answers with Body, and parse
// Content-Range with ParseContentRange; the peer server answers with
// ParseRange and ContentRange.String.
package httprange

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ContentRange is a Content-Range header of the byte unit.
type ContentRange struct {
	// First and Last are the bytes held, inclusive; both are -1 in an
	// unsatisfied range ("bytes */size", the header of a 416 answer).
	First, Last int64
	// Size is the complete length, or -1 when the sender did not know it
	// ("bytes a-b/*").
	Size int64
}

// Unsatisfied reports whether c is "bytes */size".
func (c ContentRange) Unsatisfied() bool { return c.First < 0 }

// Len is the number of bytes c holds.
func (c ContentRange) Len() int64 {
	if c.Unsatisfied() {
		return 0
	}
	return c.Last - c.First + 1
}

// String formats c as a Content-Range header value.
func (c ContentRange) String() string {
	size := "*"
	if c.Size >= 0 {
		size = strconv.FormatInt(c.Size, 10)
	}
	if c.Unsatisfied() {
		return "bytes */" + size
	}
	return "bytes " + strconv.FormatInt(c.First, 10) + "-" + strconv.FormatInt(c.Last, 10) + "/" + size
}

// ParseContentRange parses h, which must be "bytes a-b/size", "bytes a-b/*"
// or "bytes */size" exactly: one space, decimal digits only, no signs or
// spaces, every number within int64. It checks a <= b and, when size is
// known, b < size. "bytes */*" is refused: it says nothing.
func ParseContentRange(h string) (ContentRange, error) {
	bad := func(why string) (ContentRange, error) {
		return ContentRange{}, fmt.Errorf("malformed Content-Range %.80q: %s", h, why)
	}
	spec, ok := strings.CutPrefix(h, "bytes ")
	if !ok {
		return bad(`want "bytes "`)
	}
	rng, total, ok := strings.Cut(spec, "/")
	if !ok {
		return bad("no complete length")
	}
	c := ContentRange{First: -1, Last: -1, Size: -1}
	if total != "*" {
		size, err := parseDecimal(total)
		if err != nil {
			return bad("complete length: " + err.Error())
		}
		c.Size = size
	}
	if rng == "*" {
		if c.Size < 0 {
			return bad("neither range nor complete length")
		}
		return c, nil
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return bad("want first-last")
	}
	first, err := parseDecimal(a)
	if err != nil {
		return bad("first byte: " + err.Error())
	}
	last, err := parseDecimal(b)
	if err != nil {
		return bad("last byte: " + err.Error())
	}
	if last < first {
		return bad("last byte before first")
	}
	if c.Size >= 0 && last >= c.Size {
		return bad("last byte past the complete length")
	}
	c.First, c.Last = first, last
	return c, nil
}

// ErrUnsatisfiable is a Range a server will not serve: answered 416.
var ErrUnsatisfiable = errors.New("unsatisfiable range")

// ErrMultipleRanges is the error of a Range asking for several ranges. It
// wraps ErrUnsatisfiable; a server that would rather answer 400, as a
// registry mirror must not answer such a request with the whole content,
// tells it apart with errors.Is.
var ErrMultipleRanges = fmt.Errorf("%w: several ranges", ErrUnsatisfiable)

// ParseRange interprets a Range request header for content of size bytes
// and returns the part to send, [off, off+n) with n > 0. The forms are RFC
// 9110's single byte ranges: "bytes=a-b" (b beyond the end is clamped),
// "bytes=a-" and "bytes=-n" (the last n bytes; more than size means all).
//
// Everything else yields an error wrapping ErrUnsatisfiable: a range
// starting at or past the end, "-0", a malformed header, another unit, and
// several ranges. RFC 9110 would let a server ignore such a header and send
// everything; faasnet's clients never send one, so a confused caller fails
// loudly instead of silently pulling a whole layer.
func ParseRange(h string, size int64) (off, n int64, err error) {
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok {
		return 0, 0, fmt.Errorf("%w: %.80q is not a byte range", ErrUnsatisfiable, h)
	}
	if strings.Contains(spec, ",") {
		return 0, 0, fmt.Errorf("%w: %.80q: only one range is served", ErrMultipleRanges, h)
	}
	first, last, ok := strings.Cut(strings.TrimSpace(spec), "-")
	if !ok {
		return 0, 0, fmt.Errorf("%w: %.80q is malformed", ErrUnsatisfiable, h)
	}
	first, last = strings.TrimSpace(first), strings.TrimSpace(last)
	if first == "" {
		suffix, err := parseDecimal(last)
		if err != nil || suffix == 0 || size <= 0 {
			return 0, 0, fmt.Errorf("%w: %.80q for %d bytes", ErrUnsatisfiable, h, size)
		}
		n = min(suffix, size)
		return size - n, n, nil
	}
	off, err = parseDecimal(first)
	if err != nil || off >= size {
		return 0, 0, fmt.Errorf("%w: %.80q for %d bytes", ErrUnsatisfiable, h, size)
	}
	if last == "" {
		return off, size - off, nil
	}
	end, err := parseDecimal(last)
	if err != nil || end < off {
		return 0, 0, fmt.Errorf("%w: %.80q is malformed", ErrUnsatisfiable, h)
	}
	return off, min(end, size-1) - off + 1, nil
}

// Header returns the Range header asking for n bytes from off, n < 0
// meaning to the end; "" when that is everything (off 0, n < 0), so the
// answer is a plain 200. n == 0 cannot be asked for in HTTP: callers
// answer it without a request.
func Header(off, n int64) (string, error) {
	switch {
	case off < 0:
		return "", fmt.Errorf("negative offset %d", off)
	case n == 0:
		return "", errors.New("empty range")
	case n > 0 && n-1 > math.MaxInt64-off:
		return "", fmt.Errorf("range of %d bytes at %d overflows", n, off)
	case n < 0 && off == 0:
		return "", nil
	case n < 0:
		return "bytes=" + strconv.FormatInt(off, 10) + "-", nil
	}
	return "bytes=" + strconv.FormatInt(off, 10) + "-" + strconv.FormatInt(off+n-1, 10), nil
}

// parseDecimal parses a non-negative decimal integer: digits only, unlike
// strconv.ParseInt, which also takes signs.
func parseDecimal(s string) (int64, error) {
	if s == "" {
		return 0, errors.New("empty number")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("not a decimal number: %.40q", s)
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("number %.40q out of range", s)
	}
	return v, nil
}
