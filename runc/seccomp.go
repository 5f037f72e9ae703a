package runc

import (
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// The seccomp profile every container gets. No field of Spec changes it, so
// a function's spec cannot loosen it.
//
// It is a denylist: every system call is allowed except those below, which
// fail with EPERM. containerd and Docker use an allowlist instead, whose
// value is mostly in refusing the calls gated by capabilities they may
// grant; a function here holds no capability but CAP_NET_BIND_SERVICE and
// cannot gain any (no_new_privs), so the kernel already refuses those. What
// is left is the kernel's attack surface that needs no capability, or that a
// new user namespace would hand back: that is what this list names. Tenants
// bring arbitrary images and runtimes, and an allowlist that misses one call
// a libc or runtime starts to use breaks them with an EPERM that is hard to
// trace (clone3 and faccessat2 did, in containerd's profile). The price is
// that a system call added to a future kernel is allowed until it is listed
// here.
//
// Because the default is to allow, every ABI a process can call through
// must be filtered: x86-64, i386 (int 0x80 works from a 64-bit process) and
// x32, or a call made through another ABI would pass. runc skips a name its
// libseccomp does not know for an architecture.

// deniedSyscalls fail with EPERM, grouped by why.
var deniedSyscalls = [][]string{
	// Namespaces: a new user namespace gives back every capability, over
	// code paths (mounts, netfilter, ...) that are a frequent source of
	// kernel exploits; joining one is escaping. clone with namespace flags
	// is refused by argument below.
	{"unshare", "setns"},
	// Mounts, old and new API, and changing the root.
	{"mount", "umount", "umount2", "pivot_root", "chroot",
		"fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr"},
	// Tracing and reading other processes.
	{"ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd"},
	// The kernel keyring is not namespaced.
	{"keyctl", "add_key", "request_key"},
	// Interfaces with a long record of privilege escalations.
	{"bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register"},
	// The kernel itself: modules, kexec, reboot, swap, accounting.
	{"kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
		"create_module", "query_module", "get_kernel_syms", "reboot", "swapon", "swapoff", "acct"},
	// The clock and the kernel log are the whole machine's.
	{"settimeofday", "stime", "clock_settime", "clock_settime64", "clock_adjtime", "clock_adjtime64", "syslog"},
	// File handles bypass the mount namespace ("shocker").
	{"open_by_handle_at"},
	// NUMA placement of memory shared with the host's other tenants.
	{"mbind", "set_mempolicy", "set_mempolicy_home_node", "migrate_pages", "move_pages"},
	// Hardware and obsolete interfaces nothing in a function needs.
	{"iopl", "ioperm", "vm86", "vm86old", "uselib", "ustat", "sysfs", "_sysctl", "nfsservctl",
		"lookup_dcookie", "quotactl", "quotactl_fd", "fanotify_init", "vhangup"},
}

// newNamespaceFlags are clone's flags that create a namespace (CLONE_NEWTIME
// shares its bit with the exit signal in clone, and is unshare's only).
var newNamespaceFlags = []uint64{
	syscall.CLONE_NEWNS, 0x02000000, /* CLONE_NEWCGROUP */
	syscall.CLONE_NEWUTS, syscall.CLONE_NEWIPC, syscall.CLONE_NEWUSER, syscall.CLONE_NEWPID, syscall.CLONE_NEWNET,
}

// seccompProfile returns the profile described above.
func seccompProfile() *specs.LinuxSeccomp {
	eperm, enosys := uint(syscall.EPERM), uint(syscall.ENOSYS)
	p := &specs.LinuxSeccomp{
		DefaultAction: specs.ActAllow,
		Architectures: []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32},
	}
	var names []string
	for _, g := range deniedSyscalls {
		names = append(names, g...)
	}
	p.Syscalls = append(p.Syscalls, specs.LinuxSyscall{Names: names, Action: specs.ActErrno, ErrnoRet: &eperm})
	// One rule per flag: the arguments of one rule must all match, and a
	// clone with any of the flags must fail.
	for _, f := range newNamespaceFlags {
		p.Syscalls = append(p.Syscalls, specs.LinuxSyscall{
			Names: []string{"clone"}, Action: specs.ActErrno, ErrnoRet: &eperm,
			Args: []specs.LinuxSeccompArg{{Index: 0, Value: f, ValueTwo: f, Op: specs.OpMaskedEqual}},
		})
	}
	// clone3 passes its flags in memory, where seccomp cannot look. ENOSYS,
	// not EPERM, makes glibc and Go fall back to clone, which is filtered.
	p.Syscalls = append(p.Syscalls, specs.LinuxSyscall{Names: []string{"clone3"}, Action: specs.ActErrno, ErrnoRet: &enosys})
	return p
}
