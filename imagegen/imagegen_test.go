package imagegen

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/faasnet/faasnet/internal/testenv"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func mustImage(t testing.TB, s Spec) v1.Image {
	t.Helper()
	img, err := Image(s)
	if err != nil {
		t.Fatalf("Image(%+v): %v", s, err)
	}
	return img
}

func TestLayerSizes(t *testing.T) {
	for _, tc := range []struct {
		spec Spec
		want []int64
	}{
		{Spec{TotalSize: 100, Layers: 1}, []int64{100}},
		{Spec{TotalSize: 100, Layers: 2}, []int64{50, 50}},
		{Spec{TotalSize: 100_000_000, Layers: 5}, []int64{50_000_000, 20_000_000, 15_000_000, 10_000_000, 5_000_000}},
		{Spec{TotalSize: 0, Layers: 3}, []int64{0, 0, 0}},
		{Spec{TotalSize: 7, Layers: 3}, []int64{4, 2, 1}},
	} {
		got, err := LayerSizes(tc.spec)
		if err != nil {
			t.Fatalf("LayerSizes(%+v): %v", tc.spec, err)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("LayerSizes(%+v) = %v, want %v", tc.spec, got, tc.want)
		}
	}
}

// TestLayerSizesProperties checks, over seeded random specs, that the split
// adds up exactly, that the base layer is the biggest and that upper layers
// shrink towards the top.
func TestLayerSizesProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		s := Spec{TotalSize: rng.Int64N(1 << 40), Layers: 1 + rng.IntN(MaxLayers)}
		sizes, err := LayerSizes(s)
		if err != nil {
			t.Fatalf("LayerSizes(%+v): %v", s, err)
		}
		var total int64
		for i, sz := range sizes {
			total += sz
			if i >= 2 && sz > sizes[i-1] {
				t.Fatalf("LayerSizes(%+v): layer %d (%d) bigger than layer %d (%d)", s, i, sz, i-1, sizes[i-1])
			}
			if sz > sizes[0] {
				t.Fatalf("LayerSizes(%+v): layer %d (%d) bigger than the base (%d)", s, i, sz, sizes[0])
			}
		}
		if total != s.TotalSize || len(sizes) != s.Layers {
			t.Fatalf("LayerSizes(%+v): %d layers totalling %d", s, len(sizes), total)
		}
	}
}

func TestInvalidSpec(t *testing.T) {
	for _, s := range []Spec{
		{TotalSize: 1 << 20, Layers: 0},
		{TotalSize: 1 << 20, Layers: -1},
		{TotalSize: 1 << 20, Layers: MaxLayers + 1},
		{TotalSize: -1, Layers: 1},
	} {
		if _, err := Image(s); err == nil {
			t.Errorf("Image(%+v) succeeded, want an error", s)
		}
	}
}

// TestValid reads every layer compressed and uncompressed and checks digests,
// diff IDs, sizes and the config against the manifest.
func TestValid(t *testing.T) {
	for _, s := range []Spec{
		{TotalSize: 0, Layers: 1},
		{TotalSize: 1000, Layers: 3, Seed: 1},
		{TotalSize: 3 << 20, Layers: 4, Seed: 2},
		{TotalSize: 300 << 10, Layers: MaxLayers, Seed: 3},
	} {
		if err := check(mustImage(t, s)); err != nil {
			t.Errorf("Image(%+v): %v", s, err)
		}
	}
}

// TestGolden pins one image's digest: "the same Spec gives the same digest"
// must hold across runs, machines and Go releases, and a change to the
// generator that breaks it should be a conscious one.
func TestGolden(t *testing.T) {
	const want = "sha256:cd8e7af7f51b17667eff1afaff9018931c848ee63b3408635018d034ebd5ce96"
	d, err := mustImage(t, Spec{TotalSize: 1 << 20, Layers: 3, Seed: 42}).Digest()
	if err != nil {
		t.Fatal(err)
	}
	if d.String() != want {
		t.Errorf("digest = %s, want %s", d, want)
	}
}

