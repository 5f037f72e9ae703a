package imagegen

import (
	"context"
	"fmt"
	"net"
	"slices"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Push writes img to the registry reference ref (for example
// "127.0.0.1:5000/fn/hello:v1") with remote.Write, under ctx.
//
// A registry on a loopback host (127.0.0.0/8, ::1, localhost) is spoken to in
// plain HTTP: test registries and emulated VMs listen there without TLS, and
// go-containerregistry on its own only does so for 127.0.0.1 and localhost.
// opts are passed to remote.Write: remote.WithProgress to follow the upload,
// remote.WithAuth or remote.WithTransport for anything else; ctx overrides any
// remote.WithContext among them.
func Push(ctx context.Context, img v1.Image, ref string, opts ...remote.Option) error {
	r, err := name.ParseReference(ref)
	if err != nil {
		return fmt.Errorf("imagegen: push %q: %w", ref, err)
	}
	if isLoopback(r.Context().RegistryStr()) {
		if r, err = name.ParseReference(ref, name.Insecure); err != nil {
			return fmt.Errorf("imagegen: push %q: %w", ref, err)
		}
	}
	opts = append(slices.Clip(opts), remote.WithContext(ctx))
	if err := remote.Write(r, img, opts...); err != nil {
		return fmt.Errorf("imagegen: push %s: %w", ref, err)
	}
	return nil
}

// isLoopback reports whether a registry host[:port] names this machine.
func isLoopback(registry string) bool {
	host := registry
	if h, _, err := net.SplitHostPort(registry); err == nil {
		host = h
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
