// Package upstream reads container images from an OCI registry: it resolves
// a reference to the manifest of one platform and reads byte ranges of blobs.
//
// The root VM of a function tree is the only one that talks to the registry;
// everything else in faasnet moves the bytes this package returns, so it
// validates what it reads (manifest grammar, sizes, digests) before anybody
// trusts it. It does not decompress layers.
package upstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

var (
	// ErrNotFound means the registry does not hold the repository, tag,
	// manifest or blob (HTTP 404).
	ErrNotFound = errors.New("not found in registry")
	// ErrUnauthorized means the registry refused our credentials or asked for
	// some (HTTP 401 or 403).
	ErrUnauthorized = errors.New("unauthorized by registry")
	// ErrNoPlatform means an index holds no image for the wanted platform.
	ErrNoPlatform = errors.New("no image for platform")
)

// Registry is a client of OCI registries. It is safe for concurrent use.
//
// It keeps one authenticated transport per repository, so that reading many
// blocks of a blob costs one ping and one token exchange, not one per block.
type Registry struct {
	keychain  authn.Keychain
	base      http.RoundTripper
	platform  v1.Platform
	userAgent string
	insecure  map[string]bool

	mu         sync.Mutex
	transports map[string]http.RoundTripper // by scheme://registry/repo
}

// Option configures a Registry.
type Option func(*Registry)

// WithKeychain sets where credentials come from. The default is
// authn.DefaultKeychain: the docker config in $DOCKER_CONFIG or ~/.docker.
func WithKeychain(kc authn.Keychain) Option {
	return func(r *Registry) { r.keychain = kc }
}

// WithTransport sets the RoundTripper every request goes through, e.g. one
// that limits download bandwidth. The default is remote.DefaultTransport.
func WithTransport(rt http.RoundTripper) Option {
	return func(r *Registry) { r.base = rt }
}

// WithPlatform sets the platform Resolve picks from an index. The default is
// linux on the architecture this program runs on (runtime.GOARCH), because
// containers are Linux images whatever the build host is.
func WithPlatform(p v1.Platform) Option {
	return func(r *Registry) { r.platform = p }
}

// WithUserAgent sets the User-Agent of every request (ggcr appends its own).
func WithUserAgent(ua string) Option {
	return func(r *Registry) { r.userAgent = ua }
}

// WithInsecureRegistries lists registries ("host" or "host:port") spoken to
// over plain HTTP. Loopback registries (127.0.0.0/8, ::1, localhost) always
// are and need not be listed.
func WithInsecureRegistries(hosts ...string) Option {
	return func(r *Registry) {
		for _, h := range hosts {
			r.insecure[h] = true
		}
	}
}

// New returns a Registry configured by opts.
func New(opts ...Option) *Registry {
	r := &Registry{
		keychain:   authn.DefaultKeychain,
		base:       remote.DefaultTransport,
		platform:   v1.Platform{OS: "linux", Architecture: runtime.GOARCH},
		insecure:   map[string]bool{},
		transports: map[string]http.RoundTripper{},
	}
	for _, o := range opts {
		o(r)
	}
	return r
}

// Platform returns the platform Resolve picks from an index.
func (r *Registry) Platform() v1.Platform { return r.platform }

// ParseReference parses an image reference ("host:port/repo:tag",
// "host/repo@sha256:...", "ubuntu"), marking it insecure (plain HTTP) when its
// registry is loopback or listed by WithInsecureRegistries.
func (r *Registry) ParseReference(s string) (name.Reference, error) {
	ref, err := name.ParseReference(s)
	if err != nil {
		return nil, fmt.Errorf("upstream: parsing image reference %q: %w", s, err)
	}
	if !r.isInsecure(ref.Context().RegistryStr()) {
		return ref, nil
	}
	ref, err = name.ParseReference(s, name.Insecure)
	if err != nil {
		return nil, fmt.Errorf("upstream: parsing image reference %q: %w", s, err)
	}
	return ref, nil
}

