package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/store"
)

// RunHistory is the conformance suite of the optional store.History port.
// newStore must return a store that implements it.
func RunHistory(t *testing.T, newStore func(t *testing.T, clk *clock.Fake) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, h store.History, clk *clock.Fake)
	}{
		{"NewestFirstAllFields", testHistoryFields},
		{"BoundedPerRecord", testHistoryBounded},
		{"RecordsAreSeparate", testHistorySeparate},
		{"EmptyAndUnknown", testHistoryEmpty},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := clock.NewFake(Start)
			s := newStore(t, clk)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			h, ok := s.(store.History)
			if !ok {
				t.Fatalf("%T does not implement store.History", s)
			}
			tc.fn(t, h, clk)
		})
	}
}

const histContact = "9a100000-0000-4000-8000-000000000003"

func histEntry(i int, outcome string) store.HistoryEntry {
	return store.HistoryEntry{
		Entity: "contact", RecordID: histContact, MessageID: fmt.Sprintf("m%02d", i), Message: "Update",
		Outcome: outcome, ReceivedAt: Start.Add(time.Duration(i) * time.Second), At: Start.Add(time.Duration(i)*time.Second + 1500*time.Millisecond),
	}
}

func testHistoryFields(t *testing.T, h store.History, _ *clock.Fake) {
	ctx := ctxT(t)
	dead := histEntry(2, store.OutcomeDeadLettered)
	dead.Reason, dead.Detail = "MissingDependency", "account 5b… (company of contact 9a1…) is not in Marketo"
	if err := h.AppendHistory(ctx, []store.HistoryEntry{histEntry(1, store.OutcomeRequeued), dead}); err != nil {
		t.Fatalf("AppendHistory: %v", err)
	}
	if err := h.AppendHistory(ctx, []store.HistoryEntry{histEntry(3, store.OutcomeSynced)}); err != nil {
		t.Fatalf("AppendHistory: %v", err)
	}
	got, err := h.RecordHistory(ctx, "contact", histContact, 10)
	if err != nil {
		t.Fatalf("RecordHistory: %v", err)
	}
	if len(got) != 3 {
		t.Fatalf("RecordHistory returned %d entries, want 3: %+v", len(got), got)
	}
	for i, want := range []string{"m03", "m02", "m01"} {
		if got[i].MessageID != want {
			t.Errorf("entry %d is %s, want %s (newest first)", i, got[i].MessageID, want)
		}
	}
	if got[1] != dead {
		t.Errorf("dead-letter entry read back as %+v, want %+v", got[1], dead)
	}
	if got[0].At.Sub(got[0].ReceivedAt) != 1500*time.Millisecond {
		t.Errorf("times read back as %v → %v", got[0].ReceivedAt, got[0].At)
	}
}

func testHistoryBounded(t *testing.T, h store.History, _ *clock.Fake) {
	ctx := ctxT(t)
	total := store.HistoryPerRecord + 7
	// One big batch and then single appends: both must trim.
	var batch []store.HistoryEntry
	for i := 0; i < total-3; i++ {
		batch = append(batch, histEntry(i, store.OutcomeSynced))
	}
	if err := h.AppendHistory(ctx, batch); err != nil {
		t.Fatalf("AppendHistory(%d): %v", len(batch), err)
	}
	for i := total - 3; i < total; i++ {
		if err := h.AppendHistory(ctx, []store.HistoryEntry{histEntry(i, store.OutcomeSynced)}); err != nil {
			t.Fatalf("AppendHistory: %v", err)
		}
	}
	got, err := h.RecordHistory(ctx, "contact", histContact, 1000)
	if err != nil {
		t.Fatalf("RecordHistory: %v", err)
	}
	if len(got) != store.HistoryPerRecord {
		t.Fatalf("kept %d entries, want the bound %d", len(got), store.HistoryPerRecord)
	}
	if got[0].MessageID != fmt.Sprintf("m%02d", total-1) || got[len(got)-1].MessageID != fmt.Sprintf("m%02d", total-store.HistoryPerRecord) {
		t.Errorf("kept %s … %s, want the newest %d (m%02d … m%02d)", got[0].MessageID, got[len(got)-1].MessageID,
			store.HistoryPerRecord, total-1, total-store.HistoryPerRecord)
	}
	if few, err := h.RecordHistory(ctx, "contact", histContact, 3); err != nil || len(few) != 3 {
		t.Errorf("RecordHistory(limit 3) = %d entries, %v; want 3", len(few), err)
	}
}

func testHistorySeparate(t *testing.T, h store.History, _ *clock.Fake) {
	ctx := ctxT(t)
	a := histEntry(1, store.OutcomeSynced)
	b := histEntry(2, store.OutcomeSynced)
	b.Entity = "lead" // same id, other table
	c := histEntry(3, store.OutcomeSkipped)
	c.RecordID = "9a100000-0000-4000-8000-000000000004"
	if err := h.AppendHistory(ctx, []store.HistoryEntry{a, b, c}); err != nil {
		t.Fatalf("AppendHistory: %v", err)
	}
	// Filling one record to its bound must not trim another.
	var fill []store.HistoryEntry
	for i := 10; i < 10+store.HistoryPerRecord+2; i++ {
		fill = append(fill, histEntry(i, store.OutcomeSynced))
	}
	if err := h.AppendHistory(ctx, fill); err != nil {
		t.Fatalf("AppendHistory: %v", err)
	}
	for _, e := range []store.HistoryEntry{b, c} {
		got, err := h.RecordHistory(ctx, e.Entity, e.RecordID, 10)
		if err != nil || len(got) != 1 || got[0].MessageID != e.MessageID {
			t.Errorf("RecordHistory(%s %s) = %+v, %v; want only %s", e.Entity, e.RecordID, got, err, e.MessageID)
		}
	}
}

func testHistoryEmpty(t *testing.T, h store.History, _ *clock.Fake) {
	ctx := ctxT(t)
	got, err := h.RecordHistory(ctx, "contact", histContact, 5)
	if err != nil || len(got) != 0 {
		t.Errorf("RecordHistory on an empty store = %+v, %v; want none", got, err)
	}
	if err := h.AppendHistory(ctx, nil); err != nil {
		t.Errorf("AppendHistory(nil): %v", err)
	}
}
