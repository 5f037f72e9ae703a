package main

import (
	"context"
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
