//go:build race

package sqlitestore_test

// The race detector slows the transpiled SQLite engine about 20-fold.
const raceEnabled = true
