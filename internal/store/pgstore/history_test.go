package pgstore_test

import (
	"testing"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/store"
	"github.com/msisync/msisync/internal/store/storetest"
)

func TestHistoryConformance(t *testing.T) {
	adminPool(t) // skip (or fail under CI=true) once, not per subtest
	storetest.RunHistory(t, func(t *testing.T, clk *clock.Fake) store.Store {
		return open(t, newSchema(t), clk)
	})
}
