// Package imagegen generates deterministic, multi-layer OCI test images fast.
//
// An image is described by a [Spec]: its approximate compressed size, its
// number of layers and a seed. The same Spec always yields byte-identical
// blobs, hence the same digests, on every machine and every run, so tests and
// benchmarks can name an image by its Spec.
//
// File contents are pseudo-random (ChaCha8), so they do not compress: the
// size of a layer is what the Spec asked for and the network carries exactly
// that many bytes. Layers are gzip streams written without compression effort
// (stored deflate blocks), which costs a memory copy and a CRC instead of
// compression work.
//
// Layers are not kept in memory. [Image] generates every layer once to compute
// its digests and sizes; [v1.Layer.Compressed] and [v1.Layer.Uncompressed]
// regenerate the bytes on demand from the seed. An image of any size therefore
// costs a few megabytes of memory, and each read of a layer costs its
// generation time again (hundreds of MB/s per core).
package imagegen

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// MaxLayers bounds Spec.Layers: container runtimes refuse deeper layer stacks
// (overlayfs stacking, Docker's 125-layer limit), so a deeper test image would
// test nothing real.
const MaxLayers = 100

// Entrypoint is the entrypoint recorded in every generated image's config. The
// top layer holds a small shell script at this path; the image has no shell,
// so it is metadata for tests, not a runnable program.
const Entrypoint = "/app/handler"

// epoch is the timestamp of every file and of the config: fixed so that
// digests do not depend on the clock (the day FaaSNet appeared at ATC '21).
var epoch = time.Date(2021, time.July, 14, 0, 0, 0, 0, time.UTC)

// Spec describes a generated image.
//
// Layer sizes follow a realistic split: the base layer (layer 0, like an OS
// plus a language runtime) takes half of TotalSize, and the other Layers-1
// layers share the other half with linearly decreasing weights Layers-1, ...,
// 2, 1, so the top layer (like application code) is the smallest. For example
// 100 MB in 5 layers gives 50, 20, 15, 10 and 5 MB.
type Spec struct {
	// TotalSize is the approximate sum of the compressed layer sizes in
	// bytes. The generated size is within 0.1% plus 4 KiB per layer of it
	// (tar and gzip framing are estimated, not searched for).
	TotalSize int64
	// Layers is the number of layers, 1 to MaxLayers.
	Layers int
	// Seed selects the content; different seeds give different digests.
	Seed int64
}

func (s Spec) validate() error {
	if s.Layers < 1 || s.Layers > MaxLayers {
		return fmt.Errorf("imagegen: spec %+v: layers must be between 1 and %d", s, MaxLayers)
	}
	if s.TotalSize < 0 {
		return fmt.Errorf("imagegen: spec %+v: negative total size", s)
	}
	return nil
}

// LayerSizes returns the target compressed size of each layer of s, base layer
// first, following the split documented on [Spec]. The sizes add up to
// s.TotalSize exactly.
func LayerSizes(s Spec) ([]int64, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	n := int64(s.Layers)
	sizes := make([]int64, n)
	if n == 1 {
		sizes[0] = s.TotalSize
		return sizes, nil
	}
	upper := s.TotalSize / 2
	weights := n * (n - 1) / 2 // sum of 1..n-1
	var used int64
	for i := int64(1); i < n; i++ {
		// Multiply before dividing in two steps: upper*(n-i) could overflow
		// int64 only for totals beyond 90 PB, far outside any test image.
		sizes[i] = upper * (n - i) / weights
		used += sizes[i]
	}
	sizes[0] = s.TotalSize - used
	return sizes, nil
}

// Image returns the image described by s: an OCI manifest and config
// (platform linux/amd64, entrypoint [Entrypoint]) and s.Layers gzip-compressed
// tar layers, each holding a few files of pseudo-random bytes.
//
// Image generates every layer once, in parallel up to GOMAXPROCS, to learn its
// digests; it returns an error only for an invalid Spec.
func Image(s Spec) (v1.Image, error) {
	sizes, err := LayerSizes(s)
	if err != nil {
		return nil, err
	}
	layers := make([]*layer, len(sizes))
	errs := make([]error, len(sizes))
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for i, size := range sizes {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			layers[i], errs[i] = newLayer(planLayer(s, i, size))
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("imagegen: spec %+v: %w", s, err)
	}
	return assemble(s, layers)
}

// assemble builds the OCI image around already computed layers.
func assemble(s Spec, layers []*layer) (v1.Image, error) {
	cfg := &v1.ConfigFile{
		Architecture: "amd64",
		OS:           "linux",
		Created:      v1.Time{Time: epoch},
		Config: v1.Config{
			Entrypoint: []string{Entrypoint},
			Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			WorkingDir: "/app",
			Labels: map[string]string{
				"org.faasnet.imagegen.spec": fmt.Sprintf("total=%d layers=%d seed=%d", s.TotalSize, s.Layers, s.Seed),
			},
		},
		RootFS: v1.RootFS{Type: "layers"},
	}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	base, err := mutate.ConfigFile(base, cfg)
	if err != nil {
		return nil, fmt.Errorf("imagegen: spec %+v: config: %w", s, err)
	}
	adds := make([]mutate.Addendum, len(layers))
	for i, l := range layers {
		adds[i] = mutate.Addendum{
			Layer: l,
			History: v1.History{
				Created:   v1.Time{Time: epoch},
				CreatedBy: fmt.Sprintf("imagegen layer %d of %d, %d bytes", i+1, len(layers), l.size),
			},
		}
	}
	img, err := mutate.Append(base, adds...)
	if err != nil {
		return nil, fmt.Errorf("imagegen: spec %+v: append layers: %w", s, err)
	}
	return img, nil
}
