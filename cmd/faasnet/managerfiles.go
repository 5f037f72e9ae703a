package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/faasnet/faasnet/internal/privfile"
	"github.com/faasnet/faasnet/manager/store"
	"github.com/faasnet/faasnet/pki"
	"github.com/faasnet/faasnet/token"
)

// clusterFiles are the files of --data that belong to the cluster, not to
// one manager: with --etcd they are kept in etcd too, so that a manager
// started with an empty --data (another machine) serves the same CA and
// tokens. The mode is the one each has on disk.
var clusterFiles = map[string]os.FileMode{
	pki.CertFile:    0o644,
	pki.KeyFile:     0o600,
	token.AdminFile: 0o600,
	token.JoinFile:  0o600,
}

// restoreFiles writes the cluster files stored in etcd into dir, before the
// manager reads them; etcd's copy wins over an older one in dir.
func restoreFiles(ctx context.Context, st *store.Etcd, dir string) error {
	files, err := st.Files(ctx)
	if err != nil {
		return err
	}
	for name, mode := range clusterFiles {
		data, ok := files[name]
		if !ok {
			continue
		}
		path := filepath.Join(dir, name)
		if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
			continue
		}
		if err := privfile.Write(path, data, mode); err != nil {
			return fmt.Errorf("writing the cluster's %s from etcd: %w", name, err)
		}
		slog.Info("wrote the cluster file kept in etcd", "file", path)
	}
	return nil
}

// saveFiles stores the cluster files of dir in etcd where they differ from
// its copy: on first start, and after the manager replaced a token.
func saveFiles(ctx context.Context, st *store.Etcd, dir string) error {
	stored, err := st.Files(ctx)
	if err != nil {
		return err
	}
	changed := map[string][]byte{}
	for name := range clusterFiles {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return fmt.Errorf("reading the cluster's %s to keep in etcd: %w", name, err)
		}
		if !bytes.Equal(stored[name], data) {
			changed[name] = data
		}
	}
	if len(changed) == 0 {
		return nil
	}
	return st.PutFiles(ctx, changed)
}
