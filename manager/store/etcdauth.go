package store

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"unicode/utf8"
)

// EtcdClientTLS returns the TLS configuration of a client of etcd from PEM
// files, as etcdctl's --cacert, --cert and --key name them: cacert, the CA
// that signed the members' certificates ("" to use the system's), and a
// client certificate and key for members started with --client-cert-auth
// (both or neither).
func EtcdClientTLS(cacert, cert, key string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if (cert == "") != (key == "") {
		return nil, fmt.Errorf("store: etcd client certificate %q and key %q: give both or neither", cert, key)
	}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("store: etcd client certificate %s, key %s: %w", cert, key, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	if cacert != "" {
		pem, err := os.ReadFile(cacert)
		if err != nil {
			return nil, fmt.Errorf("store: etcd CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("store: etcd CA %s: no PEM certificate in it", cacert)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// maxEtcdUser bounds the user file.
const maxEtcdUser = 4096

// ParseEtcdUser parses the contents of a user file: "name:password" on one
// line, as etcdctl's --user takes it, with an optional line end. Neither
// may be empty; the password may hold ':'.
func ParseEtcdUser(data []byte) (user, password string, err error) {
	if len(data) > maxEtcdUser {
		return "", "", fmt.Errorf("store: etcd user file: %d bytes, more than %d", len(data), maxEtcdUser)
	}
	data = bytes.TrimSuffix(bytes.TrimSuffix(data, []byte("\n")), []byte("\r"))
	if bytes.ContainsAny(data, "\r\n") || !utf8.Valid(data) {
		return "", "", errors.New("store: etcd user file: want one line of UTF-8, name:password")
	}
	u, p, ok := bytes.Cut(data, []byte(":"))
	if !ok || len(u) == 0 || len(p) == 0 {
		return "", "", errors.New("store: etcd user file: want name:password, neither empty")
	}
	return string(u), string(p), nil
}
