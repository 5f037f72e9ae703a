package worker

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/digest"
	"github.com/faasnet/faasnet/imagegen"
)

func TestRestartKeepsFetchedBlocks(t *testing.T) {
	c := newCluster(t, time.Hour)
	ref, _ := c.push(imagegen.Spec{TotalSize: 8 << 20, Layers: 2, Seed: 6})
	cache := t.TempDir()
	slow := func(cfg *Config) { cfg.CacheDir = cache; cfg.BlockSize = 64 << 10; cfg.DownloadLimit = 4 << 20 }
	c.start("vm", slow)
	c.waitRegistered(1)
	c.mgr.PutFunction(c.ctx, "f", api.FunctionRequest{Image: ref})
	if _, err := c.mgr.Scale(c.ctx, "f", api.ScaleRequest{VMs: []string{"vm"}}); err != nil {
		t.Fatal(err)
	}
	c.waitProgress("vm", "f", 3<<20)
	c.stops["vm"]()
	<-c.dones["vm"]

	w := c.start("vm", func(cfg *Config) { cfg.CacheDir = cache; cfg.BlockSize = 64 << 10 })
	c.waitReady("f", []string{"vm"}, time.Minute)
	r := w.Functions()[0]
	if r.BytesFetched >= r.ImageBytes-(2<<20) {
		t.Errorf("after a restart the worker fetched %d of %d bytes again; it should keep what it had", r.BytesFetched, r.ImageBytes)
	}
}

// FuzzDecodeAssignments drives the parser of pushed assignments: it never
// panics, and what it accepts is a document the worker can act on.
func FuzzDecodeAssignments(f *testing.F) {
	for _, s := range []string{`{}`, `{"assignments":[]}`, `{"assignments":[{"function":"f","image":"x/y:1","generation":3,"parent":{"vm":"p","addr":"127.0.0.1:1"}}],"revision":7}`, `[`, `{"assignments":{}}`, `{"assignments":[{"function":"f","image":"x"},{"function":"f","image":"x"}]}`,
		`{"assignments":[{"function":"f","image":"x/y:1","digest":"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}]}`,
		`{"assignments":[{"function":"f","image":"x/y:1","digest":"sha256:0123"}]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		doc, err := decodeAssignments(body)
		if err != nil {
			return
		}
		for _, a := range doc.Assignments {
			_, derr := digest.Parse(a.Digest)
			if api.ValidName("function", a.Function) != nil || (a.Parent != nil && api.ValidAddr(a.Parent.Addr) != nil) || (a.Digest != "" && derr != nil) {
				t.Fatalf("accepted an assignment it cannot act on: %+v", a)
			}
		}
	})
}

func TestPushOfMalformedDocumentIs400(t *testing.T) {
	w := newWorker(t, Config{})
	for _, body := range []string{`{`, `{"assignments":[{"function":"a b","image":"x/y:1"}]}`} {
		rec := httptest.NewRecorder()
		w.handlePush(rec, httptest.NewRequest(http.MethodPost, api.WorkerAssignmentsPath, strings.NewReader(body)))
		if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), `"error"`) {
			t.Errorf("push of %q: %d %s", body, rec.Code, rec.Body)
		}
	}
}
