package syncer

import (
	"context"
	"strconv"

	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/marketo/marketotype"
	"github.com/msisync/msisync/internal/store"
)

// deletes removes deleted records from Marketo: roles, opportunities,
// persons (by policy), companies.
func (b *batch) deletes(ctx context.Context) error {
	byEntity := map[string][]*rec{}
	for _, r := range b.recs {
		if r.deleted && r.fail == nil {
			byEntity[r.entity] = append(byEntity[r.entity], r)
		}
	}
	if len(byEntity) == 0 {
		return nil
	}
	if b.paused {
		for _, rs := range byEntity {
			for _, r := range rs {
				r.fail = &failure{act: actReschedule, delay: b.s.cfg.RequeueMax}
			}
		}
		return nil
	}
	type owned struct {
		r  *rec
		id string
	}
	var connIDs []owned
	roles := b.roles.newDeletes()
	for _, r := range byEntity[event.EntityConnection] {
		old := b.roles.of(r).old
		if old == nil {
			continue
		}
		if _, live := b.links[store.KindRole][r.id]; !live {
			continue // deactivated: its role is already gone from Marketo
		}
		// Another connection with the same opportunity, contact and role
		// keeps the (shared) Marketo role.
		held, err := b.roles.held(ctx, *old)
		if err != nil {
			return err
		}
		if !held {
			if err := roles.add(ctx, r, *old); err != nil {
				return err
			}
		}
	}
	for _, r := range byEntity[event.EntityOpportunity] {
		conns, err := b.connectionsByOpportunity(ctx, r.id)
		if err != nil {
			return err
		}
		for _, c := range conns {
			connIDs = append(connIDs, owned{r, c.ID})
			if err := roles.add(ctx, r, c); err != nil {
				return err
			}
		}
	}
	if err := roles.run(ctx); err != nil {
		return err
	}
	del := func(obj marketotype.Object, deleteBy string, rs []*rec, build func(*rec) marketotype.Record) error {
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
		return b.deleteObjects(ctx, obj, deleteBy, keep, in)
	}
	if err := del(marketotype.Opportunities, "dedupeFields", byEntity[event.EntityOpportunity], func(r *rec) marketotype.Record {
		return marketotype.Record{"externalOpportunityId": r.id}
	}); err != nil {
		return err
	}
	persons := append(byEntity[event.EntityContact], byEntity[event.EntityLead]...)
	if b.s.cfg.DeletePolicy == DeleteDelete && len(persons) > 0 {
		ids := map[string]string{}
		for _, r := range persons {
			ids[r.id] = r.entity
		}
		if err := b.lookup(ctx, store.KindPerson, ids); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			f := b.callFailure(err, "look up deleted persons")
			for _, r := range persons {
				r.fail = f
			}
		}
		if err := del(marketotype.Leads, "", persons, func(r *rec) marketotype.Record {
			l, ok := b.links[store.KindPerson][r.id]
			if !ok {
				return nil
			}
			id, _ := strconv.ParseInt(l.MarketoID, 10, 64)
			return marketotype.Record{"id": id}
		}); err != nil {
			return err
		}
	} else {
		for _, r := range persons {
			b.s.log.Info("syncer: person deleted in Dataverse, kept in Marketo (delete policy keep)", "record", r.name())
			b.stats.KeptPersons++
		}
	}
	if err := del(marketotype.Companies, "dedupeFields", byEntity[event.EntityAccount], func(r *rec) marketotype.Record {
		return marketotype.Record{"externalCompanyId": r.id}
	}); err != nil {
		return err
	}
	// Forget what was deleted; the tombstone makes later events stale.
	versions := map[string]int64{}
	byKind := map[string][]string{}
	var conns []string
	for _, rs := range byEntity {
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
	for _, o := range connIDs {
		if o.r.fail == nil {
			conns = append(conns, o.id)
		}
	}
	for kind, ids := range byKind {
		b.changes.DeleteLinks(kind, ids...)
	}
	b.changes.DeleteConnections(conns...)
	b.changes.PutVersions(versions)
	return nil
}

// deleteObjects deletes input (aligned with recs); a record already gone
// counts as deleted.
func (b *batch) deleteObjects(ctx context.Context, obj marketotype.Object, deleteBy string, recs []*rec, input []marketotype.Record) error {
	for start := 0; start < len(input); start += 300 {
		end := min(start+300, len(input))
		b.stats.Calls[string(obj)+" delete"]++
		res, err := b.s.cfg.Marketo.Delete(ctx, obj, deleteBy, input[start:end])
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			b.noteCallError(err)
			f := b.callFailure(err, "delete "+string(obj))
			for _, r := range recs[start:end] {
				if r.fail == nil {
					r.fail = f
				}
			}
			continue
		}
		for i, r := range recs[start:end] {
			if i >= len(res) {
				r.fail = &failure{act: actRequeue, reason: ReasonGaveUp, desc: "marketo returned too few delete results"}
				continue
			}
			x := res[i]
			gone := x.Status == "deleted" || (len(x.Reasons) > 0 && (x.Reasons[0].Code == "1013" || x.Reasons[0].Code == "1004"))
			if gone {
				if x.Status == "deleted" {
					b.stats.Deleted[obj]++
				}
				continue
			}
			if r.fail == nil {
				r.fail = b.recordFailure(r, obj, x)
			}
		}
	}
	return nil
}
