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

var _ store.CallSlots = (*Store)(nil)

// The governor's tables are created on first use rather than by a schema
// migration, so that they stay out of the numbered migrations other
// features append to. A grant runs in a transaction that first takes a
// transaction-scoped advisory lock: grants of all replicas are serialised,
// and a replica that dies mid-transaction releases it with its session.
// Times are unix microseconds of the Store's clock; replicas' clocks may
// differ by the skew the caller folds into CallRequest.Hold.
const pgGovernorSchema = `CREATE TABLE IF NOT EXISTS {s}.marketo_grants (
		id           bigserial PRIMARY KEY,
		holder       text NOT NULL,
		purpose      text NOT NULL,
		day          text NOT NULL,
		calls        integer NOT NULL,
		conc         integer NOT NULL,
		hold_us      bigint NOT NULL,
		lease_until  bigint NOT NULL,
		counts_until bigint NOT NULL,
		done         boolean NOT NULL DEFAULT false
	);
	CREATE INDEX IF NOT EXISTS marketo_grants_counts ON {s}.marketo_grants (counts_until);
	CREATE TABLE IF NOT EXISTS {s}.marketo_usage (
		day     text NOT NULL,
		purpose text NOT NULL,
		calls   bigint NOT NULL,
		PRIMARY KEY (day, purpose)
	);`

var pgGovernorReady sync.Map // *Store → true once the tables exist

func (s *Store) gq(q string) string {
	return strings.ReplaceAll(q, "{s}", pgx.Identifier{s.schema}.Sanitize())
}

func (s *Store) governorTx(ctx context.Context, fn func(pgx.Tx) error) error {
	for attempt := 1; ; attempt++ {
		err := s.governorTxOnce(ctx, fn)
		if err == nil || attempt == 5 || !retryable(err) || ctx.Err() != nil {
			return err
		}
	}
}

