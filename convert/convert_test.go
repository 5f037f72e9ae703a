package convert

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log"
	"maps"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/faasnet/faasnet/internal/testenv"
	"github.com/faasnet/faasnet/lazy"
	"github.com/faasnet/faasnet/upstream"
)

// startRegistry serves an in-process registry on 127.0.0.1 and returns its
// host:port.
func startRegistry(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// sourceImage builds an ordinary (gzip, not eStargz) image of the given
// layers with a config worth keeping.
func sourceImage(t *testing.T, layers [][]tentry, arch string) v1.Image {
	t.Helper()
	img := empty.Image
	for _, l := range layers {
		b := tarOf(t, l)
		layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, layer); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", arch
	cfg.Config.Entrypoint = []string{"/bin/sh", "-c"}
	cfg.Config.Cmd = []string{"echo hello"}
	cfg.Config.Env = []string{"PATH=/bin", "GREETING=hello"}
	cfg.Config.WorkingDir = "/data"
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		t.Fatal(err)
	}
	return img
}

func pushImage(t *testing.T, ref string, img v1.Image) {
	t.Helper()
	if err := remote.Write(parseRef(t, ref), img); err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
}

func pullImage(t *testing.T, ref string) v1.Image {
	t.Helper()
	img, err := remote.Image(parseRef(t, ref))
	if err != nil {
		t.Fatalf("pulling %s: %v", ref, err)
	}
	return img
}

func TestConvert(t *testing.T) {
	host := startRegistry(t)
	src := sourceImage(t, testLayers(), "arm64")
	pushImage(t, host+"/src:v1", src)

	var events []Progress
	res, err := Convert(context.Background(), host+"/src:v1", host+"/dst:v1",
		WithChunkSize(testChunkSize), WithProgress(func(p Progress) { events = append(events, p) }))
	if err != nil {
		t.Fatal(err)
	}
	dst := pullImage(t, host+"/dst:v1")
	checkConverted(t, src, dst)

	srcM, _ := src.Manifest()
	dstM, _ := dst.Manifest()
	var before, after int64
	for i := range srcM.Layers {
		before += srcM.Layers[i].Size
		after += dstM.Layers[i].Size
	}
	if d, _ := dst.Digest(); res.Digest != d || res.Layers != 3 || res.Kept != 0 ||
		res.BytesBefore != before || res.BytesAfter != after || res.MediaType != srcM.MediaType {
		t.Errorf("Result %+v; want digest %s, 3 layers, %d bytes before and %d after", res, d, before, after)
	}
	var layerEvents, pushEvents int
	for _, p := range events {
		switch p.Stage {
		case "layer":
			layerEvents++
			if p.Layer != layerEvents || p.Layers != 3 || p.Platform != "linux/arm64" || p.After <= 0 || p.Kept {
				t.Errorf("layer event %+v", p)
			}
		case "push":
			pushEvents++
		}
	}
	if layerEvents != 3 || pushEvents == 0 {
		t.Errorf("%d layer and %d push events, want 3 and some", layerEvents, pushEvents)
	}

	// Converting again keeps every layer as it is.
	res2, err := Convert(context.Background(), host+"/dst:v1", host+"/dst2:v1")
	if err != nil {
		t.Fatal(err)
	}
	if res2.Kept != 3 || res2.Layers != 0 || res2.BytesAfter != res2.BytesBefore || res2.BytesBefore != after {
		t.Errorf("reconverting: %+v; want 3 layers kept, %d bytes", res2, after)
	}
	dst2M, _ := pullImage(t, host+"/dst2:v1").Manifest()
	for i := range dstM.Layers {
		if dst2M.Layers[i].Digest != dstM.Layers[i].Digest {
			t.Errorf("layer %d changed when reconverted", i)
		}
	}
}

