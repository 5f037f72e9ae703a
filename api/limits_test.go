package api

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestLimitsDefaults(t *testing.T) {
	for _, tc := range []struct {
		spec string
		want Limits
	}{
		{`{}`, Limits{Memory: 512 << 20, CPUMillis: 1000, Pids: 1024, Tmp: 64 << 20, Run: 16 << 20, NoFile: 1024}},
		{`{"memory":"32MiB"}`, Limits{Memory: 32 << 20, CPUMillis: 1000, Pids: 1024, Tmp: 32 << 20, Run: 16 << 20, NoFile: 1024}},
		{`{"memory":"8MiB"}`, Limits{Memory: 8 << 20, CPUMillis: 1000, Pids: 1024, Tmp: 8 << 20, Run: 8 << 20, NoFile: 1024}},
		{`{"cpu":0.25,"pids":64,"nofile":100,"tmp":"2MiB","run":"1MiB"}`, Limits{Memory: 512 << 20, CPUMillis: 250, Pids: 64, Tmp: 2 << 20, Run: 1 << 20, NoFile: 100}},
		{`{"cpu":"1.5"}`, Limits{Memory: 512 << 20, CPUMillis: 1500, Pids: 1024, Tmp: 64 << 20, Run: 16 << 20, NoFile: 1024}},
		{`{"cpu":"10m"}`, Limits{Memory: 512 << 20, CPUMillis: 10, Pids: 1024, Tmp: 64 << 20, Run: 16 << 20, NoFile: 1024}},
	} {
		var s FunctionSpec
		if err := json.Unmarshal([]byte(tc.spec), &s); err != nil {
			t.Fatal(err)
		}
		got, err := s.Limits()
		if err != nil || got != tc.want {
			t.Errorf("%s: Limits() = %+v, %v; want %+v", tc.spec, got, err, tc.want)
		}
	}
}

// FuzzLimits checks that whatever a spec says, Limits either refuses it
// naming a field or returns limits within their bounds.
func FuzzLimits(f *testing.F) {
	for _, s := range []string{`{}`, `{"cpu":"0.5","memory":"1GiB","tmp":"1MiB"}`, `{"cpu":1e3}`, `{"pids":-1,"nofile":0}`, `{"cpu":"1.5m"}`, `{"run":"9.99999MiB"}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		var s FunctionSpec
		if json.Unmarshal([]byte(spec), &s) != nil {
			return
		}
		l, err := s.Limits()
		if err != nil {
			if !strings.HasPrefix(err.Error(), "spec.") {
				t.Errorf("error %q does not name its field", err)
			}
			return
		}
		if l.Memory < MinMemory || l.Memory > MaxMemory || l.CPUMillis < MinCPUMillis || l.CPUMillis > MaxCPUMillis ||
			l.Pids < MinPids || l.Pids > MaxPids || l.NoFile < MinNoFile || l.NoFile > MaxNoFile ||
			l.Tmp < MinTmpfs || l.Tmp > l.Memory || l.Run < MinTmpfs || l.Run > l.Memory {
			t.Errorf("%s: limits out of bounds: %+v", spec, l)
		}
	})
}
