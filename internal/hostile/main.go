// Command hostile is the function the sandbox tests run: an HTTP server on
// $PORT, on all addresses, whose /try?op=... tries one thing a tenant should
// not be able to do and answers JSON {"ok":bool,"err":"..."}.
//
// Operations (other parameters in brackets):
//
//	connect [addr=HOST:PORT]  dial TCP, 2 s timeout
//	unshare [ns=user|mount|net|pid|ipc|uts|cgroup]  unshare(2) in a child
//	clone   [ns=...]          clone(2) a child into a new namespace
//	clone3  [ns=...]          clone3(2) a child into a new namespace
//	mount                     mount a tmpfs on /tmp
//	ptrace                    PTRACE_ATTACH to a child of its own
//	keyctl                    look up the user keyring
//	bpf                       create a BPF array map
//	write   [path, size]      write size bytes (default 1) to path, then remove it
//	read    [path]            read path, answer its first bytes
//	files   [n]               open n descriptors at once
//	forkbomb [n, hold]        start n children that sleep, keep them for
//	                          hold (a duration), then kill them
//
// GET /self answers who it is inside (uid, gid, the Seccomp and NoNewPrivs
// lines of /proc/self/status, RLIMIT_NOFILE) and /healthz answers ok.
// Namespaced children, ptrace's tracee and the fork bomb's children run a
// tiny static x86-64 program that only waits for signals, held in a memfd:
// one task each (a Go child would need several threads, which would blur the
// pids count) and nothing written to the container's filesystems.
package main

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// Result is the answer of /try. Errno is the error's errno, 0 when there is
// none or it is not a system call's; Got counts what forkbomb, files and
// write achieved; Data is what read read.
type Result struct {
	OK    bool   `json:"ok"`
	Err   string `json:"err,omitempty"`
	Errno int    `json:"errno,omitempty"`
	Got   int64  `json:"got,omitempty"`
	Data  string `json:"data,omitempty"`
}

func main() {
	http.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	http.HandleFunc("/self", self)
	http.HandleFunc("/try", try)
	addr := ":" + os.Getenv("PORT")
	fmt.Println("hostile listening on", addr)
	log.Fatal(http.ListenAndServe(addr, nil))
}

func self(w http.ResponseWriter, _ *http.Request) {
	status, _ := os.ReadFile("/proc/self/status")
	line := func(key string) string {
		for l := range strings.Lines(string(status)) {
			if v, ok := strings.CutPrefix(l, key+":"); ok {
				return strings.TrimSpace(v)
			}
		}
		return ""
	}
	var nofile syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &nofile)
	writeJSON(w, map[string]any{
		"uid": os.Getuid(), "gid": os.Getgid(), "euid": os.Geteuid(), "pid": os.Getpid(),
		"seccomp": line("Seccomp"), "no_new_privs": line("NoNewPrivs"), "cap_eff": line("CapEff"),
		"nofile_soft": nofile.Cur, "nofile_hard": nofile.Max,
	})
}

func try(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var res Result
	switch op := q.Get("op"); op {
	case "connect":
		res = result(connect(q.Get("addr")))
	case "unshare":
		res = result(inNamespace(q.Get("ns"), false))
	case "clone":
		res = result(inNamespace(q.Get("ns"), true))
	case "clone3":
		res = result(clone3(q.Get("ns")))
	case "mount":
		res = result(mountTmpfs())
	case "ptrace":
		res = result(ptrace())
	case "keyctl":
		res = result(keyctl())
	case "bpf":
		res = result(bpf())
	case "write":
		res = write(q.Get("path"), q.Get("size"))
	case "read":
		res = read(q.Get("path"))
	case "files":
		res = files(q.Get("n"))
	case "forkbomb":
		res = forkbomb(q.Get("n"), q.Get("hold"))
	default:
		http.Error(w, fmt.Sprintf("unknown op %q", op), http.StatusBadRequest)
		return
	}
	writeJSON(w, res)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// result turns err into a Result.
func result(err error) Result {
	if err == nil {
		return Result{OK: true}
	}
	res := Result{Err: err.Error()}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		res.Errno = int(errno)
	}
	return res
}

