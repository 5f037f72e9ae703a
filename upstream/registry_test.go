package upstream

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// checkImage compares a resolved Image with the image that was pushed.
func checkImage(t *testing.T, got Image, want v1.Image) {
	t.Helper()
	raw, err := want.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	mt, err := want.MediaType()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.RawManifest, raw) {
		t.Errorf("RawManifest differs from the pushed manifest")
	}
	if d := mustDigest(t, want); got.Descriptor.Digest != d || got.Descriptor.MediaType != mt || got.Descriptor.Size != int64(len(raw)) {
		t.Errorf("Descriptor = %+v, want digest %s, type %s, size %d", got.Descriptor, d, mt, len(raw))
	}
	m, err := want.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if got.Manifest.Config.Digest != m.Config.Digest || len(got.Manifest.Layers) != len(m.Layers) {
		t.Fatalf("Manifest = %+v, want config %s and %d layers", got.Manifest, m.Config.Digest, len(m.Layers))
	}
	for i, l := range m.Layers {
		g := got.Manifest.Layers[i]
		if g.Digest != l.Digest || g.Size != l.Size || g.MediaType != l.MediaType {
			t.Errorf("layer %d = %+v, want %+v", i, g, l)
		}
	}
	if blobs := got.Blobs(); len(blobs) != len(m.Layers)+1 || blobs[0].Digest != m.Config.Digest {
		t.Errorf("Blobs() = %v", blobs)
	}
}

func TestResolve(t *testing.T) {
	_, host := newRegistry(t)
	docker, oci := dockerImage(t, 1, 3), ociImage(t, 2)
	amd, arm := dockerImage(t, 3, 2), ociImage(t, 4)
	idx := twoPlatforms(t, amd, arm)
	push(t, host+"/docker/img:v1", docker)
	push(t, host+"/oci/nested/path:v1", oci)
	pushIndex(t, host+"/multi:latest", idx)
	idxRaw, err := idx.RawManifest()
	if err != nil {
		t.Fatal(err)
	}

	amd64 := v1.Platform{OS: "linux", Architecture: "amd64"}
	tests := []struct {
		name     string
		ref      string
		platform v1.Platform
		want     v1.Image
		index    bool
	}{
		{"docker by tag", host + "/docker/img:v1", amd64, docker, false},
		{"docker by digest", host + "/docker/img@" + mustDigest(t, docker).String(), amd64, docker, false},
		{"oci nested repository", host + "/oci/nested/path:v1", amd64, oci, false},
		{"index amd64", host + "/multi:latest", amd64, amd, true},
		{"index arm64 any variant", host + "/multi:latest", v1.Platform{OS: "linux", Architecture: "arm64"}, arm, true},
		{"index arm64 v8", host + "/multi:latest", v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}, arm, true},
		{"index by digest", host + "/multi@" + mustDigest(t, idx).String(), amd64, amd, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := New(anonymous, WithPlatform(tt.platform))
			got, err := r.Resolve(t.Context(), tt.ref)
			if err != nil {
				t.Fatalf("Resolve(%q): %v", tt.ref, err)
			}
			checkImage(t, got, tt.want)
			if got.Repository.Scheme() != "http" || got.Ref.String() != tt.ref {
				t.Errorf("Repository %s (%s), Ref %s", got.Repository, got.Repository.Scheme(), got.Ref)
			}
			if !tt.index {
				if got.IndexDescriptor != nil || got.RawIndex != nil {
					t.Errorf("index set for an image")
				}
				return
			}
			if got.IndexDescriptor == nil || got.IndexDescriptor.Digest != mustDigest(t, idx) ||
				got.IndexDescriptor.MediaType != types.OCIImageIndex || !bytes.Equal(got.RawIndex, idxRaw) {
				t.Errorf("index = %+v", got.IndexDescriptor)
			}
			if p := got.Descriptor.Platform; p == nil || !p.Satisfies(tt.platform) {
				t.Errorf("platform = %v, want %v", p, tt.platform)
			}
		})
	}
}

