package bound

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestSeconds(t *testing.T) {
	const MiB = 1 << 20
	tests := []struct {
		name string
		d    Delivery
		want float64
	}{
		{"download bound", Delivery{Bytes: 16 * MiB, VMs: 128, Down: 4 * MiB, Up: 4 * MiB, Registry: 16 * MiB}, 4},
		{"registry bound", Delivery{Bytes: 16 * MiB, VMs: 1, Registry: 4 * MiB}, 4},
		// 64 VMs × 16 MiB over 16 + 64×1 MiB/s of uplinks.
		{"uplinks bound", Delivery{Bytes: 16 * MiB, VMs: 64, Down: 8 * MiB, Up: 1 * MiB, Registry: 16 * MiB}, 12.8},
		{"unlimited uplinks leave the registry alone", Delivery{Bytes: 16 * MiB, VMs: 4, Registry: 16 * MiB}, 1},
		{"every VM pulling on its own", Delivery{Bytes: 16 * MiB, VMs: 4, Down: 32 * MiB, Up: 64 * MiB, Registry: 16 * MiB, NoUploads: true}, 4},
		{"two containers on one VM", Delivery{Bytes: 16 * MiB, VMs: 8, Copies: 16, MostPerVM: 2, Down: 4 * MiB, Up: 4 * MiB, Registry: 64 * MiB}, 8},
		{"each function's image leaves the registry", Delivery{Bytes: 16 * MiB, VMs: 8, Distinct: 4, Down: 64 * MiB, Up: 64 * MiB, Registry: 16 * MiB}, 4},
		{"everything unlimited", Delivery{Bytes: 16 * MiB, VMs: 8}, 0},
		{"no VMs", Delivery{Bytes: 16 * MiB, Down: MiB, Up: MiB, Registry: MiB}, 0},
		{"empty image", Delivery{VMs: 8, Down: MiB, Up: MiB, Registry: MiB}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.d.Seconds(); math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("%+v.Seconds() = %v, want %v", tt.d, got, tt.want)
			}
		})
	}
}

// TestProperties checks, over seeded random deliveries, that the bound
// never falls below a VM's own download or the registry sending each image
// once, grows with the VMs, copies and bytes, and shrinks as any link gets
// faster.
func TestProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	rate := func() float64 { return float64(1 + rng.Int64N(1<<28)) }
	for range 2000 {
		vms := 1 + rng.IntN(1000)
		d := Delivery{
			Bytes: float64(1 + rng.Int64N(1<<30)), VMs: vms, Copies: vms * (1 + rng.IntN(3)), MostPerVM: 1 + rng.IntN(3),
			Distinct: 1 + rng.IntN(3), Down: rate(), Up: rate(), Registry: rate(), NoUploads: rng.IntN(4) == 0,
		}
		lb := d.Seconds()
		for _, term := range []float64{float64(d.MostPerVM) * d.Bytes / d.Down, float64(d.Distinct) * d.Bytes / d.Registry} {
			if lb < term*(1-1e-12) {
				t.Fatalf("%+v: bound %v below the term %v", d, lb, term)
			}
		}
		grow := func(f func(*Delivery)) float64 { c := d; f(&c); return c.Seconds() }
		for _, more := range []float64{
			grow(func(c *Delivery) { c.Bytes++ }),
			grow(func(c *Delivery) { c.Copies++ }), grow(func(c *Delivery) { c.NoUploads = true }),
		} {
			if more < lb*(1-1e-12) {
				t.Fatalf("%+v: bound %v shrinks with more to move: %v", d, lb, more)
			}
		}
		// With one copy per VM, one more VM is one more copy to receive:
		// its uplink never makes up for it.
		one := d
		one.Copies, one.MostPerVM = 0, 0
		more := one
		more.VMs++
		if more.Seconds() < one.Seconds()*(1-1e-12) {
			t.Fatalf("%+v: bound %v shrinks with one more VM: %v", one, one.Seconds(), more.Seconds())
		}
		for _, faster := range []float64{
			grow(func(c *Delivery) { c.Down *= 2 }), grow(func(c *Delivery) { c.Up *= 2 }), grow(func(c *Delivery) { c.Registry *= 2 }),
		} {
			if faster > lb*(1+1e-12) {
				t.Fatalf("%+v: bound %v grows with a faster link: %v", d, lb, faster)
			}
		}
	}
}
