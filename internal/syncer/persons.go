package syncer

import (
	"context"
	"fmt"
	"strconv"

	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/store"
)

// leadMode returns the lead strategy in force: lookup or split, or "" while
// auto has not detected it yet.
func (b *batch) leadMode(ctx context.Context) (string, error) {
	s := b.s
	s.leadMu.Lock()
	m := s.leadMode
	s.leadMu.Unlock()
	if m != "" {
		return m, nil
	}
	v, ok, err := s.cfg.Store.GetMeta(ctx, metaLookupField)
	if err != nil {
		return "", fmt.Errorf("syncer: get meta %s: %w", metaLookupField, err)
	}
	if !ok {
		return "", nil
	}
	m = LeadSplit
	if v == "true" {
		m = LeadLookup
	}
	s.setLeadMode(m)
	return m, nil
}

func (s *Syncer) setLeadMode(m string) {
	s.leadMu.Lock()
	s.leadMode = m
	s.leadMu.Unlock()
}

func (b *batch) email(r *rec) string {
	if v, ok := r.attrs["emailaddress1"]; ok {
		return v.Text()
	}
	return b.links[store.KindPerson][r.id].Email
}

// writePersons upserts leads and contacts: qualified contacts take over the
// Marketo person of their lead; the rest follow the lead strategy.
func (b *batch) writePersons(ctx context.Context, recs []*rec) error {
	leads := map[string]string{}
	for _, r := range recs {
		if r.entity != event.EntityContact {
			continue
		}
		if _, linked := b.links[store.KindPerson][r.id]; linked {
			continue
		}
		if ref, ok := refOf(r.attrs, "originatingleadid"); ok && ref.LogicalName == event.EntityLead {
			leads[ref.ID] = event.EntityLead
		}
	}
	if len(leads) > 0 {
		if err := b.lookup(ctx, store.KindPerson, leads); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			f := b.callFailure(err, "look up qualified leads")
			for _, r := range recs {
				r.fail = f
			}
			return nil
		}
	}
	// Mark qualified leads before writing: if this worker dies after the
	// write, a later event of the lead must still not pull the person back.
	for _, r := range recs {
		if r.entity != event.EntityContact {
			continue
		}
		if ref, ok := refOf(r.attrs, "originatingleadid"); ok && ref.LogicalName == event.EntityLead {
			if err := b.s.cfg.Store.PutMeta(ctx, metaQualified(ref.ID), r.id); err != nil {
				return fmt.Errorf("syncer: put meta: %w", err)
			}
		}
	}
	var moved, rest []*rec
	for _, r := range recs {
		if r.entity == event.EntityContact {
			if _, linked := b.links[store.KindPerson][r.id]; !linked {
				if ref, ok := refOf(r.attrs, "originatingleadid"); ok {
					if l, ok := b.links[store.KindPerson][ref.ID]; ok && l.Entity != event.EntityContact {
						r.byID, r.movedFrom = l.MarketoID, ref.ID
						moved = append(moved, r)
						continue
					}
				}
			}
		}
		rest = append(rest, r)
	}
	if len(moved) > 0 {
		if err := b.syncObjects(ctx, store.KindPerson, moved, SyncRequest{Action: "updateOnly", LookupField: "id"}); err != nil {
			return err
		}
	}
	if len(rest) == 0 {
		return nil
	}
	mode, err := b.leadMode(ctx)
	if err != nil {
		return err
	}
	if mode == "" || mode == LeadLookup {
		supported, err := b.syncLookup(ctx, rest, mode == "")
		if err != nil || supported {
			return err
		}
	}
	return b.syncSplit(ctx, rest)
}

// syncLookup writes persons in one createOrUpdate keyed on externalPersonId.
// When probing, a 1011 answer means the instance does not support it: the
// result is remembered and the caller falls back to split.
func (b *batch) syncLookup(ctx context.Context, recs []*rec, probe bool) (bool, error) {
	if !probe {
		return true, b.syncObjects(ctx, store.KindPerson, recs, SyncRequest{Action: "createOrUpdate", LookupField: "externalPersonId"})
	}
	in := make([]Record, len(recs))
	for i, r := range recs {
		in[i] = b.record(r)
	}
	b.stats.Calls[string(Leads)+" sync"]++
	res, err := b.s.cfg.Marketo.Sync(ctx, Leads, SyncRequest{Action: "createOrUpdate", LookupField: "externalPersonId", Input: in[:min(len(in), b.s.cfg.BatchSize)]})
	unsupported := false
	if err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		code, _ := codeOfErr(err)
		unsupported = code == "1011"
		if !unsupported {
			b.noteCallError(err)
			f := b.callFailure(err, "sync leads")
			for _, r := range recs {
				r.fail = f
			}
			return true, nil
		}
	} else {
		unsupported = len(res) > 0
		for _, x := range res {
			if x.Status != "skipped" || len(x.Reasons) == 0 || x.Reasons[0].Code != "1011" {
				unsupported = false
			}
		}
	}
	if unsupported {
		b.s.log.Info("syncer: Marketo does not accept lookupField=externalPersonId; using the split lead strategy")
		if err := b.s.cfg.Store.PutMeta(ctx, metaLookupField, "false"); err != nil {
			return false, fmt.Errorf("syncer: put meta: %w", err)
		}
		b.s.setLeadMode(LeadSplit)
		return false, nil
	}
	b.s.log.Info("syncer: Marketo accepts lookupField=externalPersonId; using it for lead upserts")
	if err := b.s.cfg.Store.PutMeta(ctx, metaLookupField, "true"); err != nil {
		return false, fmt.Errorf("syncer: put meta: %w", err)
	}
	b.s.setLeadMode(LeadLookup)
	first := recs[:min(len(recs), b.s.cfg.BatchSize)]
	b.applyResults(Leads, first, res)
	if len(recs) > b.s.cfg.BatchSize {
		return true, b.syncObjects(ctx, store.KindPerson, recs[b.s.cfg.BatchSize:], SyncRequest{Action: "createOrUpdate", LookupField: "externalPersonId"})
	}
	return true, nil
}

