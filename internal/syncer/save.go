package syncer

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/store"
)

// persist collects the links and versions of written records into the
// batch's changes (saved by save); the person and role writers add what
// is theirs (moved and stale links, qualified-lead markers, connections).
func (b *batch) persist(ctx context.Context, recs []*rec) error {
	now := b.s.clk.Now()
	var links []store.Link
	versions := map[string]int64{}
	for _, r := range recs {
		if !r.written {
			continue
		}
		l := store.Link{Kind: r.kind, ExternalID: r.id, MarketoID: r.marketoID, Entity: r.entity, UpdatedAt: now}
		if prev, ok := b.links[r.kind][r.id]; ok {
			l.Email = prev.Email
			if l.MarketoID == "" {
				l.MarketoID = prev.MarketoID
			}
		}
		col := "emailaddress1"
		if r.entity == event.EntitySystemUser {
			col = "internalemailaddress"
		}
		if v, ok := r.attrs[col]; ok {
			l.Email = v.Text()
		}
		b.links[r.kind][r.id] = l
		links = append(links, l)
		if r.version > 0 {
			versions[r.key] = r.version
		}
		if r.rowVersion > 0 {
			versions[store.RowVersionKey(r.key)] = r.rowVersion
		}
		for c, v := range r.colVersion {
			if v > 0 {
				versions[r.key+"#"+c] = v
			}
		}
	}
	b.changes.PutLinks(links...)
	b.changes.PutVersions(versions)
	return nil
}

// save applies every store change of the batch (links, versions,
// connections, meta) in one transaction, before any message is settled:
// a crash before it leaves none of the batch's bookkeeping, so the
// redelivered messages find the store as it was.
func (b *batch) save(ctx context.Context) error {
	if err := b.s.cfg.Store.Apply(ctx, &b.changes); err != nil {
		return fmt.Errorf("syncer: save the batch's %d records: %w", len(b.recs), err)
	}
	return nil
}

// connectionsByOpportunity is Store.ConnectionsByOpportunity as it will be
// once the batch is saved: the batch's own connection changes override.
func (b *batch) connectionsByOpportunity(ctx context.Context, opp string) ([]store.Connection, error) {
	stored, err := b.s.cfg.Store.ConnectionsByOpportunity(ctx, opp)
	if err != nil {
		return nil, fmt.Errorf("syncer: connections of opportunity %s: %w", opp, err)
	}
	out := stored[:0:0]
	seen := map[string]bool{}
	for _, c := range stored {
		seen[c.ID] = true
		if x, put, ok := b.changes.Connection(c.ID); ok {
			if put && x.OpportunityID == opp {
				out = append(out, x)
			}
			continue
		}
		out = append(out, c)
	}
	for _, x := range b.changes.ConnectionPuts() {
		if x.OpportunityID == opp && !seen[x.ID] {
			out = append(out, x)
		}
	}
	slices.SortFunc(out, func(a, c store.Connection) int { return strings.Compare(a.ID, c.ID) })
	return out, nil
}
