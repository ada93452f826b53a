package syncer

import (
	"context"
	"strconv"

	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/marketo/marketotype"
	"github.com/msisync/msisync/internal/store"
)

// roleWriter writes opportunity roles: it interprets connection records
// (connections.go: which are stakeholder roles, which retire), upserts,
// retires and deletes roles, and stores connections. It owns the connections of the
// batch's connection records and a per-batch cache of stored connections
// by opportunity.
type roleWriter struct {
	b     *batch
	conns map[*rec]*connState
	// oppConns caches connectionsByOpportunity for held.
	oppConns map[string][]store.Connection
}

func newRoleWriter(b *batch) *roleWriter {
	return &roleWriter{b: b, conns: map[*rec]*connState{}, oppConns: map[string][]store.Connection{}}
}

// of returns r's connection state, created empty on first use.
func (w *roleWriter) of(r *rec) *connState {
	c := w.conns[r]
	if c == nil {
		c = &connState{}
		w.conns[r] = c
	}
	return c
}

// roleKey is a Marketo opportunity role's dedupe key.
type roleKey struct{ opp, person, role string }

func keyOf(c store.Connection) roleKey { return roleKey{c.OpportunityID, c.PersonID, c.Role} }

// held reports whether a connection other than c gives Marketo the same
// role (same opportunity, contact and role name), so removing c must leave
// the role in place. Connections in this batch count as they will be once it
// is written; the others as the store has them (live when they have a role
// link: written to Marketo and not deactivated).
func (w *roleWriter) held(ctx context.Context, c store.Connection) (bool, error) {
	b := w.b
	k := keyOf(c)
	decided := map[string]bool{}
	for _, r := range b.recs {
		if r.entity != event.EntityConnection || r.id == c.ID || r.fail != nil {
			continue
		}
		decided[r.id] = true
		if x := w.conns[r]; !r.deleted && x != nil && x.retire == 0 && x.conn != nil && keyOf(*x.conn) == k {
			return true, nil
		}
	}
	// One read per opportunity per batch: the batch's own connections are
	// judged above, so the stored rows only speak for the others.
	conns, ok := w.oppConns[c.OpportunityID]
	if !ok {
		var err error
		conns, err = b.connectionsByOpportunity(ctx, c.OpportunityID)
		if err != nil {
			return false, err
		}
		w.oppConns[c.OpportunityID] = conns
	}
	var ids []string
	for _, o := range conns {
		if o.ID != c.ID && !decided[o.ID] && keyOf(o) == k {
			ids = append(ids, o.ID)
		}
	}
	if len(ids) == 0 {
		return false, nil
	}
	if err := b.storeLinks(ctx, store.KindRole, ids); err != nil {
		return false, err
	}
	for _, id := range ids {
		if _, ok := b.links[store.KindRole][id]; ok {
			return true, nil
		}
	}
	return false, nil
}

// roleDeletes collects Marketo roles to delete in one call, each key once
// (a repeat in one call is a duplicate to Marketo); repeats share the
// first's result.
type roleDeletes struct {
	b       *batch
	recs    []*rec
	in      []marketotype.Record
	first   map[roleKey]*rec
	repeats [][2]*rec // {repeat, first}
}

func (w *roleWriter) newDeletes() *roleDeletes {
	return &roleDeletes{b: w.b, first: map[roleKey]*rec{}}
}

// add queues the role of c for deletion on behalf of r. A role whose
// contact has no Marketo person cannot be in Marketo: nothing to delete.
func (d *roleDeletes) add(ctx context.Context, r *rec, c store.Connection) error {
	if err := d.b.storeLinks(ctx, store.KindPerson, []string{c.PersonID}); err != nil {
		return err
	}
	l, ok := d.b.links[store.KindPerson][c.PersonID]
	if !ok {
		return nil
	}
	k := keyOf(c)
	if f := d.first[k]; f != nil {
		if f != r {
			d.repeats = append(d.repeats, [2]*rec{r, f})
		}
		return nil
	}
	d.first[k] = r
	lid, _ := strconv.ParseInt(l.MarketoID, 10, 64)
	d.recs = append(d.recs, r)
	d.in = append(d.in, marketotype.Record{"externalOpportunityId": c.OpportunityID, "leadId": lid, "role": c.Role})
	return nil
}

func (d *roleDeletes) run(ctx context.Context) error {
	if len(d.in) > 0 {
		if err := d.b.mk.deleteObjects(ctx, marketotype.Roles, "dedupeFields", d.recs, d.in); err != nil {
			return err
		}
	}
	for _, p := range d.repeats {
		if p[0].fail == nil {
			p[0].fail = p[1].fail
		}
	}
	return nil
}

