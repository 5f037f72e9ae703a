// Package units parses and formats byte sizes and byte rates as operators
// write them on command lines: "512KiB", "1.5GiB", "4MiB/s", "1Gbps".
//
// Unit prefixes are decimal (K, M, G, T, P, E = powers of 1000) or binary
// (Ki, Mi, Gi, Ti, Pi, Ei = powers of 1024), matched without regard to case. The
// base unit is case sensitive, as in networking: "B" (or "byte", "bytes") is a
// byte, "b" (or "bit", "bits") is a bit. A missing base unit means bytes.
// Sizes must be in bytes; rates may be in bits, which are divided by 8.
package units

import (
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"
)

// maxNumberLen bounds the numeric part so that a hostile or mistyped flag
// cannot make the exact decimal arithmetic expensive.
const maxNumberLen = 64

// unit is what a suffix such as "MiB" or "Gbit" means.
type unit struct {
	mult int64 // bytes (or bits) per unit
	bits bool  // the base unit is the bit
}

// prefixes maps a lower-case prefix to its multiplier.
var prefixes = map[string]int64{
	"":   1,
	"k":  1e3,
	"m":  1e6,
	"g":  1e9,
	"t":  1e12,
	"p":  1e15,
	"e":  1e18,
	"ki": 1 << 10,
	"mi": 1 << 20,
	"gi": 1 << 30,
	"ti": 1 << 40,
	"pi": 1 << 50,
	"ei": 1 << 60,
}

// baseUnits lists base-unit spellings, longest first so that "bits" is not
// read as prefix "bit" + "s".
var baseUnits = []struct {
	name string
	bits bool
}{
	{"bytes", false}, {"byte", false}, {"bits", true}, {"bit", true},
	{"B", false}, {"b", true},
}

// parseUnit interprets a unit suffix without any "/s". An empty suffix
// means bytes.
func parseUnit(s string) (unit, error) {
	base, bits := "", false
	for _, b := range baseUnits {
		if strings.HasSuffix(s, b.name) {
			base, bits = b.name, b.bits
			break
		}
	}
	prefix := strings.ToLower(strings.TrimSuffix(s, base))
	mult, ok := prefixes[prefix]
	if !ok {
		return unit{}, fmt.Errorf("unknown unit %s", s)
	}
	return unit{mult: mult, bits: bits}, nil
}

// splitNumber splits s into its leading decimal number and the unit after
// it, dropping blanks between them. The number is digits with at most one
// decimal point; signs and exponents are not accepted.
func splitNumber(s string) (num, rest string, err error) {
	i, digits, dots := 0, 0, 0
	for ; i < len(s); i++ {
		c := s[i]
		if c >= '0' && c <= '9' {
			digits++
		} else if c == '.' && dots == 0 {
			dots++
		} else {
			break
		}
	}
	if digits == 0 {
		return "", "", errors.New("missing number")
	}
	if i > maxNumberLen {
		return "", "", errors.New("number too long")
	}
	return s[:i], strings.TrimSpace(s[i:]), nil
}

// scale returns num*mult/div rounded half up to an integer byte count.
func scale(num string, mult, div int64) (int64, error) {
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, fmt.Errorf("malformed number %s", num)
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	r.Quo(r, new(big.Rat).SetInt64(div))
	// round half up: floor(r + 1/2); r is never negative here.
	r.Add(r, big.NewRat(1, 2))
	q := new(big.Int).Quo(r.Num(), r.Denom())
	if !q.IsInt64() {
		return 0, errors.New("out of range")
	}
	return q.Int64(), nil
}

// ParseSize parses a byte count such as "512KiB", "1.5GiB", "16MB" or
// "4096". A fraction of a byte is rounded to the nearest byte. Units in bits
// are refused: a size is always in bytes.
func ParseSize(s string) (int64, error) {
	n, err := parseSize(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("invalid size %q: %w", s, err)
	}
	return n, nil
}

func parseSize(s string) (int64, error) {
	num, suffix, err := splitNumber(s)
	if err != nil {
		return 0, err
	}
	u, err := parseUnit(suffix)
	if err != nil {
		return 0, err
	}
	if u.bits {
		return 0, fmt.Errorf("unit %s is in bits; sizes are in bytes (B)", suffix)
	}
	return scale(num, u.mult, 1)
}

// ParseRate parses a bandwidth into bytes per second. It accepts a size per
// second ("4MiB/s", "16MB/sec", "10MBps"), a bit rate ("1Gbps",
// "100Mbit/s", "800kb/s"), or a bare size, per second implied ("16MiB").
// "", "0" (in any unit) and "unlimited" all mean no limit and return 0.
// A positive rate never rounds down to 0, which would lift the limit: it
// is at least 1 byte per second.
func ParseRate(s string) (int64, error) {
	n, err := parseRate(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("invalid rate %q: %w", s, err)
	}
	return n, nil
}

