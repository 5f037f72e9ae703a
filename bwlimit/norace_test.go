//go:build !race

package bwlimit

const raceEnabled = false
