package lazy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"strings"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"
)

func TestTOCReadsFooterThenTOC(t *testing.T) {
	blob, digest := esgz(t, tarOf(t, testLayers()[0]))
	r := &countingReader{b: blob}
	ix, err := TOC(context.Background(), r, int64(len(blob)), digest)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.calls.Load(); got != 2 {
		t.Errorf("TOC made %d reads, want 2 (footer, TOC)", got)
	}
	if want := int64(len(blob)) - ix.TOCOffset(); r.n.Load() != want {
		t.Errorf("TOC read %d bytes, want %d (TOC and footer)", r.n.Load(), want)
	}
	if ix.Digest() != digest || ix.Size() != int64(len(blob)) {
		t.Errorf("Digest, Size = %s, %d; want %s, %d", ix.Digest(), ix.Size(), digest, len(blob))
	}
	big, err := ix.file("data/big")
	if err != nil {
		t.Fatal(err)
	}
	if want := (len(bigBody) + testChunkSize - 1) / testChunkSize; len(big.chunks) != want {
		t.Errorf("data/big has %d chunks, want %d", len(big.chunks), want)
	}
	// Every chunk decompresses from its own range and verifies, and the
	// chunks together are the file.
	var got []byte
	for _, c := range big.chunks {
		data, err := fetchChunk(context.Background(), BytesReader(blob), &c)
		if err != nil {
			t.Fatalf("chunk at %d: %v", c.fileOff, err)
		}
		got = append(got, data...)
	}
	if string(got) != bigBody {
		t.Error("chunks of data/big do not add up to its content")
	}
}