func TestResolveErrors(t *testing.T) {
	_, host := newRegistry(t)
	amd, arm := dockerImage(t, 5, 1), dockerImage(t, 6, 1)
	push(t, host+"/present:v1", amd)
	pushIndex(t, host+"/multi:v1", twoPlatforms(t, amd, arm))
	tests := []struct {
		name     string
		ref      string
		platform v1.Platform
		sentinel error
		contains string
	}{
		{"unknown tag", host + "/present:v2", v1.Platform{}, ErrNotFound, "v2"},
		{"unknown repository", host + "/absent:v1", v1.Platform{}, ErrNotFound, "absent"},
		{"unknown digest", host + "/present@" + d1, v1.Platform{}, ErrNotFound, d1},
		{"no platform", host + "/multi:v1", v1.Platform{OS: "linux", Architecture: "s390x"}, ErrNoPlatform, "s390x"},
		{"bad reference", "UPPER/case:v1", v1.Platform{}, nil, "UPPER"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(anonymous, WithPlatform(tt.platform)).Resolve(t.Context(), tt.ref)
			if err == nil {
				t.Fatal("Resolve succeeded")
			}
			if tt.sentinel != nil && !errors.Is(err, tt.sentinel) {
				t.Errorf("error %v is not %v", err, tt.sentinel)
			}
			if !strings.Contains(err.Error(), tt.contains) {
				t.Errorf("error %q does not name %q", err, tt.contains)
			}
		})
	}
}

func TestPickPlatform(t *testing.T) {
	desc := func(mt types.MediaType, p *v1.Platform, b byte) v1.Descriptor {
		return v1.Descriptor{MediaType: mt, Platform: p, Digest: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat(string(b), 64)}}
	}
	amd := &v1.Platform{OS: "linux", Architecture: "amd64"}
	armV7 := &v1.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}
	unknown := &v1.Platform{OS: "unknown", Architecture: "unknown"}
	tests := []struct {
		name    string
		entries []v1.Descriptor
		want    v1.Platform
		pick    byte // 0: error
	}{
		{"first match wins", []v1.Descriptor{desc(types.OCIManifestSchema1, amd, 'a'), desc(types.DockerManifestSchema2, amd, 'b')}, *amd, 'a'},
		{"variant", []v1.Descriptor{desc(types.OCIManifestSchema1, amd, 'a'), desc(types.OCIManifestSchema1, armV7, 'b')}, *armV7, 'b'},
		{"wrong variant", []v1.Descriptor{desc(types.OCIManifestSchema1, armV7, 'b')}, v1.Platform{OS: "linux", Architecture: "arm", Variant: "v6"}, 0},
		{"attestation skipped", []v1.Descriptor{desc(types.OCIManifestSchema1, unknown, 'a'), desc(types.OCIManifestSchema1, amd, 'b')}, *amd, 'b'},
		{"nested index skipped", []v1.Descriptor{desc(types.OCIImageIndex, amd, 'a'), desc(types.OCIManifestSchema1, amd, 'b')}, *amd, 'b'},
		{"lone bare entry", []v1.Descriptor{desc(types.OCIManifestSchema1, nil, 'c')}, *amd, 'c'},
		{"two bare entries", []v1.Descriptor{desc(types.OCIManifestSchema1, nil, 'c'), desc(types.OCIManifestSchema1, nil, 'd')}, *amd, 0},
		{"empty index", nil, *amd, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := pickPlatform(tt.entries, tt.want)
			if tt.pick == 0 {
				if !errors.Is(err, ErrNoPlatform) {
					t.Fatalf("pickPlatform() = %v, %v; want ErrNoPlatform", got.Digest, err)
				}
				return
			}
			if err != nil || got.Digest.Hex[0] != tt.pick {
				t.Fatalf("pickPlatform() = %v, %v; want entry %c", got.Digest, err, tt.pick)
			}
		})
	}
}

func TestFetchManifest(t *testing.T) {
	_, host := newRegistry(t)
	amd, arm := dockerImage(t, 7, 1), ociImage(t, 8)
	idx := twoPlatforms(t, amd, arm)
	pushIndex(t, host+"/multi:v1", idx)
	r := New(anonymous)
	repo, err := r.Repository(host + "/multi")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []interface {
		RawManifest() ([]byte, error)
		MediaType() (types.MediaType, error)
		Digest() (v1.Hash, error)
	}{amd, arm, idx} {
		raw, _ := want.RawManifest()
		mt, _ := want.MediaType()
		got, gotType, err := r.FetchManifest(t.Context(), repo, mustDigest(t, want).String())
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, raw) || gotType != mt {
			t.Errorf("FetchManifest(%s) = %s, different bytes; want %s", mustDigest(t, want), gotType, mt)
		}
	}
	if _, _, err := r.FetchManifest(t.Context(), repo, d1); !errors.Is(err, ErrNotFound) {
		t.Errorf("FetchManifest(unknown) error = %v, want ErrNotFound", err)
	}
	if _, _, err := r.FetchManifest(t.Context(), repo, "v1"); err == nil {
		t.Errorf("FetchManifest(tag) succeeded; it takes digests only")
	}
}

