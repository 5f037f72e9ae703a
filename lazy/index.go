package lazy

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"path"
	"slices"
	"strings"

	"github.com/containerd/stargz-snapshotter/estargz"

	"github.com/faasnet/faasnet/digest"
)

const (
	// DefaultMaxTOCSize bounds the table of contents of one layer, both its
	// compressed form and its JSON, unless Limits say otherwise. Both are
	// held in memory whole; a TOC entry takes some 200 bytes of JSON, so
	// this leaves room for about 300,000 files in one layer.
	DefaultMaxTOCSize = 64 << 20
	// DefaultMaxChunkSpan bounds the compressed bytes read to get one
	// chunk (from its gzip member to the next chunk's, or to the TOC),
	// unless Limits say otherwise: they are read into memory whole. Convert
	// writes members of 512 KiB at most, plus the tar headers of the
	// entries between two chunks.
	DefaultMaxChunkSpan = 64 << 20

	// MaxChunkSize bounds the uncompressed size of one chunk. A chunk is
	// verified whole before any byte of it is used, so it is held in memory
	// whole; eStargz writers use 4 MiB at most by default, Convert 512 KiB.
	MaxChunkSize = 64 << 20
)

// ErrNotEStargz means a blob has no eStargz footer or table of contents.
var ErrNotEStargz = errors.New("not an eStargz blob")

// Range is a byte range of a blob.
type Range struct {
	Offset, Length int64
}

// End returns the offset just past r.
func (r Range) End() int64 { return r.Offset + r.Length }

// Index is the table of contents of one eStargz layer blob, checked: every
// regular file's content is cut into chunks that cover it exactly, each lies
// inside the blob's data area and has a SHA-256 digest to verify it against.
// An Index is immutable and safe for concurrent use.
type Index struct {
	size      int64
	tocOffset int64
	digest    string
	entries   []*entry          // in TOC order; chunk entries folded into their file
	files     map[string]*entry // regular files and hardlinks by name (last wins)
	prefetch  int64             // end of the prioritised files, or -1
}

// entry is one file system entry of a layer: the TOC fields with a cleaned
// name and, for a regular file, the chunks of its content.
type entry struct {
	*estargz.TOCEntry
	chunks []chunk
}

// chunk is a piece of a regular file that can be fetched and verified on its
// own: gzip member [blobOff, blobEnd) of the blob decompresses to inner bytes
// of something else followed by the size bytes of the chunk.
type chunk struct {
	fileOff int64 // where the chunk starts in the file
	size    int64
	blobOff int64 // where its gzip member starts in the blob
	blobEnd int64 // where that member ends: the next member or the TOC
	inner   int64 // decompressed bytes of the member before the chunk
	digest  [sha256.Size]byte
}

func (c *chunk) blobRange() Range { return Range{c.blobOff, c.blobEnd - c.blobOff} }

// Limits bound what one layer's TOC may make a reader hold in memory. A
// layer over a limit is refused, with an error naming the limit. Zero
// fields take the defaults.
type Limits struct {
	MaxTOCSize   int64 // compressed TOC and its JSON; default DefaultMaxTOCSize
	MaxChunkSpan int64 // compressed bytes of one chunk; default DefaultMaxChunkSpan
}

func (l Limits) withDefaults() Limits {
	if l.MaxTOCSize <= 0 {
		l.MaxTOCSize = DefaultMaxTOCSize
	}
	if l.MaxChunkSpan <= 0 {
		l.MaxChunkSpan = DefaultMaxChunkSpan
	}
	return l
}

// TOC reads the footer and the table of contents of the eStargz blob of size
// bytes that blob serves, in two reads (the 51-byte footer, then the TOC),
// and checks it, within the default Limits. When tocDigest is not empty (it
// is the layer's containerd.io/snapshot/stargz/toc.digest annotation), the
// TOC's JSON must have that digest: the digests of all chunks are trusted
// through it.
func TOC(ctx context.Context, blob BlobReader, size int64, tocDigest string) (*Index, error) {
	return ReadTOC(ctx, blob, size, tocDigest, Limits{})
}

