package pgstore_test

import (
	"testing"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/store"
	"github.com/msisync/msisync/internal/store/storetest"
)

func TestCallSlotsConformance(t *testing.T) {
	adminPool(t)
	storetest.RunCallSlots(t, func(t *testing.T, clk *clock.Fake) store.Store {
		return open(t, newSchema(t), clk)
	})
}
