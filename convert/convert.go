// Package convert converts container images to eStargz, the format that
// package lazy mounts on demand: each layer becomes a valid tar.gz whose
// files are cut into separately compressed chunks, with a table of contents
// (TOC) whose digest is recorded in the layer's annotations.
package convert

import (
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/containerd/stargz-snapshotter/estargz"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/faasnet/faasnet/upstream"
)

const (
	// DefaultChunkSize is the size of the chunks Convert cuts files into:
	// the paper's block size. Smaller chunks read less that is not needed
	// (read amplification), larger ones compress better.
	DefaultChunkSize = 512 << 10
	// DefaultCompressionLevel trades a few percent of size for conversions
	// several times faster than gzip.BestCompression.
	DefaultCompressionLevel = gzip.DefaultCompression

	// convertParallelism is how many pieces estargz.Build compresses at once.
	// It also fixes chunk boundaries, so it is a constant: the same image
	// converts to the same digests on every machine.
	convertParallelism = 4
)

// Progress reports one step of Convert.
type Progress struct {
	// Stage is "layer" when a layer has been converted (or kept), "push"
	// while the result is being pushed.
	Stage string
	// Platform is the image's platform ("linux/amd64"), when known.
	Platform string
	// Layer counts from 1 up to Layers, the number of layers of the image.
	Layer, Layers int
	// Digest is the source layer's digest; Before and After its compressed
	// size before and after conversion.
	Digest        v1.Hash
	Before, After int64
	// Kept is true for a layer that already was eStargz.
	Kept bool
	// Pushed of Total bytes have been pushed so far (stage "push").
	Pushed, Total int64
}

// Result sums up a conversion.
type Result struct {
	// Digest and MediaType are those of the manifest (or index) pushed.
	Digest    v1.Hash
	MediaType types.MediaType
	// BytesBefore and BytesAfter are the compressed sizes of all layers.
	BytesBefore, BytesAfter int64
	// Layers counts the layers converted; Kept those that already were
	// eStargz and were pushed as they were.
	Layers, Kept int
}

type convertOptions struct {
	chunkSize   int
	level       int
	prioritized []string
	progress    func(Progress)
	remote      []remote.Option
	insecure    []string
	tempDir     string
}

// ConvertOption configures Convert.
type ConvertOption func(*convertOptions)

// WithChunkSize sets the chunk size (default DefaultChunkSize).
func WithChunkSize(n int) ConvertOption { return func(o *convertOptions) { o.chunkSize = n } }

// WithCompressionLevel sets the gzip level (default DefaultCompressionLevel).
func WithCompressionLevel(l int) ConvertOption { return func(o *convertOptions) { o.level = l } }

// WithPrioritizedFiles lists files (absolute paths in the image) that a
// container reads at start. Each layer puts those it holds first, followed
// by a prefetch landmark, so that lazy's Index.PrefetchRange covers them.
func WithPrioritizedFiles(files ...string) ConvertOption {
	return func(o *convertOptions) { o.prioritized = files }
}

// WithProgress calls fn at each step. It is called from Convert's goroutine
// and should return quickly.
func WithProgress(fn func(Progress)) ConvertOption {
	return func(o *convertOptions) { o.progress = fn }
}

// WithRemoteOptions adds options to every registry call (for example
// remote.WithAuthFromKeychain or remote.WithTransport).
func WithRemoteOptions(opts ...remote.Option) ConvertOption {
	return func(o *convertOptions) { o.remote = append(o.remote, opts...) }
}

// WithInsecureRegistries lists registries spoken to over plain HTTP;
// loopback registries always are.
func WithInsecureRegistries(hosts ...string) ConvertOption {
	return func(o *convertOptions) { o.insecure = append(o.insecure, hosts...) }
}

// WithTempDir sets where layers are spooled while converting (default
// os.TempDir()); it needs room for about three copies of the largest layer.
func WithTempDir(dir string) ConvertOption { return func(o *convertOptions) { o.tempDir = dir } }

