package pgstore_test

import (
	"fmt"
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

// BenchmarkAppendHistory: one AppendHistory of 300 settled events for 300
// records that already hold a full history (so every append also trims).
func BenchmarkAppendHistory(b *testing.B) {
	s := open(b, newSchema(b), nil)
	defer s.Close()
	batch := make([]store.HistoryEntry, 300)
	for i := range batch {
		batch[i] = store.HistoryEntry{Entity: "contact", RecordID: fmt.Sprintf("9a100000-0000-4000-8000-%012d", i), MessageID: "m", Message: "Update", Outcome: store.OutcomeSynced}
	}
	for range store.HistoryPerRecord {
		if err := s.AppendHistory(b.Context(), batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		if err := s.AppendHistory(b.Context(), batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/300, "µs/entry")
}
