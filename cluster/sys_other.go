//go:build !linux

package cluster

// ramDir finds no memory-backed directory here.
func ramDir(need int64) string { return "" }

// machineCPU is not measured here.
func machineCPU() (busy, total uint64, ok bool) { return 0, 0, false }

// raiseOpenFiles leaves the limit alone here.
func raiseOpenFiles(want uint64) {}