func connect(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

var namespaces = map[string]uintptr{
	"": syscall.CLONE_NEWUSER, "user": syscall.CLONE_NEWUSER, "mount": syscall.CLONE_NEWNS,
	"net": syscall.CLONE_NEWNET, "pid": syscall.CLONE_NEWPID, "ipc": syscall.CLONE_NEWIPC,
	"uts": syscall.CLONE_NEWUTS, "cgroup": 0x02000000,
}

// inNamespace starts a sleeper child in a new namespace: with unshare(2) in
// the child after fork (Go's process is multithreaded, and a new user
// namespace wants a single-threaded caller), or with clone(2)'s flags.
func inNamespace(ns string, clone bool) error {
	flag, ok := namespaces[ns]
	if !ok {
		return fmt.Errorf("unknown namespace %q", ns)
	}
	attr := &syscall.SysProcAttr{}
	if clone {
		attr.Cloneflags = flag
	} else {
		attr.Unshareflags = flag
	}
	pid, err := startSleeper(attr)
	if err != nil {
		return err
	}
	reap(pid)
	return nil
}

// clone3 forks with clone3(2) into a new namespace; the child exits at
// once, before it runs any Go code that could touch the runtime.
func clone3(ns string) error {
	flag, ok := namespaces[ns]
	if !ok {
		return fmt.Errorf("unknown namespace %q", ns)
	}
	// struct clone_args up to tls (CLONE_ARGS_SIZE_VER0): flags, pidfd,
	// child_tid, parent_tid, exit_signal, stack, stack_size, tls.
	args := [8]uint64{0: uint64(flag), 4: uint64(syscall.SIGCHLD)}
	pid, _, e := syscall.RawSyscall(435 /* SYS_clone3 */, uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args), 0)
	if e == 0 && pid == 0 {
		syscall.RawSyscall(syscall.SYS_EXIT_GROUP, 0, 0, 0)
	}
	if e != 0 {
		return fmt.Errorf("clone3: %w", e)
	}
	reap(int(pid))
	return nil
}

func mountTmpfs() error {
	if err := syscall.Mount("tmpfs", "/tmp", "tmpfs", 0, "size=1m"); err != nil {
		return fmt.Errorf("mount tmpfs on /tmp: %w", err)
	}
	return syscall.Unmount("/tmp", syscall.MNT_DETACH)
}

func ptrace() error {
	runtime.LockOSThread() // ptrace requests come from the tracer thread
	defer runtime.UnlockOSThread()
	pid, err := startSleeper(nil)
	if err != nil {
		return err
	}
	defer reap(pid)
	if err := syscall.PtraceAttach(pid); err != nil {
		return fmt.Errorf("ptrace attach %d: %w", pid, err)
	}
	return nil
}

func keyctl() error {
	const getKeyringID, userKeyring = 0, -4 // KEYCTL_GET_KEYRING_ID, KEY_SPEC_USER_KEYRING
	ring := userKeyring
	_, _, e := syscall.Syscall(syscall.SYS_KEYCTL, getKeyringID, uintptr(ring), 1)
	if e != 0 {
		return fmt.Errorf("keyctl: %w", e)
	}
	return nil
}

