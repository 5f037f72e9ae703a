package swarm

import (
	"log/slog"
	"math/rand/v2"
	"time"
)

// Defaults, each Kraken's own (see the package documentation).
const (
	DefaultPieceSize         = 4 << 20
	DefaultMaxConns          = 10
	DefaultPipelineLimit     = 3
	DefaultAnnounceInterval  = 3 * time.Second
	DefaultPeerHandoutLimit  = 50
	DefaultBlacklistDuration = 30 * time.Second
	DefaultHandshakeTimeout  = 5 * time.Second

	// Kraken's piece request timeout is this much per MB of piece length,
	// and never less than minRequestTimeout.
	requestTimeoutPerMB = 4 * time.Second
	minRequestTimeout   = 4 * time.Second

	// MaxPieceSize bounds the piece length an origin may announce, so that a
	// lying metainfo cannot make a peer expect gigabyte messages.
	MaxPieceSize = 64 << 20
)

// Config tunes the tracker, origins and agents of a swarm. The zero value
// means Kraken's defaults everywhere; each component reads the fields that
// concern it.
type Config struct {
	// PieceSize is the piece length an origin cuts blobs into. Agents
	// follow the metainfo, whatever their own PieceSize.
	PieceSize int64
	// MaxConns is the number of connections a peer keeps per blob, dialed
	// and accepted together; more are refused.
	MaxConns int
	// PipelineLimit is the number of piece requests outstanding on one
	// connection.
	PipelineLimit int
	// EndgameThreshold is the number of missing pieces at which a peer
	// starts asking several peers for the same piece. 0 means
	// PipelineLimit; negative disables endgame.
	EndgameThreshold int
	// PieceRequestTimeout is how long a piece request may stay unanswered
	// before the piece is asked of another peer. 0 means Kraken's 4 s per
	// MB of piece length, at least 4 s.
	PieceRequestTimeout time.Duration
	// AnnounceInterval is how often a peer announces each blob it still
	// downloads; the tracker tells peers this interval.
	AnnounceInterval time.Duration
	// PeerHandoutLimit is the most peers (besides the origin) the tracker
	// returns for one announce.
	PeerHandoutLimit int
	// BlacklistDuration is how long a peer is not dialed again for a blob
	// after a connection to it failed or closed before the blob completed.
	BlacklistDuration time.Duration
	// HandshakeTimeout bounds dialing and handshaking one connection.
	HandshakeTimeout time.Duration
	// Seed seeds the random choices (piece ties, peer samples), mixed
	// with each peer's id; 0 means a random seed. Network timing makes
	// whole runs differ anyway.
	Seed uint64
	// Logger receives the components' logs; nil means slog.Default().
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.PieceSize <= 0 {
		c.PieceSize = DefaultPieceSize
	}
	c.PieceSize = min(c.PieceSize, MaxPieceSize)
	if c.MaxConns <= 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.PipelineLimit <= 0 {
		c.PipelineLimit = DefaultPipelineLimit
	}
	if c.EndgameThreshold == 0 {
		c.EndgameThreshold = c.PipelineLimit
	}
	if c.AnnounceInterval <= 0 {
		c.AnnounceInterval = DefaultAnnounceInterval
	}
	if c.PeerHandoutLimit <= 0 {
		c.PeerHandoutLimit = DefaultPeerHandoutLimit
	}
	if c.BlacklistDuration <= 0 {
		c.BlacklistDuration = DefaultBlacklistDuration
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.Seed == 0 {
		c.Seed = rand.Uint64()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// requestTimeout returns the piece request timeout for pieces of length
// pieceLen: the configured one, or Kraken's formula.
func (c Config) requestTimeout(pieceLen int64) time.Duration {
	if c.PieceRequestTimeout > 0 {
		return c.PieceRequestTimeout
	}
	d := time.Duration(float64(requestTimeoutPerMB) * float64(pieceLen) / (1 << 20))
	return max(d, minRequestTimeout)
}
