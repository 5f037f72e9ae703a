package placement

import (
	"slices"
	"testing"
)

func TestChoose(t *testing.T) {
	cs := []Candidate{
		{VM: "idle-b"},
		{VM: "busy", Functions: 3},
		{VM: "cached", Cached: true, Functions: 5},
		{VM: "idle-a"},
		{VM: "fanned", Fanout: 4},
	}
	got := Choose(slices.Clone(cs), 4)
	want := []string{"cached", "idle-a", "idle-b", "fanned"}
	if !slices.Equal(got, want) {
		t.Errorf("Choose = %v, want %v", got, want)
	}
	if Choose(slices.Clone(cs), 6) != nil {
		t.Error("Choose of more than there are should be nil")
	}
}
