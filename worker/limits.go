package worker

import (
	"errors"
	"fmt"

	"github.com/faasnet/faasnet/container"
	"github.com/faasnet/faasnet/lazy"
	"github.com/faasnet/faasnet/runc"
	"github.com/faasnet/faasnet/unpack"
	"github.com/faasnet/faasnet/upstream"
)

// DefaultMaxConfigSize is the default of Limits.MaxConfigSize. An image
// config holds the entrypoint, environment and layer history: kilobytes.
const DefaultMaxConfigSize = 8 << 20

// Limits bound what one function's image may cost the worker: the sizes it
// reads into memory whole, and the disk it unpacks to. The registry and the
// parent are outside input, so these are checked against what a manifest
// claims before anything of that size is fetched or allocated. A function
// over a limit fails, with the limit and the flag that raises it in its
// status; other functions are not affected. Zero fields take the defaults.
type Limits struct {
	MaxManifestSize int64 // default and ceiling upstream.MaxManifestSize (4 MiB)
	MaxConfigSize   int64 // default DefaultMaxConfigSize (8 MiB)
	MaxTOCSize      int64 // an eStargz TOC, compressed and JSON; default lazy.DefaultMaxTOCSize (64 MiB)
	MaxChunkSpan    int64 // compressed bytes of one eStargz chunk; default lazy.DefaultMaxChunkSpan (64 MiB)
	MaxUnpackBytes  int64 // file content of one unpacked image, and its layers read; default unpack.DefaultMaxBytes (16 GiB)
	MaxUnpackFiles  int64 // entries of one unpacked image; default unpack.DefaultMaxFiles (1Mi)
	MaxLogSize      int64 // a container's log, the newest output kept; default runc.DefaultMaxLogSize (8 MiB)
}

func (l Limits) withDefaults() Limits {
	if l.MaxManifestSize <= 0 || l.MaxManifestSize > upstream.MaxManifestSize {
		l.MaxManifestSize = upstream.MaxManifestSize
	}
	if l.MaxConfigSize <= 0 {
		l.MaxConfigSize = DefaultMaxConfigSize
	}
	if l.MaxTOCSize <= 0 {
		l.MaxTOCSize = lazy.DefaultMaxTOCSize
	}
	if l.MaxChunkSpan <= 0 {
		l.MaxChunkSpan = lazy.DefaultMaxChunkSpan
	}
	if l.MaxUnpackBytes <= 0 {
		l.MaxUnpackBytes = unpack.DefaultMaxBytes
	}
	if l.MaxUnpackFiles <= 0 {
		l.MaxUnpackFiles = unpack.DefaultMaxFiles
	}
	if l.MaxLogSize <= 0 {
		l.MaxLogSize = runc.DefaultMaxLogSize
	}
	return l
}

func (l Limits) container() container.Limits {
	return container.Limits{
		Lazy:   lazy.Limits{MaxTOCSize: l.MaxTOCSize, MaxChunkSpan: l.MaxChunkSpan},
		Unpack: unpack.Limits{MaxBytes: l.MaxUnpackBytes, MaxFiles: l.MaxUnpackFiles},
		Log:    l.MaxLogSize,
	}
}

// checkSize refuses a blob of the image whose descriptor claims more than
// max bytes, before it is fetched.
func checkSize(image, what string, size, max int64, flag string) error {
	if size > max {
		return fmt.Errorf("image %s: %s of %d bytes is over the worker's limit of %d (%s)", image, what, size, max, flag)
	}
	return nil
}

// limitError names the image and the flag that raises the limit a
// container's start ran into; other errors pass unchanged.
func limitError(image string, err error) error {
	switch {
	case errors.Is(err, lazy.ErrLimit):
		return fmt.Errorf("image %s: %w (--max-toc-size, --max-chunk-span)", image, err)
	case errors.Is(err, unpack.ErrLimit):
		return fmt.Errorf("image %s: %w (--max-unpack-bytes, --max-unpack-files)", image, err)
	}
	return err
}
