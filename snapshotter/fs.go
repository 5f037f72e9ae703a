package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/faasnet/faasnet/lazy"
)

// Labels CRI puts on the snapshots of an image it pulls when
// disable_snapshot_annotations is false (containerd 1.6 and later).
const (
	LabelImageRef       = "containerd.io/snapshot/cri.image-ref"
	LabelManifestDigest = "containerd.io/snapshot/cri.manifest-digest"
	LabelLayerDigest    = "containerd.io/snapshot/cri.layer-digest"
)

// ErrNotLazy marks a layer this snapshotter does not mount: not eStargz, or
// not described well enough by its labels. containerd then pulls it whole,
// through the worker as its hosts.toml says.
var ErrNotLazy = errors.New("not a lazy layer")

// target is the layer a snapshot's labels name.
type target struct {
	ns, repo string // registry host (containerd's "?ns=") and repository
	manifest string // digest of the image's (platform) manifest
	layer    string // digest of the layer blob
}

// parseLabels reads the layer a remote snapshot is asked for from CRI's
// labels. The manifest digest is required: a tag could name another
// manifest by the time the layer is mounted, or after a restart.
func parseLabels(labels map[string]string) (target, error) {
	ref, dgst, layer := labels[LabelImageRef], labels[LabelManifestDigest], labels[LabelLayerDigest]
	if ref == "" || dgst == "" || layer == "" {
		return target{}, fmt.Errorf("labels lack %s, %s or %s (is disable_snapshot_annotations false?): %w",
			LabelImageRef, LabelManifestDigest, LabelLayerDigest, ErrNotLazy)
	}
	r, err := name.ParseReference(ref, name.StrictValidation)
	if err != nil {
		return target{}, fmt.Errorf("image %q: %w", ref, err)
	}
	for _, d := range []string{dgst, layer} {
		if h, err := v1.NewHash(d); err != nil || h.Algorithm != "sha256" {
			return target{}, fmt.Errorf("digest %q: want sha256:HEX", d)
		}
	}
	return target{ns: r.Context().RegistryStr(), repo: r.Context().RepositoryStr(), manifest: dgst, layer: layer}, nil
}

// fileSystem mounts each eStargz layer with package lazy, reading through
// the worker. It implements the stargz-snapshotter library's FileSystem.
type fileSystem struct {
	worker *workerClient
	opts   lazy.Options
	log    *slog.Logger

	mu     sync.Mutex
	mounts map[string]*lazy.FS // by mountpoint
}

// Mount mounts the layer the labels name at mountpoint. On failure the
// snapshot becomes an ordinary one and containerd unpacks the layer itself.
func (f *fileSystem) Mount(ctx context.Context, mountpoint string, labels map[string]string) error {
	t, err := parseLabels(labels)
	if err != nil {
		return err
	}
	m, err := f.worker.manifest(ctx, t.ns, t.repo, t.manifest)
	if err != nil {
		return err
	}
	var desc *v1.Descriptor
	for i := range m.Layers {
		if m.Layers[i].Digest.String() == t.layer {
			desc = &m.Layers[i]
			break
		}
	}
	if desc == nil {
		return fmt.Errorf("manifest %s lists no layer %s", t.manifest, t.layer)
	}
	b := &blob{c: f.worker, ns: t.ns, repo: t.repo, dgst: t.layer, size: desc.Size}
	layer, err := lazy.LayerFromDescriptor(*desc, b)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotLazy, err)
	}
	fsys, err := lazy.Mount(ctx, mountpoint, []lazy.Layer{layer}, f.opts)
	if err != nil {
		return fmt.Errorf("mounting layer %s of %s/%s: %w", t.layer, t.ns, t.repo, err)
	}
	f.mu.Lock()
	old := f.mounts[mountpoint]
	f.mounts[mountpoint] = fsys
	f.mu.Unlock()
	if old != nil {
		old.Close()
	}
	f.log.Info("mounted a layer lazily", "layer", t.layer, "image", t.ns+"/"+t.repo, "mountpoint", mountpoint)
	return nil
}

// Check tells containerd whether a mounted layer still works: the mount is
// ours and the worker answers for its image. A worker that is down makes
// the snapshot unavailable, never a detour to the registry.
func (f *fileSystem) Check(ctx context.Context, mountpoint string, labels map[string]string) error {
	f.mu.Lock()
	_, ok := f.mounts[mountpoint]
	f.mu.Unlock()
	if !ok {
		return fmt.Errorf("layer at %s is not mounted", mountpoint)
	}
	t, err := parseLabels(labels)
	if err != nil {
		return err
	}
	_, err = f.worker.manifest(ctx, t.ns, t.repo, t.manifest)
	return err
}

// Unmount unmounts the layer at mountpoint.
func (f *fileSystem) Unmount(_ context.Context, mountpoint string) error {
	f.mu.Lock()
	fsys := f.mounts[mountpoint]
	delete(f.mounts, mountpoint)
	f.mu.Unlock()
	if fsys == nil {
		// Not ours (left by an earlier process): unmount whatever is there.
		if err := lazy.Unmount(mountpoint); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	return fsys.Close()
}

// closeAll unmounts every layer, at shutdown.
func (f *fileSystem) closeAll() error {
	f.mu.Lock()
	mounts := f.mounts
	f.mounts = map[string]*lazy.FS{}
	f.mu.Unlock()
	var errs []error
	for _, fsys := range mounts {
		errs = append(errs, fsys.Close())
	}
	return errors.Join(errs...)
}
