package syncer

import (
	"context"
	"sync"
	"testing"

	"github.com/msisync/msisync/internal/store"
)

// OnSettle reports every settled message with its record and outcome: a
// contact whose account never arrives is requeued (with the reason) until it
// is dead-lettered, while its owner syncs.
func TestOnSettleReportsEachOutcomeWithTheRecord(t *testing.T) {
	var mu sync.Mutex
	var got []store.HistoryEntry
	e := newEnv(t, func(c *Config) {
		c.OnSettle = func(_ context.Context, s []store.HistoryEntry) {
			mu.Lock()
			got = append(got, s...)
			mu.Unlock()
		}
	})
	e.send(userEv(userID, "ann@example.com"), contactEv(contactID, accountID, userID, "joe@example.com"))
	e.drain()
	mu.Lock()
	defer mu.Unlock()
	var contact []string
	for _, h := range got {
		if h.Entity == "systemuser" && (h.RecordID != userID || h.Outcome != store.OutcomeSynced || h.Reason != "") {
			t.Errorf("user entry %+v, want synced with no reason", h)
		}
		if h.Entity == "contact" && h.RecordID == contactID {
			contact = append(contact, h.Outcome)
			if h.Reason != ReasonMissingDependency || h.Message != "Create" && h.Message != "Update" {
				t.Errorf("contact entry %+v, want reason %s", h, ReasonMissingDependency)
			}
			if h.ReceivedAt.IsZero() || h.At.Before(h.ReceivedAt) {
				t.Errorf("contact entry times %v → %v", h.ReceivedAt, h.At)
			}
		}
	}
	want := []string{store.OutcomeRequeued, store.OutcomeRequeued, store.OutcomeRequeued, store.OutcomeDeadLettered}
	if len(contact) != len(want) {
		t.Fatalf("contact outcomes %v, want %v (all: %+v)", contact, want, got)
	}
	for i := range want {
		if contact[i] != want[i] {
			t.Fatalf("contact outcomes %v, want %v", contact, want)
		}
	}
}
