package main

import (
	"context"
	"slices"
	"strings"
	"testing"
)

// TestBenchRefusesReplayFlags: replaying reads needs a lazy function, and
// the side-by-side comparison needs the replay; both are refused before
// anything starts.
func TestBenchRefusesReplayFlags(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "--replay-reads"},
		{"bench", "--lazy", "--compare-containers"},
	} {
		root := newRoot()
		root.SetArgs(args)
		err := root.ExecuteContext(context.Background())
		if err == nil || !strings.Contains(err.Error(), "--replay-reads needs --lazy") {
			t.Errorf("%v: err %v, want a refusal naming the flags", args, err)
		}
	}
}

// --block-size takes sizes and auto, one or a list; the scenario's block
// is the only one given, or with --lazy or --trace and none given the
// block their recorded results were measured with.
func TestBenchBlockSizes(t *testing.T) {
	tests := []struct {
		arg     string // "" for not given
		changed []string
		want    []int64
		one     int64
		str     string
	}{
		{"", nil, nil, 0, "auto"},
		{"", []string{"lazy"}, nil, lazyBlock, "auto"},
		{"", []string{"trace"}, nil, lazyBlock, "auto"},
		{"auto", []string{"block-size", "lazy"}, []int64{0}, 0, "auto"},
		{"128KiB", []string{"block-size"}, []int64{128 << 10}, 128 << 10, "128KiB"},
		{"512KiB,auto", []string{"block-size"}, []int64{512 << 10, 0}, 0, "512KiB,auto"},
	}
	for _, tt := range tests {
		var b blockSizes
		if tt.arg != "" {
			if err := b.Set(tt.arg); err != nil {
				t.Fatalf("Set(%q): %v", tt.arg, err)
			}
		}
		changed := func(name string) bool { return slices.Contains(tt.changed, name) }
		if !slices.Equal(b, tt.want) || b.one(changed) != tt.one || b.String() != tt.str {
			t.Errorf("%q with %v: %v, one %d, %q; want %v, %d, %q", tt.arg, tt.changed, []int64(b), b.one(changed), b.String(), tt.want, tt.one, tt.str)
		}
	}
	for _, bad := range []string{"0", "-1KiB", "lots", "auto,", "64KiB,,auto"} {
		var b blockSizes
		if err := b.Set(bad); err == nil {
			t.Errorf("Set(%q) accepted: %v", bad, []int64(b))
		}
	}
}
