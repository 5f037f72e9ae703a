package lazy

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"testing"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
)

// verifierOf indexes an eStargz blob and returns its verifier.
func verifierOf(t *testing.T, blob []byte, tocDigest string) *RangeVerifier {
	t.Helper()
	ix, err := TOC(context.Background(), BytesReader(blob), int64(len(blob)), tocDigest)
	if err != nil {
		t.Fatal(err)
	}
	v := NewRangeVerifier(ix, Limits{})
	if v.err != nil {
		t.Fatalf("no range of the layer can be verified: %v", v.err)
	}
	return v
}

func readRange(v *RangeVerifier, blob BlobReader, off, n int64) ([]byte, error) {
	r, err := v.NewReader(context.Background(), blob, off, n)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

// Every byte of a genuine eStargz blob verifies, in the whole and in any
// range: chunk spans, the tar headers between them, the TOC and footer.
func TestRangeVerifierServesGenuineBlobs(t *testing.T) {
	blobs, digests := testBlobs(t)
	rng := rand.New(rand.NewSource(1))
	for i, b := range blobs {
		v := verifierOf(t, b, digests[i])
		size := int64(len(b))
		ranges := [][2]int64{{0, size}, {0, 2}, {size - 1, 1}, {size - 51, 51}, {v.ix.tocOffset, size - v.ix.tocOffset}}
		for range 50 {
			off := rng.Int63n(size)
			ranges = append(ranges, [2]int64{off, 1 + rng.Int63n(size-off)})
		}
		for _, r := range ranges {
			got, err := readRange(v, BytesReader(b), r[0], r[1])
			if err != nil || !bytes.Equal(got, b[r[0]:r[0]+r[1]]) {
				t.Fatalf("layer %d, range %d+%d: %d bytes, %v; want the blob's bytes", i, r[0], r[1], len(got), err)
			}
		}
	}
}

// A byte changed anywhere in the blob (in a chunk, a tar header or padding,
// the TOC, the footer) fails the span holding it: the reader returns only
// bytes of the spans before it, all right, and an error wrapping ErrVerify.
// The exception is a change that leaves what the blob decompresses to as it
// was (a bit deflate ignores, a gzip header's mtime): the verifier checks
// content, not its encoding.
func TestRangeVerifierRefusesChangedBytes(t *testing.T) {
	blobs, digests := testBlobs(t)
	b := blobs[0]
	v := verifierOf(t, b, digests[0])
	size := int64(len(b))
	// One offset in every span, and a few more at random.
	var offsets []int64
	for _, s := range v.spans {
		offsets = append(offsets, s.off+(s.end-s.off)/2, s.end-1)
	}
	rng := rand.New(rand.NewSource(2))
	for range 100 {
		offsets = append(offsets, rng.Int63n(size))
	}
	for _, bad := range offsets {
		changed := bytes.Clone(b)
		changed[bad] ^= 0x01
		got, err := readRange(v, BytesReader(changed), 0, size)
		if err == nil && bytes.Equal(gunzip(t, changed), gunzip(t, b)) {
			continue
		}
		if !errors.Is(err, ErrVerify) {
			t.Errorf("byte %d changed: read %d bytes, err %v; want a verification error", bad, len(got), err)
			continue
		}
		if int64(len(got)) > bad || !bytes.Equal(got, b[:len(got)]) {
			t.Errorf("byte %d changed: %d bytes returned before the error, not all the genuine bytes before the bad one", bad, len(got))
		}
		// A range that does not touch the bad span is served.
		s := v.spans[v.spanAt(bad)]
		if s.off > 0 {
			if got, err := readRange(v, BytesReader(changed), 0, s.off); err != nil || !bytes.Equal(got, b[:s.off]) {
				t.Errorf("byte %d changed: range before its span: %v", bad, err)
			}
		}
	}
}

// A span that fails through a Refetcher is fetched again, from the relay and
// then from the origin, as chunks of files are.
func TestRangeVerifierRefetches(t *testing.T) {
	blobs, digests := testBlobs(t)
	b := blobs[1]
	v := verifierOf(t, b, digests[1])
	tests := []struct {
		relayCorrupt  int64
		originCorrupt bool
		wantErr       bool
		wantRefetches []bool
	}{
		{-1, false, false, []bool{false, true}},
		{1, false, false, []bool{false}},
		{-1, true, true, []bool{false, true}},
		{0, false, false, nil},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.relayCorrupt, tt.originCorrupt), func(t *testing.T) {
			relay := &faultyBlob{b: b, tocOffset: v.ix.tocOffset}
			relay.corrupt.Store(tt.relayCorrupt)
			var origin BlobReader = BytesReader(b)
			if tt.originCorrupt {
				bad := &faultyBlob{b: b, tocOffset: v.ix.tocOffset}
				bad.corrupt.Store(-1)
				origin = bad
			}
			kb := &keepingBlob{relay: relay, origin: origin, kept: map[int64][]byte{}}
			// A chunk span: faultyBlob corrupts reads before the TOC.
			s := v.spans[len(v.spans)/2]
			got, err := readRange(v, kb, s.off, s.end-s.off)
			if tt.wantErr {
				if !errors.Is(err, ErrVerify) || len(got) != 0 {
					t.Fatalf("read %d bytes, %v; want a verification error", len(got), err)
				}
			} else if err != nil || !bytes.Equal(got, b[s.off:s.end]) {
				t.Fatalf("read %d bytes, %v; want the span", len(got), err)
			}
			if fmt.Sprint(kb.refetches) != fmt.Sprint(tt.wantRefetches) {
				t.Errorf("Refetch calls (fromOrigin) %v, want %v", kb.refetches, tt.wantRefetches)
			}
		})
	}
}

