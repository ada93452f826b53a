package syncer

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/marketo/marketotype"
	"github.com/msisync/msisync/internal/store"
)

// CategoryStakeholder is the connectionrole category of opportunity
// stakeholder roles (Stakeholder, Champion, Decision Maker, ...).
const CategoryStakeholder = 1000

// roleCacheTTL bounds how long a role's category is trusted: roles are
// configuration and rarely change, so one read per role per hour is plenty.
const roleCacheTTL = time.Hour

type roleCategory struct {
	category int64
	name     string
	found    bool // false: the role does not exist (any more)
	at       time.Time
}

// How a connection record leaves Marketo without being deleted in Dataverse.
const (
	retireDeactivate = iota + 1 // statecode 1 (Inactive): role deleted, connection kept to reactivate
	retireDrop                  // no longer a stakeholder role: role deleted, connection forgotten
)

// classifyConnection runs after interpretConnection: it drops roles that are
// not stakeholder roles and marks deactivated connections.
func (b *batch) classifyConnection(ctx context.Context, r *rec) error {
	ok, err := b.stakeholder(ctx, r)
	if err != nil || r.fail != nil {
		return err
	}
	if !ok {
		if r.oldConn == nil {
			r.fail = &failure{act: actSkip}
		} else {
			r.retire = retireDrop // was a stakeholder role: take its Marketo role away
		}
		return nil
	}
	if b.inactive(r) {
		r.retire = retireDeactivate
	}
	return nil
}

// inactive reports whether a connection is deactivated: by its statecode
// when the events (or a re-read) carry it, else by the store, where a
// connection without a role link is one we deactivated earlier (every
// connection written to Marketo is stored together with its role link).
func (b *batch) inactive(r *rec) bool {
	if v, ok := r.attrs["statecode"]; ok && !v.IsNull() {
		n, _ := v.Int()
		return n != 0
	}
	if r.oldConn == nil {
		return false
	}
	_, live := b.links[store.KindRole][r.id]
	return !live
}

// stakeholder reports whether the connection's role is a Stakeholder-category
// role. Connection rows carry no category, so it takes a read of the
// connectionrole from Dataverse (cached per role id). Without Dataverse
// access, or with AnyConnectionRole, every role is accepted: the behaviour
// before the check existed. A connection whose events do not name its role
// keeps the stored one, which was checked when it was stored. A failed read
// requeues the record (r.fail).
func (b *batch) stakeholder(ctx context.Context, r *rec) (bool, error) {
	dv := b.s.cfg.Dataverse
	if dv == nil || b.s.cfg.AnyConnectionRole {
		return true, nil
	}
	ref, ok := refOf(r.attrs, "record2roleid")
	if !ok {
		return true, nil
	}
	c, err := b.readRole(ctx, r, ref.ID)
	if err != nil || r.fail != nil {
		return false, err
	}
	return c.found && c.category == CategoryStakeholder, nil
}

// readRole returns the connectionrole's category and name, read from
// Dataverse once per role per roleCacheTTL (the name serves nameRefs, the
// category stakeholder). A failed read sets r.fail (requeue).
func (b *batch) readRole(ctx context.Context, r *rec, id string) (roleCategory, error) {
	now := b.s.clk.Now()
	b.s.roleMu.Lock()
	c, cached := b.s.roleCache[id]
	b.s.roleMu.Unlock()
	if cached && now.Sub(c.at) < roleCacheTTL {
		return c, nil
	}
	attrs, err := b.s.cfg.Dataverse.Read(ctx, "connectionrole", id, []string{"name", "category"})
	switch {
	case err == nil:
		c = roleCategory{found: true, at: now, name: attrs["name"].Text()}
		if v, ok := attrs["category"]; ok {
			c.category, _ = v.Int()
		}
	case ctx.Err() != nil:
		return roleCategory{}, ctx.Err()
	case b.s.cfg.IsNotFound != nil && b.s.cfg.IsNotFound(err):
		c = roleCategory{at: now}
	default:
		r.fail = &failure{act: actRequeue, reason: ReasonGaveUp,
			desc: fmt.Sprintf("read connectionrole %s (role of %s) from Dataverse: %v", id, r.name(), err)}
		return roleCategory{}, nil
	}
	b.s.roleMu.Lock()
	b.s.roleCache[id] = c
	b.s.roleMu.Unlock()
	return c, nil
}

// roleKey is a Marketo opportunity role's dedupe key.
type roleKey struct{ opp, person, role string }