// Convert reads the image src (a tag or digest reference; an index converts
// every platform image in it, leaving out attestations), converts each layer
// to eStargz, and pushes the result to dst. Config (entrypoint, environment,
// platform, history), manifest annotations and media types are kept; only
// the layers and their diff IDs change. Converted layers are valid tar.gz
// with the annotations lazy.TOCDigestAnnotation and
// lazy.UncompressedSizeAnnotation; layers that already carry a TOC digest
// are kept as they are.
func Convert(ctx context.Context, src, dst string, opts ...ConvertOption) (Result, error) {
	o := convertOptions{chunkSize: DefaultChunkSize, level: DefaultCompressionLevel, progress: func(Progress) {}}
	for _, opt := range opts {
		opt(&o)
	}
	reg := upstream.New(upstream.WithInsecureRegistries(o.insecure...))
	srcRef, err := reg.ParseReference(src)
	if err != nil {
		return Result{}, err
	}
	dstRef, err := reg.ParseReference(dst)
	if err != nil {
		return Result{}, err
	}
	ropts := append([]remote.Option{remote.WithContext(ctx)}, o.remote...)
	desc, err := remote.Get(srcRef, ropts...)
	if err != nil {
		return Result{}, fmt.Errorf("convert: reading %s: %w", src, err)
	}
	tmp, err := os.MkdirTemp(o.tempDir, "faasnet-convert-")
	if err != nil {
		return Result{}, fmt.Errorf("convert: converting %s: %w", src, err)
	}
	defer os.RemoveAll(tmp)
	c := &converter{opts: o, tmp: tmp}

	var res Result
	var pushed interface {
		Digest() (v1.Hash, error)
		MediaType() (types.MediaType, error)
	}
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return Result{}, fmt.Errorf("convert: reading index %s: %w", src, err)
		}
		out, err := c.index(ctx, idx)
		if err != nil {
			return Result{}, fmt.Errorf("convert: converting %s: %w", src, err)
		}
		err = c.push(func(po remote.Option) error { return remote.WriteIndex(dstRef, out, append(ropts, po)...) })
		if err != nil {
			return Result{}, fmt.Errorf("convert: pushing %s: %w", dst, err)
		}
		pushed = out
	} else {
		img, err := desc.Image()
		if err != nil {
			return Result{}, fmt.Errorf("convert: reading image %s: %w", src, err)
		}
		out, err := c.image(ctx, img, "")
		if err != nil {
			return Result{}, fmt.Errorf("convert: converting %s: %w", src, err)
		}
		err = c.push(func(po remote.Option) error { return remote.Write(dstRef, out, append(ropts, po)...) })
		if err != nil {
			return Result{}, fmt.Errorf("convert: pushing %s: %w", dst, err)
		}
		pushed = out
	}
	res = c.res
	if res.Digest, err = pushed.Digest(); err != nil {
		return Result{}, err
	}
	if res.MediaType, err = pushed.MediaType(); err != nil {
		return Result{}, err
	}
	return res, nil
}

// converter holds the state of one Convert.
type converter struct {
	opts convertOptions
	tmp  string
	res  Result
}

// push runs write with a progress option and reports its updates.
func (c *converter) push(write func(remote.Option) error) error {
	updates := make(chan v1.Update, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for u := range updates {
			c.opts.progress(Progress{Stage: "push", Pushed: u.Complete, Total: u.Total})
		}
	}()
	err := write(remote.WithProgress(updates))
	<-done // ggcr closes updates when the write ends, whatever happened
	return err
}

// index converts every platform image of idx.
func (c *converter) index(ctx context.Context, idx v1.ImageIndex) (v1.ImageIndex, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	mt := im.MediaType
	if mt == "" {
		mt = types.OCIImageIndex
	}
	out := mutate.IndexMediaType(empty.Index, mt)
	for _, d := range im.Manifests {
		// Nested indexes and attestations (platform unknown/unknown, which
		// refer to the unconverted image anyway) are left out.
		if !d.MediaType.IsImage() || (d.Platform != nil && d.Platform.OS == "unknown") {
			continue
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", d.Digest, err)
		}
		platform := ""
		if d.Platform != nil {
			platform = d.Platform.String()
		}
		conv, err := c.image(ctx, img, platform)
		if err != nil {
			return nil, fmt.Errorf("image %s (%s): %w", d.Digest, platform, err)
		}
		convMT, err := conv.MediaType()
		if err != nil {
			return nil, err
		}
		out = mutate.AppendManifests(out, mutate.IndexAddendum{
			Add:        conv,
			Descriptor: v1.Descriptor{MediaType: convMT, Platform: d.Platform, Annotations: d.Annotations},
		})
	}
	if len(im.Annotations) > 0 {
		out = mutate.Annotations(out, im.Annotations).(v1.ImageIndex)
	}
	return out, nil
}

