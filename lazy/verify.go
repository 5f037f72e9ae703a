package lazy

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"sort"
	"strings"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
)

// Verified ranges of the compressed blob.
//
// A registry mirror serves ranges of the compressed blob itself, not file
// contents, and may serve them before the blob is complete, when its digest
// cannot vouch for them yet. What can vouch for them is the TOC, trusted
// through the manifest's annotation. A RangeVerifier cuts the blob into
// spans, each a run of whole gzip members, and serves a byte only once the
// span holding it has been checked:
//
//   - a chunk's span, from its member to the next chunk's (or the TOC),
//     decompresses with every gzip checksum right to the chunk's bytes,
//     whose SHA-256 the TOC gives, then, after a file's last chunk, to the
//     tar padding (zeros) and the tar headers of the entries up to the next
//     chunk. Each header must say what the TOC says of its entry: name,
//     type, size, mode, owner, link, times and xattrs; a field the TOC does
//     not record (access or change time, other PAX records, sub-second
//     times) must be absent;
//   - the span before the first chunk holds tar headers only, checked so;
//   - the TOC and footer decompress to the TOC whose digest the manifest
//     gives, and the footer locates it.
//
// So every byte served decompresses to content the TOC attests. What is not
// checked is the compressed encoding itself: another deflate stream of the
// same content, or other gzip header fields (mtime, OS), pass. Two such
// blobs mean the same thing to any client, lazy or not; only the blob
// digest tells them apart, and it is checked once the blob is complete.
// A layer whose shape this does not know (chunks sharing a gzip member,
// entries out of order) yields ErrUnverifiable: the caller waits for the
// whole blob.

// ErrUnverifiable means a range holds bytes a RangeVerifier cannot check
// before the blob is complete.
var ErrUnverifiable = errors.New("range cannot be verified against the TOC")

// RangeVerifier serves byte ranges of an eStargz blob, verified against its
// Index. It is immutable and safe for concurrent use.
type RangeVerifier struct {
	ix    *Index
	lim   Limits
	spans []span
	err   error // why no range can be verified, if none can
}

// span is a run of whole gzip members of the blob, checked as a unit.
type span struct {
	off, end int64
	toc      bool   // the TOC and the footer
	chunk    *chunk // the chunk its first member holds; nil for the first span
	pad      int64  // zero bytes after the chunk: tar padding
	headers  []header
}

// header is what the TOC says of one tar header a span holds.
type header struct {
	e            *entry
	uname, gname string // filled in from earlier entries where the TOC omits them
}

// NewRangeVerifier returns the verifier of the blob ix indexes. A span is
// read into memory whole: one over lim.MaxChunkSpan (only the tar headers
// before the first chunk can be) is not verified.
func NewRangeVerifier(ix *Index, lim Limits) *RangeVerifier {
	v := &RangeVerifier{ix: ix, lim: lim.withDefaults()}
	v.spans, v.err = buildSpans(ix)
	return v
}

// buildSpans cuts the blob before the TOC at each chunk's gzip member. The
// TOC lists entries in tar order, and an eStargz writer starts a member for
// each chunk and nowhere else before the TOC, so the tar header of an entry
// lies in the span before its first chunk.
func buildSpans(ix *Index) ([]span, error) {
	unames, gnames := map[int]string{}, map[int]string{}
	spans := []span{{off: 0}}
	cur := &spans[0]
	for _, e := range ix.entries {
		// estargz writes a user or group name only when it changes for
		// that id: the last one named holds.
		if e.Uname != "" {
			unames[e.UID] = e.Uname
		}
		if e.Gname != "" {
			gnames[e.GID] = e.Gname
		}
		cur.headers = append(cur.headers, header{e: e, uname: unames[e.UID], gname: gnames[e.GID]})
		for i := range e.chunks {
			c := &e.chunks[i]
			if c.inner != 0 {
				return nil, fmt.Errorf("%w: chunks share gzip members", ErrUnverifiable)
			}
			if c.blobOff <= cur.off {
				return nil, fmt.Errorf("%w: chunk at %d is not after the member at %d", ErrUnverifiable, c.blobOff, cur.off)
			}
			cur.end = c.blobOff
			spans = append(spans, span{off: c.blobOff, chunk: c})
			cur = &spans[len(spans)-1]
		}
		if len(e.chunks) > 0 {
			cur.pad = (blockSize - e.Size%blockSize) % blockSize
		}
	}
	cur.end = ix.tocOffset
	spans = append(spans, span{off: ix.tocOffset, end: ix.size, toc: true})
	if spans[0].end == 0 {
		spans = spans[1:] // nothing before the first chunk
	}
	return spans, nil
}

