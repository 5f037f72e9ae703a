package upstream

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/types"
)

const (
	d1 = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	d2 = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
)

func ociManifest(layers ...string) string {
	return fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":2},
"layers":[%s]}`, d1, strings.Join(layers, ","))
}

func layer(mt, digest string, size int64) string {
	return fmt.Sprintf(`{"mediaType":%q,"digest":%q,"size":%d}`, mt, digest, size)
}

const dockerManifest = `{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
"config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"` + d1 + `","size":7},
"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"` + d2 + `","size":9}]}`

const ociIndex = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",
"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + d1 + `","size":300,
"platform":{"os":"linux","architecture":"amd64"}}]}`

func TestParseManifest(t *testing.T) {
	tests := []struct {
		name, body, ct string
		wantType       types.MediaType
		wantLayers     int
		wantManifests  int
		wantErr        string
	}{
		{name: "oci gzip zstd uncompressed", ct: "application/vnd.oci.image.manifest.v1+json",
			body: ociManifest(layer(string(types.OCILayer), d2, 10), layer(string(types.OCILayerZStd), d2, 0),
				layer(string(types.OCIUncompressedLayer), d2, 1<<40)),
			wantType: types.OCIManifestSchema1, wantLayers: 3},
		{name: "docker", ct: string(types.DockerManifestSchema2), body: dockerManifest,
			wantType: types.DockerManifestSchema2, wantLayers: 1},
		{name: "docker content type with parameters", ct: string(types.DockerManifestSchema2) + "; charset=utf-8",
			body: dockerManifest, wantType: types.DockerManifestSchema2, wantLayers: 1},
		{name: "generic content type defers to body", ct: "application/json", body: dockerManifest,
			wantType: types.DockerManifestSchema2, wantLayers: 1},
		{name: "oci index", ct: string(types.OCIImageIndex), body: ociIndex,
			wantType: types.OCIImageIndex, wantManifests: 1},
		{name: "index shape without media type", body: `{"schemaVersion":2,"manifests":[]}`,
			wantType: types.OCIImageIndex},
		{name: "manifest shape without media type", body: `{"schemaVersion":2,"config":` + layer("a/b", d1, 1) + `}`,
			wantType: types.OCIManifestSchema1},
		{name: "no layers", ct: string(types.OCIManifestSchema1), body: ociManifest(),
			wantType: types.OCIManifestSchema1},
		{name: "sha512 digest", ct: string(types.OCIManifestSchema1),
			body: ociManifest(layer("a/b", "sha512:"+strings.Repeat("a", 128), 1)), wantType: types.OCIManifestSchema1, wantLayers: 1},

		{name: "empty", body: "", wantErr: "not valid JSON"},
		{name: "not json", body: "<html>", wantErr: "not valid JSON"},
		{name: "json array", body: "[]", wantErr: "not valid JSON"},
		{name: "no shape", body: `{"schemaVersion":2}`, wantErr: "neither"},
		{name: "schema1", ct: string(types.DockerManifestSchema1Signed), body: `{"schemaVersion":1}`, wantErr: "schema 1"},
		{name: "schema1 in body", body: `{"schemaVersion":1,"mediaType":"application/vnd.docker.distribution.manifest.v1+json"}`, wantErr: "schema 1"},
		{name: "unknown content type", ct: "application/vnd.example+json", body: dockerManifest, wantErr: "came as"},
		{name: "unknown content type, bare body", ct: "application/vnd.example+json", body: `{"schemaVersion":2,"manifests":[]}`, wantErr: "unsupported"},
		{name: "unknown type in body", body: `{"schemaVersion":2,"mediaType":"application/x-foo"}`, wantErr: "unsupported"},
		{name: "type mismatch", ct: string(types.OCIManifestSchema1), body: dockerManifest, wantErr: "came as"},
		{name: "schema version 3", ct: string(types.OCIImageIndex), body: `{"schemaVersion":3,"manifests":[]}`, wantErr: "schemaVersion"},
		{name: "schema version missing", ct: string(types.OCIImageIndex), body: `{"manifests":[]}`, wantErr: "schemaVersion"},
		{name: "ambiguous manifest", ct: string(types.OCIManifestSchema1),
			body: `{"schemaVersion":2,"config":` + layer("a/b", d1, 1) + `,"manifests":[]}`, wantErr: "must not have manifests"},
		{name: "ambiguous index", ct: string(types.OCIImageIndex),
			body: `{"schemaVersion":2,"manifests":[],"layers":[]}`, wantErr: "must not have config"},
		{name: "index without manifests", ct: string(types.OCIImageIndex), body: `{"schemaVersion":2}`, wantErr: "no manifests"},
		{name: "manifest without config", ct: string(types.OCIManifestSchema1), body: `{"schemaVersion":2,"layers":[]}`, wantErr: "no config"},
		{name: "negative size", ct: string(types.OCIManifestSchema1), body: ociManifest(layer("a/b", d2, -1)), wantErr: "negative size"},
		{name: "missing digest", ct: string(types.OCIManifestSchema1), body: ociManifest(`{"mediaType":"a/b","size":1}`), wantErr: "missing digest"},
		{name: "short digest", ct: string(types.OCIManifestSchema1), body: ociManifest(layer("a/b", "sha256:abc", 1)), wantErr: "hex digits"},
		{name: "upper-case digest", ct: string(types.OCIManifestSchema1),
			body: ociManifest(layer("a/b", "sha256:"+strings.Repeat("A", 64), 1)), wantErr: "non-hex"},
		{name: "unknown algorithm", ct: string(types.OCIManifestSchema1), body: ociManifest(layer("a/b", "md5:00", 1)), wantErr: "unsupported hash"},
		{name: "bad layer media type", ct: string(types.OCIManifestSchema1), body: ociManifest(layer("gzip", d2, 1)), wantErr: "malformed media type"},
		{name: "empty layer media type", ct: string(types.OCIManifestSchema1), body: ociManifest(layer("", d2, 1)), wantErr: "malformed media type"},
		{name: "too many layers", ct: string(types.OCIManifestSchema1),
			body: ociManifest(repeat(layer("a/b", d2, 1), MaxDescriptors+1)...), wantErr: "exceed the limit"},
		{name: "too big", ct: string(types.OCIManifestSchema1),
			body: ociManifest(layer("a/b", d2, 1)) + strings.Repeat(" ", MaxManifestSize), wantErr: "exceeds the limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ParseManifest([]byte(tt.body), tt.ct)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseManifest() error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseManifest(): %v", err)
			}
			if m.MediaType != tt.wantType || len(m.Layers) != tt.wantLayers || len(m.Manifests) != tt.wantManifests {
				t.Errorf("ParseManifest() = %s with %d layers, %d manifests; want %s, %d, %d",
					m.MediaType, len(m.Layers), len(m.Manifests), tt.wantType, tt.wantLayers, tt.wantManifests)
			}
			if m.IsIndex() != tt.wantType.IsIndex() {
				t.Errorf("IsIndex() = %v", m.IsIndex())
			}
		})
	}
}

func repeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

func TestParseManifestKeepsDescriptors(t *testing.T) {
	m, err := ParseManifest([]byte(dockerManifest), "")
	if err != nil {
		t.Fatal(err)
	}
	if m.Config.Digest.String() != d1 || m.Config.Size != 7 || m.Config.MediaType != types.DockerConfigJSON {
		t.Errorf("config = %+v", m.Config)
	}
	if m.Layers[0].Digest.String() != d2 || m.Layers[0].Size != 9 || m.Layers[0].MediaType != types.DockerLayer {
		t.Errorf("layer = %+v", m.Layers[0])
	}
	idx, err := ParseManifest([]byte(ociIndex), "")
	if err != nil {
		t.Fatal(err)
	}
	if p := idx.Manifests[0].Platform; p == nil || p.Architecture != "amd64" {
		t.Errorf("platform = %+v", p)
	}
}

func TestParseDigest(t *testing.T) {
	for _, s := range []string{d1, "sha512:" + strings.Repeat("0", 128)} {
		if _, err := ParseDigest(s); err != nil {
			t.Errorf("ParseDigest(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", "sha256", "sha256:", d1[:70], d1 + "0", "SHA256:" + d1[7:], "md5:" + d1[7:], strings.ToUpper(d1)} {
		if _, err := ParseDigest(s); err == nil {
			t.Errorf("ParseDigest(%q) accepted", s)
		}
	}
}

func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(dockerManifest), string(types.DockerManifestSchema2))
	f.Add([]byte(ociManifest(layer(string(types.OCILayerZStd), d2, 3))), "")
	f.Add([]byte(ociIndex), string(types.OCIImageIndex))
	f.Add([]byte(`{"schemaVersion":2,"manifests":[]}`), "application/json")
	f.Add([]byte(`{"schemaVersion":2,"config":{},"layers":null}`), "text/plain; charset=x")
	f.Add([]byte(`{"schemaVersion":1}`), string(types.DockerManifestSchema1))
	f.Add([]byte("null"), "")
	f.Fuzz(func(t *testing.T, b []byte, ct string) {
		m, err := ParseManifest(b, ct)
		if err != nil {
			return
		}
		if !m.MediaType.IsImage() && !m.MediaType.IsIndex() {
			t.Fatalf("accepted media type %q", m.MediaType)
		}
		if len(m.Layers) > MaxDescriptors || len(m.Manifests) > MaxDescriptors {
			t.Fatalf("accepted %d layers, %d manifests", len(m.Layers), len(m.Manifests))
		}
		if m.IsIndex() && (len(m.Layers) > 0 || m.Config.Digest.Algorithm != "") {
			t.Fatal("index with config or layers")
		}
		all := append(append(m.Layers[:len(m.Layers):len(m.Layers)], m.Manifests...), m.Config)
		if m.IsIndex() {
			all = all[:len(all)-1]
		}
		for _, d := range all {
			if d.Size < 0 || !validMediaType(string(d.MediaType)) {
				t.Fatalf("accepted descriptor %+v", d)
			}
			if _, err := ParseDigest(d.Digest.String()); err != nil {
				t.Fatalf("accepted digest: %v", err)
			}
		}
		// What we accept must survive a round trip through JSON.
		if _, err := json.Marshal(m.Layers); err != nil {
			t.Fatal(err)
		}
	})
}

func BenchmarkParseManifest(b *testing.B) {
	body := []byte(ociManifest(repeat(layer(string(types.OCILayer), d2, 1<<20), 50)...))
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := ParseManifest(body, string(types.OCIManifestSchema1)); err != nil {
			b.Fatal(err)
		}
	}
}
