package sqlitestore

import (
	"context"
	"database/sql"
	"fmt"
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
		type rk struct{ entity, id string }
		touched := map[rk]bool{}
		for _, e := range entries {
			if _, err := tx.ExecContext(ctx, `INSERT INTO record_history
				(entity, record_id, message_id, message, outcome, reason, detail, received_at, at)
				VALUES (?,?,?,?,?,?,?,?,?)`,
				e.Entity, e.RecordID, e.MessageID, e.Message, e.Outcome, e.Reason, e.Detail,
				s.stamp(e.ReceivedAt), s.stamp(e.At)); err != nil {
				return fmt.Errorf("insert %s/%s: %w", e.Entity, e.RecordID, err)
			}
			touched[rk{e.Entity, e.RecordID}] = true
		}
		for k := range touched {
			if _, err := tx.ExecContext(ctx, `DELETE FROM record_history WHERE entity = ? AND record_id = ? AND id NOT IN
				(SELECT id FROM record_history WHERE entity = ? AND record_id = ? ORDER BY id DESC LIMIT ?)`,
				k.entity, k.id, k.entity, k.id, store.HistoryPerRecord); err != nil {
				return fmt.Errorf("trim %s/%s: %w", k.entity, k.id, err)
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
