package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/convert"
	"github.com/faasnet/faasnet/imagegen"
	"github.com/faasnet/faasnet/pyimage"
	"github.com/faasnet/faasnet/units"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Function is a real function that runs replace the generated images
// with: its image is pushed as built (plain layers) and converted to
// eStargz, and the workers start its container with runc and count a VM
// ready when the container answers its readiness check. Running it needs
// what CheckContainers checks.
//
// Which image a strategy uses: faasnet and ondemand the eStargz one (a
// lazy mount, blocks fetched as the container reads them); registry the
// plain one (whole fetch, unpack, start); swarm cannot run containers.
type Function struct {
	// Image is the function's image as built, with plain (not eStargz)
	// layers.
	Image v1.Image
	// Spec is passed to the workers unchanged; its Readiness must be set.
	Spec api.FunctionSpec
	// CacheDir keeps eStargz conversions between harnesses, keyed by the
	// plain image's digest, so that only the first one pays for
	// converting; "" converts every time.
	CacheDir string
	// Progress receives a line per step of the preparation; nil is silent.
	Progress io.Writer
}

// PythonFunction is the realistic function of package pyimage (Debian,
// Python 3, numpy and scipy not imported at start), built or loaded from
// pyimage's default cache, with a readiness check on /healthz and a memory
// limit of 256 MiB. Its conversions are cached in DefaultConvertCacheDir.
// It fails first if this process cannot run containers (CheckContainers).
func PythonFunction(ctx context.Context, progress io.Writer) (*Function, error) {
	if err := CheckContainers(); err != nil {
		return nil, err
	}
	if progress == nil {
		progress = io.Discard
	}
	img, err := pyimage.Build(ctx, pyimage.Options{Progress: progress})
	if err != nil {
		return nil, err
	}
	return &Function{
		Image:    img,
		Spec:     api.FunctionSpec{Readiness: &api.Readiness{Path: "/healthz"}, Memory: "256MiB"},
		CacheDir: DefaultConvertCacheDir(),
		Progress: progress,
	}, nil
}

// DefaultConvertCacheDir is where conversions are cached by default: beside
// pyimage's cache, so that the two go together.
func DefaultConvertCacheDir() string { return ConvertCacheDir(pyimage.DefaultCacheDir()) }

// ConvertCacheDir is where the conversions of images built with pyimage's
// cache at pyCache are kept: beside it.
func ConvertCacheDir(pyCache string) string {
	return filepath.Join(filepath.Dir(filepath.Clean(pyCache)), "estargz")
}

// CacheConversion makes sure f.CacheDir holds the eStargz conversion of
// f.Image, converting it through a registry of its own if it does not, and
// returns it and its cache entry. `faasnet image python --convert-cache` calls it
// so that harnesses, in tests above all, load the conversion instead of
// recompressing the image themselves.
func CacheConversion(ctx context.Context, f *Function) (v1.Image, string, error) {
	entry, err := f.cacheEntry()
	if err != nil {
		return nil, "", err
	}
	if entry == "" {
		return nil, "", errors.New("caching the conversion: the function has no cache directory")
	}
	if img, err := loadConverted(entry); err == nil {
		return img, entry, nil
	}
	r, err := StartRegistry(RegistryOptions{})
	if err != nil {
		return nil, "", err
	}
	defer r.Close()
	if _, _, err := r.pushFunction(ctx, f, "cache/fn"); err != nil {
		return nil, "", err
	}
	img, err := loadConverted(entry)
	if err != nil {
		return nil, "", fmt.Errorf("caching the conversion in %s: %w", entry, err)
	}
	return img, entry, nil
}

// CheckContainers tells whether this process can run functions' containers
// as the workers do: as root, with runc, over FUSE mounts. The error names
// everything missing.
func CheckContainers() error {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, fmt.Sprintf("root (running as uid %d; mounts and runc need root)", os.Geteuid()))
	}
	if _, err := exec.LookPath("runc"); err != nil {
		if _, err := os.Stat("/usr/sbin/runc"); err != nil {
			missing = append(missing, "runc (apt-get install runc)")
		}
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		missing = append(missing, "/dev/fuse (modprobe fuse; apt-get install fuse3)")
	}
	if len(missing) > 0 {
		return fmt.Errorf("running containers needs %s", strings.Join(missing, ", "))
	}
	return nil
}

// spec returns f's spec as the workers receive it.
func (f *Function) spec() (json.RawMessage, error) {
	if f.Spec.Readiness == nil {
		return nil, errors.New("function: the spec has no readiness check, so no VM could tell it is ready")
	}
	return json.Marshal(f.Spec)
}