const (
	blockSize = 512 // of a tar archive
	// maxTrailer bounds the zeros that may end a tar archive: two blocks,
	// padded to a record of 20 blocks by some writers.
	maxTrailer = 20 * blockSize
)

// Check reports whether [off, off+n) can be verified before the blob is
// complete: nil, or an error wrapping ErrUnverifiable.
func (v *RangeVerifier) Check(off, n int64) error {
	if v.err != nil {
		return v.err
	}
	if off < 0 || n <= 0 || off > v.ix.size-n {
		return fmt.Errorf("range %d+%d of a %d-byte blob: %w", off, n, v.ix.size, ErrUnverifiable)
	}
	for _, s := range v.spans[v.spanAt(off) : v.spanAt(off+n-1)+1] {
		if !s.toc && s.end-s.off > v.lim.MaxChunkSpan {
			return fmt.Errorf("%w: span [%d, %d) is over the limit of %d bytes", ErrUnverifiable, s.off, s.end, v.lim.MaxChunkSpan)
		}
	}
	return nil
}

// spanAt returns the index of the span holding offset off of the blob.
func (v *RangeVerifier) spanAt(off int64) int {
	return sort.Search(len(v.spans), func(i int) bool { return v.spans[i].end > off })
}

// NewReader returns a reader of [off, off+n) of the blob, read through blob
// span by span; it returns the bytes of a span only once the whole span is
// verified. A span that fails is read again once through a Refetcher (as
// fetched before, then from the origin), as file reads are; then the reader
// fails, with an error wrapping ErrVerify.
func (v *RangeVerifier) NewReader(ctx context.Context, blob BlobReader, off, n int64) (io.Reader, error) {
	if err := v.Check(off, n); err != nil {
		return nil, err
	}
	return &verifiedReader{ctx: ctx, v: v, blob: blob, off: off, end: off + n}, nil
}

// ErrVerify is wrapped by the errors of bytes that are not what the TOC
// says.
var ErrVerify = errVerify

type verifiedReader struct {
	ctx      context.Context
	v        *RangeVerifier
	blob     BlobReader
	off, end int64
	buf      []byte // verified bytes from off not yet read
	err      error
}

