package runc

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Spec is what a function's container is started from.
type Spec struct {
	ID      string    // container id, unique per worker and function; letters, digits, and _ + - .
	Rootfs  string    // read-only root filesystem directory; must hold the mount points /proc /sys /dev /tmp /run
	Image   v1.Config // from the image config: Entrypoint, Cmd, Env, WorkingDir, User
	Command []string  // overrides the image's entrypoint and cmd when set
	Env     []string  // KEY=VALUE, added to the image's and overriding them
	Limits  Limits    // cgroup limits, tmpfs sizes, RLIMIT_NOFILE
	Port    int       // the function listens here; passed as the environment variable PORT

	// OwnNetwork gives the container a network namespace of its own, with
	// nothing but a loopback in it until BeforeStart wires it up. Without
	// it the container shares the host's network.
	OwnNetwork bool
	// Users, when set, runs the container in a user namespace whose root
	// is Users.Host on the host: no process of the function is ever the
	// host's root. The root filesystem must show its files owned with
	// Users.Host added (see lazy.Options.IDShift, unpack.Options.IDShift).
	Users *IDRange
	// BeforeStart, when set, runs once the container's namespaces exist
	// and before its process runs, with the pid of its first process; the
	// network is set up here (/proc/PID/ns/net). An error aborts the start.
	BeforeStart func(ctx context.Context, pid int) error
}

// IDRange maps container ids 0..Size-1 to host ids Host..Host+Size-1, for
// users and groups alike.
type IDRange struct {
	Host uint32
	Size uint32
}

// ociVersion is the runtime specification version the bundles claim: the
// one Debian's runc 1.1 implements. The fields we set all exist in it.
const ociVersion = "1.0.2"

// defaultPath is the PATH of a process whose image sets none, as in Docker.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// idRE is what runc accepts as a container id.
var idRE = regexp.MustCompile(`^[\w+.-]+$`)

// maxIDLen keeps the id short enough for runc's state paths and cgroup names.
const maxIDLen = 128

// checkID reports whether id is usable as a runc container id.
func checkID(id string) error {
	if len(id) > maxIDLen || !idRE.MatchString(id) || id == "." || id == ".." {
		return fmt.Errorf("runc: invalid container id %q (want 1-%d of letters, digits, _ + - .)", id, maxIDLen)
	}
	return nil
}

// args returns the process arguments of s: Command if set, otherwise the
// image's entrypoint followed by its cmd.
func (s Spec) args() ([]string, error) {
	if len(s.Command) > 0 {
		return s.Command, nil
	}
	a := append(append([]string{}, s.Image.Entrypoint...), s.Image.Cmd...)
	if len(a) == 0 {
		return nil, fmt.Errorf("runc: container %s: no command: the image has neither entrypoint nor cmd and Spec.Command is empty", s.ID)
	}
	return a, nil
}

// env returns the process environment: the image's, then s.Env, then PORT,
// where a later KEY replaces an earlier one in place. A PATH is added when
// nothing sets one, since runc looks the command up in it.
func (s Spec) env() []string {
	var all []string
	all = append(all, s.Image.Env...)
	all = append(all, s.Env...)
	if s.Port != 0 {
		all = append(all, "PORT="+strconv.Itoa(s.Port))
	}
	return mergeEnv(all)
}

// mergeEnv keeps the last value of every key at the position of its first
// appearance, and adds defaultPath when there is no PATH.
func mergeEnv(kvs []string) []string {
	var out []string
	at := map[string]int{}
	for _, kv := range kvs {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := at[k]; ok {
			out[i] = kv
			continue
		}
		at[k] = len(out)
		out = append(out, kv)
	}
	if _, ok := at["PATH"]; !ok {
		out = append(out, defaultPath)
	}
	return out
}

// cwd returns the working directory: the image's, or /.
func (s Spec) cwd() string {
	if s.Image.WorkingDir == "" {
		return "/"
	}
	return path.Clean("/" + s.Image.WorkingDir)
}

// caps are the only capabilities a function keeps: it may bind a port below
// 1024, nothing else. Anything a FaaS handler needs beyond that is a smell.
var caps = []string{"CAP_NET_BIND_SERVICE"}

// maskedPaths and readonlyPaths hide the host's kernel knobs, as runc's
// default specification does.
var (
	maskedPaths = []string{
		"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
		"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
	}
	readonlyPaths = []string{
		"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
	}
)

