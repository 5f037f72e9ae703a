package swarm

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func TestComputeMetaInfo(t *testing.T) {
	const pl = 16
	rng := rand.New(rand.NewPCG(3, 3))
	for _, size := range []int{0, 1, pl - 1, pl, pl + 1, 3 * pl, 3*pl + 5} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			blob := make([]byte, size)
			for i := range blob {
				blob[i] = byte(rng.Uint32())
			}
			m, err := computeMetaInfo(bytes.NewReader(blob), digestOf(blob), pl)
			if err != nil {
				t.Fatal(err)
			}
			if m.Length != int64(size) || m.NumPieces() != (size+pl-1)/pl {
				t.Fatalf("length %d in %d pieces, want %d in %d", m.Length, m.NumPieces(), size, (size+pl-1)/pl)
			}
			var sum int64
			for i := range m.NumPieces() {
				off, n := m.pieceOffset(i), m.pieceLen(i)
				if off != sum || n <= 0 || n > pl {
					t.Fatalf("piece %d at %d of %d bytes", i, off, n)
				}
				if got := sha256.Sum256(blob[off : off+n]); got != m.sums[i] {
					t.Fatalf("piece %d: wrong sum", i)
				}
				sum += n
			}
			if sum != int64(size) {
				t.Fatalf("pieces add up to %d, want %d", sum, size)
			}
			b, _ := json.Marshal(m)
			back, err := ParseMetaInfo(b)
			if err != nil {
				t.Fatal(err)
			}
			if back.Length != m.Length || len(back.sums) != len(m.sums) {
				t.Fatalf("round trip: %+v", back)
			}
		})
	}
	if _, err := computeMetaInfo(strings.NewReader("abc"), digestOf([]byte("abd")), pl); err == nil {
		t.Error("a blob with the wrong digest was accepted")
	}
}

func TestParseMetaInfoErrors(t *testing.T) {
	sum := strings.Repeat("ab", 32)
	d := digestOf(nil)
	for _, tc := range []struct{ name, in string }{
		{"not json", "{"},
		{"bad digest", `{"digest":"md5:00","length":1,"pieceLength":1,"pieceSums":["` + sum + `"]}`},
		{"negative length", `{"digest":"` + d + `","length":-1,"pieceLength":1,"pieceSums":[]}`},
		{"zero piece length", `{"digest":"` + d + `","length":1,"pieceLength":0,"pieceSums":["` + sum + `"]}`},
		{"huge piece length", `{"digest":"` + d + `","length":1,"pieceLength":1e12,"pieceSums":["` + sum + `"]}`},
		{"too many pieces", `{"digest":"` + d + `","length":1099511627776,"pieceLength":1,"pieceSums":[]}`},
		{"missing sum", `{"digest":"` + d + `","length":2,"pieceLength":1,"pieceSums":["` + sum + `"]}`},
		{"extra sum", `{"digest":"` + d + `","length":1,"pieceLength":1,"pieceSums":["` + sum + `","` + sum + `"]}`},
		{"short sum", `{"digest":"` + d + `","length":1,"pieceLength":1,"pieceSums":["abcd"]}`},
		{"non-hex sum", `{"digest":"` + d + `","length":1,"pieceLength":1,"pieceSums":["` + strings.Repeat("zz", 32) + `"]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if m, err := ParseMetaInfo([]byte(tc.in)); err == nil {
				t.Errorf("accepted %+v", m)
			}
		})
	}
}

// FuzzParseMetaInfo: metainfo comes from the network; whatever parses is
// consistent (every piece has a sum and a positive length within bounds).
func FuzzParseMetaInfo(f *testing.F) {
	m, _ := computeMetaInfo(strings.NewReader("hello, swarm"), digestOf([]byte("hello, swarm")), 5)
	b, _ := json.Marshal(m)
	f.Add(b)
	f.Add([]byte(`{"digest":"` + digestOf(nil) + `","length":0,"pieceLength":4,"pieceSums":[]}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := ParseMetaInfo(in)
		if err != nil {
			return
		}
		var total int64
		for i := range m.NumPieces() {
			n := m.pieceLen(i)
			if n <= 0 || n > m.PieceLength {
				t.Fatalf("piece %d of %d bytes in %+v", i, n, m)
			}
			total += n
		}
		if total != m.Length || len(m.sums) != m.NumPieces() {
			t.Fatalf("pieces add up to %d of %d", total, m.Length)
		}
	})
}
