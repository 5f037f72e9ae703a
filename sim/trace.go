package sim

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
)

// A FunctionKey names a function in an Azure Functions trace.
type FunctionKey struct {
	Owner, App, Function string
}

// InvocationRow is one function's per-minute invocation counts.
type InvocationRow struct {
	FunctionKey
	Trigger string
	Counts  []int
}

// Invocations is an invocations file of the Azure Functions trace 2019:
// columns HashOwner, HashApp, HashFunction, Trigger, then one column per
// minute, labelled with consecutive minute numbers.
type Invocations struct {
	FirstMinute int
	Rows        []InvocationRow
}

// maxCount bounds one minute's invocations of one function; the real
// trace stays below a million.
const maxCount = 1 << 40

var invocationHeader = []string{"HashOwner", "HashApp", "HashFunction", "Trigger"}

// ParseInvocations reads an invocations file. Every row must have one count
// per minute column, a count being a non-negative integer; a function may
// appear only once.
func ParseInvocations(r io.Reader) (*Invocations, error) {
	cr := csv.NewReader(r)
	cr.ReuseRecord = false
	header, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("reading the invocations header: %w", err)
	}
	if len(header) <= len(invocationHeader) {
		return nil, fmt.Errorf("invocations header has %d columns, want %d and one per minute", len(header), len(invocationHeader))
	}
	for i, want := range invocationHeader {
		if header[i] != want {
			return nil, fmt.Errorf("invocations header column %d is %q, want %q", i+1, header[i], want)
		}
	}
	inv := &Invocations{}
	for i, h := range header[len(invocationHeader):] {
		m, err := strconv.Atoi(h)
		if err != nil || m < 0 {
			return nil, fmt.Errorf("invocations header column %d is %q, want a minute number", i+len(invocationHeader)+1, h)
		}
		if i == 0 {
			inv.FirstMinute = m
		} else if m != inv.FirstMinute+i {
			return nil, fmt.Errorf("invocations header column %d is minute %d, want %d (minutes must be consecutive)", i+len(invocationHeader)+1, m, inv.FirstMinute+i)
		}
	}
	seen := map[FunctionKey]bool{}
	for line := 2; ; line++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return inv, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading invocations: %w", err)
		}
		row := InvocationRow{FunctionKey: FunctionKey{rec[0], rec[1], rec[2]}, Trigger: rec[3]}
		if seen[row.FunctionKey] {
			return nil, fmt.Errorf("invocations line %d: function %s/%s/%s appears twice", line, rec[0], rec[1], rec[2])
		}
		seen[row.FunctionKey] = true
		row.Counts = make([]int, len(rec)-len(invocationHeader))
		for i, f := range rec[len(invocationHeader):] {
			n, err := strconv.ParseInt(f, 10, 64)
			if err != nil || n < 0 || n > maxCount {
				return nil, fmt.Errorf("invocations line %d, minute %d: %q is not a count", line, inv.FirstMinute+i, f)
			}
			row.Counts[i] = int(n)
		}
		inv.Rows = append(inv.Rows, row)
	}
}

// ParseDurations reads a durations file of the Azure Functions trace 2019
// and returns each function's average execution time in milliseconds. The
// columns HashOwner, HashApp, HashFunction and Average are found by name;
// the others are ignored.
func ParseDurations(r io.Reader) (map[FunctionKey]float64, error) {
	cr := csv.NewReader(r)
	header, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("reading the durations header: %w", err)
	}
	col := map[string]int{}
	for i, h := range header {
		if _, dup := col[h]; !dup {
			col[h] = i
		}
	}
	var idx [4]int
	for i, name := range []string{"HashOwner", "HashApp", "HashFunction", "Average"} {
		c, ok := col[name]
		if !ok {
			return nil, fmt.Errorf("durations header has no %s column", name)
		}
		idx[i] = c
	}
	out := map[FunctionKey]float64{}
	for line := 2; ; line++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading durations: %w", err)
		}
		k := FunctionKey{rec[idx[0]], rec[idx[1]], rec[idx[2]]}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("durations line %d: function %s/%s/%s appears twice", line, k.Owner, k.App, k.Function)
		}
		avg, err := strconv.ParseFloat(rec[idx[3]], 64)
		if err != nil || avg < 0 || math.IsInf(avg, 0) || math.IsNaN(avg) {
			return nil, fmt.Errorf("durations line %d: average %q is not a duration in milliseconds", line, rec[idx[3]])
		}
		out[k] = avg
	}
}

// TraceFunction is one function of a trace: its invocations per minute and
// average execution time.
type TraceFunction struct {
	Key         FunctionKey `json:"key"`
	Trigger     string      `json:"trigger"`
	Invocations []int       `json:"invocations"`
	AvgMillis   float64     `json:"avg_ms"`
}

// Trace is a replayable trace.
type Trace struct {
	FirstMinute int             `json:"first_minute"`
	Minutes     int             `json:"minutes"`
	Functions   []TraceFunction `json:"functions"`
	// NoDuration counts invocation rows that had no duration and were
	// left out.
	NoDuration int `json:"no_duration"`
}

// ReadTrace reads invocations.csv and durations.csv from dir (the Azure
// Functions trace 2019 layout; memory.csv is not needed). Functions without
// a duration are left out and counted.
func ReadTrace(dir string) (*Trace, error) {
	open := func(name string) (*os.File, error) {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("opening the trace: %w", err)
		}
		return f, nil
	}
	fi, err := open("invocations.csv")
	if err != nil {
		return nil, err
	}
	defer fi.Close()
	inv, err := ParseInvocations(fi)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", fi.Name(), err)
	}
	fd, err := open("durations.csv")
	if err != nil {
		return nil, err
	}
	defer fd.Close()
	dur, err := ParseDurations(fd)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", fd.Name(), err)
	}
	return joinTrace(inv, dur), nil
}

func joinTrace(inv *Invocations, dur map[FunctionKey]float64) *Trace {
	tr := &Trace{FirstMinute: inv.FirstMinute}
	for _, row := range inv.Rows {
		tr.Minutes = max(tr.Minutes, len(row.Counts))
		avg, ok := dur[row.FunctionKey]
		if !ok {
			tr.NoDuration++
			continue
		}
		tr.Functions = append(tr.Functions, TraceFunction{Key: row.FunctionKey, Trigger: row.Trigger, Invocations: row.Counts, AvgMillis: avg})
	}
	return tr
}

// Instances returns how many instances fn needs in minute m with its
// invocations multiplied by scale: ceil(invocations × average duration /
// 60 s), so one instance serves a minute of back-to-back invocations, and
// any invocation needs at least one.
func (fn TraceFunction) Instances(m int, scale float64) int {
	if m >= len(fn.Invocations) || fn.Invocations[m] == 0 {
		return 0
	}
	busy := float64(fn.Invocations[m]) * scale * fn.AvgMillis / 60000
	const most = 1 << 30 // far beyond any pool; keeps the int conversion defined
	return max(1, int(math.Min(math.Ceil(busy-1e-9), most)))
}
