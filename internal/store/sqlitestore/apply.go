package sqlitestore

import (
	"context"
	"database/sql"
	"fmt"
	"maps"
	"slices"

	"github.com/msisync/msisync/internal/store"
)

// applyHook, when set (by tests only), runs inside Apply's transaction after
// each step, so a test can fail or kill the process mid-transaction.
var applyHook func(step string) error

// Apply saves c in one transaction: link and connection deletes, then puts,
// then versions (never lowered) and meta. A failure or crash at any point
// leaves none of it.
func (s *Store) Apply(ctx context.Context, c *store.Changes) error {
	if c == nil || c.Empty() {
		return nil
	}
	step := func(name string) error {
		if applyHook != nil {
			return applyHook(name)
		}
		return nil
	}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		dels := c.LinkDeletes()
		for _, kind := range slices.Sorted(maps.Keys(dels)) {
			if err := execIn(ctx, tx, `DELETE FROM links WHERE kind = ? AND external_id IN (%s)`, []any{kind}, dels[kind]); err != nil {
				return fmt.Errorf("delete %d %s links: %w", len(dels[kind]), kind, err)
			}
		}
		if links := c.LinkPuts(); len(links) > 0 {
			if err := s.putLinks(ctx, tx, links); err != nil {
				return fmt.Errorf("put %d links: %w", len(links), err)
			}
		}
		if err := step("links"); err != nil {
			return err
		}
		if ids := c.ConnectionDeletes(); len(ids) > 0 {
			if err := execIn(ctx, tx, `DELETE FROM connections WHERE id IN (%s)`, nil, ids); err != nil {
				return fmt.Errorf("delete %d connections: %w", len(ids), err)
			}
		}
		if conns := c.ConnectionPuts(); len(conns) > 0 {
			for chunk := range slices.Chunk(conns, maxRows) {
				args := make([]any, 0, 5*len(chunk))
				for _, x := range chunk {
					args = append(args, x.ID, x.OpportunityID, x.PersonID, x.Role, s.stamp(x.UpdatedAt))
				}
				q := `INSERT INTO connections (id, opportunity_id, person_id, role, updated_at) VALUES ` +
					placeholders(len(chunk), 5) + ` ON CONFLICT (id) DO UPDATE SET
				opportunity_id = excluded.opportunity_id, person_id = excluded.person_id,
				role = excluded.role, updated_at = excluded.updated_at`
				if _, err := tx.ExecContext(ctx, q, args...); err != nil {
					return fmt.Errorf("put %d connections: %w", len(conns), err)
				}
			}
		}
		if err := step("connections"); err != nil {
			return err
		}
		if versions := c.Versions(); len(versions) > 0 {
			if err := s.putVersions(ctx, tx, versions); err != nil {
				return fmt.Errorf("put %d versions: %w", len(versions), err)
			}
		}
		if err := step("versions"); err != nil {
			return err
		}
		meta := c.Meta()
		for _, k := range slices.Sorted(maps.Keys(meta)) {
			if _, err := tx.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES (?, ?)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`, k, meta[k]); err != nil {
				return fmt.Errorf("put meta %q: %w", k, err)
			}
		}
		return step("meta")
	})
	if err != nil {
		return fmt.Errorf("sqlitestore: apply changes: %w", err)
	}
	return nil
}
