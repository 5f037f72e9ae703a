package e2e

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/imagegen"
	"github.com/faasnet/faasnet/units"
	"github.com/google/go-containerregistry/pkg/registry"
)

// BenchmarkForward measures one parent -> child stream between two worker
// processes without bandwidth limits: the parent holds the image complete,
// the child fetches all of it. It reports the child's receive rate, the CPU
// seconds each process spent per GB moved, and each process's peak memory
// (VmHWM). The image size is FAASNET_BENCH_SIZE (default 1GiB). With
// FAASNET_BENCH_PROFILE=DIR, both workers write CPU profiles there
// (parent.pprof, child.pprof). Run with
//
//	go test -run '^$' -bench Forward -benchtime 1x ./e2e/
func BenchmarkForward(b *testing.B) {
	size := int64(1 << 30)
	if s := os.Getenv("FAASNET_BENCH_SIZE"); s != "" {
		n, err := units.ParseSize(s)
		if err != nil {
			b.Fatal(err)
		}
		size = n
	}
	regSrv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer regSrv.Close()
	ref := strings.TrimPrefix(regSrv.URL, "http://") + "/bench/app:v1"
	img, err := imagegen.Image(imagegen.Spec{TotalSize: size, Layers: 4, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := imagegen.Push(ctx, img, ref); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		forwardOnce(b, ref, size)
	}
}

func forwardOnce(b *testing.B, ref string, size int64) {
	ctx := context.Background()
	mgr := startManager(b)
	c := mgr.admin(b)
	worker := func(name string) *proc {
		args := append(mgr.workerArgs(b, name), "--oci-listen", "none", "--heartbeat", "200ms")
		if dir := os.Getenv("FAASNET_BENCH_PROFILE"); dir != "" {
			args = append(args, "--cpuprofile", filepath.Join(dir, name+".pprof"))
		}
		return start(b, name, args...)
	}
	parent, child := worker("parent"), worker("child")
	waitVMs(b, c, 2)
	c.PutFunction(ctx, "app", api.FunctionRequest{Image: ref})
	if _, err := c.Scale(ctx, "app", api.ScaleRequest{VMs: []string{"parent"}}); err != nil {
		b.Fatal(err)
	}
	waitStatus(b, c, "app", 1, 10*time.Minute)
	cpuP0, cpuC0 := cpuSeconds(b, parent), cpuSeconds(b, child)
	start := time.Now()
	if _, err := c.Scale(ctx, "app", api.ScaleRequest{VMs: []string{"child"}}); err != nil {
		b.Fatal(err)
	}
	st := waitStatus(b, c, "app", 2, 10*time.Minute)
	var childStatus api.VMStatus
	for _, v := range st.VMs {
		if v.VM == "child" {
			childStatus = v
		}
	}
	took := childStatus.Phases["ready"].Sub(childStatus.Phases["assigned"])
	if took <= 0 {
		took = time.Since(start)
	}
	gb := float64(size) / 1e9
	b.ReportMetric(float64(size)/1e6/took.Seconds(), "MB/s")
	b.ReportMetric((cpuSeconds(b, parent)-cpuP0)/gb, "parent-cpu-s/GB")
	b.ReportMetric((cpuSeconds(b, child)-cpuC0)/gb, "child-cpu-s/GB")
	b.ReportMetric(float64(peakRSS(b, parent))/(1<<20), "parent-peak-MiB")
	b.ReportMetric(float64(peakRSS(b, child))/(1<<20), "child-peak-MiB")
	if os.Getenv("FAASNET_BENCH_PROFILE") != "" {
		parent.stop(b)
		child.stop(b)
	}
	if childStatus.BytesFromParent != childStatus.ImageBytes {
		b.Fatalf("child got %d of %d bytes from its parent", childStatus.BytesFromParent, childStatus.ImageBytes)
	}
}

// cpuSeconds is a process's user+system CPU time from /proc/PID/stat.
func cpuSeconds(b *testing.B, p *proc) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	ut, _ := strconv.ParseFloat(fields[11], 64)
	st, _ := strconv.ParseFloat(fields[12], 64)
	return (ut + st) / 100 // USER_HZ is 100 on Linux
}

// peakRSS is a process's VmHWM in bytes.
func peakRSS(b *testing.B, p *proc) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			kb, _ := strconv.ParseInt(strings.Fields(line)[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}