func parseRate(s string) (int64, error) {
	if s == "" || strings.EqualFold(s, "unlimited") {
		return 0, nil
	}
	num, suffix, err := splitNumber(s)
	if err != nil {
		return 0, err
	}
	u, err := parseUnit(perSecond(suffix))
	if err != nil {
		return 0, err
	}
	div := int64(1)
	if u.bits {
		div = 8
	}
	n, err := scale(num, u.mult, div)
	if err != nil {
		return 0, err
	}
	if n == 0 && !isZero(num) {
		n = 1
	}
	return n, nil
}

// perSecond strips the "per second" part of a rate unit: "/s", "/sec", or
// the "ps" of "bps" and "Bps".
func perSecond(suffix string) string {
	lower := strings.ToLower(suffix)
	for _, per := range []string{"/s", "/sec"} {
		if strings.HasSuffix(lower, per) {
			return strings.TrimSpace(suffix[:len(suffix)-len(per)])
		}
	}
	if strings.HasSuffix(lower, "bps") {
		return suffix[:len(suffix)-len("ps")]
	}
	return suffix
}

func isZero(num string) bool {
	return strings.Trim(num, "0.") == ""
}

// binaryUnits are the units FormatBytes uses, each 1024 times the previous.
var binaryUnits = []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}

// FormatBytes formats a byte count for people, with three significant
// digits in the largest binary unit that keeps the number at least 1:
// "512 B", "1.5 MiB", "12.3 GiB", "758 MiB". It is for logs and reports;
// use Size.String for an exact form.
func FormatBytes(n int64) string {
	sign := ""
	v := float64(n)
	if v < 0 {
		sign, v = "-", -v
	}
	i := 0
	for v >= 1024 && i < len(binaryUnits)-1 {
		v /= 1024
		i++
	}
	if i == 0 {
		return sign + strconv.FormatFloat(v, 'f', 0, 64) + " B"
	}
	prec := 2
	switch {
	case v >= 100:
		prec = 0
	case v >= 10:
		prec = 1
	}
	num := strconv.FormatFloat(v, 'f', prec, 64)
	if strings.Contains(num, ".") {
		num = strings.TrimRight(strings.TrimRight(num, "0"), ".")
	}
	return sign + num + " " + binaryUnits[i]
}

// FormatRate formats a rate in bytes per second like FormatBytes, with
// "/s" appended ("4 MiB/s"); 0 (no limit) is "unlimited".
func FormatRate(bytesPerSecond int64) string {
	if bytesPerSecond == 0 {
		return "unlimited"
	}
	return FormatBytes(bytesPerSecond) + "/s"
}

// exactUnits are the units exact may name a value in.
var exactUnits = []struct {
	name string
	mult int64
}{
	{"B", 1},
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"PiB", 1 << 50}, {"EiB", 1 << 60},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"PB", 1e15}, {"EB", 1e18},
}

// exact formats n without loss, choosing among the units that divide it
// exactly the one giving the smallest number ("512KiB", "125MB", "1500B");
// ParseSize reads it back to n.
func exact(n int64) string {
	if n == 0 {
		return "0"
	}
	best := exactUnits[0]
	for _, u := range exactUnits[1:] {
		if n%u.mult == 0 && u.mult > best.mult {
			best = u
		}
	}
	return strconv.FormatInt(n/best.mult, 10) + best.name
}

// Size is a byte count usable as a command-line flag (it implements
// pflag.Value): Set parses with ParseSize, String formats exactly.
type Size int64

// Set parses s with ParseSize.
func (z *Size) Set(s string) error {
	n, err := ParseSize(s)
	if err != nil {
		return err
	}
	*z = Size(n)
	return nil
}

// String formats the size exactly, in the largest unit that divides it.
func (z Size) String() string { return exact(int64(z)) }

// Type names the flag's value type in help texts.
func (z Size) Type() string { return "size" }

// Rate is a bandwidth in bytes per second, 0 meaning unlimited, usable as a
// command-line flag (it implements pflag.Value).
type Rate int64

// Set parses s with ParseRate.
func (r *Rate) Set(s string) error {
	n, err := ParseRate(s)
	if err != nil {
		return err
	}
	*r = Rate(n)
	return nil
}

// String formats the rate exactly ("4MiB/s", "125MB/s") or "unlimited".
func (r Rate) String() string {
	if r == 0 {
		return "unlimited"
	}
	return exact(int64(r)) + "/s"
}

// Type names the flag's value type in help texts.
func (r Rate) Type() string { return "rate" }
