package runc

import (
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestApplyLimits checks the specification a Limits gives: a zero field
// sets nothing (RLIMIT_NOFILE: 1024).
func TestApplyLimits(t *testing.T) {
	rootfs := writeRootfs(t, map[string]string{})
	for _, tc := range []struct {
		l                Limits
		mem, swap, quota int64
		pids             int64
		nofile           uint64
		tmpSize, runSize string
	}{
		{l: Limits{}, nofile: 1024},
		{l: Limits{Memory: 64 << 20, CPUMillis: 250, Pids: 100, Tmp: 8 << 20, Run: 1 << 20, NoFile: 4096},
			mem: 64 << 20, swap: 64 << 20, quota: 25000, pids: 100, nofile: 4096, tmpSize: "size=8388608", runSize: "size=1048576"},
	} {
		s, err := ociSpec(Spec{ID: "x", Image: v1.Config{Cmd: []string{"x"}}, Limits: tc.l}, rootfs, "/x")
		if err != nil {
			t.Fatal(err)
		}
		res := s.Linux.Resources
		var mem, swap, quota, pids int64
		if res.Memory != nil {
			mem, swap = *res.Memory.Limit, *res.Memory.Swap
		}
		if res.CPU != nil {
			quota = *res.CPU.Quota
			if *res.CPU.Period != cfsPeriod {
				t.Errorf("CFS period %d", *res.CPU.Period)
			}
		}
		if res.Pids != nil {
			pids = *res.Pids.Limit
		}
		if mem != tc.mem || swap != tc.swap || quota != tc.quota || pids != tc.pids {
			t.Errorf("%+v: memory %d swap %d quota %d pids %d; want %d %d %d %d", tc.l, mem, swap, quota, pids, tc.mem, tc.swap, tc.quota, tc.pids)
		}
		if want := []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: tc.nofile, Soft: tc.nofile}}; !slices.Equal(s.Process.Rlimits, want) {
			t.Errorf("%+v: rlimits %+v, want %+v", tc.l, s.Process.Rlimits, want)
		}
		for _, m := range s.Mounts {
			want := map[string]string{"/tmp": tc.tmpSize, "/run": tc.runSize}[m.Destination]
			var got []string
			for _, o := range m.Options {
				if strings.HasPrefix(o, "size=") {
					got = append(got, o)
				}
			}
			if (m.Destination == "/tmp" || m.Destination == "/run") && !slices.Equal(got, slices.DeleteFunc([]string{want}, func(s string) bool { return s == "" })) {
				t.Errorf("%+v: %s options %q, want %q", tc.l, m.Destination, m.Options, want)
			}
		}
	}
}
