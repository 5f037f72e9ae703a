package cluster

import (
	"strings"
	"testing"
	"time"
)

func TestPhaseStats(t *testing.T) {
	s := time.Second
	tests := []struct {
		name   string
		phases []map[string]time.Duration
		want   map[string]PhaseStats
	}{
		{name: "none", phases: []map[string]time.Duration{nil, {}}, want: nil},
		{
			name:   "one VM",
			phases: []map[string]time.Duration{{"ready": 2 * s}},
			want:   map[string]PhaseStats{"ready": {FirstS: 2, MedianS: 2, LastS: 2, VMs: 1}},
		},
		{
			name: "VMs missing a phase are left out of it",
			phases: []map[string]time.Duration{
				{"manifest": s, "ready": 4 * s},
				{"manifest": 3 * s},
				{"manifest": 2 * s, "ready": 5 * s},
				nil,
			},
			want: map[string]PhaseStats{
				"manifest": {FirstS: 1, MedianS: 2, LastS: 3, VMs: 3},
				"ready":    {FirstS: 4, MedianS: 4, LastS: 5, VMs: 2},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := phaseStats(tt.phases)
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for k, w := range tt.want {
				if got[k] != w {
					t.Errorf("%s: got %+v, want %+v", k, got[k], w)
				}
			}
		})
	}
}

func TestPhaseNames(t *testing.T) {
	stats := map[string]PhaseStats{"ready": {}, "zeta": {}, "mount": {}, "assigned": {}, "alpha": {}, "started": {}}
	got := strings.Join(PhaseNames(stats), " ")
	if want := "assigned mount started ready alpha zeta"; got != want {
		t.Errorf("PhaseNames = %q, want %q", got, want)
	}
}

func TestBeforeReady(t *testing.T) {
	tests := []struct {
		name                string
		before              []int64
		image               int64
		most, least         int64
		fractionBeforeReady float64
	}{
		{name: "none report it", before: []int64{0, 0}, image: 100},
		{name: "some", before: []int64{0, 30, 10, 20}, image: 100, most: 30, least: 10, fractionBeforeReady: 0.3},
		{name: "no image", before: []int64{5}, most: 5, least: 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Result{ImageBytes: tt.image}
			for _, b := range tt.before {
				r.Reports = append(r.Reports, VMReport{BytesBeforeReady: b})
			}
			if most, least := r.BeforeReady(); most != tt.most || least != tt.least {
				t.Errorf("BeforeReady() = %d, %d; want %d, %d", most, least, tt.most, tt.least)
			}
			if got := r.FractionBeforeReady(); got != tt.fractionBeforeReady {
				t.Errorf("FractionBeforeReady() = %v, want %v", got, tt.fractionBeforeReady)
			}
		})
	}
}

func TestCPUWarning(t *testing.T) {
	tests := []struct {
		ours, machine float64
		want          string
	}{
		{0.1, 0.5, ""},
		{0.9, 0.95, "so mostly this process"},
		{0.2, 0.9, "so mostly other processes"},
		{0.7, 0.87, "so mostly this process"}, // 70 of the 87 points are ours
		{0.4, 0.85, "so mostly other processes"},
	}
	for _, tt := range tests {
		got := CPUWarning(tt.ours, tt.machine)
		if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
			t.Errorf("CPUWarning(%v, %v) = %q, want %q in it", tt.ours, tt.machine, got, tt.want)
		}
	}
}
