package swarm

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/faasnet/faasnet/upstream"
)

// MaxPieces bounds the number of pieces of one blob (1 TiB at 4 MiB), so
// that a lying metainfo cannot make a peer allocate without limit.
const MaxPieces = 1 << 18

// MetaInfo describes how a blob is cut into pieces, Kraken's torrent
// metainfo: the origin computes it from the blob, peers verify every piece
// they receive against it.
type MetaInfo struct {
	// Digest names the blob ("sha256:<hex>").
	Digest string `json:"digest"`
	// Length is the blob's size in bytes.
	Length int64 `json:"length"`
	// PieceLength is the length of every piece but the last, which may be
	// shorter.
	PieceLength int64 `json:"pieceLength"`
	// PieceSums are the hex sha256 digests of the pieces, in order.
	PieceSums []string `json:"pieceSums"`

	sums [][sha256.Size]byte // PieceSums decoded, set by validate
}

// NumPieces returns the number of pieces.
func (m *MetaInfo) NumPieces() int { return len(m.PieceSums) }

// pieceOffset returns the offset in the blob of piece i.
func (m *MetaInfo) pieceOffset(i int) int64 { return int64(i) * m.PieceLength }

// pieceLen returns the length of piece i.
func (m *MetaInfo) pieceLen(i int) int64 {
	return min(m.PieceLength, m.Length-m.pieceOffset(i))
}

// ParseMetaInfo decodes and validates a metainfo document from outside.
func ParseMetaInfo(b []byte) (*MetaInfo, error) {
	var m MetaInfo
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("swarm: decoding metainfo: %w", err)
	}
	if err := m.validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// validate checks m's fields against each other and decodes the sums.
func (m *MetaInfo) validate() error {
	if _, err := upstream.ParseDigest(m.Digest); err != nil {
		return fmt.Errorf("swarm: metainfo: %w", err)
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("swarm: metainfo of %s: "+format, append([]any{m.Digest}, args...)...)
	}
	if m.Length < 0 {
		return fail("negative length %d", m.Length)
	}
	if m.PieceLength <= 0 || m.PieceLength > MaxPieceSize {
		return fail("piece length %d out of range (1 to %d)", m.PieceLength, MaxPieceSize)
	}
	if m.Length/m.PieceLength > MaxPieces {
		return fail("%d bytes in pieces of %d exceed %d pieces", m.Length, m.PieceLength, MaxPieces)
	}
	want := int((m.Length + m.PieceLength - 1) / m.PieceLength)
	if len(m.PieceSums) != want {
		return fail("%d piece sums for %d pieces", len(m.PieceSums), want)
	}
	m.sums = make([][sha256.Size]byte, len(m.PieceSums))
	for i, s := range m.PieceSums {
		if len(s) != 2*sha256.Size {
			return fail("piece %d: sum %q is not a hex sha256", i, s)
		}
		if _, err := hex.Decode(m.sums[i][:], []byte(s)); err != nil {
			return fail("piece %d: sum %q: %w", i, s, err)
		}
	}
	return nil
}

// computeMetaInfo reads a blob from r to its end, cutting it into pieces of
// pieceLen, and returns its metainfo. It fails unless the bytes have the
// given digest.
func computeMetaInfo(r io.Reader, digest string, pieceLen int64) (*MetaInfo, error) {
	want, err := upstream.ParseDigest(digest)
	if err != nil {
		return nil, err
	}
	if want.Algorithm != "sha256" {
		return nil, fmt.Errorf("swarm: blob %s: only sha256 blobs are supported", digest)
	}
	m := &MetaInfo{Digest: digest, PieceLength: pieceLen}
	whole, piece := sha256.New(), sha256.New()
	for {
		piece.Reset()
		n, err := io.CopyN(io.MultiWriter(whole, piece), r, pieceLen)
		if n > 0 {
			m.Length += n
			m.PieceSums = append(m.PieceSums, hex.EncodeToString(piece.Sum(nil)))
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("swarm: reading blob %s at %d: %w", digest, m.Length, err)
		}
	}
	if got := hex.EncodeToString(whole.Sum(nil)); got != want.Hex {
		return nil, fmt.Errorf("swarm: blob %s has digest sha256:%s", digest, got)
	}
	if err := m.validate(); err != nil {
		return nil, err
	}
	return m, nil
}

var errBadPiece = errors.New("piece does not match its metainfo digest")