func TestDeterministic(t *testing.T) {
	s := Spec{TotalSize: 2 << 20, Layers: 3, Seed: 7}
	a, b := mustImage(t, s), mustImage(t, s)
	for _, get := range []func(v1.Image) ([]byte, error){
		v1.Image.RawManifest, v1.Image.RawConfigFile,
	} {
		x, err := get(a)
		if err != nil {
			t.Fatal(err)
		}
		y, err := get(b)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(x, y) {
			t.Errorf("two images of %+v differ:\n%s\n%s", s, x, y)
		}
	}
	// Reading a layer twice yields the same bytes (the reader regenerates).
	layers, err := a.Layers()
	if err != nil {
		t.Fatal(err)
	}
	first, second := testenv.ReadAll(t, layers[1].Compressed), testenv.ReadAll(t, layers[1].Compressed)
	if !bytes.Equal(first, second) {
		t.Error("two reads of one layer differ")
	}
}

func TestSeedsDiffer(t *testing.T) {
	seen := map[v1.Hash]int64{}
	for seed := range int64(4) {
		layers, err := mustImage(t, Spec{TotalSize: 64 << 10, Layers: 3, Seed: seed}).Layers()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range layers {
			d, err := l.Digest()
			if err != nil {
				t.Fatal(err)
			}
			if other, ok := seen[d]; ok {
				t.Errorf("seeds %d and %d share layer %s", other, seed, d)
			}
			seen[d] = seed
		}
	}
}

// TestSizeAccuracy checks the documented bound on the total compressed size
// over seeded random specs.
func TestSizeAccuracy(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	maxTotal := int64(32 << 20)
	if testing.Short() {
		maxTotal = 4 << 20
	}
	for range 12 {
		s := Spec{TotalSize: rng.Int64N(maxTotal), Layers: 1 + rng.IntN(8), Seed: rng.Int64()}
		layers, err := mustImage(t, s).Layers()
		if err != nil {
			t.Fatal(err)
		}
		var total int64
		for _, l := range layers {
			sz, err := l.Size()
			if err != nil {
				t.Fatal(err)
			}
			total += sz
		}
		// Tiny layers cannot shrink below their tar and gzip framing.
		slack := s.TotalSize/1000 + int64(s.Layers)*4096
		if d := total - s.TotalSize; d > slack || d < -slack {
			t.Errorf("Image(%+v) totals %d bytes, %d off (allowed %d)", s, total, d, slack)
		}
	}
}

