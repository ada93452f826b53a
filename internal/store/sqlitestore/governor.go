package sqlitestore

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"time"

	"github.com/msisync/msisync/internal/store"
)

var _ store.CallSlots = (*Store)(nil)

// The governor's tables are created on first use rather than by a schema
// migration, so that they stay out of the numbered migrations other
// features append to. Every statement below runs in an immediate
// transaction: SQLite's write lock serialises grants across the processes
// that share the file.
const governorSchema = `CREATE TABLE IF NOT EXISTS marketo_grants (
		id           INTEGER PRIMARY KEY AUTOINCREMENT,
		holder       TEXT NOT NULL,
		purpose      TEXT NOT NULL,
		day          TEXT NOT NULL,
		calls        INTEGER NOT NULL, -- permits granted; the used count once returned
		conc         INTEGER NOT NULL, -- concurrent slots; 0 once returned
		hold_us      INTEGER NOT NULL,
		lease_until  INTEGER NOT NULL, -- unix microseconds
		counts_until INTEGER NOT NULL, -- the calls count in the window until then
		done         INTEGER NOT NULL DEFAULT 0
	);
	CREATE INDEX IF NOT EXISTS marketo_grants_counts ON marketo_grants (counts_until);
	CREATE TABLE IF NOT EXISTS marketo_usage (
		day     TEXT NOT NULL,
		purpose TEXT NOT NULL,
		calls   INTEGER NOT NULL,
		PRIMARY KEY (day, purpose)
	) WITHOUT ROWID;`

var governorReady sync.Map // *Store → true once the tables exist

func (s *Store) governorTx(ctx context.Context, fn func(*sql.Tx) error) error {
	if _, ok := governorReady.Load(s); !ok {
		if _, err := s.w.ExecContext(ctx, governorSchema); err != nil {
			return fmt.Errorf("create governor tables: %w", err)
		}
		governorReady.Store(s, true)
	}
	return s.tx(ctx, fn)
}

