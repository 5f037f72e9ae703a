package swarm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/faasnet/faasnet/bwlimit"
)

// announceTimeout bounds one announce to the tracker.
const announceTimeout = 10 * time.Second

// Stats describes one Pull. Byte counts are piece payload bytes, counted
// over the agent during the pull: a concurrent pull of another image on
// the same agent is counted too.
type Stats struct {
	// Duration is the time from the call to the last blob verified.
	Duration time.Duration
	// Blobs and Bytes are the number and total size of the image's blobs
	// (config and layers).
	Blobs int
	Bytes int64
	// FromPeers and FromOrigin are the bytes received from other agents
	// and from origins, including wasted ones.
	FromPeers  int64
	FromOrigin int64
	// Uploaded is what the agent sent to other peers meanwhile.
	Uploaded int64
	// Wasted is what was received and discarded: duplicates of pieces
	// already complete and pieces that failed verification.
	Wasted int64
	// BadPieces is the number of pieces that failed verification.
	BadPieces int64
}

func (a Stats) sub(b Stats) Stats {
	return Stats{
		FromPeers:  a.FromPeers - b.FromPeers,
		FromOrigin: a.FromOrigin - b.FromOrigin,
		Uploaded:   a.Uploaded - b.Uploaded,
		Wasted:     a.Wasted - b.Wasted,
		BadPieces:  a.BadPieces - b.BadPieces,
	}
}

// Agent is a peer of the swarm (Kraken's agent): it pulls images piece by
// piece from the other peers and the origin, and serves what it has to
// the others, during and after its pulls, until closed.
type Agent struct {
	n  *node
	tc *trackerClient
}

// NewAgent starts an agent serving the peer protocol on ln, storing blobs
// under dir, announcing to the tracker at trackerAddr ("host:port"). All
// its peer traffic passes through up (what it sends) and down (what it
// receives); nil limiters do not limit. Of cfg it uses MaxConns,
// PipelineLimit, EndgameThreshold, PieceRequestTimeout, AnnounceInterval
// (until the tracker says otherwise), BlacklistDuration, HandshakeTimeout,
// Seed and Logger.
func NewAgent(ln net.Listener, dir string, trackerAddr string, up, down *bwlimit.Limiter, cfg Config) (*Agent, error) {
	n, err := newNode(ln, dir, up, down, cfg, false)
	if err != nil {
		return nil, err
	}
	n.start()
	return &Agent{n: n, tc: newTrackerClient(trackerAddr)}, nil
}

// Addr returns the agent's listening address.
func (a *Agent) Addr() string { return a.n.addr }

// ID returns the agent's peer id.
func (a *Agent) ID() string { return a.n.id }

// Uploaded returns the piece bytes the agent has sent to peers since it
// started.
func (a *Agent) Uploaded() int64 { return a.n.stats.uploaded.Load() }

// Close stops the agent: its listener, connections, announces and
// downloads. Pulls in progress fail.
func (a *Agent) Close() error {
	err := a.n.close()
	a.tc.close()
	return err
}

// OpenBlob opens a blob the agent has completely downloaded.
func (a *Agent) OpenBlob(digest string) (io.ReadCloser, error) {
	t := a.n.torrent(digest)
	if t == nil || !t.complete() {
		return nil, fmt.Errorf("swarm: agent %s: blob %s not downloaded", a.n.id, digest)
	}
	path, err := a.n.blobPath(digest)
	if err != nil {
		return nil, err
	}
	return os.Open(path)
}

func (a *Agent) snapshot() Stats {
	s := &a.n.stats
	return Stats{
		FromPeers:  s.fromPeers.Load(),
		FromOrigin: s.fromOrigin.Load(),
		Uploaded:   s.uploaded.Load(),
		Wasted:     s.wasted.Load(),
		BadPieces:  s.badPieces.Load(),
	}
}

