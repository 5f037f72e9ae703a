package pyimage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// A cache entry is a directory CacheDir/KEY holding layer-N.tar.gz, the
// build's log, and manifestFile, which describes the layers and is written
// last: an entry without it is incomplete. Entries appear by renaming a
// finished scratch directory, so a reader never sees half of one.
const manifestFile = "layers.json"

// cacheManifest is the content of manifestFile.
type cacheManifest struct {
	Key    string      `json:"key"`
	Layers []layerInfo `json:"layers"`
}

// layerFile names layer i in a cache entry.
func layerFile(i int) string { return fmt.Sprintf("layer-%d.tar.gz", i) }

// loadCache returns the cached layers under key, or an error saying why
// there are none usable.
func loadCache(cacheDir, key string) ([]*fileLayer, error) {
	dir := filepath.Join(cacheDir, key)
	b, err := os.ReadFile(filepath.Join(dir, manifestFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errors.New("not cached yet")
	}
	if err != nil {
		return nil, err
	}
	return parseCacheManifest(b, key, dir)
}

// parseCacheManifest checks a cache manifest against the files beside it:
// each layer file must exist with the recorded size. The digests are not
// recomputed (that would cost what the cache saves); a registry checks
// them on push.
func parseCacheManifest(b []byte, key, dir string) ([]*fileLayer, error) {
	var m cacheManifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("cache entry %s: %w", dir, err)
	}
	if m.Key != key || len(m.Layers) == 0 {
		return nil, fmt.Errorf("cache entry %s: key %q with %d layers, want key %q", dir, m.Key, len(m.Layers), key)
	}
	var layers []*fileLayer
	for i, info := range m.Layers {
		name := filepath.Join(dir, layerFile(i))
		fi, err := os.Stat(name)
		if err != nil {
			return nil, fmt.Errorf("cache entry %s: %w", dir, err)
		}
		if fi.Size() != info.Size || info.Digest.Algorithm != "sha256" || info.DiffID.Algorithm != "sha256" {
			return nil, fmt.Errorf("cache entry %s: %s has %d bytes, digest %v; recorded %d bytes", dir, name, fi.Size(), info.Digest, info.Size)
		}
		layers = append(layers, &fileLayer{info: info, open: openFile(name)})
	}
	return layers, nil
}

// storeCache turns the scratch directory, holding the layer files of infos,
// into the cache entry key, and returns its layers. If another build
// stored the same key meanwhile, its entry is used.
func storeCache(cacheDir, key, scratch string, infos []layerInfo) ([]*fileLayer, error) {
	b, err := json.MarshalIndent(cacheManifest{Key: key, Layers: infos}, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(scratch, manifestFile), b, 0o644); err != nil {
		return nil, err
	}
	dir := filepath.Join(cacheDir, key)
	if err := os.Rename(scratch, dir); err != nil {
		if layers, lerr := loadCache(cacheDir, key); lerr == nil {
			return layers, nil // a concurrent build won
		}
		// An incomplete entry, left by a crash: replace it.
		if err := os.RemoveAll(dir); err != nil {
			return nil, err
		}
		if err := os.Rename(scratch, dir); err != nil {
			return nil, fmt.Errorf("storing the layers in the cache: %w", err)
		}
	}
	return loadCache(cacheDir, key)
}

// lockPoll paces the wait for another process's build of the same key.
const lockPoll = 500 * time.Millisecond

// lockKey takes an exclusive lock on the cache entry key, so that
// concurrent builds of one image (parallel test packages, a demo and a
// test) run once: the others wait, then find it cached. It polls because a
// blocking flock could not be cancelled; the holder is usually another
// process. onWait is called once if the lock is taken.
func lockKey(ctx context.Context, cacheDir, key string, onWait func()) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(cacheDir, key+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	for waited := false; ; waited = true {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("locking the cache entry %s: %w", key, err)
		}
		if !waited {
			onWait()
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(lockPoll):
		}
	}
}
