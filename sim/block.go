package sim

import "github.com/faasnet/faasnet/stripe"

// BlockFor is [stripe.BlockFor]: the simulator picks blocks by the rule the
// manager assigns them by.
func BlockFor(size int64, layers, vms, stripes int) int64 {
	return stripe.BlockFor(size, layers, vms, stripes)
}