func TestConfigAndMediaTypes(t *testing.T) {
	img := mustImage(t, Spec{TotalSize: 100 << 10, Layers: 2})
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.MediaType != types.OCIManifestSchema1 || m.Config.MediaType != types.OCIConfigJSON {
		t.Errorf("media types: manifest %s, config %s", m.MediaType, m.Config.MediaType)
	}
	for _, l := range m.Layers {
		if l.MediaType != types.OCILayer {
			t.Errorf("layer %s media type %s, want %s", l.Digest, l.MediaType, types.OCILayer)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if got := cf.Platform(); got.OS != "linux" || got.Architecture != "amd64" {
		t.Errorf("platform %s, want linux/amd64", got)
	}
	if !slices.Equal(cf.Config.Entrypoint, []string{Entrypoint}) {
		t.Errorf("entrypoint %q, want [%s]", cf.Config.Entrypoint, Entrypoint)
	}
	if len(cf.History) != 2 || len(cf.RootFS.DiffIDs) != 2 {
		t.Errorf("%d history entries, %d diff IDs, want 2 each", len(cf.History), len(cf.RootFS.DiffIDs))
	}
}

// TestLayerContents reads every layer's tar: a few regular files whose
// sizes add up to the layer, random content, and the entrypoint script only
// in the top layer.
func TestLayerContents(t *testing.T) {
	const n = 3
	layers, err := mustImage(t, Spec{TotalSize: 6 << 20, Layers: n, Seed: 5}).Layers()
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range layers {
		tr := tar.NewReader(bytes.NewReader(testenv.ReadAll(t, l.Uncompressed)))
		files, handler := 0, false
		for {
			hdr, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("layer %d: %v", i, err)
			}
			if !hdr.ModTime.Equal(epoch) {
				t.Errorf("layer %d: %s has mtime %v", i, hdr.Name, hdr.ModTime)
			}
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatalf("layer %d: %s: %v", i, hdr.Name, err)
			}
			switch {
			case hdr.Name == "app/handler":
				handler = true
				if !bytes.HasPrefix(data, []byte("#!/bin/sh\n")) || hdr.Mode != 0o755 {
					t.Errorf("layer %d: handler mode %o content %q", i, hdr.Mode, data)
				}
			case hdr.Typeflag == tar.TypeReg:
				files++
				if len(data) > 1024 && bytes.Count(data, []byte{0}) > len(data)/128 {
					t.Errorf("layer %d: %s does not look random", i, hdr.Name)
				}
			}
		}
		if files < 1 || files > maxDataFiles {
			t.Errorf("layer %d: %d data files, want 1 to %d", i, files, maxDataFiles)
		}
		if handler != (i == n-1) {
			t.Errorf("layer %d: has handler %v", i, handler)
		}
	}
}

func TestSplitFiles(t *testing.T) {
	for _, tc := range []struct {
		content int64
		want    []int64
	}{
		{-5, []int64{0}},
		{0, []int64{0}},
		{1000, []int64{1000}},
		{1 << 20, []int64{1 << 19, 1 << 19}},
		{100 << 20, []int64{50 << 20, 25 << 20, 25 << 19, 25 << 19}},
	} {
		if got := splitFiles(tc.content); !slices.Equal(got, tc.want) {
			t.Errorf("splitFiles(%d) = %v, want %v", tc.content, got, tc.want)
		}
	}
}

func TestIsLoopback(t *testing.T) {
	for _, tc := range []struct {
		registry string
		want     bool
	}{
		{"127.0.0.1:5000", true},
		{"127.0.0.2", true},
		{"127.3.4.5:80", true},
		{"[::1]:5000", true},
		{"localhost:5000", true},
		{"localhost", true},
		{"index.docker.io", false},
		{"10.0.0.1:5000", false},
		{"128.0.0.1:5000", false},
		{"localhost.example.com", false},
	} {
		if got := isLoopback(tc.registry); got != tc.want {
			t.Errorf("isLoopback(%q) = %v, want %v", tc.registry, got, tc.want)
		}
	}
}

// TestPush pushes to an in-process registry on 127.0.0.1 and on 127.0.0.2
// (which go-containerregistry alone would speak HTTPS to) and reads the
// manifest back.
func TestPush(t *testing.T) {
	img := mustImage(t, Spec{TotalSize: 1 << 20, Layers: 3, Seed: 9})
	want, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"127.0.0.1", "127.0.0.2"} {
		t.Run(host, func(t *testing.T) {
			addr := serveRegistry(t, host)
			ref := addr + "/fn/hello:v1"
			var updates int
			progress := make(chan v1.Update, 64)
			done := make(chan struct{})
			go func() {
				defer close(done)
				for range progress {
					updates++
				}
			}()
			err := Push(t.Context(), img, ref, remote.WithProgress(progress))
			<-done // remote.Write closes progress
			if err != nil {
				t.Fatalf("Push(%s): %v", ref, err)
			}
			if updates == 0 {
				t.Error("no progress updates")
			}
			r, err := name.ParseReference(ref, name.Insecure)
			if err != nil {
				t.Fatal(err)
			}
			desc, err := remote.Get(r, remote.WithContext(t.Context()))
			if err != nil {
				t.Fatalf("get %s: %v", ref, err)
			}
			if desc.Digest != want {
				t.Errorf("pushed digest %s, want %s", desc.Digest, want)
			}
		})
	}
}