// foldExpired moves the calls of grants that no longer count in the window
// into the day's usage and deletes them, so the grants table stays small.
// A grant whose process died is charged in full.
func foldExpired(ctx context.Context, tx *sql.Tx, now int64) error {
	if _, err := tx.ExecContext(ctx, `INSERT INTO marketo_usage (day, purpose, calls)
		SELECT day, purpose, SUM(calls) FROM marketo_grants WHERE counts_until <= ? GROUP BY day, purpose
		ON CONFLICT (day, purpose) DO UPDATE SET calls = marketo_usage.calls + excluded.calls`, now); err != nil {
		return fmt.Errorf("fold expired grants: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM marketo_grants WHERE counts_until <= ?`, now); err != nil {
		return fmt.Errorf("delete expired grants: %w", err)
	}
	return nil
}

// GrantCalls grants call permits within the request's limits.
func (s *Store) GrantCalls(ctx context.Context, req store.CallRequest) (store.CallGrant, error) {
	if err := req.Check(); err != nil {
		return store.CallGrant{}, fmt.Errorf("sqlitestore: grant marketo calls: %w", err)
	}
	var g store.CallGrant
	err := s.governorTx(ctx, func(tx *sql.Tx) error {
		now := s.now()
		if err := foldExpired(ctx, tx, now); err != nil {
			return err
		}
		var inWindow, inFlight int
		var firstCount, firstLease sql.NullInt64
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(SUM(calls), 0), MIN(counts_until) FROM marketo_grants`).
			Scan(&inWindow, &firstCount); err != nil {
			return fmt.Errorf("read window: %w", err)
		}
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(SUM(conc), 0), MIN(lease_until) FROM marketo_grants
			WHERE done = 0 AND lease_until > ?`, now).Scan(&inFlight, &firstLease); err != nil {
			return fmt.Errorf("read concurrency: %w", err)
		}
		day, err := dayTotal(ctx, tx, req.Day, nil)
		if err != nil {
			return err
		}
		group := 0
		if req.GroupLimit > 0 {
			if group, err = dayTotal(ctx, tx, req.Day, req.Group); err != nil {
				return err
			}
		}
		calls, conc, blocked := store.FitCalls(req, inWindow, inFlight, day, group)
		if blocked != "" {
			g.Blocked = blocked
			switch {
			case blocked == store.BlockedWindow && firstCount.Valid:
				g.RetryAt = fromMicros(firstCount.Int64)
			case blocked == store.BlockedConcurrent && firstLease.Valid:
				g.RetryAt = fromMicros(firstLease.Int64)
			}
			return nil
		}
		until := now + req.TTL.Microseconds()
		res, err := tx.ExecContext(ctx, `INSERT INTO marketo_grants (holder, purpose, day, calls, conc, hold_us, lease_until, counts_until)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, req.Holder, req.Purpose, req.Day, calls, conc,
			req.Hold.Microseconds(), until, until+req.Hold.Microseconds())
		if err != nil {
			return fmt.Errorf("insert grant: %w", err)
		}
		id, err := res.LastInsertId()
		if err != nil {
			return fmt.Errorf("insert grant: %w", err)
		}
		g = store.CallGrant{ID: id, Calls: calls, Concurrent: conc, Until: fromMicros(until)}
		return nil
	})
	if err != nil {
		return store.CallGrant{}, fmt.Errorf("sqlitestore: grant %d marketo calls for %s (%s): %w", req.Calls, req.Holder, req.Purpose, err)
	}
	return g, nil
}

// dayTotal is the calls charged to day by purposes (all when nil): folded
// usage plus the grants still in the table.
func dayTotal(ctx context.Context, tx *sql.Tx, day string, purposes []string) (int, error) {
	filter, args := "", []any{day}
	if purposes != nil {
		if len(purposes) == 0 {
			return 0, nil
		}
		filter = " AND purpose IN (" + inList(len(purposes)) + ")"
		for _, p := range purposes {
			args = append(args, p)
		}
	}
	var a, b int
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(SUM(calls), 0) FROM marketo_usage WHERE day = ?`+filter, args...).Scan(&a); err != nil {
		return 0, fmt.Errorf("read usage of %s: %w", day, err)
	}
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(SUM(calls), 0) FROM marketo_grants WHERE day = ?`+filter, args...).Scan(&b); err != nil {
		return 0, fmt.Errorf("read grants of %s: %w", day, err)
	}
	return a + b, nil
}

// RenewCalls extends a live grant's lease.
func (s *Store) RenewCalls(ctx context.Context, id int64, ttl time.Duration) (bool, error) {
	if ttl <= 0 {
		return false, fmt.Errorf("sqlitestore: renew marketo grant %d: ttl %v must be positive", id, ttl)
	}
	var n int64
	err := s.governorTx(ctx, func(tx *sql.Tx) error {
		until := s.now() + ttl.Microseconds()
		res, err := tx.ExecContext(ctx, `UPDATE marketo_grants SET lease_until = ?, counts_until = MAX(counts_until, ? + hold_us)
			WHERE id = ? AND done = 0`, until, until, id)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return false, fmt.Errorf("sqlitestore: renew marketo grant %d: %w", id, err)
	}
	return n == 1, nil
}

// ReturnCalls ends a grant, keeping used calls in the window for its hold.
func (s *Store) ReturnCalls(ctx context.Context, id int64, used int) error {
	if used < 0 {
		return fmt.Errorf("sqlitestore: return marketo grant %d: used %d is negative", id, used)
	}
	err := s.governorTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE marketo_grants SET done = 1, conc = 0, calls = MIN(calls, ?),
			counts_until = ? + hold_us WHERE id = ? AND done = 0`, used, s.now(), id)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlitestore: return marketo grant %d (%d used): %w", id, used, err)
	}
	return nil
}

// CallUsage reports the day's calls and the limits in use now.
func (s *Store) CallUsage(ctx context.Context, day string) (store.CallUsage, error) {
	u := store.CallUsage{Day: day, ByPurpose: map[string]int{}}
	err := s.governorTx(ctx, func(tx *sql.Tx) error {
		now := s.now()
		if err := foldExpired(ctx, tx, now); err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `SELECT purpose, SUM(calls) FROM (
			SELECT purpose, calls FROM marketo_usage WHERE day = ?
			UNION ALL SELECT purpose, calls FROM marketo_grants WHERE day = ?) GROUP BY purpose`, day, day)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var p string
			var n int
			if err := rows.Scan(&p, &n); err != nil {
				return err
			}
			u.ByPurpose[p] = n
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(SUM(calls), 0) FROM marketo_grants`).Scan(&u.InWindow); err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(SUM(calls), 0) FROM marketo_grants WHERE done = 0 AND day = ?`, day).
			Scan(&u.Reserved); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, `SELECT COALESCE(SUM(conc), 0), COUNT(*) FROM marketo_grants
			WHERE done = 0 AND lease_until > ?`, now).Scan(&u.InFlight, &u.Grants)
	})
	if err != nil {
		return store.CallUsage{}, fmt.Errorf("sqlitestore: read marketo usage of %s: %w", day, err)
	}
	return u, nil
}
