package cluster

import (
	"os"
	"syscall"
)

// ramDir is a memory-backed directory with room for need more bytes, or "".
// The VMs' caches go there when the caller does not choose: the emulation
// is of the network, and a shared virtual disk's fsyncs would otherwise set
// the pace (a 16-VM demo writes and syncs 2.4 GB).
func ramDir(need int64) string {
	const dir = "/dev/shm"
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return ""
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if free < need+1<<30 { // leave a GiB to everybody else
		return ""
	}
	f, err := os.CreateTemp(dir, "faasnet-probe-*")
	if err != nil {
		return ""
	}
	f.Close()
	os.Remove(f.Name())
	return dir
}

// machineCPU returns the machine's busy and total CPU time so far, in
// clock ticks, from /proc/stat.
func machineCPU() (busy, total uint64, ok bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, false
	}
	return parseProcStat(b)
}

// raiseOpenFiles raises this process's limit of open files to at least
// want if it can: a few hundred emulated VMs in one process hold tens of
// thousands of sockets (a swarm agent keeps up to 10 connections per blob,
// both ends in this process). Above the hard limit it needs privilege
// (CAP_SYS_RESOURCE); without, it goes as far as the hard limit.
func raiseOpenFiles(want uint64) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur >= want {
		return
	}
	if lim.Max < want {
		raised := syscall.Rlimit{Cur: want, Max: want}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised) == nil {
			return
		}
	}
	lim.Cur = min(want, lim.Max)
	syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
}
