// Package stripe holds the rules of striped transfer that every party must
// apply alike: the manager when it assigns a block size, the simulator when
// it models a run, and the workers when they cut blobs into blocks and fetch
// each block down its stripe's tree (see ftree.Striped for the trees).
package stripe

import "github.com/faasnet/faasnet/ftree"

// Bounds of BlockFor: below 64 KiB the per-block costs of a real data plane
// (a request, a cache entry) dominate; above 1 MiB the first block waits
// too long at every level.
const (
	MinAutoBlock = 64 << 10
	MaxAutoBlock = 1 << 20
)

// DefaultBlock is the block of a function whose image size is not known:
// the workers' default (blobcache.DefaultBlockSize), as in the paper.
const DefaultBlock = 512 << 10

// Of returns the stripe that block i of a blob travels down with k stripes:
// i mod k, so a blob of one block (most manifests and configs) uses stripe
// 0, as does every block when k is 1 or less.
func Of(i int64, k int) int {
	if k <= 1 || i < 0 {
		return 0
	}
	return int(i % int64(k))
}

// BlockFor picks the block size for an image of size bytes in layers
// layers, streamed down stripes stripe trees of vms VMs with links of
// bandwidth bytes/s. Each level of a tree delays the data by about one
// block at the rate one flow gets, which starts at
// bandwidth/(fan-out × layers) (a VM forwards every layer to each child):
// height × block × fan-out × layers / bandwidth in all. BlockFor keeps that
// within 1% of the transfer time S/bandwidth, rounded down to a power of
// two within [MinAutoBlock, MaxAutoBlock]. The bandwidth cancels out, so it
// takes none.
func BlockFor(size int64, layers, vms, stripes int) int64 {
	fanout := max(stripes, 2)
	h := max(ftree.OptimalHeight(max(vms, 1), fanout), 1)
	limit := float64(size) / 100 / float64(h*fanout*max(layers, 1))
	b := int64(MaxAutoBlock)
	for b > MinAutoBlock && float64(b) > limit {
		b /= 2
	}
	return b
}
