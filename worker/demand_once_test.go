package worker

import (
	"net/http"
	"strconv"
	"testing"
	"time"
)

// TestDemandsDoNotRefetchFromTheRegistry: the root streams a layer from the
// registry in the background while a runtime reads ranges far ahead of the
// stream (demands). Every byte of the layer leaves the registry once: the
// background stream must not also fetch the blocks a demand fetched (it
// used to read them again from its open range and drop them).
func TestDemandsDoNotRefetchFromTheRegistry(t *testing.T) {
	c := newCluster(t, time.Hour)
	img := pushLazyImage(t, c, 4<<20, 94)
	w := c.start("vm", func(cfg *Config) {
		cfg.OCI = listenLoopback(t)
		cfg.BlockSize = 64 << 10
		cfg.DownloadLimit = 1 << 20
	})
	c.waitRegistered(1)
	digest := img.layer.Digest.String()
	c.counter.mu.Lock()
	before, getsBefore := c.counter.bytes[digest], c.counter.gets[digest] // pushLazyImage read it back
	c.counter.mu.Unlock()
	client := &http.Client{Timeout: 30 * time.Second}
	base := "http://" + w.OCIAddr()
	runFunction(t, c, "f", img.ref, []string{"vm"}, base, client)

	size := img.layer.Size
	path := base + "/v2/test/app/blobs/" + digest
	// Ranges ahead of the stream, one after the other, as a container's
	// reads come.
	for _, frac := range []int64{2, 3, 4, 5, 6} {
		off := img.ix.TOCOffset() * (frac - 1) / frac
		resp, _ := ociDo(t, client, http.MethodGet, path, map[string]string{
			"Range": "bytes=" + strconv.FormatInt(off, 10) + "-" + strconv.FormatInt(off+99_999, 10)})
		if resp.StatusCode != http.StatusPartialContent {
			t.Fatalf("range at %d: status %d", off, resp.StatusCode)
		}
	}
	if complete(w, digest) {
		t.Fatal("the layer is complete already: the demands raced nothing (slower download needed)")
	}
	deadline := time.Now().Add(time.Minute)
	for !complete(w, digest) {
		if time.Now().After(deadline) {
			t.Fatal("the layer did not complete in a minute")
		}
		time.Sleep(50 * time.Millisecond) // polling the cache, with a deadline
	}
	c.counter.mu.Lock()
	sent, gets := c.counter.bytes[digest]-before, c.counter.gets[digest]-getsBefore
	c.counter.mu.Unlock()
	t.Logf("the registry sent %d bytes of the %d-byte layer in %d GETs", sent, size, gets)
	if sent != size {
		t.Errorf("the registry sent %d bytes of a %d-byte layer: %d fetched twice", sent, size, sent-size)
	}
}
