package store

import (
	"context"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// etcdFiles is where, under the store's prefix, the cluster's files live:
// P files/NAME -> the file's bytes. They are outside state/, so Load does
// not see them. They hold secrets (the CA key, bootstrap tokens): etcd must
// be reachable only by the managers.
const etcdFiles = "files/"

// Files returns the files stored with PutFiles, by name.
func (s *Etcd) Files(ctx context.Context) (map[string][]byte, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	resp, err := s.cli.Get(s.fast(ctx), s.prefix+etcdFiles, clientv3.WithPrefix())
	if err != nil {
		return nil, s.wrap(fmt.Errorf("store: read files under etcd prefix %q: %w", s.prefix, err))
	}
	files := make(map[string][]byte, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		name, err := url.PathUnescape(strings.TrimPrefix(string(kv.Key), s.prefix+etcdFiles))
		if err != nil || name == "" {
			return nil, fmt.Errorf("store: read files under etcd prefix %q: %w", s.prefix, corrupt(s.prefix, kv.Key, fmt.Errorf("not a file name")))
		}
		files[name] = kv.Value
	}
	return files, nil
}

// PutFiles stores files by name, all or none, fenced like Apply.
func (s *Etcd) PutFiles(ctx context.Context, files map[string][]byte) error {
	if s.closed.Load() {
		return ErrClosed
	}
	var ops []clientv3.Op
	for _, name := range slices.Sorted(maps.Keys(files)) {
		if err := checkName("put file", name); err != nil {
			return err
		}
		ops = append(ops, clientv3.OpPut(s.key(etcdFiles, name), string(files[name])))
	}
	fence, err := s.fence()
	if err != nil {
		return err
	}
	var cmps []clientv3.Cmp
	if fence != nil {
		cmps = append(cmps, fence.cmp)
	}
	resp, err := timed(s, "txn", func() (*clientv3.TxnResponse, error) {
		return s.cli.Txn(s.fast(ctx)).If(cmps...).Then(ops...).Commit()
	})
	if err != nil {
		return s.wrap(fmt.Errorf("store: put files under etcd prefix %q: %w", s.prefix, err))
	}
	if !resp.Succeeded {
		return s.refused(fence)
	}
	return nil
}