func (s *Store) governorTxOnce(ctx context.Context, fn func(pgx.Tx) error) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('msisync marketo governor ' || $1, 0))`, s.schema); err != nil {
		return fmt.Errorf("lock governor: %w", err)
	}
	if _, ok := pgGovernorReady.Load(s); !ok {
		if _, err := tx.Exec(ctx, s.gq(pgGovernorSchema)); err != nil {
			return fmt.Errorf("create governor tables: %w", err)
		}
	}
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	pgGovernorReady.Store(s, true)
	return nil
}

func (s *Store) foldExpired(ctx context.Context, tx pgx.Tx, now int64) error {
	if _, err := tx.Exec(ctx, s.gq(`INSERT INTO {s}.marketo_usage AS u (day, purpose, calls)
		SELECT day, purpose, SUM(calls) FROM {s}.marketo_grants WHERE counts_until <= $1 GROUP BY day, purpose
		ON CONFLICT (day, purpose) DO UPDATE SET calls = u.calls + EXCLUDED.calls`), now); err != nil {
		return fmt.Errorf("fold expired grants: %w", err)
	}
	if _, err := tx.Exec(ctx, s.gq(`DELETE FROM {s}.marketo_grants WHERE counts_until <= $1`), now); err != nil {
		return fmt.Errorf("delete expired grants: %w", err)
	}
	return nil
}

func (s *Store) dayTotal(ctx context.Context, tx pgx.Tx, day string, purposes []string) (int, error) {
	var n int64
	all := purposes == nil
	if purposes == nil {
		purposes = []string{}
	}
	err := tx.QueryRow(ctx, s.gq(`SELECT COALESCE(SUM(calls), 0)::bigint FROM (
		SELECT purpose, calls FROM {s}.marketo_usage WHERE day = $1
		UNION ALL SELECT purpose, calls FROM {s}.marketo_grants WHERE day = $1) t
		WHERE $2 OR purpose = ANY($3::text[])`), day, all, purposes).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("read usage of %s: %w", day, err)
	}
	return int(n), nil
}

// GrantCalls grants call permits within the request's limits.
func (s *Store) GrantCalls(ctx context.Context, req store.CallRequest) (store.CallGrant, error) {
	if err := req.Check(); err != nil {
		return store.CallGrant{}, fmt.Errorf("pgstore: grant marketo calls: %w", err)
	}
	var g store.CallGrant
	err := s.governorTx(ctx, func(tx pgx.Tx) error {
		g = store.CallGrant{}
		now := s.clk.Now().UnixMicro()
		if err := s.foldExpired(ctx, tx, now); err != nil {
			return err
		}
		var inWindow, inFlight int64
		var firstCount, firstLease *int64
		if err := tx.QueryRow(ctx, s.gq(`SELECT COALESCE(SUM(calls), 0)::bigint, MIN(counts_until) FROM {s}.marketo_grants`)).
			Scan(&inWindow, &firstCount); err != nil {
			return fmt.Errorf("read window: %w", err)
		}
		if err := tx.QueryRow(ctx, s.gq(`SELECT COALESCE(SUM(conc), 0)::bigint, MIN(lease_until) FROM {s}.marketo_grants
			WHERE NOT done AND lease_until > $1`), now).Scan(&inFlight, &firstLease); err != nil {
			return fmt.Errorf("read concurrency: %w", err)
		}
		day, err := s.dayTotal(ctx, tx, req.Day, nil)
		if err != nil {
			return err
		}
		group := 0
		if req.GroupLimit > 0 {
			if group, err = s.dayTotal(ctx, tx, req.Day, req.Group); err != nil {
				return err
			}
		}
		calls, conc, blocked := store.FitCalls(req, int(inWindow), int(inFlight), day, group)
		if blocked != "" {
			g.Blocked = blocked
			switch {
			case blocked == store.BlockedWindow && firstCount != nil:
				g.RetryAt = time.UnixMicro(*firstCount).UTC()
			case blocked == store.BlockedConcurrent && firstLease != nil:
				g.RetryAt = time.UnixMicro(*firstLease).UTC()
			}
			return nil
		}
		until := now + req.TTL.Microseconds()
		var id int64
		if err := tx.QueryRow(ctx, s.gq(`INSERT INTO {s}.marketo_grants (holder, purpose, day, calls, conc, hold_us, lease_until, counts_until)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id`), req.Holder, req.Purpose, req.Day, calls, conc,
			req.Hold.Microseconds(), until, until+req.Hold.Microseconds()).Scan(&id); err != nil {
			return fmt.Errorf("insert grant: %w", err)
		}
		g = store.CallGrant{ID: id, Calls: calls, Concurrent: conc, Until: time.UnixMicro(until).UTC()}
		return nil
	})
	if err != nil {
		return store.CallGrant{}, fmt.Errorf("pgstore: grant %d marketo calls for %s (%s): %w", req.Calls, req.Holder, req.Purpose, err)
	}
	return g, nil
}

// RenewCalls extends a live grant's lease.
func (s *Store) RenewCalls(ctx context.Context, id int64, ttl time.Duration) (bool, error) {
	if ttl <= 0 {
		return false, fmt.Errorf("pgstore: renew marketo grant %d: ttl %v must be positive", id, ttl)
	}
	var n int64
	err := s.governorTx(ctx, func(tx pgx.Tx) error {
		until := s.clk.Now().UnixMicro() + ttl.Microseconds()
		tag, err := tx.Exec(ctx, s.gq(`UPDATE {s}.marketo_grants SET lease_until = $1,
			counts_until = GREATEST(counts_until, $1 + hold_us) WHERE id = $2 AND NOT done`), until, id)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return false, fmt.Errorf("pgstore: renew marketo grant %d: %w", id, err)
	}
	return n == 1, nil
}

// ReturnCalls ends a grant, keeping used calls in the window for its hold.
func (s *Store) ReturnCalls(ctx context.Context, id int64, used int) error {
	if used < 0 {
		return fmt.Errorf("pgstore: return marketo grant %d: used %d is negative", id, used)
	}
	err := s.governorTx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, s.gq(`UPDATE {s}.marketo_grants SET done = true, conc = 0, calls = LEAST(calls, $1),
			counts_until = $2 + hold_us WHERE id = $3 AND NOT done`), used, s.clk.Now().UnixMicro(), id)
		return err
	})
	if err != nil {
		return fmt.Errorf("pgstore: return marketo grant %d (%d used): %w", id, used, err)
	}
	return nil
}

// CallUsage reports the day's calls and the limits in use now.
func (s *Store) CallUsage(ctx context.Context, day string) (store.CallUsage, error) {
	u := store.CallUsage{Day: day, ByPurpose: map[string]int{}}
	err := s.governorTx(ctx, func(tx pgx.Tx) error {
		clear(u.ByPurpose)
		now := s.clk.Now().UnixMicro()
		if err := s.foldExpired(ctx, tx, now); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, s.gq(`SELECT purpose, SUM(calls)::bigint FROM (
			SELECT purpose, calls FROM {s}.marketo_usage WHERE day = $1
			UNION ALL SELECT purpose, calls FROM {s}.marketo_grants WHERE day = $1) t GROUP BY purpose`), day)
		if err != nil {
			return err
		}
		for rows.Next() {
			var p string
			var n int64
			if err := rows.Scan(&p, &n); err != nil {
				rows.Close()
				return err
			}
			u.ByPurpose[p] = int(n)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		var w, f, g int64
		if err := tx.QueryRow(ctx, s.gq(`SELECT COALESCE(SUM(calls), 0)::bigint FROM {s}.marketo_grants`)).Scan(&w); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, s.gq(`SELECT COALESCE(SUM(conc), 0)::bigint, COUNT(*) FROM {s}.marketo_grants
			WHERE NOT done AND lease_until > $1`), now).Scan(&f, &g); err != nil {
			return err
		}
		var r int64
		if err := tx.QueryRow(ctx, s.gq(`SELECT COALESCE(SUM(calls), 0)::bigint FROM {s}.marketo_grants WHERE NOT done AND day = $1`), day).Scan(&r); err != nil {
			return err
		}
		u.InWindow, u.InFlight, u.Grants, u.Reserved = int(w), int(f), int(g), int(r)
		return nil
	})
	if err != nil {
		return store.CallUsage{}, fmt.Errorf("pgstore: read marketo usage of %s: %w", day, err)
	}
	return u, nil
}
