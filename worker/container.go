package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/blobcache"
	"github.com/faasnet/faasnet/container"
	"github.com/faasnet/faasnet/lazy"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// parseSpec reads a function's spec; an empty one provisions the image only.
func parseSpec(raw json.RawMessage) (api.FunctionSpec, error) {
	var s api.FunctionSpec
	if len(raw) == 0 {
		return s, nil
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return s, fmt.Errorf("function spec: %w", err)
	}
	return s, nil
}

// cleanupRuns removes what a crashed worker left: containers, mounts and
// unpacked images.
func (w *Worker) cleanupRuns(ctx context.Context) {
	if w.containers == nil {
		return
	}
	if err := w.containers.Cleanup(ctx); err != nil {
		w.log.Warn("cleaning up containers", "err", err)
	}
}

// runContainer starts f's container once the image's config is here: over
// a lazy FUSE mount when every layer is eStargz (reads fetch just the
// blocks they need, through the tree), else over the unpacked image after a
// whole fetch. It returns when the container answers its readiness check,
// and leaves a stop function that ends the container and unmounts.
func (w *Worker) runContainer(ctx context.Context, f *function, spec api.FunctionSpec, m manifestInfo, held *[]*blobcache.Blob) (stop func(), err error) {
	if w.containers == nil && w.cfg.RunContainer == nil {
		return nil, fmt.Errorf("function %s wants a container, but this worker does not run containers (start it with --containers, as root with runc)", f.name)
	}
	cfgBlob, err := w.waitComplete(ctx, f, m.config.Digest.String())
	if err != nil {
		return nil, err
	}
	*held = append(*held, cfgBlob)
	cfg, err := readConfig(cfgBlob)
	if err != nil {
		return nil, err
	}
	cf := container.Function{
		Name: f.name, Config: cfg.Config, Command: spec.Command, Env: spec.Env,
		ReadinessPath: spec.Readiness.Path, Phase: func(p string) { w.phase(f, p) },
	}
	// The same check and defaults as the manager's, for a spec it stored
	// before they existed.
	if cf.Limits, err = spec.Limits(); err != nil {
		return nil, fmt.Errorf("function %s: %w", f.name, err)
	}
	lazyImage := lazy.IsLazy(m.layers)
	if lazyImage {
		if cf.Layers, err = w.lazyLayers(m.layers); err != nil {
			return nil, err
		}
	} else {
		for _, d := range m.layers {
			b, err := w.waitComplete(ctx, f, d.Digest.String())
			if err != nil {
				return nil, err
			}
			*held = append(*held, b)
		}
		cf.Image = w.localImage(m, cfgBlob)
	}
	stopRun, addr, err := w.startContainer(ctx, cf)
	if err != nil {
		return nil, err
	}
	w.noteBytesBeforeReady(f)
	w.mu.Lock()
	f.address = addr
	w.mu.Unlock()
	if lazyImage && !spec.NoStream {
		// Once the function answers, the rest of the image streams in
		// behind it, so that children and later reads find it; on-demand
		// reads still go first.
		w.mu.Lock()
		for _, d := range m.layers {
			w.known[d.Digest.String()].hold = false
			w.ensureJob(d.Digest.String())
		}
		w.mu.Unlock()
	}
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := stopRun(sctx); err != nil {
			w.log.Warn("stopping the container", "function", f.name, "err", err)
		}
	}, nil
}

// startContainer starts cf with runc, or with Config.RunContainer where
// set, and returns how to stop it and where it answers (none for a
// stand-in).
func (w *Worker) startContainer(ctx context.Context, cf container.Function) (stop func(context.Context) error, addr string, err error) {
	if w.cfg.RunContainer != nil {
		stop, err := w.cfg.RunContainer(ctx, cf)
		return stop, "", err
	}
	run, err := w.containers.Run(ctx, cf)
	if err != nil {
		return nil, "", err
	}
	return run.Stop, netip.AddrPortFrom(run.Addr(), uint16(run.Port())).String(), nil
}

// lazyLayers are the eStargz layers of descs, read through the tree on
// demand.
func (w *Worker) lazyLayers(descs []v1.Descriptor) ([]lazy.Layer, error) {
	layers := make([]lazy.Layer, 0, len(descs))
	for _, d := range descs {
		l, err := lazy.LayerFromDescriptor(d, lazyBlob{w, d.Digest.String()})
		if err != nil {
			return nil, err
		}
		layers = append(layers, l)
	}
	return layers, nil
}

func readConfig(b *blobcache.Blob) (*v1.ConfigFile, error) {
	raw := make([]byte, b.Size())
	if _, err := b.ReadAt(raw, 0); err != nil {
		return nil, err
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("image config %s: %w", b.Digest(), err)
	}
	return cfg, nil
}

// manifestInfo is the part of an image manifest the worker uses.
type manifestInfo struct {
	raw    []byte
	mt     string
	config v1.Descriptor
	layers []v1.Descriptor
}

// localImage is the image as held in the cache, for unpacking.
func (w *Worker) localImage(m manifestInfo, cfg *blobcache.Blob) v1.Image {
	img, _ := partial.CompressedToImage(&cachedImage{w: w, m: m, cfg: cfg})
	return img
}

type cachedImage struct {
	w   *Worker
	m   manifestInfo
	cfg *blobcache.Blob
}

func (c *cachedImage) RawManifest() ([]byte, error)        { return c.m.raw, nil }
func (c *cachedImage) MediaType() (types.MediaType, error) { return types.MediaType(c.m.mt), nil }
func (c *cachedImage) RawConfigFile() ([]byte, error) {
	raw := make([]byte, c.cfg.Size())
	_, err := c.cfg.ReadAt(raw, 0)
	return raw, err
}

func (c *cachedImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	for _, d := range c.m.layers {
		if d.Digest == h {
			return &cachedLayer{w: c.w, d: d}, nil
		}
	}
	return nil, fmt.Errorf("layer %s is not in the manifest", h)
}

type cachedLayer struct {
	w *Worker
	d v1.Descriptor
}

func (l *cachedLayer) Digest() (v1.Hash, error)            { return l.d.Digest, nil }
func (l *cachedLayer) Size() (int64, error)                { return l.d.Size, nil }
func (l *cachedLayer) MediaType() (types.MediaType, error) { return l.d.MediaType, nil }
func (l *cachedLayer) Compressed() (io.ReadCloser, error) {
	b, ok := l.w.cache.Lookup(l.d.Digest.String())
	if !ok || !b.Complete() {
		if ok {
			b.Release()
		}
		return nil, fmt.Errorf("layer %s is not complete in the cache", l.d.Digest)
	}
	return &blobFile{io.NewSectionReader(b, 0, b.Size()), b.Release}, nil
}
