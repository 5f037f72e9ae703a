package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/blobcache"
	"github.com/faasnet/faasnet/lazy"
	"github.com/faasnet/faasnet/runc"
	"github.com/faasnet/faasnet/units"
	"github.com/faasnet/faasnet/unpack"
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

// runDirs are where containers live: bundles and runc state, mount points
// and unpacked root filesystems.
func (w *Worker) runDir(parts ...string) string {
	return filepath.Join(append([]string{w.cfg.RunDir}, parts...)...)
}

// cleanupRuns removes what a crashed worker left: containers and mounts.
func (w *Worker) cleanupRuns(ctx context.Context) {
	if w.rt == nil {
		return
	}
	if err := w.rt.Cleanup(ctx); err != nil {
		w.log.Warn("removing stale containers", "err", err)
	}
	mnts, _ := filepath.Glob(w.runDir("mnt", "*"))
	for _, m := range mnts {
		if err := lazy.Unmount(m); err != nil {
			w.log.Warn("removing a stale mount", "mountpoint", m, "err", err)
		}
	}
	os.RemoveAll(w.runDir("rootfs"))
}

// runContainer starts f's container once the image's config is here: over
// a lazy FUSE mount when every layer is eStargz (reads fetch just the
// blocks they need, through the tree), else over the unpacked image after a
// whole fetch. It returns when the container answers its readiness check,
// and leaves a stop function that ends the container and unmounts.
func (w *Worker) runContainer(ctx context.Context, f *function, spec api.FunctionSpec, m manifestInfo, held *[]*blobcache.Blob) (stop func(), err error) {
	if w.rt == nil {
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
	var memory int64
	if spec.Memory != "" {
		if memory, err = units.ParseSize(spec.Memory); err != nil {
			return nil, fmt.Errorf("function %s: memory: %w", f.name, err)
		}
	}
	var cleanups []func()
	undo := func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}
	defer func() {
		if err != nil {
			undo()
		}
	}()

	rootfs, lazyImage := "", lazy.IsLazy(m.layers)
	if lazyImage {
		rootfs = w.runDir("mnt", f.name)
		fs, err := w.mountLazy(ctx, rootfs, m.layers)
		if err != nil {
			return nil, err
		}
		cleanups = append(cleanups, func() {
			if err := fs.Close(); err != nil {
				w.log.Warn("unmounting", "function", f.name, "err", err)
			}
		})
		w.phase(f, "mount")
	} else {
		for _, d := range m.layers {
			b, err := w.waitComplete(ctx, f, d.Digest.String())
			if err != nil {
				return nil, err
			}
			*held = append(*held, b)
		}
		rootfs = w.runDir("rootfs", f.name)
		os.RemoveAll(rootfs)
		cleanups = append(cleanups, func() { os.RemoveAll(rootfs) })
		if err := os.MkdirAll(rootfs, 0o755); err != nil {
			return nil, err
		}
		if err := unpack.Image(w.localImage(m, cfgBlob), rootfs); err != nil {
			return nil, fmt.Errorf("function %s: %w", f.name, err)
		}
		w.phase(f, "unpacked")
	}

	port, err := freePort()
	if err != nil {
		return nil, err
	}
	c, err := w.rt.Start(ctx, runc.Spec{
		ID: containerID(w.cfg.ID, f.name), Rootfs: rootfs, Image: cfg.Config,
		Command: spec.Command, Env: spec.Env, MemoryBytes: memory, Port: port,
	})
	if err != nil {
		return nil, err
	}
	cleanups = append(cleanups, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.Stop(sctx); err != nil {
			w.log.Warn("stopping the container", "function", f.name, "err", err)
		}
	})
	w.phase(f, "started")
	path := spec.Readiness.Path
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	if _, err := c.WaitReady(ctx, fmt.Sprintf("http://127.0.0.1:%d%s", port, path)); err != nil {
		return nil, err
	}
	w.noteBytesBeforeReady(f)
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
	return undo, nil
}

// mountLazy mounts the eStargz layers at mountpoint, reading through the
// tree on demand.
func (w *Worker) mountLazy(ctx context.Context, mountpoint string, descs []v1.Descriptor) (*lazy.FS, error) {
	lazy.Unmount(mountpoint)
	if err := os.MkdirAll(mountpoint, 0o755); err != nil {
		return nil, err
	}
	layers := make([]lazy.Layer, 0, len(descs))
	for _, d := range descs {
		l, err := lazy.LayerFromDescriptor(d, lazyBlob{w, d.Digest.String()})
		if err != nil {
			return nil, err
		}
		layers = append(layers, l)
	}
	return lazy.Mount(ctx, mountpoint, layers, lazy.Options{Logger: w.log})
}

func containerID(vm, fn string) string { return "faasnet-" + vm + "-" + fn }

// Container ports come from below the kernel's ephemeral range (usually
// 32768-60999): a port taken from that range and released could be handed
// to some outgoing connection before the function binds it.
const (
	portLow  = 20000
	portHigh = 32000
)

// freePort picks a port for a container that nothing on the machine uses
// now (checked by binding it on all addresses, as a function may).
func freePort() (int, error) {
	start := portLow + mathrand.IntN(portHigh-portLow)
	for i := range portHigh - portLow {
		p := portLow + (start-portLow+i)%(portHigh-portLow)
		ln, err := net.Listen("tcp", fmt.Sprintf(":%d", p))
		if err != nil {
			continue
		}
		ln.Close()
		return p, nil
	}
	return 0, fmt.Errorf("no free port for a container in %d-%d", portLow, portHigh)
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