// checkConverted checks that dst is src converted: same config but diff
// IDs, each layer eStargz with correct annotations, a valid tar.gz with the
// same entries as the source layer.
func checkConverted(t *testing.T, src, dst v1.Image) {
	t.Helper()
	srcCfg, _ := src.ConfigFile()
	dstCfg, err := dst.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if dstCfg.OS != srcCfg.OS || dstCfg.Architecture != srcCfg.Architecture ||
		!slices.Equal(dstCfg.Config.Entrypoint, srcCfg.Config.Entrypoint) ||
		!slices.Equal(dstCfg.Config.Cmd, srcCfg.Config.Cmd) ||
		!slices.Equal(dstCfg.Config.Env, srcCfg.Config.Env) || dstCfg.Config.WorkingDir != srcCfg.Config.WorkingDir {
		t.Errorf("config not kept:\n got %+v\nwant %+v", dstCfg, srcCfg)
	}
	dstM, _ := dst.Manifest()
	if !lazy.IsLazy(dstM.Layers) {
		t.Errorf("converted manifest not lazy: %+v", dstM.Layers)
	}
	srcLayers, _ := src.Layers()
	dstLayers, _ := dst.Layers()
	if len(dstLayers) != len(srcLayers) || len(dstCfg.RootFS.DiffIDs) != len(dstLayers) {
		t.Fatalf("%d layers, %d diff IDs; want %d", len(dstLayers), len(dstCfg.RootFS.DiffIDs), len(srcLayers))
	}
	for i, dl := range dstLayers {
		desc := dstM.Layers[i]
		compressed := testenv.ReadAll(t, dl.Compressed)
		// A valid tar.gz, read by the standard library alone.
		zr, err := gzip.NewReader(bytes.NewReader(compressed))
		if err != nil {
			t.Fatalf("layer %d: not gzip: %v", i, err)
		}
		tarBytes, err := io.ReadAll(zr)
		if err != nil {
			t.Fatalf("layer %d: gunzip: %v", i, err)
		}
		sum := sha256.Sum256(tarBytes)
		if got := "sha256:" + hex.EncodeToString(sum[:]); got != dstCfg.RootFS.DiffIDs[i].String() {
			t.Errorf("layer %d: diff ID %s, config says %s", i, got, dstCfg.RootFS.DiffIDs[i])
		}
		if n, ok := lazy.UncompressedSize(desc); !ok || n != int64(len(tarBytes)) {
			t.Errorf("layer %d: uncompressed-size annotation %v, tar has %d bytes", i, desc.Annotations, len(tarBytes))
		}
		got := tarContents(t, bytes.NewReader(tarBytes))
		delete(got, estargz.TOCTarName)
		want := tarContents(t, bytes.NewReader(testenv.ReadAll(t, srcLayers[i].Uncompressed)))
		if !maps.Equal(got, want) {
			t.Errorf("layer %d: entries %v, source has %v", i, keys(got), keys(want))
		}
		if _, err := lazy.TOC(context.Background(), lazy.BytesReader(compressed), desc.Size, desc.Annotations[lazy.TOCDigestAnnotation]); err != nil {
			t.Errorf("layer %d: TOC with the annotated digest: %v", i, err)
		}
		if desc.MediaType != types.DockerLayer {
			t.Errorf("layer %d: media type %s, want the source's family %s", i, desc.MediaType, types.DockerLayer)
		}
	}
}