// ReadTOC is TOC within lim.
func ReadTOC(ctx context.Context, blob BlobReader, size int64, tocDigest string, lim Limits) (*Index, error) {
	lim = lim.withDefaults()
	if tocDigest != "" {
		if _, err := digest.Parse(tocDigest); err != nil {
			return nil, fmt.Errorf("lazy: TOC digest annotation: %w", err)
		}
	}
	if size < estargz.FooterSize {
		return nil, fmt.Errorf("lazy: blob of %d bytes: %w: smaller than the footer", size, ErrNotEStargz)
	}
	footer := make([]byte, estargz.FooterSize)
	if err := readFull(ctx, blob, footer, size-estargz.FooterSize); err != nil {
		return nil, fmt.Errorf("lazy: reading eStargz footer: %w", err)
	}
	tocOffset, err := parseFooter(footer, size, lim)
	if err != nil {
		return nil, err
	}
	tocGz := make([]byte, size-estargz.FooterSize-tocOffset)
	if err := readFull(ctx, blob, tocGz, tocOffset); err != nil {
		return nil, fmt.Errorf("lazy: reading eStargz TOC at offset %d: %w", tocOffset, err)
	}
	return parseIndex(tocGz, size, tocOffset, tocDigest, lim)
}

// ErrLimit marks a layer refused because it is over one of its Limits.
var ErrLimit = errors.New("over the worker's limit")

// parseFooter returns the TOC offset that the footer of a blob of size bytes
// records, checked to leave room for a TOC of at most lim.MaxTOCSize.
func parseFooter(footer []byte, size int64, lim Limits) (int64, error) {
	_, tocOffset, _, err := new(estargz.GzipDecompressor).ParseFooter(footer)
	if err != nil {
		return 0, fmt.Errorf("lazy: %w: footer: %w", ErrNotEStargz, err)
	}
	tocEnd := size - estargz.FooterSize
	if tocOffset < 0 || tocOffset >= tocEnd {
		return 0, fmt.Errorf("lazy: %w: footer puts the TOC at %d in a blob of %d bytes", ErrNotEStargz, tocOffset, size)
	}
	if n := tocEnd - tocOffset; n > lim.MaxTOCSize {
		return 0, fmt.Errorf("lazy: %w: compressed TOC of %d bytes, at most %d allowed", ErrLimit, n, lim.MaxTOCSize)
	}
	return tocOffset, nil
}

// parseIndex decompresses tocGz, the TOC's gzip member, checks its digest
// against want (unless empty) and builds the index.
func parseIndex(tocGz []byte, size, tocOffset int64, want string, lim Limits) (*Index, error) {
	raw, err := tocJSON(tocGz, lim.MaxTOCSize)
	if errors.Is(err, ErrLimit) {
		return nil, fmt.Errorf("lazy: %w", err)
	}
	if err != nil {
		return nil, fmt.Errorf("lazy: %w: TOC: %w", ErrNotEStargz, err)
	}
	sum := sha256.Sum256(raw)
	got := "sha256:" + hex.EncodeToString(sum[:])
	if want != "" && got != want {
		return nil, fmt.Errorf("lazy: TOC digest is %s, the manifest says %s", got, want)
	}
	var toc estargz.JTOC
	if err := json.Unmarshal(raw, &toc); err != nil {
		return nil, fmt.Errorf("lazy: %w: decoding TOC JSON: %w", ErrNotEStargz, err)
	}
	ix, err := buildIndex(&toc, size, tocOffset, lim)
	if err != nil {
		return nil, fmt.Errorf("lazy: TOC %s: %w", got, err)
	}
	ix.digest = got
	return ix, nil
}

// tocJSON returns the JSON file that the TOC's gzip member holds as the
// single tar entry stargz.index.json.
func tocJSON(tocGz []byte, max int64) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(tocGz))
	if err != nil {
		return nil, err
	}
	zr.Multistream(false)
	tr := tar.NewReader(zr)
	h, err := tr.Next()
	if err != nil {
		return nil, fmt.Errorf("reading tar header: %w", err)
	}
	if h.Name != estargz.TOCTarName {
		return nil, fmt.Errorf("tar entry is %q, want %q", h.Name, estargz.TOCTarName)
	}
	if h.Size > max {
		return nil, fmt.Errorf("%w: TOC JSON of %d bytes, at most %d allowed", ErrLimit, h.Size, max)
	}
	raw, err := io.ReadAll(io.LimitReader(tr, max+1))
	if err != nil {
		return nil, fmt.Errorf("decompressing: %w", err)
	}
	if int64(len(raw)) > max {
		return nil, fmt.Errorf("%w: TOC JSON of more than %d bytes allowed", ErrLimit, max)
	}
	return raw, nil
}

