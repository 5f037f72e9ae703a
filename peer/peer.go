// Package peer implements the peer data protocol of a function tree: how a
// VM serves image blobs to its children and how a child fetches them from
// its parent.
//
// The protocol is plain HTTP/1.1 with keep-alive, the same shape as a
// registry's blob API and debuggable with curl:
//
//	GET  /peer/v1/blobs/{digest}        the blob; Range: bytes=a-b, a- or -n
//	HEAD /peer/v1/blobs/{digest}        its size (Content-Length), presence
//	GET  /peer/v1/resolve?image={ref}   the image's manifest Descriptor (JSON)
//
// A blob body is streamed cut-through: the parent answers as soon as it
// knows the blob's size and forwards each block to the child as the block
// arrives, without waiting for the whole blob.
//
// In a cluster the protocol runs over mutual TLS (NewTLSClient, and a TLS
// listener in front of the Server): the child checks that the server is the
// parent VM it was told to dial, and sends its grant (grant.Header) with
// every request; the server's Authorizer decides what the caller may read.
package peer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/faasnet/faasnet/digest"
)

// PathPrefix is where a Server is mounted: every peer URL path starts with
// it.
const PathPrefix = "/peer/v1/"

// ErrNotFound is returned by a Source or Resolver that does not know what
// was asked for; the server answers 404. A *StatusError for a 404 answer
// matches it with errors.Is.
var ErrNotFound = errors.New("peer: blob not found")

// Blob is a blob being received or already complete.
type Blob interface {
	// Size is the blob's length in bytes, known before its content.
	Size() int64
	// Reader returns bytes [off, off+n) as they become available; it blocks
	// until each is present, ctx is done, or the blob fails.
	Reader(ctx context.Context, off, n int64) (io.ReadCloser, error)
}

// Source finds blobs to serve, starting a fetch from upstream if needed
// (the worker's job). The server calls release when it is done with b.
type Source interface {
	Open(ctx context.Context, digest string) (b Blob, release func(), err error)
}

// Resolver maps an image reference to its manifest descriptor, so that a
// child learns the digest from its parent instead of asking the registry.
type Resolver interface {
	Resolve(ctx context.Context, image string) (Descriptor, error)
}

// DemandHeader marks a blob request as an on-demand read (a container is
// blocked on those bytes), as opposed to background streaming. A parent
// fetches demanded ranges ahead of its own background streaming, so a
// demand climbs the tree quickly.
const DemandHeader = "Faasnet-Demand"

type demandKey struct{}

// WithDemand marks requests made with ctx as on-demand reads: the Client
// sends DemandHeader, and the Server passes the mark on to the Source and
// the Blob's Reader through their contexts.
func WithDemand(ctx context.Context) context.Context {
	return context.WithValue(ctx, demandKey{}, true)
}

// IsDemand reports whether ctx carries the on-demand mark.
func IsDemand(ctx context.Context) bool {
	v, _ := ctx.Value(demandKey{}).(bool)
	return v
}

// ErrForbidden is wrapped by an Authorizer's refusal; the server answers 403
// at once. A *StatusError for a 403 answer matches it with errors.Is.
var ErrForbidden = errors.New("peer: forbidden")

// Authorizer decides whether the caller of a request may have what it asks
// for, before the Server opens or resolves anything, so that a refusal is
// never held up by a wait for content. The caller's identity is the
// Authorizer's to find (e.g. in the request's context or TLS state).
type Authorizer interface {
	// AuthorizeBlob is asked before a blob is opened (GET and HEAD).
	AuthorizeBlob(r *http.Request, digest string) error
	// AuthorizeResolve is asked before an image is resolved, and
	// AuthorizeManifest with the answer before it is sent.
	AuthorizeResolve(r *http.Request, image string) error
	AuthorizeManifest(r *http.Request, d Descriptor) error
}

// Auth is what a request to a peer over mutual TLS carries: the VM the
// server must prove to be, and the grant that lets the caller read.
type Auth struct {
	ServerVM string // checked against the server's certificate when dialing
	Grant    string // sent in grant.Header; "" sends none
}

type authKey struct{}

// WithAuth makes requests made with ctx carry a: the Client sends the
// grant, and a TLS Client dials only a server that is a.ServerVM.
func WithAuth(ctx context.Context, a Auth) context.Context {
	return context.WithValue(ctx, authKey{}, a)
}

func authFrom(ctx context.Context) Auth {
	a, _ := ctx.Value(authKey{}).(Auth)
	return a
}

// Descriptor identifies a manifest: what Resolve answers.
type Descriptor struct {
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
	MediaType string `json:"mediaType"`
}

// maxImageRef bounds an image reference in a resolve request; real ones are
// a few hundred bytes at most.
const maxImageRef = 4096

// maxDescriptorJSON bounds a resolve answer; a descriptor is ~200 bytes.
const maxDescriptorJSON = 64 << 10

// validate checks what a child relies on: a digest it can ask for and a
// size it can check.
func (d Descriptor) validate() error {
	if _, err := digest.Parse(d.Digest); err != nil {
		return err
	}
	if d.Size < 0 {
		return fmt.Errorf("negative size %d", d.Size)
	}
	if d.MediaType == "" {
		return errors.New("missing mediaType")
	}
	return nil
}

// decodeDescriptor parses and validates a resolve answer.
func decodeDescriptor(data []byte) (Descriptor, error) {
	var d Descriptor
	if err := json.Unmarshal(data, &d); err != nil {
		return Descriptor{}, fmt.Errorf("malformed descriptor: %w", err)
	}
	if err := d.validate(); err != nil {
		return Descriptor{}, fmt.Errorf("invalid descriptor: %w", err)
	}
	return d, nil
}
