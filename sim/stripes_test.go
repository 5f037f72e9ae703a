package sim

import (
	"fmt"
	"math"
	"slices"
	"testing"
)

func TestStripeSizes(t *testing.T) {
	for _, tt := range []struct {
		size, block float64
		k           int
		want        []float64
	}{
		{10, 4, 1, []float64{10}},
		{3, 4, 2, []float64{3, 0}},             // one block: stripe 0 alone
		{8, 4, 2, []float64{4, 4}},             // two full blocks
		{10, 4, 2, []float64{6, 4}},            // blocks 0 and 2 (short) to stripe 0
		{10, 4, 3, []float64{4, 4, 2}},         // the short block 2 to stripe 2
		{28, 4, 3, []float64{12, 8, 8}},        // blocks 0,3,6 / 1,4 / 2,5
		{4 * 5.5, 4, 4, []float64{8, 6, 4, 4}}, // blocks 0,4 / 1,5(half) / 2 / 3
	} {
		got := stripeSizes(tt.size, tt.block, tt.k)
		if !slices.Equal(got, tt.want) {
			t.Errorf("stripeSizes(%v, %v, %d) = %v, want %v", tt.size, tt.block, tt.k, got, tt.want)
		}
	}
}

// TestStripedMakespan checks what striping is for, on the paper's links:
// with fan-out k every VM forwards its home stripe (S/k) to k children at
// bw/k each, so the image arrives in about S/bw, not the single tree's
// 2S/bw, plus one block time at bw/k per level (k·B/bw); the registry
// still sends one image, and no VM sends more than it receives but for
// a block per child.
func TestStripedMakespan(t *testing.T) {
	for _, k := range []int{2, 4} {
		for _, n := range []int{16, 64, 128, 1000} {
			c := exact(n)
			c.Stripes = k
			r, err := ScaleOut(c, FaaSNet)
			if err != nil {
				t.Fatal(err)
			}
			S, B, bw := float64(c.ImageSize), float64(c.BlockSize), float64(c.Bandwidth)
			h := float64(r.Height[0].Height)
			lo, hi := S/bw, S/bw+(h+2)*float64(k)*B/bw+tolerance(r, S/bw)
			if r.Makespan < lo || r.Makespan > hi {
				t.Errorf("k=%d, %d VMs: makespan %.4f s, want %.4f to %.4f s", k, n, r.Makespan, lo, hi)
			}
			if r.RegistryEgress != c.ImageSize {
				t.Errorf("k=%d, %d VMs: registry sent %d, want one image", k, n, r.RegistryEgress)
			}
			// Stripes differ by up to one block, so a VM whose home stripe
			// is the largest sends up to k blocks more than it receives.
			if bound := 1 + float64(k)*B/S; n%k <= 1 && r.MaxUploadRatio > bound {
				t.Errorf("k=%d, %d VMs: a VM sent %.4f of what it received, want at most %.4f", k, n, r.MaxUploadRatio, bound)
			}
			if r.Stripes != k || r.BlockSize != c.BlockSize {
				t.Errorf("result says %d stripes of block %d", r.Stripes, r.BlockSize)
			}
		}
	}
}

// TestStripeFanoutMeasured runs the fan-out measurement of package ftree's
// doc: with more than two stripes, binary stripe trees make VMs interior in
// several stripes and cost about the single tree's 2S/bw, while fan-out k
// stays near S/bw; and with 128 VMs and three stripes, the one short group
// gives a VM k+1 children, which costs (k+1)/k.
func TestStripeFanoutMeasured(t *testing.T) {
	run := func(k, fanout int) *Result {
		c := exact(128)
		c.Resolution = 0
		c.Stripes, c.StripeFanout = k, fanout
		r, err := ScaleOut(c, FaaSNet)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	S := float64(DefaultImageSize) / float64(DefaultBandwidth)
	for _, tt := range []struct {
		k, fanout int
		lo, hi    float64 // makespan in units of S/bw
	}{
		{1, 0, 2, 2.05},
		{2, 0, 1, 1.05},
		{4, 0, 1, 1.05},
		{4, 2, 1.9, 2.1},
		{3, 2, 1.9, 2.1},
		{3, 0, 4.0 / 3, 4.0/3 + 0.05},
	} {
		t.Run(fmt.Sprintf("k%d-fanout%d", tt.k, tt.fanout), func(t *testing.T) {
			r := run(tt.k, tt.fanout)
			if x := r.Makespan / S; x < tt.lo || x > tt.hi {
				t.Errorf("makespan %.3f S/bw, want %.2f to %.2f", x, tt.lo, tt.hi)
			}
			if r.RegistryEgress != DefaultImageSize {
				t.Errorf("registry sent %d bytes, want one image", r.RegistryEgress)
			}
			if math.IsNaN(r.Efficiency) {
				t.Error("efficiency NaN")
			}
		})
	}
}
