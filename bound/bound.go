// Package bound holds the least time in which any strategy can deliver an
// image to VMs (DESIGN.md section 7): the one bound that the simulator (sim)
// and the emulated cluster (cluster) measure their strategies' makespans
// against.
package bound

import "math"

// Delivery is what must be moved, and over which links. Rates are in
// bytes/s; 0 means unlimited and drops the terms the rate appears in.
type Delivery struct {
	// Bytes is what each copy needs: an image, or the part of it a
	// container reads before it starts.
	Bytes float64
	// VMs receive the copies; all of them can upload.
	VMs int
	// Copies is the copies received in all (the containers); 0 means one
	// per VM.
	Copies int
	// MostPerVM is the most copies any one VM receives; 0 means 1.
	MostPerVM int
	// Distinct is the number of different images, each of which leaves the
	// registry at least once; 0 means 1.
	Distinct int
	// Down and Up are each VM's download and upload rates, Registry the
	// registry's egress.
	Down, Up, Registry float64
	// NoUploads says the VMs do not forward what they receive, so that
	// every copy leaves the registry: every VM pulling on its own.
	NoUploads bool
}

// Seconds is the bound:
//
//	T >= most·bytes / down                 a VM receives its copies at its download rate
//	T >= distinct·bytes / registry         every image leaves the registry at least once
//	T >= copies·bytes / (registry + vms·up) every copy received leaves the registry
//	                                        or some VM's uplink (up = 0 with NoUploads)
//
// All VMs, including the one that finishes last, count as uploaders: a VM
// can forward a byte as soon as it holds it. With one copy per VM this is
// the fluid bound of Kumar and Ross ("Peer-assisted file distribution: the
// minimum distribution time", 2006), who show that it is reached when data
// is infinitely divisible and forwarding is instant, so no tighter bound
// holds without modelling blocks: real strategies also pay at least a
// block's time per hop, which this bound leaves out.
func (d Delivery) Seconds() float64 {
	if d.VMs <= 0 || d.Bytes <= 0 {
		return 0
	}
	copies, most, distinct := or1(d.Copies, d.VMs), or1(d.MostPerVM, 1), or1(d.Distinct, 1)
	t := 0.0
	if d.Down > 0 {
		t = math.Max(t, float64(most)*d.Bytes/d.Down)
	}
	if d.Registry > 0 {
		t = math.Max(t, float64(distinct)*d.Bytes/d.Registry)
		up := d.Up
		if d.NoUploads {
			up = 0
		}
		if up > 0 || d.NoUploads {
			t = math.Max(t, float64(copies)*d.Bytes/(d.Registry+float64(d.VMs)*up))
		}
	}
	return t
}

// or1 is n, or def when n is not positive.
func or1(n, def int) int {
	if n > 0 {
		return n
	}
	return def
}
