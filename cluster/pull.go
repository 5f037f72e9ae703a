package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/faasnet/faasnet/bwlimit"
	"github.com/faasnet/faasnet/upstream"
)

// RegistryPull is what a platform without trees does: every VM pulls every
// image straight from the registry, all VMs at once, each blob of an image
// in parallel as container runtimes do, through the VM's download limiter.
//
// With a Function, it is "pull, unpack, start" done by faasnet's worker
// without a tree (as OnDemand, each VM the only member of a function of its
// own) on the plain image: the worker fetches the whole image, unpacks it
// and starts the container.
type RegistryPull struct{}

// Name implements Strategy.
func (RegistryPull) Name() string { return "registry" }

// Deploy implements Strategy: one puller per VM, each with its own limiter
// and connections, dialed from the VM's address.
func (RegistryPull) Deploy(ctx context.Context, env *Env) (Deployment, error) {
	if env.Spec != nil {
		return deployWorkers(ctx, env, "registry", env.Plain, true, false, 1, env.Scenario.BlockSize)
	}
	d := &pullDeployment{env: env}
	for _, vm := range env.VMs {
		dir := filepath.Join(env.Dir, vm.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			d.Close()
			return nil, fmt.Errorf("registry: %w", err)
		}
		tr := &http.Transport{
			DialContext:         dialer(vm).DialContext,
			MaxIdleConnsPerHost: 64,
			DisableCompression:  true,
			ForceAttemptHTTP2:   false,
		}
		p := &puller{vm: vm, dir: dir, tr: tr, down: bwlimit.New(env.Scenario.Bandwidth)}
		p.reg = upstream.New(upstream.WithTransport(limitedTransport{tr, p.down}))
		d.pullers = append(d.pullers, p)
	}
	return d, nil
}

type pullDeployment struct {
	env     *Env
	pullers []*puller
}

// puller is one VM of the registry strategy.
type puller struct {
	vm       VM
	dir      string
	tr       *http.Transport
	down     *bwlimit.Limiter
	reg      *upstream.Registry
	received atomic.Int64
	ready    time.Time // set once the pull returns
	err      error
}

// Provision implements Deployment.
func (d *pullDeployment) Provision(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, p := range d.pullers {
		wg.Go(func() {
			p.err = p.pullAll(ctx, d.env.Images)
			if p.err == nil {
				p.ready = time.Now()
			}
		})
	}
	wg.Wait()
	return ctx.Err()
}

// pullAll pulls the images in parallel.
func (p *puller) pullAll(ctx context.Context, images []Image) error {
	errs := make([]error, len(images))
	var wg sync.WaitGroup
	for i, im := range images {
		wg.Go(func() { errs[i] = p.pull(ctx, im) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// pull resolves im's manifest, then downloads and verifies its blobs in
// parallel into the VM's directory.
func (p *puller) pull(ctx context.Context, im Image) error {
	resolved, err := p.reg.Resolve(ctx, im.Ref)
	if err != nil {
		return err
	}
	p.received.Add(int64(len(resolved.RawManifest)))
	if got := resolved.Descriptor.Digest.String(); got != im.Manifest.Digest {
		return fmt.Errorf("%s: manifest %s, want %s", im.Ref, got, im.Manifest.Digest)
	}
	blobs := resolved.Blobs()
	errs := make([]error, len(blobs))
	var wg sync.WaitGroup
	for i, b := range blobs {
		wg.Go(func() {
			errs[i] = p.fetch(ctx, resolved, Blob{b.Digest.String(), b.Size})
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// fetch downloads one blob to a file, checking size and digest.
func (p *puller) fetch(ctx context.Context, im upstream.Image, b Blob) error {
	rc, err := p.reg.OpenBlob(ctx, im.Repository, b.Digest, 0, -1)
	if err != nil {
		return err
	}
	defer rc.Close()
	f, err := os.Create(filepath.Join(p.dir, strings.ReplaceAll(b.Digest, ":", "-")))
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h, counter{&p.received}), rc)
	if err != nil {
		return fmt.Errorf("%s: blob %s: %w", p.vm.Name, b.Digest, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); n != b.Size || got != b.Digest {
		return fmt.Errorf("%s: blob %s: got %d bytes of digest %s, want %d", p.vm.Name, b.Digest, n, got, b.Size)
	}
	return nil
}

// counter counts the bytes written to it.
type counter struct{ n *atomic.Int64 }

func (c counter) Write(p []byte) (int, error) {
	c.n.Add(int64(len(p)))
	return len(p), nil
}

// Progress implements Deployment.
func (d *pullDeployment) Progress() Snapshot {
	total := d.env.ImageBytes()
	s := Snapshot{VMs: make([]VMProgress, len(d.pullers))}
	for i, p := range d.pullers {
		n := p.received.Load()
		s.VMs[i] = VMProgress{VM: p.vm.Name, Received: n, Total: total, Ready: n >= total}
	}
	return s
}

// Report implements Deployment. Provision verified every blob as it
// arrived; a VM is correct when all of them matched.
func (d *pullDeployment) Report(context.Context) []VMReport {
	out := make([]VMReport, len(d.pullers))
	for i, p := range d.pullers {
		n := p.received.Load()
		out[i] = VMReport{VM: p.vm.Name, Ready: p.ready, Received: n, FromRegistry: n, Correct: p.err == nil && !p.ready.IsZero()}
		switch {
		case p.err != nil:
			out[i].Err = p.err.Error()
		case p.ready.IsZero():
			out[i].Err = "not ready"
		}
	}
	return out
}

// Close implements Deployment.
func (d *pullDeployment) Close() error {
	for _, p := range d.pullers {
		p.tr.CloseIdleConnections()
	}
	return nil
}

// limitedTransport reads every response body through a VM's download
// limiter, so that manifests count against the link as blobs do.
type limitedTransport struct {
	base http.RoundTripper
	down *bwlimit.Limiter
}

func (t limitedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body = limitedBody{bwlimit.NewReader(req.Context(), resp.Body, t.down), resp.Body}
	return resp, nil
}

type limitedBody struct {
	io.Reader
	io.Closer
}
