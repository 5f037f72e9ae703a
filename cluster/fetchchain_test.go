package cluster

import (
	"testing"

	"github.com/faasnet/faasnet/lazy"
)

// TestFetchChain counts, on logs of reads with blocks of 10 bytes, the
// reads on the longest chain that wait one for another and fetch a block
// no earlier read needed.
func TestFetchChain(t *testing.T) {
	tests := []struct {
		name  string
		reads []lazy.BlobRead
		want  int
	}{
		{"none", nil, 0},
		{"three in a row, each a new block", []lazy.BlobRead{
			{Off: 0, Len: 5, After: 0, Done: 0},
			{Off: 10, Len: 5, After: 1, Done: 1},
			{Off: 20, Len: 5, After: 2, Done: 2},
		}, 3},
		{"in a row, the second in the first's block", []lazy.BlobRead{
			{Off: 0, Len: 5, After: 0, Done: 0},
			{Off: 5, Len: 5, After: 1, Done: 1},
			{Off: 20, Len: 5, After: 2, Done: 2},
		}, 2},
		{"side by side", []lazy.BlobRead{
			{Off: 0, Len: 5, After: 0, Done: 1},
			{Off: 10, Len: 5, After: 0, Done: 0},
			{Off: 20, Len: 5, After: 0, Done: 2},
		}, 1},
		{"one read over three blocks", []lazy.BlobRead{
			{Off: 5, Len: 20, After: 0, Done: 0},
		}, 1},
		{"waits for a block another read is fetching", []lazy.BlobRead{
			{Off: 0, Len: 5, After: 0, Done: 0},
			{Off: 10, Len: 5, After: 1, Done: 2}, // after the first
			{Off: 12, Len: 5, After: 1, Done: 1}, // beside the second, in its block
			{Off: 30, Len: 5, After: 2, Done: 3}, // after the third, so after the second
		}, 3},
		{"same offsets in another layer are other blocks", []lazy.BlobRead{
			{Layer: 0, Off: 0, Len: 5, After: 0, Done: 0},
			{Layer: 1, Off: 0, Len: 5, After: 1, Done: 1},
		}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := FetchChain(tt.reads, 10); got != tt.want {
				t.Errorf("FetchChain = %d, want %d", got, tt.want)
			}
		})
	}
}
