//go:build race

package msi

// raceEnabled shrinks the simulator scale test: the race detector makes the
// pure-Go SQLite store about 20× slower.
const raceEnabled = true