// buildIndex checks the TOC entries of a blob of size bytes whose TOC starts
// at tocOffset and folds chunk entries into their files.
func buildIndex(toc *estargz.JTOC, size, tocOffset int64, lim Limits) (*Index, error) {
	if toc.Version != 1 {
		return nil, fmt.Errorf("TOC version %d, want 1", toc.Version)
	}
	ix := &Index{size: size, tocOffset: tocOffset, files: map[string]*entry{}, prefetch: -1}
	var file *entry // the regular file that chunk entries continue
	for i, te := range toc.Entries {
		if te == nil {
			return nil, fmt.Errorf("entry %d is null", i)
		}
		if te.Type == "chunk" {
			if file == nil {
				return nil, fmt.Errorf("entry %d: chunk without a regular file before it", i)
			}
			if err := file.addChunk(te); err != nil {
				return nil, fmt.Errorf("entry %d (%s): %w", i, file.Name, err)
			}
			continue
		}
		if file != nil {
			if err := file.checkChunks(); err != nil {
				return nil, fmt.Errorf("file %q: %w", file.Name, err)
			}
			file = nil
		}
		e, err := newEntry(te)
		if err != nil {
			return nil, fmt.Errorf("entry %d (%q): %w", i, te.Name, err)
		}
		ix.entries = append(ix.entries, e)
		switch e.Type {
		case "reg":
			file = e
			ix.files[e.Name] = e
		case "hardlink":
			ix.files[e.Name] = e
		}
		if e.Name == estargz.PrefetchLandmark && e.Type == "reg" {
			ix.prefetch = e.Offset
		}
	}
	if file != nil {
		if err := file.checkChunks(); err != nil {
			return nil, fmt.Errorf("file %q: %w", file.Name, err)
		}
	}
	if err := ix.placeChunks(lim.MaxChunkSpan); err != nil {
		return nil, err
	}
	if ix.prefetch > tocOffset {
		return nil, fmt.Errorf("prefetch landmark at %d is past the TOC at %d", ix.prefetch, tocOffset)
	}
	return ix, nil
}

// cleanName turns a tar entry name into a path relative to the root, "" for
// the root itself; ".." cannot climb above the root.
func cleanName(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

func newEntry(te *estargz.TOCEntry) (*entry, error) {
	switch te.Type {
	case "dir", "reg", "symlink", "hardlink", "char", "block", "fifo":
	default:
		return nil, fmt.Errorf("unknown type %q", te.Type)
	}
	cp := *te
	cp.Name = cleanName(te.Name)
	e := &entry{TOCEntry: &cp}
	if e.Type == "hardlink" {
		e.LinkName = cleanName(e.LinkName)
		if e.LinkName == "" || e.LinkName == e.Name {
			return nil, fmt.Errorf("hardlink to %q", te.LinkName)
		}
	}
	if e.Type != "reg" {
		return e, nil
	}
	if e.Size < 0 {
		return nil, fmt.Errorf("negative size %d", e.Size)
	}
	if e.Size == 0 {
		return e, nil
	}
	if e.ChunkOffset != 0 {
		return nil, fmt.Errorf("first chunk at file offset %d", e.ChunkOffset)
	}
	return e, e.addChunk(te)
}

// addChunk appends the chunk that te (the file's own entry or a "chunk"
// entry after it) describes.
func (e *entry) addChunk(te *estargz.TOCEntry) error {
	var want int64
	if n := len(e.chunks); n > 0 {
		want = e.chunks[n-1].fileOff + e.chunks[n-1].size
	}
	if te.ChunkOffset != want {
		return fmt.Errorf("chunk at file offset %d, want %d", te.ChunkOffset, want)
	}
	size := te.ChunkSize
	if size == 0 {
		size = e.Size - te.ChunkOffset // zero means "to the end of the file"
	}
	if size <= 0 || size > e.Size-te.ChunkOffset || size > MaxChunkSize {
		return fmt.Errorf("chunk of %d bytes at file offset %d of a %d-byte file (at most %d a chunk)",
			size, te.ChunkOffset, e.Size, MaxChunkSize)
	}
	if te.Offset <= 0 || te.InnerOffset < 0 || te.InnerOffset > MaxChunkSize {
		return fmt.Errorf("chunk at blob offset %d, inner offset %d", te.Offset, te.InnerOffset)
	}
	d := te.ChunkDigest
	if d == "" && te.Type == "reg" && size == e.Size {
		d = te.Digest // a one-chunk file may carry only the file's digest
	}
	sum, err := parseSHA256(d)
	if err != nil {
		return fmt.Errorf("chunk at file offset %d cannot be verified: %w", te.ChunkOffset, err)
	}
	e.chunks = append(e.chunks, chunk{
		fileOff: te.ChunkOffset, size: size, blobOff: te.Offset, inner: te.InnerOffset, digest: sum,
	})
	return nil
}

// checkChunks reports whether the chunks cover the whole file.
func (e *entry) checkChunks() error {
	var end int64
	if n := len(e.chunks); n > 0 {
		end = e.chunks[n-1].fileOff + e.chunks[n-1].size
	}
	if end != e.Size {
		return fmt.Errorf("chunks cover %d of %d bytes", end, e.Size)
	}
	return nil
}

// placeChunks sets where each chunk's gzip member ends: at the start of the
// next member, or of the TOC. A chunk is read whole into memory, so one
// whose span is over maxSpan is refused here, before any read.
func (ix *Index) placeChunks(maxSpan int64) error {
	var starts []int64
	for _, e := range ix.entries {
		for _, c := range e.chunks {
			if c.blobOff >= ix.tocOffset {
				return fmt.Errorf("file %q: chunk at blob offset %d is past the TOC at %d", e.Name, c.blobOff, ix.tocOffset)
			}
			starts = append(starts, c.blobOff)
		}
	}
	slices.Sort(starts)
	starts = slices.Compact(starts)
	for _, e := range ix.entries {
		for i := range e.chunks {
			c := &e.chunks[i]
			j, _ := slices.BinarySearch(starts, c.blobOff)
			c.blobEnd = ix.tocOffset
			if j+1 < len(starts) {
				c.blobEnd = starts[j+1]
			}
			if n := c.blobEnd - c.blobOff; n > maxSpan {
				return fmt.Errorf("%w: file %q: chunk at file offset %d spans %d compressed bytes, at most %d allowed",
					ErrLimit, e.Name, c.fileOff, n, maxSpan)
			}
		}
	}
	return nil
}

// parseSHA256 parses a chunk digest of the TOC, which must be a canonical
// sha256 digest (package digest), into its bytes.
func parseSHA256(d string) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	h, err := digest.Parse(d)
	if err != nil {
		return sum, err
	}
	if h.Algorithm != "sha256" {
		return sum, fmt.Errorf("chunk digest %.80q is not sha256", d)
	}
	b, err := hex.DecodeString(h.Hex)
	if err != nil { // cannot happen after Parse
		return sum, fmt.Errorf("chunk digest %.80q: %w", d, err)
	}
	copy(sum[:], b)
	return sum, nil
}