func bpf() error {
	// union bpf_attr for BPF_MAP_CREATE: type, key size, value size, entries.
	attr := [4]uint32{2 /* BPF_MAP_TYPE_ARRAY */, 4, 4, 1}
	fd, _, e := syscall.Syscall(321 /* SYS_BPF on amd64 */, 0 /* BPF_MAP_CREATE */, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	if e != 0 {
		return fmt.Errorf("bpf map create: %w", e)
	}
	syscall.Close(int(fd))
	return nil
}

// write writes size bytes to path in 1 MiB steps; Got is how many made it.
func write(path, size string) Result {
	n := int64(1)
	if size != "" {
		var err error
		if n, err = strconv.ParseInt(size, 10, 64); err != nil {
			return result(err)
		}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return result(err)
	}
	defer os.Remove(path)
	defer f.Close()
	buf := make([]byte, 1<<20)
	var got int64
	for got < n {
		k, err := f.Write(buf[:min(int64(len(buf)), n-got)])
		got += int64(k)
		if err != nil {
			res := result(err)
			res.Got = got
			return res
		}
	}
	return Result{OK: true, Got: got}
}

func read(path string) Result {
	f, err := os.Open(path)
	if err != nil {
		return result(err)
	}
	defer f.Close()
	buf := make([]byte, 512)
	n, err := f.Read(buf)
	if err != nil && n == 0 {
		return result(err)
	}
	return Result{OK: true, Data: string(buf[:n]), Got: int64(n)}
}

// files opens n descriptors and keeps them until it answers.
func files(count string) Result {
	n, err := strconv.Atoi(count)
	if err != nil {
		return result(err)
	}
	var res Result
	for range n {
		fd, err := syscall.Open("/dev/null", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != nil {
			res = result(fmt.Errorf("open after %d: %w", res.Got, err))
			break
		}
		defer syscall.Close(fd)
		res.Got++
	}
	res.OK = res.Got == int64(n)
	return res
}

// forkbomb starts up to n sleepers, stopping at the first failure, keeps
// them for hold and kills them.
func forkbomb(count, hold string) Result {
	n, err := strconv.Atoi(count)
	if err != nil {
		return result(err)
	}
	d := time.Duration(0)
	if hold != "" {
		if d, err = time.ParseDuration(hold); err != nil {
			return result(err)
		}
	}
	var pids []int
	var res Result
	for range n {
		pid, err := startSleeper(nil)
		if err != nil {
			res = result(fmt.Errorf("child %d: %w", len(pids)+1, err))
			break
		}
		pids = append(pids, pid)
	}
	time.Sleep(d)
	for _, pid := range pids {
		reap(pid)
	}
	res.Got = int64(len(pids))
	res.OK = len(pids) == n
	return res
}

// sleeperPath is the sleeper program, in a memfd that children inherit.
var sleeperPath = sync.OnceValues(func() (string, error) {
	name := []byte("sleeper\x00")
	fd, _, e := syscall.Syscall(319 /* SYS_memfd_create on amd64 */, uintptr(unsafe.Pointer(&name[0])), 0, 0)
	if e != 0 {
		return "", fmt.Errorf("memfd_create: %w", e)
	}
	if _, err := syscall.Write(int(fd), sleeperELF()); err != nil {
		return "", fmt.Errorf("writing the sleeper: %w", err)
	}
	return "/proc/self/fd/" + strconv.Itoa(int(fd)), nil
})

// startSleeper starts the sleeper with attr and returns its pid.
func startSleeper(attr *syscall.SysProcAttr) (int, error) {
	path, err := sleeperPath()
	if err != nil {
		return 0, err
	}
	return syscall.ForkExec(path, []string{"sleeper"}, &syscall.ProcAttr{Sys: attr})
}

// reap kills and waits for a child.
func reap(pid int) {
	syscall.Kill(pid, syscall.SIGKILL)
	var ws syscall.WaitStatus
	for {
		_, err := syscall.Wait4(pid, &ws, 0, nil)
		if err != syscall.EINTR {
			return
		}
	}
}

// sleeperELF is a static x86-64 Linux executable of one loaded segment whose
// code is `for { pause() }`.
func sleeperELF() []byte {
	const base, ehsize, phsize = 0x400000, 64, 56
	code := []byte{
		0xb8, 34, 0, 0, 0, // mov eax, SYS_pause
		0x0f, 0x05, // syscall
		0xeb, 0xf7, // jmp back to mov
	}
	size := uint64(ehsize + phsize + len(code))
	b := make([]byte, 0, size)
	le := binary.LittleEndian
	b = append(b, 0x7f, 'E', 'L', 'F', 2 /* 64-bit */, 1 /* little endian */, 1 /* version */, 0 /* System V */)
	b = append(b, make([]byte, 8)...)
	b = le.AppendUint16(b, 2)    // ET_EXEC
	b = le.AppendUint16(b, 0x3e) // EM_X86_64
	b = le.AppendUint32(b, 1)
	b = le.AppendUint64(b, base+ehsize+phsize) // entry
	b = le.AppendUint64(b, ehsize)             // program headers
	b = le.AppendUint64(b, 0)                  // no section headers
	b = le.AppendUint32(b, 0)
	b = le.AppendUint16(b, ehsize)
	b = le.AppendUint16(b, phsize)
	b = le.AppendUint16(b, 1)
	b = le.AppendUint16(b, 0)
	b = le.AppendUint16(b, 0)
	b = le.AppendUint16(b, 0)
	b = le.AppendUint32(b, 1)      // PT_LOAD
	b = le.AppendUint32(b, 5)      // readable, executable
	b = le.AppendUint64(b, 0)      // from the start of the file
	b = le.AppendUint64(b, base)   // virtual address
	b = le.AppendUint64(b, base)   // physical address
	b = le.AppendUint64(b, size)   // in the file
	b = le.AppendUint64(b, size)   // in memory
	b = le.AppendUint64(b, 0x1000) // alignment
	return append(b, code...)
}