// image converts the layers of img.
func (c *converter) image(ctx context.Context, img v1.Image, platform string) (v1.Image, error) {
	m, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	if len(layers) != len(m.Layers) {
		return nil, fmt.Errorf("%d layers but %d layer descriptors", len(layers), len(m.Layers))
	}
	if platform == "" {
		platform = (&v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}).String()
	}
	layerType := types.OCILayer
	if m.MediaType == types.DockerManifestSchema2 {
		layerType = types.DockerLayer
	}
	adds := make([]mutate.Addendum, len(layers))
	diffIDs := make([]v1.Hash, len(layers))
	for i, l := range layers {
		d := m.Layers[i]
		p := Progress{Stage: "layer", Platform: platform, Layer: i + 1, Layers: len(layers), Digest: d.Digest, Before: d.Size}
		if d.Annotations[estargz.TOCJSONDigestAnnotation] != "" {
			adds[i] = mutate.Addendum{Layer: l, Annotations: d.Annotations, MediaType: d.MediaType}
			if diffIDs[i], err = l.DiffID(); err != nil {
				return nil, err
			}
			p.After, p.Kept = d.Size, true
			c.res.Kept++
		} else {
			conv, ann, err := c.layer(ctx, l, layerType)
			if err != nil {
				return nil, fmt.Errorf("layer %d (%s): %w", i+1, d.Digest, err)
			}
			adds[i] = mutate.Addendum{Layer: conv, Annotations: ann, MediaType: layerType}
			diffIDs[i], p.After = conv.diffID, conv.size
			c.res.Layers++
		}
		c.res.BytesBefore += p.Before
		c.res.BytesAfter += p.After
		c.opts.progress(p)
	}
	mt := m.MediaType
	if mt == "" {
		mt = types.OCIManifestSchema1
	}
	cfgType := m.Config.MediaType
	if cfgType == "" {
		cfgType = types.OCIConfigJSON
	}
	out, err := mutate.Append(mutate.ConfigMediaType(mutate.MediaType(empty.Image, mt), cfgType), adds...)
	if err != nil {
		return nil, err
	}
	// The original config, but for the diff IDs: the eStargz tar differs
	// from the original one (a TOC and a landmark file are added).
	newCfg := cfg.DeepCopy()
	newCfg.RootFS.DiffIDs = diffIDs
	if out, err = mutate.ConfigFile(out, newCfg); err != nil {
		return nil, err
	}
	if len(m.Annotations) > 0 {
		out = mutate.Annotations(out, m.Annotations).(v1.Image)
	}
	return out, nil
}

// layer converts one layer to eStargz in a file under c.tmp and returns it
// with its annotations.
func (c *converter) layer(ctx context.Context, l v1.Layer, mt types.MediaType) (*fileLayer, map[string]string, error) {
	tarFile, err := os.CreateTemp(c.tmp, "layer-*.tar")
	if err != nil {
		return nil, nil, err
	}
	defer os.Remove(tarFile.Name())
	defer tarFile.Close()
	rc, err := l.Uncompressed()
	if err != nil {
		return nil, nil, fmt.Errorf("reading: %w", err)
	}
	n, err := io.Copy(tarFile, rc)
	rc.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("reading: %w", err)
	}
	missed := []string{}
	blob, err := estargz.Build(io.NewSectionReader(tarFile, 0, n),
		estargz.WithChunkSize(c.opts.chunkSize),
		estargz.WithCompressionLevel(c.opts.level),
		estargz.WithParallelism(convertParallelism),
		estargz.WithPrioritizedFiles(c.opts.prioritized),
		estargz.WithAllowPrioritizeNotFound(&missed), // each layer holds some of them
		estargz.WithContext(ctx),
	)
	if err != nil {
		return nil, nil, fmt.Errorf("building eStargz: %w", err)
	}
	defer blob.Close()
	out, err := os.CreateTemp(c.tmp, "layer-*.tar.gz")
	if err != nil {
		return nil, nil, err
	}
	defer out.Close()
	h := sha256.New()
	size, err := io.Copy(io.MultiWriter(out, h), blob)
	if err != nil {
		return nil, nil, fmt.Errorf("building eStargz: %w", err)
	}
	if err := out.Close(); err != nil {
		return nil, nil, err
	}
	uncompressed, err := blob.UncompressedSize()
	if err != nil {
		return nil, nil, err
	}
	diffID, err := v1.NewHash(blob.DiffID().String())
	if err != nil {
		return nil, nil, err
	}
	fl := &fileLayer{
		path:   out.Name(),
		digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))},
		diffID: diffID,
		size:   size,
		mt:     mt,
	}
	ann := map[string]string{
		estargz.TOCJSONDigestAnnotation:         blob.TOCDigest().String(),
		estargz.StoreUncompressedSizeAnnotation: strconv.FormatInt(uncompressed, 10),
	}
	return fl, ann, nil
}

// fileLayer is a converted layer in a file, with its digests known.
type fileLayer struct {
	path           string
	digest, diffID v1.Hash
	size           int64
	mt             types.MediaType
}

var _ v1.Layer = (*fileLayer)(nil)

func (l *fileLayer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *fileLayer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *fileLayer) Size() (int64, error)                { return l.size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error) { return l.mt, nil }
func (l *fileLayer) Compressed() (io.ReadCloser, error)  { return os.Open(l.path) }
func (l *fileLayer) Uncompressed() (io.ReadCloser, error) {
	f, err := os.Open(l.path)
	if err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return readCloser{zr, f.Close}, nil
}

type readCloser struct {
	io.Reader
	close func() error
}

func (r readCloser) Close() error { return r.close() }
