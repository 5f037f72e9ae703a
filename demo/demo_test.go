package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestDemoEndToEnd runs the demo command's body in process with a small
// image and checks the JSON summary against what the run must have done.
func TestDemoEndToEnd(t *testing.T) {
	jsonPath := filepath.Join(t.TempDir(), "summary.json")
	var out bytes.Buffer
	cfg := Defaults
	cfg.VMs, cfg.ImageSize, cfg.Layers = 4, 8<<20, 3
	cfg.JSON, cfg.Out, cfg.Dir = jsonPath, &out, t.TempDir()
	sum, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	raw, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]any
	if err := json.Unmarshal(raw, &fields); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"vms", "ready", "image_bytes", "registry_egress_bytes", "first_ready_s", "last_ready_s"} {
		if _, ok := fields[k]; !ok {
			t.Errorf("summary has no %q: %s", k, raw)
		}
	}
	var got Summary
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	if got.VMs != 4 || got.Ready != 4 {
		t.Errorf("vms %d, ready %d; want 4 and 4", got.VMs, got.Ready)
	}
	if got.ImageBytes < 8<<20 || got.ImageBytes > 9<<20 {
		t.Errorf("image_bytes %d, want about 8 MiB", got.ImageBytes)
	}
	if got.RegistryEgressBytes != got.ImageBytes {
		t.Errorf("registry_egress_bytes %d, want the image once: %d", got.RegistryEgressBytes, got.ImageBytes)
	}
	if got.FirstReadyS <= 0 || got.FirstReadyS > got.LastReadyS {
		t.Errorf("first_ready_s %v, last_ready_s %v", got.FirstReadyS, got.LastReadyS)
	}
	if got.LastReadyS != sum.LastReadyS {
		t.Errorf("the file says last_ready_s %v, Demo returned %v", got.LastReadyS, sum.LastReadyS)
	}
	text := out.String()
	for _, want := range []string{"vm-000", "vm-003", "first VM ready after", "the registry served"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "\x1b[") {
		t.Errorf("terminal escapes in output that is not a terminal:\n%q", text)
	}
}

// TestDemoFailsWhenVMsAreNotReady: a timeout too short for the image fails
// the demo, after the summary.
func TestDemoFailsWhenVMsAreNotReady(t *testing.T) {
	var out bytes.Buffer
	cfg := Defaults
	cfg.VMs, cfg.ImageSize, cfg.Layers, cfg.Bandwidth = 2, 4<<20, 1, 1<<20
	cfg.Timeout, cfg.Out, cfg.Dir = 500*time.Millisecond, &out, t.TempDir()
	sum, err := Run(context.Background(), cfg)
	if err == nil {
		t.Fatalf("demo passed with a 4 MiB image at 1 MiB/s in 0.5 s:\n%s", out.String())
	}
	if sum.Ready != 0 || len(sum.Failed) != 2 {
		t.Errorf("ready %d, failed %v; want 0 and two", sum.Ready, sum.Failed)
	}
	if !strings.Contains(out.String(), "first VM ready") {
		t.Errorf("no summary before the failure:\n%s", out.String())
	}
}

// signalWriter collects output and closes done once it contains want.
type signalWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	done chan struct{}
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, _ := w.buf.Write(p)
	if w.done != nil && strings.Contains(w.buf.String(), w.want) {
		close(w.done)
		w.done = nil
	}
	return n, nil
}

func (w *signalWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// With UI the demo announces the live view, keeps the cluster up after
// the summary, runs its script (an interior VM killed, a leaf released, a
// scale-out), and ends cleanly when its context does.
func TestDemoUIScript(t *testing.T) {
	defer func(p time.Duration) { scriptPause = p }(scriptPause)
	scriptPause = 200 * time.Millisecond
	done := make(chan struct{})
	out := &signalWriter{want: "the script is done", done: done}
	cfg := Defaults
	cfg.VMs, cfg.ImageSize, cfg.Layers = 5, 4<<20, 2
	cfg.Out, cfg.Dir, cfg.UI = out, t.TempDir(), true
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { _, err := Run(ctx, cfg); errc <- err }()
	select {
	case <-done:
	case err := <-errc:
		t.Fatalf("the demo ended before its script did: %v\n%s", err, out.String())
	case <-time.After(2 * time.Minute):
		t.Fatalf("no end of the script after 2 minutes:\n%s", out.String())
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("demo --ui after Ctrl-C: %v\n%s", err, out.String())
	}
	got := out.String()
	for _, want := range []string{"live view: https://127.0.0.1:", "/ui/", "admin.token", "an interior VM", "release", "scale out again by one VM: vm-"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "the script stopped") {
		t.Errorf("a script step failed:\n%s", got)
	}
}
