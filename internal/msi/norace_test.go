//go:build !race

package msi

const raceEnabled = false