// Digest returns the digest of the TOC's JSON, as the layer annotation
// containerd.io/snapshot/stargz/toc.digest records it.
func (ix *Index) Digest() string { return ix.digest }

// Size returns the size of the blob.
func (ix *Index) Size() int64 { return ix.size }

// TOCOffset returns where the TOC starts: file contents lie before it.
func (ix *Index) TOCOffset() int64 { return ix.tocOffset }

// Ranges returns the byte ranges of the blob that hold the contents of the
// named regular files (paths from the image root, with or without a leading
// "/"; hardlinks are followed), sorted and merged. A name the layer does not
// have as a regular file or hardlink is an error wrapping fs.ErrNotExist.
func (ix *Index) Ranges(names ...string) ([]Range, error) {
	var rs []Range
	for _, name := range names {
		e, err := ix.file(cleanName(name))
		if err != nil {
			return nil, err
		}
		for _, c := range e.chunks {
			rs = append(rs, c.blobRange())
		}
	}
	return mergeRanges(rs), nil
}

// file returns the regular file name, following hardlinks in this layer.
func (ix *Index) file(name string) (*entry, error) {
	for hops := 0; hops <= len(ix.files); hops++ {
		e, ok := ix.files[name]
		if !ok {
			return nil, fmt.Errorf("lazy: %q in layer TOC %s: %w", name, ix.digest, iofs.ErrNotExist)
		}
		if e.Type == "reg" {
			return e, nil
		}
		name = e.LinkName
	}
	return nil, fmt.Errorf("lazy: %q in layer TOC %s: hardlink loop", name, ix.digest)
}

// PrefetchRange returns the range that holds the files the image's builder
// prioritised (see WithPrioritizedFiles): from the start of the blob to the
// .prefetch.landmark entry. It reports false when the layer has none.
func (ix *Index) PrefetchRange() (Range, bool) {
	if ix.prefetch < 0 {
		return Range{}, false
	}
	return Range{0, ix.prefetch}, true
}

// mergeRanges sorts rs and joins ranges that overlap or touch.
func mergeRanges(rs []Range) []Range {
	slices.SortFunc(rs, func(a, b Range) int {
		switch {
		case a.Offset < b.Offset:
			return -1
		case a.Offset > b.Offset:
			return 1
		}
		return 0
	})
	var out []Range
	for _, r := range rs {
		if n := len(out); n > 0 && r.Offset <= out[n-1].End() {
			if r.End() > out[n-1].End() {
				out[n-1].Length = r.End() - out[n-1].Offset
			}
			continue
		}
		out = append(out, r)
	}
	return out
}
