// Package pyimage builds a realistic function image like the FaaSNet
// paper's: Debian with Python 3, heavy scientific packages that the
// function does not import at start, and a small HTTP handler.
//
// The build needs root, debootstrap and a Debian mirror, nothing else from
// outside. It has one layer per step:
//
//  1. the base system: debootstrap --variant=minbase;
//  2. python3;
//  3. the scientific packages (python3-numpy, python3-scipy by default);
//  4. the handler, /app/handler.py.
//
// Steps 2 and 3 run apt-get in a chroot on an overlayfs whose upper
// directory becomes the layer, so a layer holds exactly what its step
// changed, deletions as OCI whiteouts. The layers of steps 1-3 are cached on
// disk, keyed by the build's inputs: a second build takes seconds.
//
// The handler (see handler.py) listens on $PORT and answers GET /healthz
// (200 "ok"), GET / (a JSON hello with the Python version) and GET /compute
// (imports numpy on first use). Only the standard library is imported at
// start, so a lazily fetched container starts long before the image has
// been read.
package pyimage

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/faasnet/faasnet/units"
)

// Port is the port the image's handler listens on unless PORT says
// otherwise; the image config exposes it.
const Port = 8080

// DefaultSuite is the Debian release the image is built from.
const DefaultSuite = "bookworm"

// DefaultPackages are the scientific packages of step 3.
var DefaultPackages = []string{"python3-numpy", "python3-scipy"}

// recipe changes whenever the build steps change, so that a cache filled
// by an older recipe is not used.
const recipe = "faasnet-pyimage-3"

// Options configure Build. The zero value builds the default image.
type Options struct {
	// CacheDir holds the built layers. Default: $XDG_CACHE_HOME/faasnet/pyimage,
	// or /var/cache/faasnet/pyimage. It must be on a file system that can be
	// an overlayfs upper directory (not overlayfs itself).
	CacheDir string
	// Mirror is the Debian archive. Default: the first plain-HTTP source for
	// Suite with component main in /etc/apt/sources.list(.d), or
	// DefaultMirror.
	Mirror string
	// Suite is the Debian release. Default: DefaultSuite.
	Suite string
	// Packages are installed in step 3. Default: DefaultPackages.
	Packages []string
	// Progress receives a line per step; nil is silent.
	Progress io.Writer
	// Verbose also sends the output of debootstrap and apt to Progress.
	Verbose bool
}

// defaults fills in the zero fields of o.
func (o Options) defaults() Options {
	if o.CacheDir == "" {
		o.CacheDir = DefaultCacheDir()
	}
	if o.Suite == "" {
		o.Suite = DefaultSuite
	}
	if o.Mirror == "" {
		o.Mirror = mirrorFromApt("/etc", o.Suite)
	}
	if o.Mirror == "" {
		o.Mirror = DefaultMirror
	}
	o.Mirror = strings.TrimRight(o.Mirror, "/")
	if len(o.Packages) == 0 {
		o.Packages = DefaultPackages
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	return o
}

// DefaultCacheDir returns where Build caches layers by default.
func DefaultCacheDir() string {
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "faasnet", "pyimage")
	}
	return "/var/cache/faasnet/pyimage"
}

// step is one cached build step.
type step struct {
	name      string
	createdBy string
}

// steps returns the cached steps of a build with o.
func (o Options) steps() []step {
	return []step{
		{"base", fmt.Sprintf("debootstrap --variant=minbase %s %s", o.Suite, o.Mirror)},
		{"python3", "apt-get install --no-install-recommends python3"},
		{"scientific", "apt-get install --no-install-recommends " + strings.Join(o.Packages, " ")},
	}
}