// gunzip decompresses every gzip member of b; nil if b does not decompress.
func gunzip(t *testing.T, b []byte) []byte {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		return nil
	}
	return out
}

// A tar header that differs from its TOC entry in any field the TOC records,
// or carries one it does not record, fails; the genuine one passes. (Changes
// to the compressed bytes never get this far: gzip's checksum fails them.
// These are what a relay could send by compressing other headers.)
func TestHeaderMatchesTOC(t *testing.T) {
	e := &entry{TOCEntry: &estargz.TOCEntry{Name: "bin/app", Type: "reg", Size: 10, Mode: 0o755, UID: 1, GID: 2,
		Uname: "u", Gname: "g", ModTime3339: testMtime.Format(time.RFC3339), Xattrs: map[string][]byte{"user.a": []byte("b")}}}
	want := header{e: e, uname: "u", gname: "g"}
	genuine := func() *tar.Header {
		return &tar.Header{Name: "./bin/app", Typeflag: tar.TypeReg, Size: 10, Mode: 0o755, Uid: 1, Gid: 2,
			Uname: "u", Gname: "g", ModTime: testMtime, PAXRecords: map[string]string{"SCHILY.xattr.user.a": "b"}}
	}
	if err := want.match(genuine()); err != nil {
		t.Fatalf("the genuine header: %v", err)
	}
	changes := map[string]func(h *tar.Header){
		"name":        func(h *tar.Header) { h.Name = "bin/other" },
		"type":        func(h *tar.Header) { h.Typeflag = tar.TypeSymlink },
		"size":        func(h *tar.Header) { h.Size = 11 },
		"link":        func(h *tar.Header) { h.Linkname = "x" },
		"mode":        func(h *tar.Header) { h.Mode = 0o4755 },
		"uid":         func(h *tar.Header) { h.Uid = 0 },
		"gid":         func(h *tar.Header) { h.Gid = 0 },
		"uname":       func(h *tar.Header) { h.Uname = "root" },
		"gname":       func(h *tar.Header) { h.Gname = "root" },
		"device":      func(h *tar.Header) { h.Devmajor = 1 },
		"mtime":       func(h *tar.Header) { h.ModTime = testMtime.Add(time.Second) },
		"mtime frac":  func(h *tar.Header) { h.ModTime = testMtime.Add(time.Millisecond) },
		"atime":       func(h *tar.Header) { h.AccessTime = testMtime },
		"ctime":       func(h *tar.Header) { h.ChangeTime = testMtime },
		"xattr value": func(h *tar.Header) { h.PAXRecords["SCHILY.xattr.user.a"] = "c" },
		"xattr added": func(h *tar.Header) { h.PAXRecords["SCHILY.xattr.security.capability"] = "c" },
		"xattr gone":  func(h *tar.Header) { delete(h.PAXRecords, "SCHILY.xattr.user.a") },
		"pax record":  func(h *tar.Header) { h.PAXRecords["GNU.sparse.map"] = "0,1" },
	}
	for name, change := range changes {
		h := genuine()
		change(h)
		if err := want.match(h); err == nil {
			t.Errorf("a header with another %s matches the TOC", name)
		}
	}
}

