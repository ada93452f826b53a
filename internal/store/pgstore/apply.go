package pgstore

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/msisync/msisync/internal/store"
)

// applyHook, when set (by tests only), runs inside Apply's transaction after
// each step, so a test can fail it mid-way.
var applyHook func(step string) error

// Apply saves c in one transaction: link and connection deletes, then puts,
// then versions (never lowered) and meta. A deadlock or serialization
// failure retries the whole transaction, like exec does for one statement.
func (s *Store) Apply(ctx context.Context, c *store.Changes) error {
	if c == nil || c.Empty() {
		return nil
	}
	var err error
	for attempt := 1; ; attempt++ {
		err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return s.apply(ctx, tx, c) })
		if err == nil || attempt == 5 || !retryable(err) || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("pgstore: apply changes: %w", err)
	}
	return nil
}

func (s *Store) apply(ctx context.Context, tx pgx.Tx, c *store.Changes) error {
	step := func(name string) error {
		if applyHook != nil {
			return applyHook(name)
		}
		return nil
	}
	dels := c.LinkDeletes()
	for _, kind := range slices.Sorted(maps.Keys(dels)) {
		if _, err := tx.Exec(ctx, s.q.deleteLinks, kind, dels[kind]); err != nil {
			return fmt.Errorf("delete %d %s links: %w", len(dels[kind]), kind, err)
		}
	}
	if links := c.LinkPuts(); len(links) > 0 {
		kinds := make([]string, len(links))
		ids := make([]string, len(links))
		mids := make([]string, len(links))
		ents := make([]string, len(links))
		emails := make([]string, len(links))
		ats := make([]time.Time, len(links))
		for i, l := range links {
			kinds[i], ids[i], mids[i], ents[i], emails[i], ats[i] = l.Kind, l.ExternalID, l.MarketoID, l.Entity, l.Email, s.stamp(l.UpdatedAt)
		}
		if _, err := tx.Exec(ctx, s.q.putLinks, kinds, ids, mids, ents, emails, ats); err != nil {
			return fmt.Errorf("put %d links: %w", len(links), err)
		}
	}
	if err := step("links"); err != nil {
		return err
	}
	if ids := c.ConnectionDeletes(); len(ids) > 0 {
		if _, err := tx.Exec(ctx, s.q.deleteConns, ids); err != nil {
			return fmt.Errorf("delete %d connections: %w", len(ids), err)
		}
	}
	if conns := c.ConnectionPuts(); len(conns) > 0 {
		ids := make([]string, len(conns))
		opps := make([]string, len(conns))
		persons := make([]string, len(conns))
		roles := make([]string, len(conns))
		ats := make([]time.Time, len(conns))
		for i, x := range conns {
			ids[i], opps[i], persons[i], roles[i], ats[i] = x.ID, x.OpportunityID, x.PersonID, x.Role, s.stamp(x.UpdatedAt)
		}
		if _, err := tx.Exec(ctx, s.q.putConns, ids, opps, persons, roles, ats); err != nil {
			return fmt.Errorf("put %d connections: %w", len(conns), err)
		}
	}
	if err := step("connections"); err != nil {
		return err
	}
	if versions := c.Versions(); len(versions) > 0 {
		keys := slices.Sorted(maps.Keys(versions))
		vals := make([]int64, len(keys))
		for i, k := range keys {
			vals[i] = versions[k]
		}
		if _, err := tx.Exec(ctx, s.q.putVersions, keys, vals); err != nil {
			return fmt.Errorf("put %d versions: %w", len(versions), err)
		}
	}
	if err := step("versions"); err != nil {
		return err
	}
	meta := c.Meta()
	for _, k := range slices.Sorted(maps.Keys(meta)) {
		if _, err := tx.Exec(ctx, s.q.putMeta, k, meta[k]); err != nil {
			return fmt.Errorf("put meta %q: %w", k, err)
		}
	}
	return step("meta")
}
