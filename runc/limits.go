package runc

import (
	"strconv"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Limits are a container's resource limits. A zero field sets no limit
// (tmpfs sizes: the kernel's default, half the RAM; NoFile: 1024): the
// caller chooses the defaults (see api.Limits).
type Limits struct {
	Memory    int64 // bytes of memory; swap is held to the same, so it adds nothing
	CPUMillis int64 // CPU time in thousandths of a core, as a CFS quota
	Pids      int64 // processes and threads
	Tmp       int64 // bytes of the /tmp tmpfs
	Run       int64 // bytes of the /run tmpfs
	NoFile    int64 // RLIMIT_NOFILE, soft and hard
}

// cfsPeriod is the CFS period, in microseconds, that CPUMillis is a quota
// of: the kernel's default.
const cfsPeriod = 100000

// defaultNoFile is RLIMIT_NOFILE when Limits.NoFile is 0.
const defaultNoFile = 1024

// applyLimits sets l on spec, whose mounts and resources ociSpec built.
func applyLimits(spec *specs.Spec, l Limits) {
	res := spec.Linux.Resources
	if l.Memory > 0 {
		limit, swap := l.Memory, l.Memory // memory+swap: no swap beyond the limit
		res.Memory = &specs.LinuxMemory{Limit: &limit, Swap: &swap}
	}
	if l.CPUMillis > 0 {
		quota, period := l.CPUMillis*cfsPeriod/1000, uint64(cfsPeriod)
		res.CPU = &specs.LinuxCPU{Quota: &quota, Period: &period}
	}
	if l.Pids > 0 {
		pids := l.Pids
		res.Pids = &specs.LinuxPids{Limit: &pids}
	}
	nofile := uint64(defaultNoFile)
	if l.NoFile > 0 {
		nofile = uint64(l.NoFile)
	}
	spec.Process.Rlimits = []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: nofile, Soft: nofile}}
	for i, m := range spec.Mounts {
		size := map[string]int64{"/tmp": l.Tmp, "/run": l.Run}[m.Destination]
		if m.Type == "tmpfs" && size > 0 {
			spec.Mounts[i].Options = append(m.Options[:len(m.Options):len(m.Options)], "size="+strconv.FormatInt(size, 10))
		}
	}
}
