package sqlitestore_test

import (
	"path/filepath"
	"testing"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/store"
	"github.com/msisync/msisync/internal/store/storetest"
)

func TestCallSlotsConformance(t *testing.T) {
	storetest.RunCallSlots(t, func(t *testing.T, clk *clock.Fake) store.Store {
		return open(t, filepath.Join(t.TempDir(), "store.db"), clk)
	})
}
