package placement

import (
	"fmt"
	"math/rand/v2"
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

// TestChooseFewOfMany checks that choosing a few out of many (kept in a
// heap) picks the same VMs in the same order as sorting them all.
func TestChooseFewOfMany(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 5))
	for trial := range 200 {
		cs := make([]Candidate, 50+r.IntN(500))
		for i := range cs {
			cs[i] = Candidate{VM: fmt.Sprintf("vm-%06d-%d", r.IntN(1000000), i), Cached: r.IntN(4) == 0, Functions: r.IntN(3), Fanout: r.IntN(4)}
		}
		n := 1 + r.IntN(len(cs)/8)
		sorted := slices.Clone(cs)
		slices.SortFunc(sorted, compare)
		var want []string
		for _, c := range sorted[:n] {
			want = append(want, c.VM)
		}
		if got := Choose(slices.Clone(cs), n); !slices.Equal(got, want) {
			t.Fatalf("trial %d: Choose(%d of %d) = %v, want %v", trial, n, len(cs), got, want)
		}
	}
}