// convertRecipe changes whenever conversions must be redone: a cache entry
// made by another recipe is not used.
const convertRecipe = "faasnet-estargz-1"

// pushFunction pushes f's image as repo:plain and its eStargz conversion as
// repo:estargz, converting through the registry's back end (neither limited
// nor counted), or pushing a conversion cached earlier.
func (r *Registry) pushFunction(ctx context.Context, f *Function, repo string) (plain, converted Image, err error) {
	out := f.Progress
	if out == nil {
		out = io.Discard
	}
	backend := r.Backend()
	defer backend.CloseIdleConnections()
	ropts := []remote.Option{remote.WithTransport(backend), remote.WithContext(ctx)}

	start := time.Now()
	plainRef := r.addr + "/" + repo + ":plain"
	if err := imagegen.Push(ctx, f.Image, plainRef, remote.WithTransport(backend)); err != nil {
		return Image{}, Image{}, err
	}
	if plain, err = describe(plainRef, repo, "plain", f.Image); err != nil {
		return Image{}, Image{}, err
	}
	fmt.Fprintf(out, "pushed %s (%s in %d layers) in %v\n", plainRef, units.FormatBytes(plain.Bytes()), len(plain.Layers), time.Since(start).Round(time.Millisecond))

	start = time.Now()
	lazyRef := r.addr + "/" + repo + ":estargz"
	entry, err := f.cacheEntry()
	if err != nil {
		return Image{}, Image{}, err
	}
	img, err := loadConverted(entry)
	if err == nil {
		if err := imagegen.Push(ctx, img, lazyRef, remote.WithTransport(backend)); err != nil {
			return Image{}, Image{}, err
		}
		fmt.Fprintf(out, "pushed the eStargz conversion cached in %s in %v\n", entry, time.Since(start).Round(time.Millisecond))
	} else {
		if entry != "" {
			fmt.Fprintf(out, "converting to eStargz (cache %s: %v)\n", entry, err)
		}
		res, err := convert.Convert(ctx, plainRef, lazyRef, convert.WithRemoteOptions(remote.WithTransport(backend)))
		if err != nil {
			return Image{}, Image{}, err
		}
		fmt.Fprintf(out, "converted to eStargz in %v: layers %s before, %s after\n", time.Since(start).Round(time.Millisecond),
			units.FormatBytes(res.BytesBefore), units.FormatBytes(res.BytesAfter))
		ref, err := name.ParseReference(lazyRef, name.Insecure)
		if err != nil {
			return Image{}, Image{}, err
		}
		if img, err = remote.Image(ref, ropts...); err != nil {
			return Image{}, Image{}, fmt.Errorf("reading back %s: %w", lazyRef, err)
		}
		if entry != "" {
			if err := storeConverted(entry, img); err != nil {
				fmt.Fprintf(out, "not caching the conversion: %v\n", err)
			}
		}
	}
	converted, err = describe(lazyRef, repo, "estargz", img)
	return plain, converted, err
}

// cacheEntry is the directory that caches f's conversion, "" without a
// cache: keyed by the plain image's digest and the recipe.
func (f *Function) cacheEntry() (string, error) {
	if f.CacheDir == "" {
		return "", nil
	}
	d, err := f.Image.Digest()
	if err != nil {
		return "", fmt.Errorf("function image digest: %w", err)
	}
	return filepath.Join(f.CacheDir, d.Hex[:32]+"-"+convertRecipe), nil
}

// loadConverted reads the image cached in the OCI layout at dir.
func loadConverted(dir string) (v1.Image, error) {
	if dir == "" {
		return nil, errors.New("no cache")
	}
	if _, err := os.Stat(dir); err != nil {
		return nil, errors.New("not cached yet")
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, err
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, err
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	if len(m.Manifests) != 1 {
		return nil, fmt.Errorf("cache entry %s holds %d images, want 1", dir, len(m.Manifests))
	}
	return p.Image(m.Manifests[0].Digest)
}

// storeConverted writes img as an OCI layout at dir, in a scratch
// directory renamed into place, so that a reader never finds half of one.
func storeConverted(dir string, img v1.Image) error {
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(parent, "tmp-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	p, err := layout.Write(tmp, empty.Index)
	if err != nil {
		return err
	}
	if err := p.AppendImage(img); err != nil {
		return fmt.Errorf("caching %s: %w", dir, err)
	}
	if err := os.Rename(tmp, dir); err != nil && !errors.Is(err, os.ErrExist) {
		// Another process cached the same conversion meanwhile: fine.
		if _, serr := os.Stat(dir); serr != nil {
			return err
		}
	}
	return nil
}