func keyOf(c store.Connection) roleKey { return roleKey{c.OpportunityID, c.PersonID, c.Role} }

// roleHeld reports whether a connection other than c gives Marketo the same
// role (same opportunity, contact and role name), so removing c must leave
// the role in place. Connections in this batch count as they will be once it
// is written; the others as the store has them (live when they have a role
// link: written to Marketo and not deactivated).
func (b *batch) roleHeld(ctx context.Context, c store.Connection) (bool, error) {
	k := keyOf(c)
	decided := map[string]bool{}
	for _, r := range b.recs {
		if r.entity != event.EntityConnection || r.id == c.ID || r.fail != nil {
			continue
		}
		decided[r.id] = true
		if !r.deleted && r.retire == 0 && r.conn != nil && keyOf(*r.conn) == k {
			return true, nil
		}
	}
	// One read per opportunity per batch: the batch's own connections are
	// judged above, so the stored rows only speak for the others.
	conns, ok := b.oppConns[c.OpportunityID]
	if !ok {
		var err error
		conns, err = b.connectionsByOpportunity(ctx, c.OpportunityID)
		if err != nil {
			return false, err
		}
		if b.oppConns == nil {
			b.oppConns = map[string][]store.Connection{}
		}
		b.oppConns[c.OpportunityID] = conns
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

func (b *batch) newRoleDeletes() *roleDeletes {
	return &roleDeletes{b: b, first: map[roleKey]*rec{}}
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
		if err := d.b.deleteObjects(ctx, marketotype.Roles, "dedupeFields", d.recs, d.in); err != nil {
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
func (b *batch) retire(ctx context.Context) error {
	var recs []*rec
	for _, k := range slices.Sorted(maps.Keys(b.recs)) {
		if r := b.recs[k]; r.retire != 0 && r.fail == nil {
			recs = append(recs, r)
		}
	}
	if len(recs) == 0 {
		return nil
	}
	if b.paused {
		for _, r := range recs {
			r.fail = &failure{act: actReschedule, delay: b.s.cfg.RequeueMax}
		}
		return nil
	}
	dels := b.newRoleDeletes()
	for _, r := range recs {
		if r.oldConn == nil {
			continue
		}
		if _, live := b.links[store.KindRole][r.id]; !live {
			continue // deactivated before: its role is already gone
		}
		held, err := b.roleHeld(ctx, *r.oldConn)
		if err != nil {
			return err
		}
		if !held {
			if err := dels.add(ctx, r, *r.oldConn); err != nil {
				return err
			}
		}
	}
	if err := dels.run(ctx); err != nil {
		return err
	}
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
		if r.retire == retireDeactivate && r.conn != nil {
			c := *r.conn
			c.UpdatedAt = now
			keep = append(keep, c)
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
	return nil
}

func (b *batch) roleRecord(r *rec) marketotype.Record {
	out := marketotype.Record(b.s.cfg.Mapping.Apply(event.EntityConnection, r.attrs, r.formatted))
	if out == nil {
		out = marketotype.Record{}
	}
	out["externalOpportunityId"] = r.conn.OpportunityID
	lid, _ := strconv.ParseInt(b.links[store.KindPerson][r.conn.PersonID].MarketoID, 10, 64)
	out["leadId"] = lid
	out["role"] = r.conn.Role
	return out
}

// writeRoles deletes roles whose key changed (unless another connection
// still holds the old key), then upserts.
func (b *batch) writeRoles(ctx context.Context, recs []*rec) error {
	dels := b.newRoleDeletes()
	for _, r := range recs {
		o := r.oldConn
		if o == nil || keyOf(*o) == keyOf(*r.conn) {
			continue
		}
		if _, live := b.links[store.KindRole][r.id]; !live {
			continue // deactivated until now: the old role is not in Marketo
		}
		held, err := b.roleHeld(ctx, *o)
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
		k := keyOf(*r.conn)
		if f, ok := first[k]; ok {
			repeats[r] = f
			continue
		}
		first[k] = r
		uniq = append(uniq, r)
	}
	if err := b.syncObjects(ctx, store.KindRole, uniq, marketotype.SyncRequest{Action: "createOrUpdate", DedupeBy: "dedupeFields"}); err != nil {
		return err
	}
	for r, f := range repeats {
		r.written, r.marketoID, r.fail = f.written, f.marketoID, f.fail
	}
	return nil
}
