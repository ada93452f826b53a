package store

import (
	"context"
	"time"
)

// HistoryPerRecord is how many history entries a store keeps per record: the
// oldest beyond it are dropped as new ones arrive, so the history's size is
// bounded by the number of synced records, not by the number of events.
const HistoryPerRecord = 20

// Outcomes of a HistoryEntry (what the syncer did with the event).
const (
	OutcomeSynced       = "synced"        // written to Marketo (or nothing to write)
	OutcomeSkipped      = "skipped"       // completed without a write (own change, stale version, ignored row)
	OutcomeRequeued     = "requeued"      // failed for now; retried later (attempt counted)
	OutcomeRescheduled  = "rescheduled"   // postponed (record locked elsewhere, Marketo paused)
	OutcomeDeadLettered = "dead-lettered" // given up: in the dead-letter queue with Reason
)

// HistoryEntry is one event msisync received for a record and what became
// of it.
type HistoryEntry struct {
	Entity    string // Dataverse logical name
	RecordID  string // lower-case GUID
	MessageID string // queue message id
	Message   string // Create, Update, Delete, ...
	Outcome   string // one of the Outcome constants
	Reason    string // dead-letter or retry reason (empty when synced)
	Detail    string // the reason's description
	// ReceivedAt is when the event was (first) enqueued; At when it was settled.
	ReceivedAt time.Time
	At         time.Time
}

// History is the optional port for per-record history (both adapters
// implement it; it is separate from Store so that consumers and test fakes
// of Store need not).
type History interface {
	// AppendHistory stores entries and keeps only the newest
	// HistoryPerRecord of each record.
	AppendHistory(ctx context.Context, entries []HistoryEntry) error
	// RecordHistory returns a record's entries, newest first, at most limit.
	RecordHistory(ctx context.Context, entity, recordID string, limit int) ([]HistoryEntry, error)
}