func TestTOCRejects(t *testing.T) {
	blob, digest := esgz(t, tarOf(t, testLayers()[0]))
	n := len(blob)
	withByte := func(i int, b byte) []byte {
		c := bytes.Clone(blob)
		c[i] = b
		return c
	}
	for _, tc := range []struct {
		name   string
		blob   []byte
		digest string
		want   string
	}{
		{"wrong digest", blob, "sha256:" + strings.Repeat("0", 64), "TOC digest"},
		{"uppercase digest", blob, "sha256:" + strings.ToUpper(strings.TrimPrefix(digest, "sha256:")), "invalid digest"},
		{"truncated", blob[:n-1], digest, "not an eStargz"},
		{"too small", blob[:10], digest, "not an eStargz"},
		{"plain gzip", blob[:n-estargz.FooterSize], "", "not an eStargz"},
		{"TOC offset past end", withByte(n-estargz.FooterSize+16, 'f'), "", "not an eStargz"},
		{"corrupt TOC", withByte(n-estargz.FooterSize-30, 0xff^blob[n-estargz.FooterSize-30]), digest, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := TOC(context.Background(), BytesReader(tc.blob), int64(len(tc.blob)), tc.digest)
			if err == nil {
				t.Fatal("TOC accepted a bad blob")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestRanges(t *testing.T) {
	blobs, digests := testBlobs(t)
	ix, err := TOC(context.Background(), BytesReader(blobs[1]), int64(len(blobs[1])), digests[1])
	if err != nil {
		t.Fatal(err)
	}
	orig, err := ix.Ranges("/hl/orig")
	if err != nil {
		t.Fatal(err)
	}
	if len(orig) != 1 || orig[0].End() > ix.TOCOffset() || orig[0].Length <= 0 {
		t.Errorf("Ranges(hl/orig) = %v, want one range before the TOC at %d", orig, ix.TOCOffset())
	}
	link, err := ix.Ranges("hl/link")
	if err != nil || len(link) != 1 || link[0] != orig[0] {
		t.Errorf("Ranges(hl/link) = %v, %v; want the hardlink's target's %v", link, err, orig)
	}
	if _, err := ix.Ranges("no/such/file"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Ranges of a missing file: %v, want fs.ErrNotExist", err)
	}
	if rs, err := ix.Ranges(); err != nil || len(rs) != 0 {
		t.Errorf("Ranges() = %v, %v; want nothing", rs, err)
	}
	if _, ok := ix.PrefetchRange(); ok {
		t.Error("a layer built without prioritised files has a prefetch range")
	}
}

func TestPrefetchRange(t *testing.T) {
	blob, digest := esgz(t, tarOf(t, testLayers()[0]), estargz.WithPrioritizedFiles([]string{"/etc/passwd", "/bin/sh"}))
	ix, err := TOC(context.Background(), BytesReader(blob), int64(len(blob)), digest)
	if err != nil {
		t.Fatal(err)
	}
	pr, ok := ix.PrefetchRange()
	if !ok {
		t.Fatal("no prefetch range")
	}
	rs, err := ix.Ranges("etc/passwd", "bin/sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if r.Offset < pr.Offset || r.End() > pr.End() {
			t.Errorf("prioritised file range %v outside prefetch range %v", r, pr)
		}
	}
	big, _ := ix.Ranges("data/big")
	if big[0].Offset < pr.End() {
		t.Errorf("data/big at %v is inside the prefetch range %v", big[0], pr)
	}
}

func TestMergeRanges(t *testing.T) {
	for _, tc := range []struct {
		in, want []Range
	}{
		{nil, nil},
		{[]Range{{10, 5}}, []Range{{10, 5}}},
		{[]Range{{10, 5}, {0, 10}}, []Range{{0, 15}}},
		{[]Range{{0, 10}, {5, 2}}, []Range{{0, 10}}},
		{[]Range{{0, 1}, {2, 1}, {1, 1}}, []Range{{0, 3}}},
		{[]Range{{0, 1}, {5, 1}}, []Range{{0, 1}, {5, 1}}},
	} {
		got := mergeRanges(tc.in)
		if len(got) != len(tc.want) {
			t.Errorf("mergeRanges(%v) = %v, want %v", tc.in, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("mergeRanges(%v) = %v, want %v", tc.in, got, tc.want)
			}
		}
	}
}

// FuzzTOC feeds arbitrary blobs to TOC: it must never panic, and what it
// accepts must be consistent.
func FuzzTOC(f *testing.F) {
	blob, _ := esgz(f, tarOf(f, testLayers()[1]))
	f.Add(blob)
	f.Add(blob[len(blob)-estargz.FooterSize:])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		ix, err := TOC(context.Background(), BytesReader(b), int64(len(b)), "")
		if err != nil {
			return
		}
		for _, e := range ix.entries {
			var covered int64
			for _, c := range e.chunks {
				if c.blobOff < 0 || c.blobEnd > ix.TOCOffset() || c.blobOff >= c.blobEnd {
					t.Fatalf("%s: chunk range [%d, %d) outside [0, %d)", e.Name, c.blobOff, c.blobEnd, ix.TOCOffset())
				}
				if c.fileOff != covered || c.size <= 0 || c.size > MaxChunkSize {
					t.Fatalf("%s: chunk %d+%d after %d bytes", e.Name, c.fileOff, c.size, covered)
				}
				covered += c.size
			}
			if e.Type == "reg" && covered != e.Size {
				t.Fatalf("%s: chunks cover %d of %d", e.Name, covered, e.Size)
			}
		}
		if _, err := merge([]*Index{ix}); err != nil {
			return
		}
	})
}

// FuzzIndexJSON feeds arbitrary TOC JSON to the index and the merge: they
// must never panic, and an accepted index must be consistent.
func FuzzIndexJSON(f *testing.F) {
	for _, l := range testLayers() {
		blob, _ := esgz(f, tarOf(f, l))
		tocOffset, err := parseFooter(blob[len(blob)-estargz.FooterSize:], int64(len(blob)), Limits{}.withDefaults())
		if err != nil {
			f.Fatal(err)
		}
		raw, err := tocJSON(blob[tocOffset:len(blob)-estargz.FooterSize], DefaultMaxTOCSize)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	f.Add([]byte(`{"version":1,"entries":[{"name":"a","type":"hardlink","linkName":"a"}]}`))
	f.Add([]byte(`{"version":1,"entries":[{"name":"a","type":"chunk"}]}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		var toc estargz.JTOC
		if json.Unmarshal(raw, &toc) != nil {
			return
		}
		const size, tocOffset = 1 << 30, 1<<30 - 1000
		ix, err := buildIndex(&toc, size, tocOffset, Limits{}.withDefaults())
		if err != nil {
			return
		}
		for _, e := range ix.entries {
			var covered int64
			for _, c := range e.chunks {
				if c.blobOff <= 0 || c.blobEnd > tocOffset || c.blobOff >= c.blobEnd || c.fileOff != covered || c.blobEnd-c.blobOff > DefaultMaxChunkSpan {
					t.Fatalf("%s: bad chunk %+v after %d bytes", e.Name, c, covered)
				}
				covered += c.size
			}
			if e.Type == "reg" && covered != e.Size {
				t.Fatalf("%s: chunks cover %d of %d", e.Name, covered, e.Size)
			}
		}
		root, err := merge([]*Index{ix, ix})
		if err != nil {
			return
		}
		seen := map[*node]bool{}
		var check func(n *node)
		check = func(n *node) {
			if n.ino == 0 || n.nlink == 0 {
				t.Fatalf("node without inode number or links: %+v", n)
			}
			if seen[n] {
				return
			}
			seen[n] = true
			for name, c := range n.children {
				if name == "" || name == "." || name == ".." || strings.Contains(name, "/") {
					t.Fatalf("bad name %q in the tree", name)
				}
				check(c)
			}
		}
		check(root)
	})
}

// The TOC's chunk digests are parsed as strictly as every other digest:
// uppercase hex, which hex.DecodeString alone would take, is refused.
func TestChunkDigestMustBeCanonical(t *testing.T) {
	blob, _ := esgz(t, tarOf(t, testLayers()[0]))
	size := int64(len(blob))
	ix, err := TOC(context.Background(), BytesReader(blob), size, "")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := tocJSON(blob[ix.TOCOffset():size-estargz.FooterSize], DefaultMaxTOCSize)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		mod   func(string) string
		valid bool
	}{
		{"as written", func(d string) string { return d }, true},
		{"uppercase hex", func(d string) string { return "sha256:" + strings.ToUpper(strings.TrimPrefix(d, "sha256:")) }, false},
		{"uppercase algorithm", func(d string) string { return "SHA256:" + strings.TrimPrefix(d, "sha256:") }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var toc estargz.JTOC
			if err := json.Unmarshal(raw, &toc); err != nil {
				t.Fatal(err)
			}
			changed := 0
			for _, e := range toc.Entries {
				if e.ChunkDigest != "" {
					e.ChunkDigest = tc.mod(e.ChunkDigest)
					changed++
				}
			}
			if changed == 0 {
				t.Fatal("no chunk digests in the test TOC")
			}
			_, err := buildIndex(&toc, size, ix.TOCOffset(), Limits{}.withDefaults())
			if tc.valid != (err == nil) {
				t.Errorf("buildIndex with chunk digests %s: %v; want valid %v", tc.name, err, tc.valid)
			}
		})
	}
}
