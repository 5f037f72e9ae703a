package sim

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadTraceSynthetic(t *testing.T) {
	tr, err := ReadTrace("testdata/trace")
	if err != nil {
		t.Fatal(err)
	}
	if tr.FirstMinute != 480 || tr.Minutes != 20 || len(tr.Functions) != 3 || tr.NoDuration != 1 {
		t.Fatalf("first minute %d, %d minutes, %d functions, %d without duration; want 480, 20, 3, 1",
			tr.FirstMinute, tr.Minutes, len(tr.Functions), tr.NoDuration)
	}
	fA := tr.Functions[0]
	if fA.Key != (FunctionKey{"o1", "a1", "fA"}) || fA.Trigger != "http" || fA.AvgMillis != 1000 || fA.Invocations[5] != 600 {
		t.Errorf("fA = %+v", fA)
	}
	for _, tt := range []struct {
		fn, minute int
		scale      float64
		want       int
	}{
		{0, 5, 1, 10},  // 600 × 1 s / 60 s
		{0, 12, 1, 20}, // 1200 × 1 s
		{0, 0, 1, 0},   // idle
		{1, 3, 1, 1},   // 60 × 0.5 s = 30 s: one instance
		{2, 2, 1, 1},   // 3 × 20 ms: still one
		{0, 5, 2.5, 25},
		{1, 3, 3, 2}, // 90 s of work
		{0, 99, 1, 0},
	} {
		if got := tr.Functions[tt.fn].Instances(tt.minute, tt.scale); got != tt.want {
			t.Errorf("function %d, minute %d, scale %v: %d instances, want %d", tt.fn, tt.minute, tt.scale, got, tt.want)
		}
	}
}

func TestParseInvocationsErrors(t *testing.T) {
	const head = "HashOwner,HashApp,HashFunction,Trigger,1,2\n"
	for _, tt := range []struct{ name, in, msg string }{
		{"empty", "", "header"},
		{"no minutes", "HashOwner,HashApp,HashFunction,Trigger\n", "columns"},
		{"wrong column", "Owner,HashApp,HashFunction,Trigger,1\n", "HashOwner"},
		{"minute not a number", "HashOwner,HashApp,HashFunction,Trigger,one\n", "minute number"},
		{"minutes not consecutive", "HashOwner,HashApp,HashFunction,Trigger,1,3\n", "consecutive"},
		{"negative count", head + "o,a,f,http,1,-1\n", "not a count"},
		{"fractional count", head + "o,a,f,http,1,1.5\n", "not a count"},
		{"short row", head + "o,a,f,http,1\n", "wrong number of fields"},
		{"twice", head + "o,a,f,http,1,1\no,a,f,timer,2,2\n", "twice"},
	} {
		_, err := ParseInvocations(strings.NewReader(tt.in))
		if err == nil || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%s: error %v, want one mentioning %q", tt.name, err, tt.msg)
		}
	}
}

func TestParseDurationsErrors(t *testing.T) {
	const head = "HashOwner,HashApp,HashFunction,Average,Count\n"
	for _, tt := range []struct{ name, in, msg string }{
		{"empty", "", "header"},
		{"no average", "HashOwner,HashApp,HashFunction,Count\n", "Average"},
		{"bad average", head + "o,a,f,fast,1\n", "not a duration"},
		{"negative", head + "o,a,f,-3,1\n", "not a duration"},
		{"infinite", head + "o,a,f,Inf,1\n", "not a duration"},
		{"twice", head + "o,a,f,3,1\no,a,f,4,1\n", "twice"},
	} {
		_, err := ParseDurations(strings.NewReader(tt.in))
		if err == nil || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%s: error %v, want one mentioning %q", tt.name, err, tt.msg)
		}
	}
	d, err := ParseDurations(strings.NewReader("Count,Average,HashFunction,HashApp,HashOwner\n7,2.5,f,a,o\n"))
	if err != nil || d[FunctionKey{"o", "a", "f"}] != 2.5 {
		t.Errorf("columns in another order: %v, %v", d, err)
	}
}

func TestReadTraceMissing(t *testing.T) {
	_, err := ReadTrace(t.TempDir())
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("error %v, want one wrapping os.ErrNotExist", err)
	}
}

// realTrace is the Azure 2019 sample shipped beside the repository.
const realTrace = "../../shared/traces/azure2019-invitro-500"

func readRealTrace(t testing.TB) *Trace {
	if _, err := os.Stat(filepath.Join(realTrace, "invocations.csv")); err != nil {
		t.Skipf("the real trace is not at %s: %v", realTrace, err)
	}
	tr, err := ReadTrace(realTrace)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func TestReadRealTrace(t *testing.T) {
	tr := readRealTrace(t)
	if len(tr.Functions) != 500 || tr.Minutes != 480 || tr.FirstMinute != 480 || tr.NoDuration != 0 {
		t.Errorf("%d functions, %d minutes from %d, %d without duration; the README says 500 functions, minutes 480-959",
			len(tr.Functions), tr.Minutes, tr.FirstMinute, tr.NoDuration)
	}
	total := 0
	for _, f := range tr.Functions {
		for _, n := range f.Invocations {
			total += n
		}
	}
	if total < 2_500_000 || total > 3_500_000 {
		t.Errorf("%d invocations; the README says about 3.0 million", total)
	}
}

func FuzzParseInvocations(f *testing.F) {
	seed, err := os.ReadFile("testdata/trace/invocations.csv")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(seed))
	f.Add("HashOwner,HashApp,HashFunction,Trigger,0\no,a,f,t,0\n")
	f.Add("HashOwner,HashApp,HashFunction,Trigger,5,6\n\"o\",a,f,t,1,99999999999999\n")
	f.Fuzz(func(t *testing.T, in string) {
		inv, err := ParseInvocations(strings.NewReader(in))
		if err != nil {
			return
		}
		for _, r := range inv.Rows {
			for _, n := range r.Counts {
				if n < 0 {
					t.Fatalf("negative count %d accepted", n)
				}
			}
			fn := TraceFunction{Invocations: r.Counts, AvgMillis: 1}
			for m := range r.Counts {
				if fn.Instances(m, 1) < 0 {
					t.Fatal("negative instances")
				}
			}
		}
	})
}

func FuzzParseDurations(f *testing.F) {
	seed, err := os.ReadFile("testdata/trace/durations.csv")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(seed))
	f.Add("Average,HashOwner,HashApp,HashFunction\n1e308,o,a,f\n")
	f.Fuzz(func(t *testing.T, in string) {
		d, err := ParseDurations(strings.NewReader(in))
		if err != nil {
			return
		}
		for k, v := range d {
			if v < 0 || v != v {
				t.Fatalf("%v: duration %v accepted", k, v)
			}
		}
	})
}
