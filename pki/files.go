package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"

	"github.com/faasnet/faasnet/internal/privfile"
)

// WriteKey writes key as a PKCS#8 PEM file readable by its owner only.
func WriteKey(path string, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode key for %s: %w", path, err)
	}
	return privfile.WritePrivate(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// ReadKey reads a PKCS#8 PEM key written by WriteKey. It refuses a file its
// group or others may access.
func ReadKey(path string) (crypto.Signer, error) {
	b, err := privfile.Read(path)
	if err != nil {
		return nil, err
	}
	der, err := onePEM(b, "PRIVATE KEY")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("%s: parse key: %w", path, err)
	}
	switch k := k.(type) {
	case *ecdsa.PrivateKey:
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	default:
		return nil, fmt.Errorf("%s: key type %T is not supported (want ECDSA or Ed25519)", path, k)
	}
}

// WriteFileAtomic writes data to path with mode perm, whole or not at all.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	return privfile.Write(path, data, perm)
}

// LoadKeyPair reads a certificate (one PEM block) and its key (written by
// WriteKey, private to its owner) and checks that they match.
func LoadKeyPair(certPath, keyPath string) (tls.Certificate, error) {
	key, err := ReadKey(keyPath)
	if err != nil {
		return tls.Certificate{}, err
	}
	b, err := os.ReadFile(certPath)
	if err != nil {
		return tls.Certificate{}, err
	}
	cert, err := ParseCert(b)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%s: %w", certPath, err)
	}
	if !publicEqual(cert.PublicKey, key.Public()) {
		return tls.Certificate{}, fmt.Errorf("key %s does not match certificate %s", keyPath, certPath)
	}
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}, nil
}

// VMFiles returns where a VM's key and certificate live in dir: NAME.key
// and NAME.crt, the layout faasnet vm enroll --out DIR writes.
func VMFiles(dir, vm string) (keyPath, certPath string) {
	return filepath.Join(dir, vm+".key"), filepath.Join(dir, vm+".crt")
}
