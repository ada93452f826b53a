package pgstore

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/msisync/msisync/internal/store"
)

var _ store.History = (*Store)(nil)

// The history table is created on first use (IF NOT EXISTS) rather than by a
// numbered migration, so it adds nothing to the schema-version sequence.
const historySchema = `CREATE TABLE IF NOT EXISTS {s}.record_history (
	id          bigserial PRIMARY KEY,
	entity      text NOT NULL,
	record_id   text NOT NULL,
	message_id  text NOT NULL,
	message     text NOT NULL,
	outcome     text NOT NULL,
	reason      text NOT NULL,
	detail      text NOT NULL,
	received_at timestamptz NOT NULL,
	at          timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS record_history_record ON {s}.record_history (entity, record_id, id);`

var historyReady sync.Map // *Store → struct{}

func (s *Store) historySQL(q string) string {
	return strings.ReplaceAll(q, "{s}", pgx.Identifier{s.schema}.Sanitize())
}

func (s *Store) ensureHistory(ctx context.Context) error {
	if _, ok := historyReady.Load(s); ok {
		return nil
	}
	// Two replicas creating the table at once can collide in the catalog
	// (unique violation on pg_type) although both say IF NOT EXISTS; the
	// second try sees the table.
	var err error
	for range 3 {
		if _, err = s.pool.Exec(ctx, s.historySQL(historySchema)); err == nil {
			historyReady.Store(s, struct{}{})
			return nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return fmt.Errorf("create record_history: %w", err)
}

// AppendHistory stores entries and trims each record to the newest
// store.HistoryPerRecord, in one transaction.
func (s *Store) AppendHistory(ctx context.Context, entries []store.HistoryEntry) error {
	if len(entries) == 0 {
		return nil
	}
	if err := s.ensureHistory(ctx); err != nil {
		return fmt.Errorf("pgstore: append history: %w", err)
	}
	n := len(entries)
	ent, rid, mid, msg, out, rea, det := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	recv, at := make([]time.Time, n), make([]time.Time, n)
	for i, e := range entries {
		ent[i], rid[i], mid[i], msg[i], out[i], rea[i], det[i] = e.Entity, e.RecordID, e.MessageID, e.Message, e.Outcome, e.Reason, e.Detail
		recv[i], at[i] = s.stamp(e.ReceivedAt), s.stamp(e.At)
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// WITH ORDINALITY keeps the given order in the ids (newest last).
		if _, err := tx.Exec(ctx, s.historySQL(`INSERT INTO {s}.record_history
			(entity, record_id, message_id, message, outcome, reason, detail, received_at, at)
			SELECT e, r, m, g, o, re, d, rc, a FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
				$6::text[], $7::text[], $8::timestamptz[], $9::timestamptz[]) WITH ORDINALITY AS t(e, r, m, g, o, re, d, rc, a, n)
			ORDER BY n`), ent, rid, mid, msg, out, rea, det, recv, at); err != nil {
			return fmt.Errorf("insert: %w", err)
		}
		if _, err := tx.Exec(ctx, s.historySQL(`DELETE FROM {s}.record_history h USING (
				SELECT id, row_number() OVER (PARTITION BY entity, record_id ORDER BY id DESC) AS rn
				FROM {s}.record_history
				WHERE (entity, record_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
			) old WHERE h.id = old.id AND old.rn > $3`), ent, rid, store.HistoryPerRecord); err != nil {
			return fmt.Errorf("trim: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("pgstore: append history (%d entries): %w", n, err)
	}
	return nil
}

// RecordHistory returns a record's entries, newest first.
func (s *Store) RecordHistory(ctx context.Context, entity, recordID string, limit int) ([]store.HistoryEntry, error) {
	if limit <= 0 || limit > store.HistoryPerRecord {
		limit = store.HistoryPerRecord
	}
	if err := s.ensureHistory(ctx); err != nil {
		return nil, fmt.Errorf("pgstore: record history: %w", err)
	}
	rows, err := s.pool.Query(ctx, s.historySQL(`SELECT entity, record_id, message_id, message, outcome, reason, detail, received_at, at
		FROM {s}.record_history WHERE entity = $1 AND record_id = $2 ORDER BY id DESC LIMIT $3`), entity, recordID, limit)
	if err != nil {
		return nil, fmt.Errorf("pgstore: record history %s/%s: %w", entity, recordID, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.HistoryEntry, error) {
		var e store.HistoryEntry
		err := r.Scan(&e.Entity, &e.RecordID, &e.MessageID, &e.Message, &e.Outcome, &e.Reason, &e.Detail, &e.ReceivedAt, &e.At)
		e.ReceivedAt, e.At = e.ReceivedAt.UTC(), e.At.UTC()
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("pgstore: record history %s/%s: %w", entity, recordID, err)
	}
	return out, nil
}