// ociSpec builds the runtime specification of s, whose root filesystem is
// at the absolute path rootfs, in the cgroup cgroupsPath. It reads only the
// rootfs's /etc/passwd and /etc/group (to resolve a user name) and checks
// whether /etc/hosts and /etc/resolv.conf exist there.
func ociSpec(s Spec, rootfs, cgroupsPath string) (*specs.Spec, error) {
	args, err := s.args()
	if err != nil {
		return nil, err
	}
	user, err := resolveUser(rootfs, s.Image.User)
	if err != nil {
		return nil, fmt.Errorf("runc: container %s: %w", s.ID, err)
	}
	spec := &specs.Spec{
		Version: ociVersion,
		Process: &specs.Process{
			User: user,
			Args: args,
			Env:  s.env(),
			Cwd:  s.cwd(),
			Capabilities: &specs.LinuxCapabilities{
				Bounding: caps, Effective: caps, Permitted: caps,
			},
			NoNewPrivileges: true,
		},
		Root:     &specs.Root{Path: rootfs, Readonly: true},
		Hostname: s.ID,
		Mounts:   mounts(rootfs, s.Users != nil && !s.OwnNetwork),
		Linux: &specs.Linux{
			CgroupsPath: cgroupsPath,
			Resources: &specs.LinuxResources{
				Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
			},
			Namespaces:    namespaces(s),
			MaskedPaths:   maskedPaths,
			ReadonlyPaths: readonlyPaths,
		},
	}
	applyLimits(spec, s.Limits)
	spec.Linux.Seccomp = seccompProfile()
	if u := s.Users; u != nil {
		m := []specs.LinuxIDMapping{{ContainerID: 0, HostID: u.Host, Size: u.Size}}
		spec.Linux.UIDMappings, spec.Linux.GIDMappings = m, m
	}
	return spec, nil
}

// namespaces are the container's: pid, mount, ipc and uts always; a
// network namespace with OwnNetwork (otherwise the function shares the
// host's network and the worker probes it on 127.0.0.1:PORT); a user
// namespace with Users. runc creates the user namespace first, so the
// others belong to it: its root may configure its own loopback and mount
// its own sysfs, and nothing of the host's.
func namespaces(s Spec) []specs.LinuxNamespace {
	ns := []specs.LinuxNamespace{
		{Type: specs.PIDNamespace}, {Type: specs.MountNamespace},
		{Type: specs.IPCNamespace}, {Type: specs.UTSNamespace},
	}
	if s.OwnNetwork {
		ns = append(ns, specs.LinuxNamespace{Type: specs.NetworkNamespace})
	}
	if s.Users != nil {
		ns = append(ns, specs.LinuxNamespace{Type: specs.UserNamespace})
	}
	return ns
}

// mounts returns the container's mounts. The root is read-only; the
// function writes only to tmpfs (/tmp, /run, /dev/shm). The host's
// /etc/hosts and /etc/resolv.conf are bound read-only over the image's when
// the image has them (the mount point must exist: the root cannot be
// written to create it), so that names resolve as on the VM. bindSys binds
// the host's /sys read-only instead of mounting a sysfs: a user namespace
// may mount a sysfs only for a network namespace it owns.
func mounts(rootfs string, bindSys bool) []specs.Mount {
	m := []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		sys(bindSys),
		{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=1777"}},
		{Destination: "/run", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=755"}},
	}
	for _, f := range []string{"/etc/hosts", "/etc/resolv.conf"} {
		if !isRegular(filepath.Join(rootfs, f)) || !isRegular(f) {
			continue
		}
		m = append(m, specs.Mount{Destination: f, Type: "bind", Source: f, Options: []string{"rbind", "ro", "nosuid", "nodev", "noexec"}})
	}
	return m
}

func sys(bind bool) specs.Mount {
	if bind {
		return specs.Mount{Destination: "/sys", Type: "bind", Source: "/sys", Options: []string{"rbind", "nosuid", "noexec", "nodev", "ro"}}
	}
	return specs.Mount{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}}
}

// isRegular reports whether name is a regular file, without following a
// final symbolic link (one in the image would point into the host).
func isRegular(name string) bool {
	fi, err := os.Lstat(name)
	return err == nil && fi.Mode().IsRegular()
}

// cgroupsPath names the container's cgroup: below a parent per runc root,
// so that two workers on one machine may use the same container id.
func cgroupsPath(root, id string) string {
	h := sha256.Sum256([]byte(root))
	return "/faasnet-" + hex.EncodeToString(h[:4]) + "/" + id
}