func TestPushErrors(t *testing.T) {
	img := mustImage(t, Spec{TotalSize: 10 << 10, Layers: 1})
	addr := serveRegistry(t, "127.0.0.1")
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	for _, tc := range []struct {
		ctx  context.Context
		ref  string
		want string
	}{
		{t.Context(), "UPPER/Case::bad", "UPPER/Case::bad"},
		{canceled, addr + "/fn/x:v1", "context canceled"},
	} {
		err := Push(tc.ctx, img, tc.ref)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Push(%q) = %v, want an error containing %q", tc.ref, err, tc.want)
		}
	}
}

// serveRegistry starts go-containerregistry's in-process registry on host.
func serveRegistry(t *testing.T, host string) string {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Skipf("cannot listen on %s: %v", host, err)
	}
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0)))}}
	srv.Start()
	t.Cleanup(srv.Close)
	return ln.Addr().String()
}

// check does what go-containerregistry's validate.Image does, without its
// go-cmp dependency: every blob must hash to what the manifest says.
func check(img v1.Image) error {
	m, err := img.Manifest()
	if err != nil {
		return err
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	if d, n, _ := v1.SHA256(bytes.NewReader(raw)); d != m.Config.Digest || n != m.Config.Size {
		return fmt.Errorf("config hashes to %s (%d bytes), manifest says %s (%d)", d, n, m.Config.Digest, m.Config.Size)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	if len(layers) != len(m.Layers) || len(layers) != len(cf.RootFS.DiffIDs) {
		return fmt.Errorf("%d layers, %d in manifest, %d diff IDs", len(layers), len(m.Layers), len(cf.RootFS.DiffIDs))
	}
	for i, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		compressed, err := io.ReadAll(rc)
		if err != nil {
			return err
		}
		if d, n, _ := v1.SHA256(bytes.NewReader(compressed)); d != m.Layers[i].Digest || n != m.Layers[i].Size {
			return fmt.Errorf("layer %d hashes to %s (%d bytes), manifest says %s (%d)", i, d, n, m.Layers[i].Digest, m.Layers[i].Size)
		}
		zr, err := gzip.NewReader(bytes.NewReader(compressed))
		if err != nil {
			return fmt.Errorf("layer %d: %w", i, err)
		}
		diffID, _, err := v1.SHA256(zr)
		if err != nil {
			return fmt.Errorf("layer %d: gunzip: %w", i, err)
		}
		rc, err = l.Uncompressed()
		if err != nil {
			return err
		}
		uncompressed, _, err := v1.SHA256(rc)
		if err != nil {
			return err
		}
		if diffID != cf.RootFS.DiffIDs[i] || uncompressed != diffID {
			return fmt.Errorf("layer %d: gunzipped %s, uncompressed %s, config says %s", i, diffID, uncompressed, cf.RootFS.DiffIDs[i])
		}
	}
	return nil
}

// BenchmarkImage measures Image: generating every layer once and hashing it
// twice (compressed and uncompressed). MB/s is of compressed image bytes.
func BenchmarkImage(b *testing.B) {
	s := Spec{TotalSize: 64 << 20, Layers: 4, Seed: 1}
	b.SetBytes(s.TotalSize)
	for b.Loop() {
		if _, err := Image(s); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCompressed measures regenerating a layer through Compressed, the
// cost paid by every push or read.
func BenchmarkCompressed(b *testing.B) {
	layers, err := mustImage(b, Spec{TotalSize: 32 << 20, Layers: 1}).Layers()
	if err != nil {
		b.Fatal(err)
	}
	size, err := layers[0].Size()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	for b.Loop() {
		rc, err := layers[0].Compressed()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, rc); err != nil {
			b.Fatal(err)
		}
		rc.Close()
	}
}
