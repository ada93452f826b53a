package syncer

import (
	"context"
	"time"

	"github.com/msisync/msisync/internal/queue"
	"github.com/msisync/msisync/internal/store"
)

// historyEntry describes what became of one settled message, for OnSettle.
// ReceivedAt is when the event first entered the queue as far as the
// message can tell: the enqueue time of this delivery, or the first failure
// of an event that was requeued (its re-sends carry that), whichever is
// earlier.
func historyEntry(m *msg, outcome, reason, desc string, now time.Time) store.HistoryEntry {
	e := store.HistoryEntry{
		MessageID: m.d.ID, Outcome: outcome, Reason: reason, Detail: desc,
		Entity: m.d.Properties[queue.PropEntity], RecordID: m.d.Properties[queue.PropRecordID],
		Message: m.d.Properties[queue.PropMessage], ReceivedAt: m.d.EnqueuedAt, At: now,
	}
	if m.ev != nil {
		e.Entity, e.RecordID, e.Message = m.ev.Entity, m.ev.RecordID, m.ev.Message
	}
	if t, err := time.Parse(time.RFC3339, m.d.Properties[queue.PropFirstFailedAt]); err == nil && (e.ReceivedAt.IsZero() || t.Before(e.ReceivedAt)) {
		e.ReceivedAt = t
	}
	if outcome == store.OutcomeSynced || outcome == store.OutcomeSkipped {
		e.Reason, e.Detail = "", ""
	}
	return e
}

func (s *Syncer) reportSettled(ctx context.Context, settled []store.HistoryEntry) {
	if s.cfg.OnSettle != nil && len(settled) > 0 {
		s.cfg.OnSettle(ctx, settled)
	}
}
