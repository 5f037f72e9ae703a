package peer

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// errUnsatisfiable is a Range the server will not serve: answered 416.
var errUnsatisfiable = errors.New("unsatisfiable range")

// parseRange interprets a Range header for a blob of size bytes and returns
// the part to send, [off, off+n) with n > 0. The forms are RFC 9110's single
// byte ranges: "bytes=a-b" (b beyond the end is clamped), "bytes=a-" and
// "bytes=-n" (the last n bytes; more than size means all).
//
// Everything else yields errUnsatisfiable, answered 416: a range starting
// at or past the end, "-0", a malformed header, another unit, and several
// ranges. RFC 9110 would let a server ignore such a header and send the
// whole blob; the peer protocol's only client never sends one, so a
// confused caller fails loudly instead of silently pulling a whole layer.
func parseRange(h string, size int64) (off, n int64, err error) {
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok {
		return 0, 0, fmt.Errorf("%w: %.80q is not a byte range", errUnsatisfiable, h)
	}
	if strings.Contains(spec, ",") {
		return 0, 0, fmt.Errorf("%w: %.80q: only one range is served", errUnsatisfiable, h)
	}
	first, last, ok := strings.Cut(strings.TrimSpace(spec), "-")
	if !ok {
		return 0, 0, fmt.Errorf("%w: %.80q is malformed", errUnsatisfiable, h)
	}
	first, last = strings.TrimSpace(first), strings.TrimSpace(last)
	if first == "" {
		suffix, err := parseDecimal(last)
		if err != nil || suffix == 0 || size == 0 {
			return 0, 0, fmt.Errorf("%w: %.80q for %d bytes", errUnsatisfiable, h, size)
		}
		n = min(suffix, size)
		return size - n, n, nil
	}
	off, err = parseDecimal(first)
	if err != nil || off >= size {
		return 0, 0, fmt.Errorf("%w: %.80q for %d bytes", errUnsatisfiable, h, size)
	}
	if last == "" {
		return off, size - off, nil
	}
	end, err := parseDecimal(last)
	if err != nil || end < off {
		return 0, 0, fmt.Errorf("%w: %.80q is malformed", errUnsatisfiable, h)
	}
	return off, min(end, size-1) - off + 1, nil
}

// parseContentRange parses a 206 answer's "bytes first-last/size", size
// being -1 for "*" (unknown). It checks first <= last < size.
func parseContentRange(h string) (first, last, size int64, err error) {
	bad := func() (int64, int64, int64, error) {
		return 0, 0, 0, fmt.Errorf("malformed Content-Range %.80q", h)
	}
	spec, ok := strings.CutPrefix(h, "bytes ")
	if !ok {
		return bad()
	}
	rng, total, ok := strings.Cut(spec, "/")
	if !ok {
		return bad()
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return bad()
	}
	if first, err = parseDecimal(a); err != nil {
		return bad()
	}
	if last, err = parseDecimal(b); err != nil || last < first {
		return bad()
	}
	if total == "*" {
		return first, last, -1, nil
	}
	if size, err = parseDecimal(total); err != nil || last >= size {
		return bad()
	}
	return first, last, size, nil
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
	return strconv.ParseInt(s, 10, 64)
}
