package runc

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/faasnet/faasnet/internal/testenv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// hostileResult is internal/hostile's answer to /try.
type hostileResult struct {
	OK    bool   `json:"ok"`
	Err   string `json:"err"`
	Errno int    `json:"errno"`
	Got   int64  `json:"got"`
}

// hostileRootfs is a root filesystem holding internal/hostile as /hostile
// and the mount points runc needs.
func hostileRootfs(t *testing.T) string {
	t.Helper()
	bin := testenv.HostileBinary(t)
	dir := t.TempDir()
	for _, d := range []string{"proc", "sys", "dev", "tmp", "run", "etc"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "hostile"), bin, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// startHostile starts internal/hostile with limits l and returns its base
// URL once it answers.
func startHostile(t *testing.T, r *Runtime, ctx context.Context, l Limits) (id, base string) {
	t.Helper()
	id, port := containerID(t), freePort(t)
	c, err := r.Start(ctx, Spec{ID: id, Rootfs: hostileRootfs(t), Command: []string{"/hostile"}, Port: port, Limits: l})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		if err := c.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	base = "http://127.0.0.1:" + strconv.Itoa(port)
	if _, err := c.WaitReady(ctx, base+"/healthz"); err != nil {
		t.Fatal(err)
	}
	return id, base
}

func getJSON(t *testing.T, ctx context.Context, u string, v any) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", u, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
}

// try asks the container to try op with the query parameters kv.
func try(t *testing.T, ctx context.Context, base, op string, kv ...string) hostileResult {
	t.Helper()
	q := url.Values{"op": {op}}
	for i := 0; i+1 < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	var res hostileResult
	getJSON(t, ctx, base+"/try?"+q.Encode(), &res)
	return res
}

// TestSeccomp runs internal/hostile in a container and has it try what
// the default profile refuses. Without the profile, unshare, clone and
// clone3 into a user or network namespace, ptrace and keyctl succeed here
// (root in the container, no capabilities); mount and bpf are refused by
// the missing capabilities anyway.
func TestSeccomp(t *testing.T) {
	r := newRuntime(t)
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	_, base := startHostile(t, r, ctx, Limits{})

	var self struct {
		Seccomp    string `json:"seccomp"`
		NoNewPrivs string `json:"no_new_privs"`
	}
	getJSON(t, ctx, base+"/self", &self)
	if self.Seccomp != "2" || self.NoNewPrivs != "1" {
		t.Errorf("/proc/self/status inside: Seccomp %q NoNewPrivs %q, want 2 (filter) and 1", self.Seccomp, self.NoNewPrivs)
	}
	for _, tc := range []struct {
		op    string
		kv    []string
		errno syscall.Errno // 0: must succeed
	}{
		{"unshare", []string{"ns", "user"}, syscall.EPERM},
		{"unshare", []string{"ns", "net"}, syscall.EPERM},
		{"unshare", []string{"ns", "mount"}, syscall.EPERM},
		{"clone", []string{"ns", "user"}, syscall.EPERM},
		{"clone", []string{"ns", "net"}, syscall.EPERM},
		{"clone", []string{"ns", "pid"}, syscall.EPERM},
		{"clone3", []string{"ns", "user"}, syscall.ENOSYS},
		{"mount", nil, syscall.EPERM},
		{"ptrace", nil, syscall.EPERM},
		{"keyctl", nil, syscall.EPERM},
		{"bpf", nil, syscall.EPERM},
		// What a function does: fork and exec (clone without namespace
		// flags) still works.
		{"forkbomb", []string{"n", "3"}, 0},
		{"write", []string{"path", "/tmp/x"}, 0},
	} {
		t.Run(tc.op+"-"+strings.Join(tc.kv, "="), func(t *testing.T) {
			res := try(t, ctx, base, tc.op, tc.kv...)
			if tc.errno == 0 {
				if !res.OK {
					t.Fatalf("%+v, want success", res)
				}
				return
			}
			if res.OK || syscall.Errno(res.Errno) != tc.errno {
				t.Fatalf("%+v, want errno %d (%v)", res, tc.errno, tc.errno)
			}
			t.Logf("refused: %s", res.Err)
		})
	}
}

