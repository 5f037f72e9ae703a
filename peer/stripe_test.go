package peer

import "testing"

func TestParseStripe(t *testing.T) {
	const size = 10<<20 + 5 // 21 blocks of 512 KiB, the last 5 bytes
	for _, tc := range []struct {
		v    string
		ok   bool
		n    int   // blocks
		last int64 // length of the last block
	}{
		{"0/2/524288/0", true, 11, 5},
		{"1/2/524288/1", true, 10, 524288},
		{"1/2/524288/19", true, 1, 524288},
		{"0/1/524288/20", true, 1, 5},
		{"1/2/524288/2", false, 0, 0},  // block 2 is stripe 0's
		{"0/2/524288/22", false, 0, 0}, // past the end
		{"2/2/524288/2", false, 0, 0},  // no stripe 2 of 2
		{"0/17/524288/0", false, 0, 0}, // too many stripes
		{"0/2/100/0", false, 0, 0},     // block too small
		{"0/2/524288", false, 0, 0},    // a field missing
		{"0/2/+524288/0", false, 0, 0}, // not canonical
		{"0/2/524288/-2", false, 0, 0}, // negative
		{"0/0/524288/0", false, 0, 0},  // no stripes
		{"x/2/524288/0", false, 0, 0},
	} {
		st, err := ParseStripe(tc.v, size)
		if (err == nil) != tc.ok {
			t.Errorf("ParseStripe(%q) = %+v, %v; want ok %v", tc.v, st, err, tc.ok)
			continue
		}
		if !tc.ok {
			continue
		}
		b := st.Blocks(size)
		if len(b) != tc.n || b[len(b)-1][1] != tc.last || st.String() != tc.v {
			t.Errorf("%q: %d blocks, last %d, string %q; want %d, %d", tc.v, len(b), b[len(b)-1][1], st.String(), tc.n, tc.last)
		}
	}
}

func FuzzParseStripe(f *testing.F) {
	f.Add("1/2/524288/1", int64(10<<20))
	f.Add("0/3/65536/9", int64(1<<20))
	f.Fuzz(func(t *testing.T, v string, size int64) {
		if size <= 0 {
			return
		}
		st, err := ParseStripe(v, size)
		if err != nil {
			return
		}
		var n int64
		for _, b := range st.Blocks(size) {
			if b[0]%st.Block != 0 || (b[0]/st.Block)%int64(st.K) != int64(st.S) || b[1] <= 0 || b[0]+b[1] > size {
				t.Fatalf("%q in %d bytes: block %v", v, size, b)
			}
			n += b[1]
		}
		if n == 0 || n != st.Len(size) {
			t.Fatalf("%q in %d bytes: %d bytes", v, size, n)
		}
	})
}
