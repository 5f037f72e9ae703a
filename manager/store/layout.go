package store

import (
	"fmt"

	"github.com/faasnet/faasnet/ftree"
)

// Layout assembles the stripe layout of a function of k >= 2 stripes from
// its nodes' Positions and Home (see Node). It fails, wrapping ErrCorrupt,
// if the nodes do not place every VM at one position of every stripe;
// whether the result is a valid layout is ftree.RestoreStriped's to say.
func Layout(k int, nodes []Node) (ftree.Layout, error) {
	if k < 2 || k > MaxStripes {
		return ftree.Layout{}, fmt.Errorf("store: layout of %d stripes: %w", k, ErrCorrupt)
	}
	l := ftree.Layout{Order: make([][]string, k), Members: make([]int, k)}
	for s := range l.Order {
		l.Order[s] = make([]string, len(nodes))
	}
	for _, n := range nodes {
		if len(n.Positions) != k {
			return ftree.Layout{}, fmt.Errorf("store: node %s/%s has %d positions, its function %d stripes: %w", n.Function, n.VM, len(n.Positions), k, ErrCorrupt)
		}
		for s, p := range n.Positions {
			if p < 0 || p >= len(nodes) || l.Order[s][p] != "" {
				return ftree.Layout{}, fmt.Errorf("store: node %s/%s at position %d of stripe %d: beyond %d nodes or taken: %w", n.Function, n.VM, p, s, len(nodes), ErrCorrupt)
			}
			l.Order[s][p] = n.VM
		}
		if n.Home < 0 || n.Home >= k {
			return ftree.Layout{}, fmt.Errorf("store: node %s/%s has home stripe %d of %d: %w", n.Function, n.VM, n.Home, k, ErrCorrupt)
		}
		l.Members[n.Home]++
	}
	return l, nil
}

// Placement is a VM's place in a layout: its Positions and Home.
type Placement struct {
	Positions []int
	Home      int
}

// Placements returns every VM's place in l, by name: what its Node stores.
func Placements(l *ftree.Layout) map[string]Placement {
	out := map[string]Placement{}
	if l == nil || len(l.Order) == 0 {
		return out
	}
	k := len(l.Order)
	for _, vm := range l.Order[0] {
		out[vm] = Placement{Positions: make([]int, k), Home: -1}
	}
	for s, order := range l.Order {
		for p, vm := range order {
			pl := out[vm]
			pl.Positions[s] = p
			if p < l.Members[s] {
				pl.Home = s
			}
			out[vm] = pl
		}
	}
	return out
}