// syncSplit finds Marketo ids by externalPersonId, updates found persons by
// id and creates or links the rest by email.
func (b *batch) syncSplit(ctx context.Context, recs []*rec) error {
	ids := map[string]string{}
	for _, r := range recs {
		ids[r.id] = r.entity
	}
	if err := b.lookup(ctx, store.KindPerson, ids); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		f := b.callFailure(err, "look up persons by externalPersonId")
		for _, r := range recs {
			r.fail = f
		}
		return nil
	}
	var byID, byEmail []*rec
	for _, r := range recs {
		if l, ok := b.links[store.KindPerson][r.id]; ok && l.MarketoID != "" {
			r.byID = l.MarketoID
			byID = append(byID, r)
			continue
		}
		if b.email(r) == "" {
			r.fail = &failure{act: actDead, reason: ReasonMissingData,
				desc: fmt.Sprintf("%s is not in Marketo and has no email (emailaddress1): with lead strategy split a person is created by email", r.name())}
			continue
		}
		byEmail = append(byEmail, r)
	}
	if len(byID) > 0 {
		if err := b.syncObjects(ctx, store.KindPerson, byID, SyncRequest{Action: "updateOnly", LookupField: "id"}); err != nil {
			return err
		}
	}
	if len(byEmail) > 0 {
		for _, r := range byEmail {
			if _, ok := r.attrs["emailaddress1"]; !ok {
				r.attrs["emailaddress1"] = event.String(b.email(r))
			}
		}
		if err := b.syncObjects(ctx, store.KindPerson, byEmail, SyncRequest{Action: "createOrUpdate", LookupField: "email"}); err != nil {
			return err
		}
	}
	return nil
}

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
	roles := b.newRoleDeletes()
	for _, r := range byEntity[event.EntityConnection] {
		if r.oldConn == nil {
			continue
		}
		if _, live := b.links[store.KindRole][r.id]; !live {
			continue // deactivated: its role is already gone from Marketo
		}
		// Another connection with the same opportunity, contact and role
		// keeps the (shared) Marketo role.
		held, err := b.roleHeld(ctx, *r.oldConn)
		if err != nil {
			return err
		}
		if !held {
			if err := roles.add(ctx, r, *r.oldConn); err != nil {
				return err
			}
		}
	}
	for _, r := range byEntity[event.EntityOpportunity] {
		conns, err := b.s.cfg.Store.ConnectionsByOpportunity(ctx, r.id)
		if err != nil {
			return fmt.Errorf("syncer: connections of opportunity %s: %w", r.id, err)
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
	del := func(obj Object, deleteBy string, rs []*rec, build func(*rec) Record) error {
		var keep []*rec
		var in []Record
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
	if err := del(Opportunities, "dedupeFields", byEntity[event.EntityOpportunity], func(r *rec) Record {
		return Record{"externalOpportunityId": r.id}
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
		if err := del(Leads, "", persons, func(r *rec) Record {
			l, ok := b.links[store.KindPerson][r.id]
			if !ok {
				return nil
			}
			id, _ := strconv.ParseInt(l.MarketoID, 10, 64)
			return Record{"id": id}
		}); err != nil {
			return err
		}
	} else {
		for _, r := range persons {
			b.s.log.Info("syncer: person deleted in Dataverse, kept in Marketo (delete policy keep)", "record", r.name())
			b.stats.KeptPersons++
		}
	}
	if err := del(Companies, "dedupeFields", byEntity[event.EntityAccount], func(r *rec) Record {
		return Record{"externalCompanyId": r.id}
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
		if err := b.s.cfg.Store.DeleteLinks(ctx, kind, ids); err != nil {
			return fmt.Errorf("syncer: delete %s links: %w", kind, err)
		}
	}
	if len(conns) > 0 {
		if err := b.s.cfg.Store.DeleteConnections(ctx, conns); err != nil {
			return fmt.Errorf("syncer: delete connections: %w", err)
		}
	}
	if len(versions) > 0 {
		if err := b.s.cfg.Store.PutVersions(ctx, versions); err != nil {
			return fmt.Errorf("syncer: put versions: %w", err)
		}
	}
	return nil
}
