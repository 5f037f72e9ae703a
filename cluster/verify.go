package cluster

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
)

// verifyOCI reads im back through h, a VM's OCI read endpoint, in process,
// and checks the manifest and every blob against their digests and sizes.
func verifyOCI(ctx context.Context, h http.Handler, im Image) error {
	get := func(kind, ref string, want Blob) error {
		path := "/v2/" + im.Repository + "/" + kind + "/" + ref
		req := httptest.NewRequestWithContext(ctx, http.MethodGet, path, nil)
		hw := newHashWriter()
		h.ServeHTTP(hw, req)
		if hw.code != http.StatusOK {
			return fmt.Errorf("GET %s: status %d", path, hw.code)
		}
		if got := hw.digest(); got != want.Digest || hw.n != want.Size {
			return fmt.Errorf("GET %s: %d bytes of digest %s, want %d bytes of %s", path, hw.n, got, want.Size, want.Digest)
		}
		return nil
	}
	if err := get("manifests", im.Tag, im.Manifest); err != nil {
		return err
	}
	for _, b := range im.Blobs() {
		if err := get("blobs", b.Digest, b); err != nil {
			return err
		}
	}
	return nil
}

// hashWriter is a ResponseWriter that keeps only the body's digest.
type hashWriter struct {
	header http.Header
	code   int
	h      hash.Hash
	n      int64
}

func newHashWriter() *hashWriter {
	return &hashWriter{header: http.Header{}, h: sha256.New()}
}

func (w *hashWriter) Header() http.Header { return w.header }

func (w *hashWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

func (w *hashWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	w.n += int64(len(p))
	return w.h.Write(p)
}

func (w *hashWriter) digest() string { return "sha256:" + hex.EncodeToString(w.h.Sum(nil)) }

// scrapeCounter reads the value of an unlabelled counter from the
// Prometheus text exposition h serves at /metrics; 0 if it is missing.
func scrapeCounter(h http.Handler, name string) int64 {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	return parseCounter(rec.Body.Bytes(), name)
}

// parseCounter finds the sample "name value" in a Prometheus text
// exposition; 0 if it is missing or not a finite number of at least 0.
func parseCounter(text []byte, name string) int64 {
	sc := bufio.NewScanner(bytes.NewReader(text))
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), name+" ")
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || !(f >= 0 && f < 1<<62) {
			return 0
		}
		return int64(f)
	}
	return 0
}