// FuzzRangeVerifier overwrites part of a genuine blob with fuzzed bytes: the
// verifier must not panic, and whatever it serves without an error
// decompresses to what the genuine blob does.
func FuzzRangeVerifier(f *testing.F) {
	f.Add(uint32(0), []byte{0})
	f.Add(uint32(100), []byte("\x1f\x8b\x08\x00"))
	f.Add(uint32(600), bytes.Repeat([]byte{0}, 512))
	f.Fuzz(func(t *testing.T, at uint32, patch []byte) {
		blobs, digests := testBlobs(t)
		b := blobs[2]
		v := verifierOf(t, b, digests[2])
		off := int64(at) % int64(len(b))
		changed := bytes.Clone(b)
		copy(changed[off:], patch)
		got, err := readRange(v, BytesReader(changed), 0, int64(len(b)))
		if err != nil {
			if !errors.Is(err, ErrVerify) {
				t.Fatalf("error %v does not wrap ErrVerify", err)
			}
			return
		}
		if !bytes.Equal(got, changed) || !bytes.Equal(gunzip(t, changed), gunzip(t, b)) {
			t.Fatalf("patch of %d bytes at %d: served bytes that do not mean what the blob does", len(patch), off)
		}
	})
}

// BenchmarkRangeVerifier reads 50,000-byte ranges, as stargz-snapshotter
// asks, of the largest test layer: each verifies the spans it touches.
func BenchmarkRangeVerifier(b *testing.B) {
	blobs, digests := testBlobs(b)
	i := 0
	for j := range blobs {
		if len(blobs[j]) > len(blobs[i]) {
			i = j
		}
	}
	blob := blobs[i]
	ix, err := TOC(context.Background(), BytesReader(blob), int64(len(blob)), digests[i])
	if err != nil {
		b.Fatal(err)
	}
	v := NewRangeVerifier(ix, Limits{})
	const n = 50_000
	b.SetBytes(n)
	for k := 0; b.Loop(); k++ {
		off := int64(k*n) % (int64(len(blob)) - n)
		r, err := v.NewReader(context.Background(), BytesReader(blob), off, n)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, r); err != nil {
			b.Fatal(err)
		}
	}
}

// A relay that compresses a chunk anew is served (the content is the
// TOC's), but not with anything after it, not even zeros: to a client
// reading the tar they would be more of the file.
func TestRangeVerifierRecompressedSpan(t *testing.T) {
	blobs, digests := testBlobs(t)
	b := blobs[0]
	v := verifierOf(t, b, digests[0])
	var s *span
	for i := range v.spans {
		if c := v.spans[i].chunk; c != nil && len(v.spans[i].headers) == 0 && v.spans[i].pad == 0 && v.spans[i].end != v.ix.tocOffset {
			s = &v.spans[i]
			break
		}
	}
	if s == nil {
		t.Fatal("no span holding a chunk alone in the test layer")
	}
	content := gunzip(t, b[s.off:s.end])
	if int64(len(content)) != s.chunk.size {
		t.Fatalf("the span decompresses to %d bytes, the chunk has %d", len(content), s.chunk.size)
	}
	for _, tt := range []struct {
		name  string
		extra []byte
		ok    bool
	}{
		{"recompressed", nil, true},
		{"zeros after", make([]byte, 1024), false},
		{"bytes after", []byte("x"), false},
	} {
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		zw.Write(content)
		zw.Write(tt.extra)
		zw.Close()
		if err := v.verify(s, buf.Bytes()); (err == nil) != tt.ok {
			t.Errorf("%s: verify = %v, want ok %v", tt.name, err, tt.ok)
		}
	}
}
