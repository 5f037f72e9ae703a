package ociserve

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/faasnet/faasnet/digest"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func hashOf(t *testing.T, s string) v1.Hash {
	t.Helper()
	h, err := digest.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

const (
	sha  = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	sha5 = "sha512:" + "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff" +
		"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
)

func TestParsePath(t *testing.T) {
	tests := []struct {
		path string
		want Request
		err  error
	}{
		{"/v2/", Request{Kind: KindBase}, nil},
		{"/v2", Request{Kind: KindBase}, nil},
		{"/v2/alpine/manifests/latest", Request{KindManifest, "alpine", "latest", v1.Hash{}}, nil},
		{"/v2/library/foo/bar/manifests/v1.2_3-rc", Request{KindManifest, "library/foo/bar", "v1.2_3-rc", v1.Hash{}}, nil},
		{"/v2/library/foo/manifests/" + sha, Request{KindManifest, "library/foo", sha, hashOf(t, sha)}, nil},
		{"/v2/library/foo/blobs/" + sha, Request{KindBlob, "library/foo", sha, hashOf(t, sha)}, nil},
		{"/v2/foo/blobs/" + sha5, Request{KindBlob, "foo", sha5, hashOf(t, sha5)}, nil},
		{"/v2/a/manifests/b/manifests/c", Request{KindManifest, "a/manifests/b", "c", v1.Hash{}}, nil},
		{"/v2/a/blobs/b/manifests/c", Request{KindManifest, "a/blobs/b", "c", v1.Hash{}}, nil},
		{"/v2/a.b/c__d/e---f/g_h/manifests/x", Request{KindManifest, "a.b/c__d/e---f/g_h", "x", v1.Hash{}}, nil},
		{"/v2/foo/manifests/" + strings.Repeat("t", 128), Request{KindManifest, "foo", strings.Repeat("t", 128), v1.Hash{}}, nil},
		{"/v2/" + strings.Repeat("n", 255) + "/manifests/x", Request{KindManifest, strings.Repeat("n", 255), "x", v1.Hash{}}, nil},

		{"/", Request{}, ErrUnknownPath},
		{"", Request{}, ErrUnknownPath},
		{"/v1/foo/manifests/x", Request{}, ErrUnknownPath},
		{"/v2/foo", Request{}, ErrUnknownPath},
		{"/v2/manifests/latest", Request{}, ErrUnknownPath},
		{"/v2/foo/tags/list", Request{}, ErrUnknownPath},
		{"/v2/_catalog", Request{}, ErrUnknownPath},
		{"/v2/foo/blobs/uploads/", Request{}, ErrUnknownPath},
		{"/v2/foo/referrers/" + sha, Request{}, ErrUnknownPath},
		{"/v2/foo/manifests/", Request{}, ErrReferenceInvalid},
		{"/v2//manifests/x", Request{}, ErrNameInvalid},
		{"/v2/Foo/manifests/x", Request{}, ErrNameInvalid},
		{"/v2/foo//bar/manifests/x", Request{}, ErrNameInvalid},
		{"/v2/foo/bar//manifests/x", Request{}, ErrNameInvalid},
		{"/v2/foo./manifests/x", Request{}, ErrNameInvalid},
		{"/v2/-foo/manifests/x", Request{}, ErrNameInvalid},
		{"/v2/foo..bar/manifests/x", Request{}, ErrNameInvalid},
		{"/v2/foo___bar/manifests/x", Request{}, ErrNameInvalid},
		{"/v2/../etc/manifests/x", Request{}, ErrNameInvalid},
		{"/v2/" + strings.Repeat("n", 256) + "/manifests/x", Request{}, ErrNameInvalid},
		{"/v2/foo/manifests/.latest", Request{}, ErrReferenceInvalid},
		{"/v2/foo/manifests/" + strings.Repeat("t", 129), Request{}, ErrReferenceInvalid},
		{"/v2/foo/manifests/a b", Request{}, ErrReferenceInvalid},
		{"/v2/foo/blobs/latest", Request{}, ErrDigestInvalid},
		{"/v2/foo/blobs/sha256:abc", Request{}, ErrDigestInvalid},
		{"/v2/foo/blobs/" + strings.ToUpper(sha), Request{}, ErrDigestInvalid},
		{"/v2/foo/blobs/sha256:" + strings.Repeat("A", 64), Request{}, ErrDigestInvalid},
		{"/v2/foo/manifests/" + sha[:20], Request{}, ErrDigestInvalid},
		{"/v2/foo/blobs/sha512:" + sha[7:], Request{}, ErrDigestInvalid},
		{"/v2/foo/blobs/:abc", Request{}, ErrDigestInvalid},
		{"/v2/foo/blobs/multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8", Request{}, ErrDigestInvalid},
		{"/v2/foo/blobs/sha384:" + strings.Repeat("0", 96), Request{}, ErrDigestInvalid},
		{"/v2/foo/manifests/sha256:" + sha[7:] + ":x", Request{}, ErrDigestInvalid},
	}
	for _, tt := range tests {
		got, err := ParsePath(tt.path)
		if !errors.Is(err, tt.err) || (tt.err != nil) != (err != nil) {
			t.Errorf("ParsePath(%q) error = %v, want %v", tt.path, err, tt.err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParsePath(%q) = %+v, want %+v", tt.path, got, tt.want)
		}
	}
}

// FuzzParse checks ParsePath's invariants: what it accepts is one of the
// three request shapes with a valid name and reference, and re-parses
// from its canonical path to the same request.
func FuzzParse(f *testing.F) {
	for _, p := range []string{"/v2/", "/v2/library/foo/manifests/latest", "/v2/a/b/blobs/" + sha,
		"/v2/a/manifests/b/manifests/" + sha5, "/v2/a__b/blobs/x", "/v2//", "/v2/a/manifests/", "/v3"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, path string) {
		req, err := ParsePath(path)
		if err != nil {
			if req != (Request{}) {
				t.Fatalf("ParsePath(%q) returned %+v with error %v", path, req, err)
			}
			return
		}
		var canon string
		switch req.Kind {
		case KindBase:
			if req.Name != "" || req.Reference != "" {
				t.Fatalf("base request with content: %+v", req)
			}
			return
		case KindManifest:
			canon = "/v2/" + req.Name + "/manifests/" + req.Reference
		case KindBlob:
			canon = "/v2/" + req.Name + "/blobs/" + req.Reference
			if !req.IsDigest() {
				t.Fatalf("blob by tag: %+v", req)
			}
		default:
			t.Fatalf("unknown kind %v", req.Kind)
		}
		if canon != path {
			t.Fatalf("ParsePath(%q) = %+v, which is %q", path, req, canon)
		}
		if strings.ContainsAny(req.Name, "A:@ ") || strings.Contains(req.Reference, "/") {
			t.Fatalf("invalid parts accepted: %+v", req)
		}
		if req.IsDigest() != strings.Contains(req.Reference, ":") || req.IsDigest() && req.Digest.String() != req.Reference {
			t.Fatalf("digest %v of %+v", req.Digest, req)
		}
		if again, err := ParsePath(canon); err != nil || again != req {
			t.Fatalf("re-parsing %q: %+v, %v", canon, again, err)
		}
	})
}

func BenchmarkParsePath(b *testing.B) {
	for b.Loop() {
		if _, err := ParsePath("/v2/library/foo/bar/blobs/" + sha); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzValidNS checks that an ns the handler passes on to Content is a
// host[:port] and nothing more: no path, query, user or second host.
func FuzzValidNS(f *testing.F) {
	for _, ns := range []string{"", "registry.example.com:5000", "[::1]:5000", "a/b", "host?x=y", "user@host", "h:1:2", "[::1]x"} {
		f.Add(ns)
	}
	f.Fuzz(func(t *testing.T, ns string) {
		if !validNS(ns) || ns == "" {
			return
		}
		u, err := url.Parse("https://" + ns + "/v2/")
		if err != nil || u.Host != ns || u.User != nil || u.Path != "/v2/" || u.RawQuery != "" || len(ns) > 255 {
			t.Fatalf("validNS accepted %q: %+v, %v", ns, u, err)
		}
	})
}