// Pull downloads image (a reference the origin's registry resolves) through
// the swarm: the manifest from the origin through the tracker, then the
// config and every layer in parallel, each a torrent of its own. It
// returns when every blob is on disk and verified against its digest.
//
// Cancelling ctx ends the wait, not the downloads: like Kraken's scheduler,
// the agent goes on fetching (and then seeding) the blobs it started until
// it is closed, and a later Pull of the same image picks them up.
func (a *Agent) Pull(ctx context.Context, image string) (Stats, error) {
	start := time.Now()
	before := a.snapshot()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(a.n.ctx, cancel) // Close ends the pull
	defer stop()
	mr, m, err := a.tc.manifest(ctx, image)
	if err != nil {
		return Stats{}, a.closedOr(err)
	}
	blobs := append([]v1.Descriptor{m.Config}, m.Layers...)
	errs := make([]error, len(blobs))
	var wg sync.WaitGroup
	for i, d := range blobs {
		wg.Go(func() { errs[i] = a.pullBlob(ctx, mr.Repository, d) })
	}
	wg.Wait()
	st := a.snapshot().sub(before)
	st.Duration = time.Since(start)
	st.Blobs = len(blobs)
	for _, d := range blobs {
		st.Bytes += d.Size
	}
	if err := errors.Join(errs...); err != nil {
		return st, a.closedOr(fmt.Errorf("swarm: pulling %s: %w", image, err))
	}
	return st, nil
}

// closedOr returns ErrClosed if the agent is closed, else err.
func (a *Agent) closedOr(err error) error {
	if a.n.ctx.Err() != nil {
		return fmt.Errorf("agent %s: %w", a.n.id, ErrClosed)
	}
	return err
}

// pullBlob downloads one blob of repo, or waits for the download already
// under way, and verifies it.
func (a *Agent) pullBlob(ctx context.Context, repo string, d v1.Descriptor) error {
	digest := d.Digest.String()
	t := a.n.torrent(digest)
	if t == nil {
		meta, err := a.tc.metaInfo(ctx, repo, digest)
		if err != nil {
			return err
		}
		if meta.Length != d.Size {
			return fmt.Errorf("swarm: blob %s: metainfo says %d bytes, manifest %d", digest, meta.Length, d.Size)
		}
		var created bool
		t, created, err = a.n.addTorrent(meta, false)
		if err != nil {
			return err
		}
		if created && !t.complete() && !a.n.group.spawn(func() { a.leech(t) }) {
			return ErrClosed
		}
	}
	select {
	case <-t.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return t.verify()
}

// leech announces t's blob until it is complete (Kraken's announce loop
// and request watchdog): at once, then every interval the tracker asks for
// while the blob lacks connections, and a last time when complete. Between
// announces it re-sends piece requests that expired or failed.
func (a *Agent) leech(t *torrent) {
	interval := a.n.cfg.AnnounceInterval
	announce := func(complete bool) {
		ctx, cancel := context.WithTimeout(a.n.ctx, announceTimeout)
		defer cancel()
		resp, err := a.tc.announce(ctx, t.digest(), PeerInfo{ID: a.n.id, Addr: a.n.addr, Complete: complete})
		if err != nil {
			if a.n.ctx.Err() == nil {
				a.n.log.Warn("swarm: announce failed", "node", a.n.id, "err", err)
			}
			return
		}
		if resp.Interval > 0 {
			interval = resp.Interval
		}
		t.connect(resp.Peers)
	}
	announce(false)
	tick := time.NewTimer(interval)
	defer tick.Stop()
	resend := time.NewTicker(max(t.timeout/2, time.Millisecond))
	defer resend.Stop()
	for {
		select {
		case <-t.done:
			announce(true)
			return
		case <-a.n.ctx.Done():
			return
		case <-tick.C:
			if !t.saturated() {
				announce(false)
			}
			tick.Reset(interval)
		case <-resend.C:
			t.resendFailed()
		}
	}
}
