package sqlitestore

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"sync"

	"github.com/msisync/msisync/internal/store"
)

var _ store.History = (*Store)(nil)

// The history table is created on first use (IF NOT EXISTS) rather than by a
// numbered migration, so it adds nothing to the schema-version sequence.
const historySchema = `CREATE TABLE IF NOT EXISTS record_history (
	id          INTEGER PRIMARY KEY AUTOINCREMENT,
	entity      TEXT NOT NULL,
	record_id   TEXT NOT NULL,
	message_id  TEXT NOT NULL,
	message     TEXT NOT NULL,
	outcome     TEXT NOT NULL,
	reason      TEXT NOT NULL,
	detail      TEXT NOT NULL,
	received_at INTEGER NOT NULL, -- unix microseconds
	at          INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS record_history_record ON record_history (entity, record_id, id);`

var historyReady sync.Map // *Store → struct{}

func (s *Store) ensureHistory(ctx context.Context) error {
	if _, ok := historyReady.Load(s); ok {
		return nil
	}
	if _, err := s.w.ExecContext(ctx, historySchema); err != nil {
		return fmt.Errorf("create record_history: %w", err)
	}
	historyReady.Store(s, struct{}{})
	return nil
}

// AppendHistory stores entries and trims each record to the newest
// store.HistoryPerRecord, in one transaction.
func (s *Store) AppendHistory(ctx context.Context, entries []store.HistoryEntry) error {
	if len(entries) == 0 {
		return nil
	}
	if err := s.ensureHistory(ctx); err != nil {
		return fmt.Errorf("sqlitestore: append history: %w", err)
	}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		// Multi-row statements: one INSERT per maxRows entries, one trim per
		// chunk of records (a window over just those records' rows).
		type rk struct{ entity, id string }
		seen := map[rk]bool{}
		var keys []any
		for chunk := range slices.Chunk(entries, maxRows) {
			args := make([]any, 0, 9*len(chunk))
			for _, e := range chunk {
				args = append(args, e.Entity, e.RecordID, e.MessageID, e.Message, e.Outcome, e.Reason, e.Detail,
					s.stamp(e.ReceivedAt), s.stamp(e.At))
				if k := (rk{e.Entity, e.RecordID}); !seen[k] {
					seen[k] = true
					keys = append(keys, e.Entity, e.RecordID)
				}
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO record_history
				(entity, record_id, message_id, message, outcome, reason, detail, received_at, at)
				VALUES `+placeholders(len(chunk), 9), args...); err != nil {
				return fmt.Errorf("insert: %w", err)
			}
		}
		for chunk := range slices.Chunk(keys, 2*maxRows) {
			args := append(slices.Clone(chunk), store.HistoryPerRecord-1)
			// For each record, find the id of its HistoryPerRecord-th newest
			// row (one index seek), then delete the rows below it (an index
			// range): work in proportion to what is deleted, not to the table.
			if _, err := tx.ExecContext(ctx, `WITH k(entity, record_id) AS (VALUES `+placeholders(len(chunk)/2, 2)+`),
				cut AS (SELECT k.entity, k.record_id, (SELECT n.id FROM record_history AS n
					WHERE n.entity = k.entity AND n.record_id = k.record_id ORDER BY n.id DESC LIMIT 1 OFFSET ?) AS id FROM k)
				DELETE FROM record_history WHERE id IN (SELECT h.id FROM cut JOIN record_history AS h
					ON h.entity = cut.entity AND h.record_id = cut.record_id AND h.id < cut.id WHERE cut.id IS NOT NULL)`, args...); err != nil {
				return fmt.Errorf("trim: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlitestore: append history (%d entries): %w", len(entries), err)
	}
	return nil
}

// RecordHistory returns a record's entries, newest first.
func (s *Store) RecordHistory(ctx context.Context, entity, recordID string, limit int) ([]store.HistoryEntry, error) {
	if limit <= 0 || limit > store.HistoryPerRecord {
		limit = store.HistoryPerRecord
	}
	if err := s.ensureHistory(ctx); err != nil {
		return nil, fmt.Errorf("sqlitestore: record history: %w", err)
	}
	rows, err := s.r.QueryContext(ctx, `SELECT entity, record_id, message_id, message, outcome, reason, detail, received_at, at
		FROM record_history WHERE entity = ? AND record_id = ? ORDER BY id DESC LIMIT ?`, entity, recordID, limit)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: record history %s/%s: %w", entity, recordID, err)
	}
	defer rows.Close()
	var out []store.HistoryEntry
	for rows.Next() {
		var e store.HistoryEntry
		var recv, at int64
		if err := rows.Scan(&e.Entity, &e.RecordID, &e.MessageID, &e.Message, &e.Outcome, &e.Reason, &e.Detail, &recv, &at); err != nil {
			return nil, fmt.Errorf("sqlitestore: record history %s/%s: %w", entity, recordID, err)
		}
		e.ReceivedAt, e.At = fromMicros(recv), fromMicros(at)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlitestore: record history %s/%s: %w", entity, recordID, err)
	}
	return out, nil
}
