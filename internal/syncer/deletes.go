package syncer

import (
	"context"
	"strconv"

	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/marketo/marketotype"
	"github.com/msisync/msisync/internal/store"
)

// deleter is the delete stage: it removes records deleted in Dataverse
// (and merged-away ones) from Marketo, roles first (of deleted connections
// and of deleted opportunities), then opportunities, persons (by
// DeletePolicy) and companies, and forgets them in the store with a
// tombstone version.
type deleter struct {
	b     *batch
	roles *roleWriter
	// byEntity holds the records to delete; oppConns the stored
	// connections of deleted opportunities, forgotten with them.
	byEntity map[string][]*rec
	oppConns []ownedConn
}

// ownedConn is a stored connection of a deleted opportunity.
type ownedConn struct {
	r  *rec
	id string
}

// run deletes the batch's deleted records.
func (d *deleter) run(ctx context.Context) error {
	b := d.b
	d.byEntity = map[string][]*rec{}
	for entity, rs := range b.plan.deletes() {
		for _, r := range rs {
			if r.fail == nil {
				d.byEntity[entity] = append(d.byEntity[entity], r)
			}
		}
	}
	if len(d.byEntity) == 0 {
		return nil
	}
	if b.mk.paused {
		for _, rs := range d.byEntity {
			for _, r := range rs {
				r.fail = &failure{act: actReschedule, delay: b.s.cfg.RequeueMax}
			}
		}
		return nil
	}
	if err := d.deleteRoles(ctx); err != nil {
		return err
	}
	if err := d.del(ctx, marketotype.Opportunities, "dedupeFields", d.byEntity[event.EntityOpportunity], func(r *rec) marketotype.Record {
		return marketotype.Record{"externalOpportunityId": r.id}
	}); err != nil {
		return err
	}
	if err := d.deletePersons(ctx); err != nil {
		return err
	}
	if err := d.del(ctx, marketotype.Companies, "dedupeFields", d.byEntity[event.EntityAccount], func(r *rec) marketotype.Record {
		return marketotype.Record{"externalCompanyId": r.id}
	}); err != nil {
		return err
	}
	d.forget()
	return nil
}

// deleteRoles deletes the Marketo roles of deleted connections (unless
// another connection holds the same role) and of deleted opportunities.
func (d *deleter) deleteRoles(ctx context.Context) error {
	roles := d.roles.newDeletes()
	for _, r := range d.byEntity[event.EntityConnection] {
		old := d.roles.of(r).old
		if old == nil {
			continue
		}
		if _, live := d.b.links[store.KindRole][r.id]; !live {
			continue // deactivated: its role is already gone from Marketo
		}
		// Another connection with the same opportunity, contact and role
		// keeps the (shared) Marketo role.
		held, err := d.roles.held(ctx, *old)
		if err != nil {
			return err
		}
		if !held {
			if err := roles.add(ctx, r, *old); err != nil {
				return err
			}
		}
	}
	for _, r := range d.byEntity[event.EntityOpportunity] {
		conns, err := d.b.connectionsByOpportunity(ctx, r.id)
		if err != nil {
			return err
		}
		for _, c := range conns {
			d.oppConns = append(d.oppConns, ownedConn{r, c.ID})
			if err := roles.add(ctx, r, c); err != nil {
				return err
			}
		}
	}
	return roles.run(ctx)
}

// deletePersons deletes the persons of deleted contacts and leads with
// DeletePolicy delete; with keep they stay in Marketo.
func (d *deleter) deletePersons(ctx context.Context) error {
	b := d.b
	persons := append(d.byEntity[event.EntityContact], d.byEntity[event.EntityLead]...)
	if b.s.cfg.DeletePolicy != DeleteDelete || len(persons) == 0 {
		for _, r := range persons {
			b.s.log.Info("syncer: person deleted in Dataverse, kept in Marketo (delete policy keep)", "record", r.name())
			b.stats.KeptPersons++
		}
		return nil
	}
	ids := map[string]string{}
	for _, r := range persons {
		ids[r.id] = r.entity
	}
	if err := b.lookup(ctx, store.KindPerson, ids); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		f := b.mk.callFailure(err, "look up deleted persons")
		for _, r := range persons {
			r.fail = f
		}
	}
	return d.del(ctx, marketotype.Leads, "", persons, func(r *rec) marketotype.Record {
		l, ok := b.links[store.KindPerson][r.id]
		if !ok {
			return nil
		}
		id, _ := strconv.ParseInt(l.MarketoID, 10, 64)
		return marketotype.Record{"id": id}
	})
}

// del deletes the records of rs not failed yet for which build gives a
// Marketo record (nil: nothing in Marketo to delete).
func (d *deleter) del(ctx context.Context, obj marketotype.Object, deleteBy string, rs []*rec, build func(*rec) marketotype.Record) error {
	var keep []*rec
	var in []marketotype.Record
	for _, r := range rs {
		if r.fail == nil {
			if x := build(r); x != nil {
				keep = append(keep, r)
				in = append(in, x)
			}
		}
	}
	if len(in) == 0 {
		return nil
	}
	return d.b.mk.deleteObjects(ctx, obj, deleteBy, keep, in)
}

// forget records what was deleted: links and connections go, and the
// tombstone version makes later events stale.
func (d *deleter) forget() {
	versions := map[string]int64{}
	byKind := map[string][]string{}
	var conns []string
	for _, rs := range d.byEntity {
		for _, r := range rs {
			if r.fail != nil {
				continue
			}
			versions[r.key] = tombstone
			byKind[r.kind] = append(byKind[r.kind], r.id)
			if r.entity == event.EntityConnection {
				conns = append(conns, r.id)
			}
		}
	}
	for _, o := range d.oppConns {
		if o.r.fail == nil {
			conns = append(conns, o.id)
		}
	}
	for kind, ids := range byKind {
		d.b.changes.DeleteLinks(kind, ids...)
	}
	d.b.changes.DeleteConnections(conns...)
	d.b.changes.PutVersions(versions)
}