// retire takes the Marketo roles of deactivated connections and of
// connections whose role is no longer a stakeholder role, unless another
// live connection holds the same role. A deactivated connection stays in
// the store without its role link, so a reactivation (statecode 0 only)
// knows the opportunity, contact and role again.
func (w *roleWriter) retire(ctx context.Context) error {
	b := w.b
	var recs []*rec
	for _, r := range b.plan.retiring() {
		if r.fail == nil {
			recs = append(recs, r)
		}
	}
	if len(recs) == 0 {
		return nil
	}
	if b.mk.paused {
		for _, r := range recs {
			r.fail = &failure{act: actReschedule, delay: b.s.cfg.RequeueMax}
		}
		return nil
	}
	dels := w.newDeletes()
	for _, r := range recs {
		old := w.of(r).old
		if old == nil {
			continue
		}
		if _, live := b.links[store.KindRole][r.id]; !live {
			continue // deactivated before: its role is already gone
		}
		held, err := w.held(ctx, *old)
		if err != nil {
			return err
		}
		if !held {
			if err := dels.add(ctx, r, *old); err != nil {
				return err
			}
		}
	}
	if err := dels.run(ctx); err != nil {
		return err
	}
	w.forgetRetired(recs)
	return nil
}

// forgetRetired records what retire did: the role links go; a deactivated
// connection is kept (to reactivate), a dropped one forgotten.
func (w *roleWriter) forgetRetired(recs []*rec) {
	b := w.b
	now := b.s.clk.Now()
	var keep []store.Connection
	var drop, unlink []string
	versions := map[string]int64{}
	for _, r := range recs {
		if r.fail != nil {
			continue
		}
		unlink = append(unlink, r.id)
		delete(b.links[store.KindRole], r.id)
		if c := w.of(r); c.retire == retireDeactivate && c.conn != nil {
			x := *c.conn
			x.UpdatedAt = now
			keep = append(keep, x)
		} else {
			drop = append(drop, r.id)
		}
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
	b.changes.DeleteLinks(store.KindRole, unlink...)
	b.changes.PutConnections(keep...)
	b.changes.DeleteConnections(drop...)
	b.changes.PutVersions(versions)
}

// record builds the Marketo opportunity role of a connection record.
func (w *roleWriter) record(r *rec) marketotype.Record {
	c := w.of(r).conn
	out := marketotype.Record(w.b.s.cfg.Mapping.Apply(event.EntityConnection, r.attrs, r.formatted))
	if out == nil {
		out = marketotype.Record{}
	}
	out["externalOpportunityId"] = c.OpportunityID
	lid, _ := strconv.ParseInt(w.b.links[store.KindPerson][c.PersonID].MarketoID, 10, 64)
	out["leadId"] = lid
	out["role"] = c.Role
	return out
}

// write writes the roles of recs (see upsert) and records their links,
// versions and connections in the batch's changes.
func (w *roleWriter) write(ctx context.Context, recs []*rec) error {
	if err := w.upsert(ctx, recs); err != nil {
		return err
	}
	if err := w.b.persist(ctx, recs); err != nil {
		return err
	}
	now := w.b.s.clk.Now()
	var conns []store.Connection
	for _, r := range recs {
		if c := w.of(r).conn; r.written && c != nil {
			x := *c
			x.UpdatedAt = now
			conns = append(conns, x)
		}
	}
	w.b.changes.PutConnections(conns...)
	return nil
}

// upsert deletes roles whose key changed (unless another connection
// still holds the old key), then upserts.
func (w *roleWriter) upsert(ctx context.Context, recs []*rec) error {
	b := w.b
	dels := w.newDeletes()
	for _, r := range recs {
		c := w.of(r)
		o := c.old
		if o == nil || keyOf(*o) == keyOf(*c.conn) {
			continue
		}
		if _, live := b.links[store.KindRole][r.id]; !live {
			continue // deactivated until now: the old role is not in Marketo
		}
		held, err := w.held(ctx, *o)
		if err != nil {
			return err
		}
		if !held {
			if err := dels.add(ctx, r, *o); err != nil {
				return err
			}
		}
	}
	if len(dels.recs) > 0 {
		if err := dels.run(ctx); err != nil {
			return err
		}
		var keep []*rec
		for _, r := range recs {
			if r.fail == nil {
				keep = append(keep, r)
			}
		}
		recs = keep
	}
	// Connections with the same opportunity, person and role are one
	// Marketo role (its dedupe key); one call must carry it once, or
	// Marketo skips the repeat with 1036. Repeats share the first's result.
	first := map[roleKey]*rec{}
	repeats := map[*rec]*rec{}
	uniq := make([]*rec, 0, len(recs))
	for _, r := range recs {
		k := keyOf(*w.of(r).conn)
		if f, ok := first[k]; ok {
			repeats[r] = f
			continue
		}
		first[k] = r
		uniq = append(uniq, r)
	}
	if err := b.mk.upsert(ctx, store.KindRole, uniq, marketotype.SyncRequest{Action: "createOrUpdate", DedupeBy: "dedupeFields"}, w.record, nil); err != nil {
		return err
	}
	for r, f := range repeats {
		r.written, r.marketoID, r.fail = f.written, f.marketoID, f.fail
	}
	return nil
}
