package stripe

import "testing"

func TestBlockFor(t *testing.T) {
	for _, tt := range []struct {
		size        int64
		layers, vms int
		stripes     int
		want        int64
	}{
		{758_000_000, 1, 128, 2, 512 << 10}, // the paper: 758 MB / (100·7·2) = 541 kB
		{16 << 20, 4, 128, 2, 64 << 10},     // the bench: far below 64 KiB
		{16 << 30, 1, 2, 1, 1 << 20},        // huge image: capped
		{1, 1, 1, 1, 64 << 10},              // tiny: floored
		{0, 0, 0, 0, 64 << 10},              // nothing known: floored, no division by zero
	} {
		if got := BlockFor(tt.size, tt.layers, tt.vms, tt.stripes); got != tt.want {
			t.Errorf("BlockFor(%d, %d, %d, %d) = %d, want %d", tt.size, tt.layers, tt.vms, tt.stripes, got, tt.want)
		}
	}
}

func TestOf(t *testing.T) {
	for _, tt := range []struct {
		i    int64
		k    int
		want int
	}{
		{0, 1, 0}, {5, 1, 0}, {0, 2, 0}, {1, 2, 1}, {2, 2, 0}, {7, 3, 1}, {3, 0, 0}, {-1, 2, 0},
	} {
		if got := Of(tt.i, tt.k); got != tt.want {
			t.Errorf("Of(%d, %d) = %d, want %d", tt.i, tt.k, got, tt.want)
		}
	}
}
