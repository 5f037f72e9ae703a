package upstream

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/faasnet/faasnet/digest"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// acceptManifests is the Accept header of manifest requests: the types
// ParseManifest accepts.
var acceptManifests = strings.Join([]string{
	string(types.OCIManifestSchema1),
	string(types.OCIImageIndex),
	string(types.DockerManifestSchema2),
	string(types.DockerManifestList),
}, ",")

// Image is an image reference resolved to the manifest of one platform.
type Image struct {
	// Ref is the reference as given, by tag or by digest.
	Ref name.Reference
	// Repository is where the image and all its blobs live.
	Repository name.Repository
	// Descriptor describes RawManifest: digest, size, media type (and the
	// platform, when it was picked from an index).
	Descriptor v1.Descriptor
	// RawManifest is the image manifest exactly as the registry served it.
	RawManifest []byte
	// Manifest is RawManifest parsed: config and layer descriptors.
	Manifest Manifest
	// IndexDescriptor and RawIndex are set when Ref named an index; a local
	// endpoint answering a request for the tag must serve the index.
	IndexDescriptor *v1.Descriptor
	RawIndex        []byte
}

// Blobs returns the descriptors of every blob the image consists of: the
// config first, then the layers in order.
func (im Image) Blobs() []v1.Descriptor {
	return append([]v1.Descriptor{im.Manifest.Config}, im.Manifest.Layers...)
}

// Resolve parses image (see ParseReference) and fetches its manifest. If the
// reference names an index, it picks the manifest of r's platform (the first
// entry whose platform satisfies it; a lone entry without a platform also
// does) and keeps the index too.
func (r *Registry) Resolve(ctx context.Context, image string) (Image, error) {
	ref, err := r.ParseReference(image)
	if err != nil {
		return Image{}, err
	}
	repo := ref.Context()
	raw, desc, m, err := r.fetchManifest(ctx, repo, ref.Identifier())
	if err != nil {
		return Image{}, err
	}
	im := Image{Ref: ref, Repository: repo, Descriptor: desc, RawManifest: raw, Manifest: m}
	if !m.IsIndex() {
		return im, nil
	}
	indexDesc := desc
	im.IndexDescriptor, im.RawIndex = &indexDesc, raw
	child, err := pickPlatform(m.Manifests, r.platform)
	if err != nil {
		return Image{}, fmt.Errorf("upstream: %s: %w", ref, err)
	}
	raw, desc, m, err = r.fetchManifest(ctx, repo, child.Digest.String())
	if err != nil {
		return Image{}, err
	}
	if m.IsIndex() || desc.Size != child.Size {
		return Image{}, fmt.Errorf("upstream: %s: index entry %s (%s, %d bytes) resolves to %s of %d bytes",
			ref, child.Digest, child.MediaType, child.Size, m.MediaType, desc.Size)
	}
	desc.Platform = child.Platform
	im.Descriptor, im.RawManifest, im.Manifest = desc, raw, m
	return im, nil
}

// pickPlatform returns the first image entry of an index whose platform
// satisfies want, or the only image entry if there is one without platform.
func pickPlatform(entries []v1.Descriptor, want v1.Platform) (v1.Descriptor, error) {
	var bare []v1.Descriptor
	for _, d := range entries {
		if !d.MediaType.IsImage() {
			continue // nested indexes, attestations and other artifacts
		}
		if d.Platform == nil {
			bare = append(bare, d)
			continue
		}
		if d.Platform.Satisfies(want) {
			return d, nil
		}
	}
	if len(bare) == 1 {
		return bare[0], nil
	}
	var have []string
	for _, d := range entries {
		if d.Platform != nil {
			have = append(have, d.Platform.String())
		}
	}
	return v1.Descriptor{}, fmt.Errorf("%w %s in index (it has %v)", ErrNoPlatform, want, have)
}

// FetchManifest returns the manifest or index of repo with the given digest,
// verified against that digest and validated by ParseManifest, and its media
// type.
func (r *Registry) FetchManifest(ctx context.Context, repo name.Repository, digest string) ([]byte, types.MediaType, error) {
	h, err := ParseDigest(digest)
	if err != nil {
		return nil, "", err
	}
	repo, err = r.normalize(repo)
	if err != nil {
		return nil, "", err
	}
	raw, desc, _, err := r.fetchManifest(ctx, repo, h.String())
	if err != nil {
		return nil, "", err
	}
	return raw, desc.MediaType, nil
}

// fetchManifest GETs the manifest of repo named by reference (a tag or a
// digest), checks its digest and parses it.
func (r *Registry) fetchManifest(ctx context.Context, repo name.Repository, reference string) ([]byte, v1.Descriptor, Manifest, error) {
	what := fmt.Sprintf("manifest %s of repository %s in registry %s", reference, repo.RepositoryStr(), repo.RegistryStr())
	fail := func(err error) ([]byte, v1.Descriptor, Manifest, error) {
		return nil, v1.Descriptor{}, Manifest{}, fmt.Errorf("upstream: %s: %w", what, err)
	}
	resp, err := r.get(ctx, repo, "manifests", reference, http.Header{"Accept": {acceptManifests}})
	if err != nil {
		return fail(err)
	}
	defer resp.Body.Close()
	if err := r.checkResponse(repo, resp, http.StatusOK); err != nil {
		return fail(err)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, MaxManifestSize+1))
	if err != nil {
		return fail(fmt.Errorf("reading body: %w", err))
	}
	digest, err := manifestDigest(raw, reference, resp.Header.Get("Docker-Content-Digest"))
	if err != nil {
		return fail(err)
	}
	m, err := ParseManifest(raw, resp.Header.Get("Content-Type"))
	if err != nil {
		return fail(err)
	}
	desc := v1.Descriptor{MediaType: m.MediaType, Size: int64(len(raw)), Digest: digest}
	return raw, desc, m, nil
}

// manifestDigest returns the digest of raw, checked against reference when
// that is a digest, and against the registry's Docker-Content-Digest header
// when that is a digest of the same algorithm.
func manifestDigest(raw []byte, reference, header string) (v1.Hash, error) {
	if strings.Contains(reference, ":") { // tags have no colon
		want, err := ParseDigest(reference)
		if err != nil {
			return v1.Hash{}, err
		}
		return want, verify(raw, want)
	}
	got := digest.Of(raw)
	if h, err := digest.Parse(header); err == nil && h.Algorithm == got.Algorithm && h != got {
		return v1.Hash{}, fmt.Errorf("registry says Docker-Content-Digest %s but content has digest %s", h, got)
	}
	return got, nil
}

// get sends GET /v2/<repo>/<kind>/<id> with the given headers.
func (r *Registry) get(ctx context.Context, repo name.Repository, kind, id string, h http.Header) (*http.Response, error) {
	c, err := r.client(ctx, repo)
	if err != nil {
		return nil, err
	}
	u := fmt.Sprintf("%s://%s/v2/%s/%s/%s", repo.Scheme(), repo.RegistryStr(), repo.RepositoryStr(), kind, id)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	return c.Do(req)
}