// TestSeccompProfile checks the profile's shape without runc: each call
// the issue names is refused with EPERM on every ABI, a clone with any
// namespace flag too, and clone3 answers ENOSYS.
func TestSeccompProfile(t *testing.T) {
	p := seccompProfile()
	if p.DefaultAction != "SCMP_ACT_ALLOW" || !slices.Equal(p.Architectures, []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32}) {
		t.Errorf("default %s, architectures %v", p.DefaultAction, p.Architectures)
	}
	denied := map[string]uint{}
	cloneFlags := uint64(0)
	for _, s := range p.Syscalls {
		if s.Action != "SCMP_ACT_ERRNO" || s.ErrnoRet == nil {
			t.Errorf("rule %+v does not return an errno", s)
			continue
		}
		if len(s.Args) > 0 {
			a := s.Args[0]
			if !slices.Equal(s.Names, []string{"clone"}) || len(s.Args) != 1 || a.Index != 0 || a.Op != "SCMP_CMP_MASKED_EQ" || a.Value != a.ValueTwo || *s.ErrnoRet != uint(syscall.EPERM) {
				t.Errorf("argument rule %+v: want clone's flags masked with one flag", s)
			}
			cloneFlags |= a.Value
			continue
		}
		for _, n := range s.Names {
			denied[n] = *s.ErrnoRet
		}
	}
	for _, n := range strings.Fields(`unshare setns mount umount2 pivot_root fsopen fsmount move_mount open_tree fsconfig fspick
		mount_setattr ptrace keyctl add_key request_key bpf kexec_load kexec_file_load init_module finit_module delete_module
		perf_event_open userfaultfd open_by_handle_at swapon swapoff reboot acct settimeofday clock_settime syslog`) {
		if denied[n] != uint(syscall.EPERM) {
			t.Errorf("%s: errno %d, want EPERM", n, denied[n])
		}
	}
	if denied["clone3"] != uint(syscall.ENOSYS) {
		t.Errorf("clone3: errno %d, want ENOSYS", denied["clone3"])
	}
	const allNew = syscall.CLONE_NEWNS | 0x02000000 | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC | syscall.CLONE_NEWUSER | syscall.CLONE_NEWPID | syscall.CLONE_NEWNET
	if cloneFlags != allNew {
		t.Errorf("clone is refused for flags %#x, want %#x", cloneFlags, allNew)
	}
}

