package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/faasnet/faasnet/bwlimit"
	"github.com/faasnet/faasnet/swarm"
	"github.com/faasnet/faasnet/upstream"
)

// Swarm provisions through a Kraken-like P2P swarm (package swarm): a
// tracker, one origin and one agent per VM; every agent pulls every image
// at once.
//
// The issue asks for "the registry as origin": the origin stands in for the
// registry, so its uplink to the agents is the registry's (it uploads
// through the registry's egress limiter), and its own fetches reach the
// registry's back end without limit, as a registry's storage would. Its
// piece uploads count as registry egress. Tracker and origin listen on
// 127.0.0.1, the "registry machine".
type Swarm struct{}

// Name implements Strategy.
func (Swarm) Name() string { return "swarm" }

type swarmDeployment struct {
	env     *Env
	tracker *swarm.Tracker
	origin  *swarm.Origin
	agents  []*swarm.Agent
	backend *http.Transport

	mu    sync.Mutex
	ready map[string]time.Time
	stats map[string]swarm.Stats
	errs  map[string]string
}

// Deploy implements Strategy.
func (Swarm) Deploy(ctx context.Context, env *Env) (Deployment, error) {
	if env.Spec != nil {
		return nil, errors.New("swarm: its agents bring images, they cannot start a function's container")
	}
	d := &swarmDeployment{env: env, ready: map[string]time.Time{}, stats: map[string]swarm.Stats{}, errs: map[string]string{}}
	if err := d.start(); err != nil {
		d.Close()
		return nil, fmt.Errorf("swarm: %w", err)
	}
	return d, nil
}

func (d *swarmDeployment) config(seed int) swarm.Config {
	return swarm.Config{PieceSize: d.env.Scenario.PieceSize, Seed: uint64(d.env.Scenario.Seed)<<16 + uint64(seed) + 1, Logger: d.env.Logger}
}

func (d *swarmDeployment) start() error {
	tln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	d.tracker = swarm.NewTracker(tln, d.config(0))
	oln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	d.backend = d.env.Registry.Backend()
	reg := upstream.New(upstream.WithTransport(d.backend))
	d.origin, err = swarm.NewOrigin(oln, filepath.Join(d.env.Dir, "origin"), reg, d.tracker.Addr(), d.env.Registry.Limiter(), d.config(1))
	if err != nil {
		return err
	}
	bw := d.env.Scenario.Bandwidth
	for i, vm := range d.env.VMs {
		ln, err := listen(vm)
		if err != nil {
			return err
		}
		a, err := swarm.NewAgent(ln, filepath.Join(d.env.Dir, vm.Name), d.tracker.Addr(), bwlimit.New(bw), bwlimit.New(bw), d.config(2+i))
		if err != nil {
			ln.Close()
			return fmt.Errorf("%s: %w", vm.Name, err)
		}
		d.agents = append(d.agents, a)
	}
	return nil
}

// Provision implements Deployment: every agent pulls every image at once.
func (d *swarmDeployment) Provision(ctx context.Context) error {
	var wg sync.WaitGroup
	for i, a := range d.agents {
		name := d.env.VMs[i].Name
		wg.Go(func() { d.pull(ctx, name, a) })
	}
	wg.Wait()
	return ctx.Err()
}

// pull pulls the images on one agent, in parallel.
func (d *swarmDeployment) pull(ctx context.Context, name string, a *swarm.Agent) {
	stats := make([]swarm.Stats, len(d.env.Images))
	errs := make([]error, len(d.env.Images))
	var wg sync.WaitGroup
	for i, im := range d.env.Images {
		wg.Go(func() { stats[i], errs[i] = a.Pull(ctx, im.Ref) })
	}
	wg.Wait()
	now := time.Now()
	var sum swarm.Stats
	for _, s := range stats {
		sum.FromPeers += s.FromPeers
		sum.FromOrigin += s.FromOrigin
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stats[name] = sum
	if err := errors.Join(errs...); err != nil {
		d.errs[name] = err.Error()
		return
	}
	d.ready[name] = now
}

// Progress implements Deployment. Agents tell their bytes only when a pull
// ends, so a VM shows nothing received until it is ready.
func (d *swarmDeployment) Progress() Snapshot {
	total := d.env.ImageBytes()
	s := Snapshot{VMs: make([]VMProgress, len(d.agents))}
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := range d.agents {
		name := d.env.VMs[i].Name
		p := VMProgress{VM: name, Total: total, Failed: d.errs[name]}
		if _, ok := d.ready[name]; ok {
			p.Ready, p.Received = true, total
		}
		s.VMs[i] = p
	}
	return s
}

// Report implements Deployment: Received counts piece payload, wasted
// duplicates included; a VM is correct when every blob it holds matches its
// digest, read back from its disk.
func (d *swarmDeployment) Report(ctx context.Context) []VMReport {
	out := make([]VMReport, len(d.agents))
	var wg sync.WaitGroup
	for i, a := range d.agents {
		wg.Go(func() { out[i] = d.report(ctx, d.env.VMs[i].Name, a) })
	}
	wg.Wait()
	return out
}

func (d *swarmDeployment) report(ctx context.Context, name string, a *swarm.Agent) VMReport {
	d.mu.Lock()
	st := d.stats[name]
	r := VMReport{VM: name, Ready: d.ready[name], Err: d.errs[name], Uploaded: a.Uploaded(),
		Received: st.FromPeers + st.FromOrigin, FromRegistry: st.FromOrigin}
	d.mu.Unlock()
	if r.Ready.IsZero() {
		if r.Err == "" {
			r.Err = "not ready"
		}
		return r
	}
	for _, im := range d.env.Images {
		for _, b := range im.Blobs() {
			if err := checkBlob(ctx, a, b); err != nil {
				r.Err = fmt.Sprintf("%s: %v", name, err)
				return r
			}
		}
	}
	r.Correct = true
	return r
}

// checkBlob reads a blob back from an agent and checks its digest.
func checkBlob(ctx context.Context, a *swarm.Agent, b Blob) error {
	rc, err := a.OpenBlob(b.Digest)
	if err != nil {
		return err
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, rc)
	if err != nil {
		return fmt.Errorf("reading blob %s: %w", b.Digest, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != b.Digest || n != b.Size {
		return fmt.Errorf("blob %s: %d bytes of digest %s, want %d", b.Digest, n, got, b.Size)
	}
	return ctx.Err()
}

// standInEgress is what the origin uploaded: registry egress that the
// Registry does not see.
func (d *swarmDeployment) standInEgress() int64 { return d.origin.Egress() }

// Close implements Deployment.
func (d *swarmDeployment) Close() error {
	var errs []error
	for _, a := range d.agents {
		errs = append(errs, a.Close())
	}
	if d.origin != nil {
		errs = append(errs, d.origin.Close())
	}
	if d.tracker != nil {
		errs = append(errs, d.tracker.Close())
	}
	if d.backend != nil {
		d.backend.CloseIdleConnections()
	}
	return errors.Join(errs...)
}