// key names the cache entry of a build with o: everything that changes the
// cached layers.
func (o Options) key() string {
	h := sha256.New()
	json.NewEncoder(h).Encode([]any{recipe, o.Mirror, o.Suite, o.Packages, goruntime.GOARCH})
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// Build returns the image, building its system layers (or loading them
// from the cache) and adding the handler layer. The image is OCI, for the
// machine's architecture (linux/amd64 here), with entrypoint
// ["python3", "/app/handler.py"], working directory /app, and the
// environment PATH, PYTHONDONTWRITEBYTECODE=1 and PORT=8080.
//
// Building needs root (debootstrap, mounts, chroot), debootstrap, and a
// few minutes; loading from the cache needs neither.
func Build(ctx context.Context, opts Options) (v1.Image, error) {
	o := opts.defaults()
	start := time.Now()
	layers, err := loadCache(o.CacheDir, o.key())
	if err != nil {
		fmt.Fprintf(o.Progress, "building the system layers (cache %s: %v)\n", o.CacheDir, err)
		if layers, err = build(ctx, o); err != nil {
			return nil, fmt.Errorf("pyimage: %w", err)
		}
	} else {
		fmt.Fprintf(o.Progress, "system layers from cache %s\n", filepath.Join(o.CacheDir, o.key()))
	}
	img, err := assemble(layers)
	if err != nil {
		return nil, fmt.Errorf("pyimage: %w", err)
	}
	fmt.Fprintf(o.Progress, "image ready in %v\n", time.Since(start).Round(time.Millisecond))
	return img, nil
}

// assemble makes the image from the system layers and the handler.
func assemble(system []*fileLayer) (v1.Image, error) {
	var buf bytes.Buffer
	info, err := writeLayer(&buf, writeHandler)
	if err != nil {
		return nil, fmt.Errorf("handler layer: %w", err)
	}
	info.CreatedBy = "COPY handler.py /app/handler.py"
	layers := append(system[:len(system):len(system)], &fileLayer{info: info, open: openBytes(buf.Bytes())})

	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	var adds []mutate.Addendum
	for _, l := range layers {
		adds = append(adds, mutate.Addendum{
			Layer:     l,
			MediaType: types.OCILayer,
			History:   v1.History{CreatedBy: l.info.CreatedBy, Created: v1.Time{Time: handlerTime}},
		})
	}
	img, err = mutate.Append(img, adds...)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", goruntime.GOARCH
	cf.Created = v1.Time{Time: handlerTime}
	cf.Config = v1.Config{
		Entrypoint: []string{"python3", "/app/handler.py"},
		Env: []string{
			"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			"PYTHONDONTWRITEBYTECODE=1",
			fmt.Sprintf("PORT=%d", Port),
		},
		WorkingDir:   "/app",
		ExposedPorts: map[string]struct{}{fmt.Sprintf("%d/tcp", Port): {}},
		Labels:       map[string]string{"org.opencontainers.image.title": "faasnet python function"},
	}
	return mutate.ConfigFile(img, cf)
}

// build runs the system steps in a scratch directory beside the cache and
// moves their layers into the cache.
func build(ctx context.Context, o Options) ([]*fileLayer, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("building needs root (debootstrap, mount, chroot); run as root or fill the cache first")
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return nil, errors.New("building needs debootstrap (apt-get install debootstrap)")
	}
	if err := os.MkdirAll(o.CacheDir, 0o755); err != nil {
		return nil, err
	}
	unlock, err := lockKey(ctx, o.CacheDir, o.key(), func() {
		fmt.Fprintln(o.Progress, "waiting for another build of the same layers")
	})
	if err != nil {
		return nil, err
	}
	defer unlock()
	if layers, err := loadCache(o.CacheDir, o.key()); err == nil {
		return layers, nil // built while we waited
	}
	removeStale(o.CacheDir)
	scratch, err := os.MkdirTemp(o.CacheDir, "tmp-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(scratch)
	logf, err := os.Create(filepath.Join(scratch, "build.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	out := io.Writer(logf)
	if o.Verbose {
		out = io.MultiWriter(logf, o.Progress)
	}

	steps := o.steps()
	var infos []layerInfo
	var lower []string // directories of the steps done, top first
	for i, s := range steps {
		fmt.Fprintf(o.Progress, "[%d/%d] %s: %s\n", i+1, len(steps)+1, s.name, s.createdBy)
		t0 := time.Now()
		dir := filepath.Join(scratch, s.name)
		var err error
		if i == 0 {
			err = debootstrap(ctx, out, dir, o.Suite, o.Mirror)
		} else {
			pkgs := []string{"python3"}
			if s.name == "scientific" {
				pkgs = o.Packages
			}
			err = aptInstall(ctx, out, lower, dir, filepath.Join(scratch, "work"), pkgs)
		}
		if err != nil {
			return nil, fmt.Errorf("step %s: %w", s.name, err)
		}
		built := time.Since(t0)
		info, err := writeLayerFile(filepath.Join(scratch, layerFile(i)), dir, lower)
		if err != nil {
			return nil, fmt.Errorf("step %s: %w", s.name, err)
		}
		info.CreatedBy = s.createdBy
		infos = append(infos, info)
		lower = append([]string{dir}, lower...)
		fmt.Fprintf(o.Progress, "      %v, layer %s compressed (%s as tar) in %v\n",
			built.Round(100*time.Millisecond), units.FormatBytes(info.Size), units.FormatBytes(info.TarSize), (time.Since(t0) - built).Round(100*time.Millisecond))
	}
	for _, dir := range lower {
		if err := os.RemoveAll(dir); err != nil {
			return nil, err
		}
	}
	return storeCache(o.CacheDir, o.key(), scratch, infos)
}

// writeLayerFile writes the layer of the tree dir, above the trees lower,
// to the file name.
func writeLayerFile(name, dir string, lower []string) (layerInfo, error) {
	f, err := os.Create(name)
	if err != nil {
		return layerInfo{}, err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	info, err := writeLayer(bw, func(tw *tar.Writer) error { return writeDir(tw, dir, lower) })
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return info, err
}

// removeStale removes scratch directories that builds killed more than a
// day ago left in the cache; younger ones may belong to a running build.
func removeStale(cacheDir string) {
	entries, _ := os.ReadDir(cacheDir)
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "tmp-") {
			continue
		}
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > 24*time.Hour {
			os.RemoveAll(filepath.Join(cacheDir, e.Name()))
		}
	}
}