func (r *verifiedReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 && r.err == nil {
		if r.off >= r.end {
			r.err = io.EOF
			break
		}
		r.err = r.next()
	}
	if len(r.buf) == 0 {
		return 0, r.err
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// next verifies the span holding r.off and keeps its bytes from r.off on.
func (r *verifiedReader) next() error {
	spans := r.v.spans
	i := r.v.spanAt(r.off)
	if i == len(spans) {
		return fmt.Errorf("no span holds offset %d: %w", r.off, ErrUnverifiable)
	}
	s := &spans[i]
	data, err := r.v.readSpan(r.ctx, r.blob, s)
	if err != nil {
		return err
	}
	r.buf = data[r.off-s.off : min(r.end, s.end)-s.off]
	r.off = min(r.end, s.end)
	return nil
}

// readSpan reads s and verifies it, reading it again through a Refetcher as
// fetchVerified does with chunks.
func (v *RangeVerifier) readSpan(ctx context.Context, blob BlobReader, s *span) ([]byte, error) {
	refetch, _ := blob.(Refetcher)
	retries := []bool{false}
	if refetch != nil {
		retries = []bool{false, true}
	}
	for attempt := 0; ; attempt++ {
		data := make([]byte, s.end-s.off)
		if err := readFull(ctx, blob, data, s.off); err != nil {
			return nil, fmt.Errorf("reading blob range [%d, %d): %w", s.off, s.end, err)
		}
		err := v.verify(s, data)
		if err == nil {
			return data, nil
		}
		err = fmt.Errorf("%w: blob range [%d, %d): %w", errVerify, s.off, s.end, err)
		if attempt == len(retries) {
			return nil, err
		}
		if refetch == nil {
			continue
		}
		if err := refetch.Refetch(ctx, s.off, s.end-s.off, retries[attempt]); err != nil {
			return nil, fmt.Errorf("fetching blob range [%d, %d) again after it failed verification: %w", s.off, s.end, err)
		}
	}
}

func (v *RangeVerifier) verify(s *span, data []byte) error {
	if s.toc {
		return v.verifyTOC(data)
	}
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("gzip header: %w", err)
	}
	if c := s.chunk; c != nil {
		got := make([]byte, c.size)
		if _, err := io.ReadFull(zr, got); err != nil {
			return fmt.Errorf("decompressing the chunk: %w", err)
		}
		if sha256.Sum256(got) != c.digest {
			return errors.New("chunk does not match the TOC")
		}
		pad := make([]byte, s.pad)
		if _, err := io.ReadFull(zr, pad); err != nil {
			return fmt.Errorf("decompressing tar padding: %w", err)
		}
		if !allZero(pad) {
			return errors.New("tar padding is not zeros")
		}
	}
	tr := tar.NewReader(zr)
	for i, want := range s.headers {
		h, err := tr.Next()
		if err != nil {
			return fmt.Errorf("tar header of %q: %w", want.e.Name, err)
		}
		if err := want.match(h); err != nil {
			return fmt.Errorf("tar header of %q: %w", want.e.Name, err)
		}
		if len(want.e.chunks) > 0 && i != len(s.headers)-1 {
			return fmt.Errorf("tar header of %q: its chunks are not in the next span", want.e.Name)
		}
	}
	// The rest: nothing, or, before the TOC only, the zero blocks that end
	// a tar archive (elsewhere zeros would be more file data to a client
	// reading the tar). Reading to the end checks the last member's
	// checksum.
	rest, err := io.ReadAll(io.LimitReader(zr, maxTrailer+1))
	if err != nil {
		return fmt.Errorf("decompressing: %w", err)
	}
	if len(rest) > 0 && (s.end != v.ix.tocOffset || len(rest) > maxTrailer || !allZero(rest)) {
		return fmt.Errorf("%d bytes the TOC does not describe", len(rest))
	}
	return nil
}

// verifyTOC checks the TOC and footer: the footer locates the TOC where the
// index has it, and the TOC's gzip member decompresses, checksum and all,
// to the TOC JSON with the index's digest.
func (v *RangeVerifier) verifyTOC(data []byte) error {
	if int64(len(data)) < estargz.FooterSize {
		return errors.New("shorter than the footer")
	}
	tocGz, footer := data[:len(data)-estargz.FooterSize], data[len(data)-estargz.FooterSize:]
	off, err := parseFooter(footer, v.ix.size, v.lim)
	if err != nil {
		return err
	}
	if off != v.ix.tocOffset {
		return fmt.Errorf("footer puts the TOC at %d, not %d", off, v.ix.tocOffset)
	}
	if err := wholeMember(footer); err != nil {
		return fmt.Errorf("footer: %w", err)
	}
	raw, err := tocJSON(tocGz, v.lim.MaxTOCSize)
	if err != nil {
		return fmt.Errorf("TOC: %w", err)
	}
	sum := sha256.Sum256(raw)
	if "sha256:"+hex.EncodeToString(sum[:]) != v.ix.digest {
		return errors.New("TOC does not match its digest")
	}
	return wholeMember(tocGz)
}

// wholeMember checks that b is one gzip member whose decompressed bytes
// (checked by its checksum) end, after whatever was read of them, in zero
// blocks at most.
func wholeMember(b []byte) error {
	br := bytes.NewReader(b)
	zr, err := gzip.NewReader(br)
	if err != nil {
		return err
	}
	zr.Multistream(false)
	tr := tar.NewReader(zr)
	// The TOC member is one tar entry; the footer is empty.
	if _, err := tr.Next(); err != nil && err != io.EOF {
		return err
	}
	if _, err := io.Copy(io.Discard, tr); err != nil {
		return err
	}
	rest, err := io.ReadAll(io.LimitReader(zr, maxTrailer+1))
	if err != nil {
		return err
	}
	if len(rest) > maxTrailer || !allZero(rest) {
		return fmt.Errorf("%d bytes after the tar entry", len(rest))
	}
	if br.Len() != 0 {
		return fmt.Errorf("%d bytes after the gzip member", br.Len())
	}
	return nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

var tarTypes = map[string][]byte{
	"dir": {tar.TypeDir}, "reg": {tar.TypeReg, tar.TypeRegA}, "symlink": {tar.TypeSymlink},
	"hardlink": {tar.TypeLink}, "char": {tar.TypeChar}, "block": {tar.TypeBlock}, "fifo": {tar.TypeFifo},
}

// paxFields are the PAX records that hold header fields compared anyway.
var paxFields = map[string]bool{
	"path": true, "linkpath": true, "size": true, "uid": true, "gid": true,
	"uname": true, "gname": true, "mtime": true,
}

// match reports whether h says what the TOC says of the entry.
func (want header) match(h *tar.Header) error {
	e := want.e
	mismatch := func(field string, got, wanted any) error {
		return fmt.Errorf("%s is %v, the TOC says %v", field, got, wanted)
	}
	switch {
	case cleanName(h.Name) != e.Name:
		return mismatch("name", h.Name, e.Name)
	case !bytes.ContainsRune(tarTypes[e.Type], rune(h.Typeflag)):
		return mismatch("type", h.Typeflag, e.Type)
	case e.Type == "reg" && h.Size != e.Size, e.Type != "reg" && h.Size != 0:
		return mismatch("size", h.Size, e.Size)
	case e.Type == "symlink" && h.Linkname != e.LinkName:
		return mismatch("link", h.Linkname, e.LinkName)
	case e.Type == "hardlink" && cleanName(h.Linkname) != e.LinkName:
		return mismatch("link", h.Linkname, e.LinkName)
	case e.Type != "symlink" && e.Type != "hardlink" && h.Linkname != "":
		return mismatch("link", h.Linkname, "none")
	case h.Mode != e.Mode:
		return mismatch("mode", h.Mode, e.Mode)
	case h.Uid != e.UID || h.Gid != e.GID:
		return mismatch("owner", fmt.Sprint(h.Uid, ":", h.Gid), fmt.Sprint(e.UID, ":", e.GID))
	case h.Uname != want.uname || h.Gname != want.gname:
		return mismatch("owner names", h.Uname+":"+h.Gname, want.uname+":"+want.gname)
	case int64(h.Devmajor) != int64(e.DevMajor) || int64(h.Devminor) != int64(e.DevMinor):
		return mismatch("device", fmt.Sprint(h.Devmajor, ",", h.Devminor), fmt.Sprint(e.DevMajor, ",", e.DevMinor))
	case !h.AccessTime.IsZero() || !h.ChangeTime.IsZero():
		return errors.New("access or change time, which the TOC does not record")
	}
	if err := matchModTime(h.ModTime, e.ModTime3339); err != nil {
		return err
	}
	xattrs := map[string][]byte{}
	for k, v := range h.PAXRecords {
		if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
			xattrs[name] = []byte(v)
		} else if !paxFields[k] {
			return fmt.Errorf("PAX record %q, which the TOC does not record", k)
		}
	}
	if !maps.EqualFunc(xattrs, e.Xattrs, bytes.Equal) {
		return mismatch("xattrs", xattrs, e.Xattrs)
	}
	return nil
}

// matchModTime compares a header's time with the TOC's, which has whole
// seconds and is empty for the zero time and the epoch.
func matchModTime(t time.Time, toc string) error {
	if t.Nanosecond() != 0 {
		return fmt.Errorf("modification time %v has fractions of a second the TOC does not record", t)
	}
	if toc == "" {
		if t.IsZero() || t.Unix() == 0 {
			return nil
		}
		return fmt.Errorf("modification time is %v, the TOC has none", t)
	}
	want, err := time.Parse(time.RFC3339, toc)
	if err != nil || !want.Equal(t) {
		return fmt.Errorf("modification time is %v, the TOC says %q", t, toc)
	}
	return nil
}
