package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"

	"github.com/faasnet/faasnet/units"
)

// The limits a function's container gets when its spec leaves one out. They
// live here, not in the worker, so that the manager's check and every
// worker, old specs included, agree on them.
const (
	DefaultMemory    = 512 << 20 // bytes
	DefaultCPUMillis = 1000      // one core
	DefaultPids      = 1024
	DefaultTmp       = 64 << 20 // bytes, capped at the memory limit
	DefaultRun       = 16 << 20 // bytes, capped at the memory limit
	DefaultNoFile    = 1024
)

// The bounds of each limit. A floor is where a container could not start at
// all (runc's init, a Go or Python runtime's threads); a ceiling is past
// anything one VM could give one function, so a larger value is a typo.
const (
	MinMemory    = 8 << 20
	MaxMemory    = 64 << 30
	MinCPUMillis = 10 // the kernel's smallest CFS quota (1 ms) in the 100 ms period
	MaxCPUMillis = 64 * 1000
	MinPids      = 8
	MaxPids      = 32768
	MinTmpfs     = 1 << 20 // for tmp and run; their ceiling is the memory limit
	MinNoFile    = 16
	MaxNoFile    = 1 << 20 // the kernel's default fs.nr_open
)

// Limits are a function container's resource limits, resolved: every field
// is set and within its bounds.
type Limits struct {
	Memory    int64 // bytes of memory, swap included
	CPUMillis int64 // CPU time in thousandths of a core
	Pids      int64 // processes and threads
	Tmp       int64 // bytes of the /tmp tmpfs
	Run       int64 // bytes of the /run tmpfs
	NoFile    int64 // open files per process (RLIMIT_NOFILE)
}

// CPU is a number of cores: a JSON number or string in cores ("0.5", 2) or
// a string in millicores ("500m").
type CPU string

// UnmarshalJSON accepts a JSON number or a string.
func (c *CPU) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*c = CPU(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("cpu: want a number of cores or a string such as \"500m\": %w", err)
	}
	*c = CPU(n)
	return nil
}

// Limits resolves the spec's limits: defaults for those left out, and an
// error naming the field for one that is malformed or out of bounds. The
// manager refuses a spec for which it fails; a worker fails the function.
func (s FunctionSpec) Limits() (Limits, error) {
	var l Limits
	var err error
	if l.Memory, err = sizeField("memory", s.Memory, DefaultMemory, MinMemory, MaxMemory); err != nil {
		return Limits{}, err
	}
	if l.CPUMillis, err = cpuField(string(s.CPU)); err != nil {
		return Limits{}, err
	}
	if l.Pids, err = countField("pids", s.Pids, DefaultPids, MinPids, MaxPids); err != nil {
		return Limits{}, err
	}
	if l.NoFile, err = countField("nofile", s.NoFile, DefaultNoFile, MinNoFile, MaxNoFile); err != nil {
		return Limits{}, err
	}
	// Pages a function writes to tmpfs count against its memory limit, so
	// a tmpfs above it could never be filled; the defaults shrink to fit a
	// small memory limit, an explicit size is refused.
	if l.Tmp, err = sizeField("tmp", s.Tmp, min(DefaultTmp, l.Memory), MinTmpfs, l.Memory); err != nil {
		return Limits{}, err
	}
	if l.Run, err = sizeField("run", s.Run, min(DefaultRun, l.Memory), MinTmpfs, l.Memory); err != nil {
		return Limits{}, err
	}
	return l, nil
}

// errUnlimited is what a spec asking for no limit is told.
var errUnlimited = errors.New("a function cannot be unlimited: leave the field out for the default")

// sizeField parses the size v of spec field name, def when v is empty.
func sizeField(name, v string, def, lo, hi int64) (int64, error) {
	if v == "" {
		return def, nil
	}
	if unlimited(v) {
		return 0, fmt.Errorf("spec.%s %q: %w", name, v, errUnlimited)
	}
	n, err := units.ParseSize(v)
	if err != nil {
		return 0, fmt.Errorf("spec.%s: %w", name, err)
	}
	if n == 0 {
		return 0, fmt.Errorf("spec.%s %q: %w", name, v, errUnlimited)
	}
	if n < lo || n > hi {
		return 0, fmt.Errorf("spec.%s %q is out of range: want %s to %s", name, v, units.Size(lo), units.Size(hi))
	}
	return n, nil
}

// countField checks the count v of spec field name, def when v is nil.
func countField(name string, v *int64, def, lo, hi int64) (int64, error) {
	if v == nil {
		return def, nil
	}
	if *v == 0 {
		return 0, fmt.Errorf("spec.%s 0: %w", name, errUnlimited)
	}
	if *v < lo || *v > hi {
		return 0, fmt.Errorf("spec.%s %d is out of range: want %d to %d", name, *v, lo, hi)
	}
	return *v, nil
}

// cpuField parses a number of cores ("0.5", "2") or millicores ("250m")
// into millicores, DefaultCPUMillis when v is empty.
func cpuField(v string) (int64, error) {
	if v == "" {
		return DefaultCPUMillis, nil
	}
	if unlimited(v) {
		return 0, fmt.Errorf("spec.cpu %q: %w", v, errUnlimited)
	}
	num, mult := v, int64(1000)
	if n, ok := strings.CutSuffix(v, "m"); ok {
		num, mult = n, 1
	}
	// Only plain decimals: big.Rat would also take "1/2", "-1" and "1e3".
	if num == "" || len(num) > 32 || strings.Trim(num, "0123456789.") != "" || strings.Count(num, ".") > 1 || num == "." {
		return 0, fmt.Errorf("spec.cpu %q: want cores (\"0.5\", \"2\") or millicores (\"500m\")", v)
	}
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, fmt.Errorf("spec.cpu %q: want cores (\"0.5\", \"2\") or millicores (\"500m\")", v)
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	if r.Sign() == 0 {
		return 0, fmt.Errorf("spec.cpu %q: %w", v, errUnlimited)
	}
	if !r.IsInt() {
		return 0, fmt.Errorf("spec.cpu %q: finer than a millicore", v)
	}
	if r.Cmp(big.NewRat(MinCPUMillis, 1)) < 0 || r.Cmp(big.NewRat(MaxCPUMillis, 1)) > 0 {
		return 0, fmt.Errorf("spec.cpu %q is out of range: want %dm to %d cores", v, MinCPUMillis, MaxCPUMillis/1000)
	}
	return r.Num().Int64(), nil
}

// unlimited reports the spellings of "no limit" that a spec may not use.
func unlimited(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "unlimited", "none", "max", "-1", "inf", "infinity":
		return true
	}
	return false
}