// TestFetchManifestVerifies serves a manifest under a digest it does not
// have, and a tag whose Docker-Content-Digest lies.
func TestFetchManifestVerifies(t *testing.T) {
	body := []byte(dockerManifest)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v2/" {
			w.Header().Set("Content-Type", string(types.DockerManifestSchema2))
			w.Header().Set("Docker-Content-Digest", d2)
		}
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	r := New(anonymous)
	repo, err := r.Repository(strings.TrimPrefix(srv.URL, "http://") + "/liar")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.FetchManifest(t.Context(), repo, d1); err == nil || !strings.Contains(err.Error(), "want "+d1) {
		t.Errorf("FetchManifest of a wrong digest: error = %v", err)
	}
	if _, err := r.Resolve(t.Context(), repo.Tag("v1").String()); err == nil || !strings.Contains(err.Error(), "Docker-Content-Digest") {
		t.Errorf("Resolve with a lying header: error = %v", err)
	}
}

// TestAuth puts the registry behind basic auth and gives the credentials in
// a docker config file, found through $DOCKER_CONFIG by the default keychain.
func TestAuth(t *testing.T) {
	h, pushHost := newRegistry(t)
	img := dockerImage(t, 9, 2)
	push(t, pushHost+"/private:v1", img)
	const user, pass = "faas", "s3cret"
	var denied atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != user || p != pass {
			denied.Add(1)
			w.Header().Set("WWW-Authenticate", `Basic realm="faasnet-test"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"who are you"}]}`, http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	ref := host + "/private:v1"

	writeConfig := func(t *testing.T, secret string) {
		dir := t.TempDir()
		cfg := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host, base64.StdEncoding.EncodeToString([]byte(user+":"+secret)))
		if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Setenv("HOME", t.TempDir()) // a ~/.docker/config.json would win over $DOCKER_CONFIG
		t.Setenv("DOCKER_CONFIG", dir)
	}

	t.Run("right credentials", func(t *testing.T) {
		writeConfig(t, pass)
		r := New()
		im, err := r.Resolve(t.Context(), ref)
		if err != nil {
			t.Fatalf("Resolve: %v", err)
		}
		checkImage(t, im, img)
		l := im.Manifest.Layers[1]
		rc, err := r.OpenBlob(t.Context(), im.Repository, l.Digest.String(), 10, 100)
		if err != nil {
			t.Fatalf("OpenBlob: %v", err)
		}
		defer rc.Close()
		got := readAll(t, rc)
		layers, _ := img.Layers()
		if want := layerBytes(t, layers[1])[10:110]; !bytes.Equal(got, want) {
			t.Errorf("range read through auth differs")
		}
	})
	t.Run("wrong credentials", func(t *testing.T) {
		writeConfig(t, "guess")
		_, err := New().Resolve(t.Context(), ref)
		if !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("Resolve error = %v, want ErrUnauthorized", err)
		}
	})
	t.Run("no credentials", func(t *testing.T) {
		_, err := New(anonymous).Resolve(t.Context(), ref)
		if !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("Resolve error = %v, want ErrUnauthorized", err)
		}
	})
	if denied.Load() == 0 {
		t.Error("the registry never asked for credentials")
	}
}

func TestInsecure(t *testing.T) {
	r := New(WithInsecureRegistries("reg.internal", "other.internal:5000"))
	tests := []struct {
		registry string
		want     bool
	}{
		{"127.0.0.1:5000", true},
		{"127.0.0.2:80", true},
		{"127.255.0.9", true},
		{"localhost", true},
		{"localhost:5000", true},
		{"[::1]:5000", true},
		{"::1", true},
		{"reg.internal", true},
		{"reg.internal:443", true},
		{"other.internal:5000", true},
		{"other.internal:5001", false},
		{"other.internal", false},
		{"index.docker.io", false},
		{"128.0.0.1:5000", false},
		{"localhost.example.com", false},
	}
	for _, tt := range tests {
		if got := r.isInsecure(tt.registry); got != tt.want {
			t.Errorf("isInsecure(%q) = %v, want %v", tt.registry, got, tt.want)
		}
	}
	for ref, scheme := range map[string]string{
		"127.0.0.3:5000/fn/app:v1":    "http",
		"reg.internal/fn/app@" + d1:   "http",
		"registry.example.com/fn/app": "https",
		"ubuntu":                      "https",
	} {
		got, err := r.ParseReference(ref)
		if err != nil {
			t.Fatalf("ParseReference(%q): %v", ref, err)
		}
		if got.Context().Scheme() != scheme {
			t.Errorf("ParseReference(%q) scheme %s, want %s", ref, got.Context().Scheme(), scheme)
		}
	}
}

func TestDefaults(t *testing.T) {
	r := New()
	if p := r.Platform(); p.OS != "linux" || p.Architecture == "" {
		t.Errorf("default platform %v", p)
	}
}