// TestLimits runs internal/hostile with small limits and checks that the
// cgroup holds them, and that the container runs into each: a fork bomb
// stops at the pids limit (and this process, standing in for the worker,
// can still fork), /tmp and /run fill up at their size, and open files
// stop at RLIMIT_NOFILE.
func TestLimits(t *testing.T) {
	r := newRuntime(t)
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	l := Limits{Memory: 64 << 20, CPUMillis: 500, Pids: 64, Tmp: 4 << 20, Run: 2 << 20, NoFile: 256}
	id, base := startHostile(t, r, ctx, l)
	cg := cgroupsPath(r.Root, id)

	for _, f := range []struct{ v1, v2, want string }{
		{"memory/memory.limit_in_bytes", "memory.max", strconv.FormatInt(l.Memory, 10)},
		{"memory/memory.memsw.limit_in_bytes", "memory.swap.max", strconv.FormatInt(l.Memory, 10)},
		{"cpu/cpu.cfs_quota_us", "cpu.max", "50000"},
		{"cpu/cpu.cfs_period_us", "cpu.max", "100000"},
		{"pids/pids.max", "pids.max", "64"},
	} {
		got := readCgroup(t, cg, f.v1, f.v2)
		if got != f.want && !(f.v2 == "cpu.max" && got == "50000 100000") && !(f.v2 == "memory.swap.max" && got == "0") {
			t.Errorf("cgroup %s = %q, want %s", f.v1, got, f.want)
		}
	}

	t.Run("nofile", func(t *testing.T) {
		var self struct {
			NoFileSoft uint64 `json:"nofile_soft"`
			NoFileHard uint64 `json:"nofile_hard"`
		}
		getJSON(t, ctx, base+"/self", &self)
		if self.NoFileSoft != 256 || self.NoFileHard != 256 {
			t.Errorf("RLIMIT_NOFILE inside: %d/%d, want 256/256", self.NoFileSoft, self.NoFileHard)
		}
		res := try(t, ctx, base, "files", "n", "1000")
		if res.OK || syscall.Errno(res.Errno) != syscall.EMFILE || res.Got >= 256 {
			t.Errorf("opening 1000 files: %+v, want EMFILE before 256", res)
		}
	})

	t.Run("tmpfs", func(t *testing.T) {
		for _, tc := range []struct {
			path string
			size int64
		}{{"/tmp/fill", l.Tmp}, {"/run/fill", l.Run}} {
			if res := try(t, ctx, base, "write", "path", tc.path, "size", strconv.FormatInt(tc.size/2, 10)); !res.OK {
				t.Errorf("writing half of %s's size: %+v", tc.path, res)
			}
			res := try(t, ctx, base, "write", "path", tc.path, "size", strconv.FormatInt(2*tc.size, 10))
			if res.OK || syscall.Errno(res.Errno) != syscall.ENOSPC || res.Got > tc.size {
				t.Errorf("writing twice %s's size (%d): %+v, want ENOSPC within the size", tc.path, tc.size, res)
			}
		}
	})

	t.Run("forkbomb", func(t *testing.T) {
		// While the bomb's children live (hold), sample the cgroup's count.
		done := make(chan hostileResult, 1)
		go func() { done <- try(t, ctx, base, "forkbomb", "n", "1000", "hold", "300ms") }()
		peak := int64(0)
		var res hostileResult
	sample:
		for {
			select {
			case res = <-done:
				break sample
			default:
			}
			n, err := strconv.ParseInt(readCgroup(t, cg, "pids/pids.current", "pids.current"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			peak = max(peak, n)
		}
		if res.OK || syscall.Errno(res.Errno) != syscall.EAGAIN || res.Got >= l.Pids {
			t.Errorf("fork bomb of 1000: %+v, want EAGAIN before %d children", res, l.Pids)
		}
		if peak > l.Pids || peak < l.Pids/2 {
			t.Errorf("pids.current peaked at %d, want at most the limit %d (and near it)", peak, l.Pids)
		}
		t.Logf("fork bomb: %d children, pids.current peaked at %d: %s", res.Got, peak, res.Err)
		if out, err := exec.CommandContext(ctx, "true").CombinedOutput(); err != nil {
			t.Errorf("the test process cannot fork after the bomb: %v %s", err, out)
		}
		if res := try(t, ctx, base, "write", "path", "/tmp/after"); !res.OK {
			t.Errorf("the container does not work after the bomb: %+v", res)
		}
	})
}

// readCgroup reads a file of the cgroup cg: v1 names it below the
// controller's hierarchy, v2 in the unified one.
func readCgroup(t *testing.T, cg, v1, v2 string) string {
	t.Helper()
	for _, f := range []string{filepath.Join(cgroupRoot, filepath.Dir(v1), cg, filepath.Base(v1)), filepath.Join(cgroupRoot, cg, v2)} {
		if b, err := os.ReadFile(f); err == nil {
			return strings.TrimSpace(string(b))
		}
	}
	t.Fatalf("cgroup %s: neither %s (v1) nor %s (v2)", cg, v1, v2)
	return ""
}
