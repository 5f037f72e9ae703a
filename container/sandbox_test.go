package container

import (
	"encoding/json"
	"fmt"
	"syscall"
	"testing"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/internal/testenv"
)

// TestLimitsReachTheContainer runs the hostile function with the limits a
// spec resolves to (as the worker does) and checks from inside that they,
// and the seccomp profile, apply: the limits travel from api.Limits through
// Function and runc.Spec. Without them the fork bomb gets all 200 children
// and the /tmp write all 4 MiB.
func TestLimitsReachTheContainer(t *testing.T) {
	testenv.NeedContainers(t)
	img := testenv.HostileImage(t)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	var spec api.FunctionSpec
	if err := json.Unmarshal([]byte(`{"pids":32,"tmp":"1MiB","nofile":64,"memory":"64MiB"}`), &spec); err != nil {
		t.Fatal(err)
	}
	limits, err := spec.Limits()
	if err != nil {
		t.Fatal(err)
	}
	h := newHost(t, t.TempDir())
	r, err := h.Run(t.Context(), Function{Name: "hostile", Config: cf.Config, Image: img, ReadinessPath: "/healthz", Limits: limits})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop(t.Context())
	base := fmt.Sprintf("http://127.0.0.1:%d", r.Port())

	var self struct {
		Seccomp string `json:"seccomp"`
		NoFile  uint64 `json:"nofile_soft"`
	}
	if err := json.Unmarshal([]byte(get(t, base+"/self")), &self); err != nil {
		t.Fatal(err)
	}
	if self.Seccomp != "2" || self.NoFile != 64 {
		t.Errorf("inside: Seccomp %q, RLIMIT_NOFILE %d; want 2 and 64", self.Seccomp, self.NoFile)
	}
	for _, tc := range []struct {
		query string
		errno syscall.Errno
		most  int64 // what the refused attempt got at most
	}{
		{"op=forkbomb&n=200", syscall.EAGAIN, 32},
		{"op=write&path=/tmp/fill&size=4194304", syscall.ENOSPC, 1 << 20},
		{"op=unshare&ns=user", syscall.EPERM, 0},
	} {
		var res struct {
			OK    bool   `json:"ok"`
			Err   string `json:"err"`
			Errno int    `json:"errno"`
			Got   int64  `json:"got"`
		}
		if err := json.Unmarshal([]byte(get(t, base+"/try?"+tc.query)), &res); err != nil {
			t.Fatal(err)
		}
		if res.OK || syscall.Errno(res.Errno) != tc.errno || res.Got > tc.most {
			t.Errorf("%s: %+v, want %v after at most %d", tc.query, res, tc.errno, tc.most)
		}
	}
}