// Repository parses a repository name ("host:port/library/foo") the way
// ParseReference does.
func (r *Registry) Repository(s string) (name.Repository, error) {
	repo, err := name.NewRepository(s)
	if err != nil {
		return name.Repository{}, fmt.Errorf("upstream: parsing repository %q: %w", s, err)
	}
	return r.normalize(repo)
}

// normalize marks repo insecure when its registry should be spoken to over
// plain HTTP, whoever built the name.
func (r *Registry) normalize(repo name.Repository) (name.Repository, error) {
	if repo.Scheme() == "http" || !r.isInsecure(repo.RegistryStr()) {
		return repo, nil
	}
	out, err := name.NewRepository(repo.Name(), name.Insecure)
	if err != nil {
		return name.Repository{}, fmt.Errorf("upstream: repository %q: %w", repo.Name(), err)
	}
	return out, nil
}

// isInsecure reports whether registry ("host[:port]") is spoken to over HTTP.
func (r *Registry) isInsecure(registry string) bool {
	if r.insecure[registry] {
		return true
	}
	host := registry
	if h, _, err := net.SplitHostPort(registry); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if r.insecure[host] || strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// client returns an http.Client authenticated for pulling from repo.
func (r *Registry) client(ctx context.Context, repo name.Repository) (*http.Client, error) {
	key := repo.Scheme() + "://" + repo.Name()
	r.mu.Lock()
	rt, ok := r.transports[key]
	r.mu.Unlock()
	if !ok {
		var err error
		if rt, err = r.newTransport(ctx, repo); err != nil {
			return nil, err
		}
		r.mu.Lock()
		// Two callers may race to build it; either transport works, keep one.
		if prev, ok := r.transports[key]; ok {
			rt = prev
		} else {
			r.transports[key] = rt
		}
		r.mu.Unlock()
	}
	// The default redirect policy follows a registry that sends blob reads to
	// its storage; ggcr's transports attach credentials to the registry host
	// only, and Go keeps the Range header across the redirect.
	return &http.Client{Transport: rt}, nil
}

// forget drops the cached transport of repo, so that the next request
// authenticates afresh (after a 401, say, when credentials changed).
func (r *Registry) forget(repo name.Repository) {
	r.mu.Lock()
	delete(r.transports, repo.Scheme()+"://"+repo.Name())
	r.mu.Unlock()
}

func (r *Registry) newTransport(ctx context.Context, repo name.Repository) (http.RoundTripper, error) {
	auth, err := authn.Resolve(ctx, r.keychain, repo)
	if err != nil {
		return nil, fmt.Errorf("credentials for %s: %w", repo.Name(), err)
	}
	base := transport.NewUserAgent(r.base, r.userAgent)
	rt, err := transport.NewWithContext(ctx, repo.Registry, auth, base, []string{repo.Scope(transport.PullScope)})
	if err != nil {
		return nil, fmt.Errorf("connecting to registry %s for %s: %w", repo.RegistryStr(), repo.Name(), classify(err))
	}
	return rt, nil
}

// classify adds our sentinel to a ggcr transport error with a telling status.
func classify(err error) error {
	var terr *transport.Error
	if !errors.As(err, &terr) {
		return err
	}
	return statusError(terr.StatusCode, err)
}

// statusError wraps err, the registry's answer with HTTP status code, with
// the status (ggcr's message omits it when the body is structured) and with
// the sentinel the status stands for.
func statusError(code int, err error) error {
	switch code {
	case http.StatusNotFound:
		return fmt.Errorf("%w (%d): %w", ErrNotFound, code, err)
	case http.StatusUnauthorized, http.StatusForbidden:
		return fmt.Errorf("%w (%d): %w", ErrUnauthorized, code, err)
	}
	return fmt.Errorf("registry answered %d %s: %w", code, http.StatusText(code), err)
}

// checkResponse returns nil if resp has one of the wanted status codes, and
// otherwise an error carrying the registry's error body and our sentinel. It
// drops the cached transport on 401/403 so that a retry authenticates anew.
func (r *Registry) checkResponse(repo name.Repository, resp *http.Response, want ...int) error {
	err := transport.CheckError(resp, want...)
	if err == nil {
		return nil
	}
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		r.forget(repo)
	}
	return statusError(resp.StatusCode, err)
}