func parseRef(t *testing.T, s string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

func TestConvertIndex(t *testing.T) {
	host := startRegistry(t)
	small := [][]tentry{{{name: "etc/"}, {name: "etc/hostname", body: "box\n"}}}
	amd, arm := sourceImage(t, small, "amd64"), sourceImage(t, small, "arm64")
	attestation := sourceImage(t, [][]tentry{{{name: "x", body: "in-toto"}}}, "unknown")
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
		mutate.IndexAddendum{Add: attestation, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "unknown", Architecture: "unknown"}}},
	)
	if err := remote.WriteIndex(parseRef(t, host+"/multi:v1"), idx); err != nil {
		t.Fatal(err)
	}
	res, err := Convert(context.Background(), host+"/multi:v1", host+"/multi-esgz:v1")
	if err != nil {
		t.Fatal(err)
	}
	if res.Layers != 2 || res.MediaType != types.OCIImageIndex {
		t.Errorf("Result %+v; want 2 layers of an index", res)
	}
	out, err := remote.Index(parseRef(t, host+"/multi-esgz:v1"))
	if err != nil {
		t.Fatal(err)
	}
	im, _ := out.IndexManifest()
	var platforms []string
	for _, d := range im.Manifests {
		platforms = append(platforms, d.Platform.String())
		img, err := out.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		src := amd
		if d.Platform.Architecture == "arm64" {
			src = arm
		}
		checkConverted(t, src, img)
	}
	if !slices.Equal(platforms, []string{"linux/amd64", "linux/arm64"}) {
		t.Errorf("platforms %v, want linux/amd64 and linux/arm64 without the attestation", platforms)
	}
}

// TestConvertAndMount converts the test image in a registry and mounts the
// result with every byte read from the registry, counted.
func TestConvertAndMount(t *testing.T) {
	testenv.NeedRoot(t)
	testenv.NeedTool(t, "fusermount3")
	if _, err := os.Stat("/dev/fuse"); err != nil {
		if testenv.InCI() {
			t.Fatalf("no /dev/fuse: %v", err)
		}
		t.Skipf("no /dev/fuse (%v); skipping", err)
	}
	host := startRegistry(t)
	pushImage(t, host+"/src:v1", sourceImage(t, testLayers(), "amd64"))
	if _, err := Convert(context.Background(), host+"/src:v1", host+"/dst:v1", WithChunkSize(testChunkSize)); err != nil {
		t.Fatal(err)
	}
	reg := upstream.New()
	im, err := reg.Resolve(context.Background(), host+"/dst:v1")
	if err != nil {
		t.Fatal(err)
	}
	var layers []lazy.Layer
	var total int64
	for _, d := range im.Manifest.Layers {
		l, err := lazy.LayerFromDescriptor(d, lazy.NewRegistryBlob(reg, im.Repository, d.Digest.String()))
		if err != nil {
			t.Fatal(err)
		}
		layers = append(layers, l)
		total += d.Size
	}
	fsys, err := lazy.Mount(context.Background(), t.TempDir(), layers, lazy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := fsys.Close(); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	mounted := fsys.Stats().BlobBytesRead
	if b, err := os.ReadFile(filepath.Join(fsys.Mountpoint(), "etc/passwd")); err != nil || string(b) != "root:x:0:0:changed\n" {
		t.Fatalf("etc/passwd: %q, %v", b, err)
	}
	read := fsys.Stats().BlobBytesRead - mounted
	if read <= 0 || read > testChunkSize {
		t.Errorf("reading a small file read %d bytes from the registry, want at most one chunk (%d)", read, testChunkSize)
	}
	if all := fsys.Stats().BlobBytesRead; all > total/4 {
		t.Errorf("mounting and reading one file read %d of the image's %d bytes", all, total)
	}
	// Every file of the merged image, read whole.
	for _, l := range testLayers() {
		for _, e := range l {
			if strings.HasSuffix(e.name, "/") || e.link != "" || e.name == "etc/passwd" {
				continue
			}
			if b, err := os.ReadFile(filepath.Join(fsys.Mountpoint(), e.name)); err != nil || string(b) != e.body {
				t.Errorf("%s: %d bytes, %v; want its %d bytes", e.name, len(b), err, len(e.body))
			}
		}
	}
	if link, err := os.Readlink(filepath.Join(fsys.Mountpoint(), "data/link")); err != nil || link != "small" {
		t.Errorf("data/link -> %q, %v", link, err)
	}
	if s := fsys.Stats(); s.BlobBytesRead > total {
		t.Errorf("reading everything read %d bytes of a %d-byte image", s.BlobBytesRead, total)
	}
}
