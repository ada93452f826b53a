package syncer

import (
	"context"

	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/marketo/marketotype"
)

// ownerOf is the sales person of r: its owner, or the default sales person
// for a team-owned record.
func ownerOf(cfg *Config, r *rec) (string, bool) {
	ref, ok := refOf(r.attrs, "ownerid")
	if !ok {
		return "", false
	}
	if ref.LogicalName != event.EntitySystemUser {
		return cfg.DefaultSalesPersonID, cfg.DefaultSalesPersonID != ""
	}
	return ref.ID, true
}

// companyOf is the account of the first of cols that names one.
func companyOf(r *rec, cols ...string) (string, bool) {
	for _, c := range cols {
		if ref, ok := refOf(r.attrs, c); ok && ref.LogicalName == event.EntityAccount {
			return ref.ID, true
		}
	}
	return "", false
}

// recordOf builds the Marketo record of a Dataverse record.
func recordOf(cfg *Config, r *rec) marketotype.Record {
	out := marketotype.Record(cfg.Mapping.Apply(r.entity, r.attrs, r.formatted))
	if out == nil {
		out = marketotype.Record{}
	}
	if f := externalField[r.kind]; f != "" {
		out[f] = r.id
	}
	switch r.entity {
	case event.EntityAccount:
		if o, ok := ownerOf(cfg, r); ok {
			out["externalSalesPersonId"] = o
		}
	case event.EntityContact, event.EntityLead, event.EntityOpportunity:
		if o, ok := ownerOf(cfg, r); ok {
			out["externalSalesPersonId"] = o
		}
		cols := map[string][]string{event.EntityContact: {"parentcustomerid"}, event.EntityLead: {"parentaccountid"}, event.EntityOpportunity: {"parentaccountid", "customerid"}}[r.entity]
		if c, ok := companyOf(r, cols...); ok {
			out["externalCompanyId"] = c
			if r.entity == event.EntityLead {
				delete(out, "company") // company fields on a linked lead give 1021
			}
		}
	}
	return out
}

// write upserts stage by stage in MSI's order.
func (b *batch) write(ctx context.Context) error {
	for _, kind := range stages {
		var recs []*rec
		for _, r := range b.plan.live(kind) {
			if b.plan.upserts(r) && b.resolver.ready(r) {
				recs = append(recs, r)
			}
		}
		if len(recs) == 0 {
			continue
		}
		if b.mk.paused {
			for _, r := range recs {
				r.fail = &failure{act: actReschedule, delay: b.s.cfg.RequeueMax}
			}
			continue
		}
		if err := b.writers[kind].write(ctx, recs); err != nil {
			return err
		}
	}
	return nil
}

// A writer writes the records of one Marketo object, ready to write and
// in key order, and records its bookkeeping in the batch's changes.
type writer interface {
	write(ctx context.Context, recs []*rec) error
}

// objectWriter writes the objects that need nothing of their own: sales
// persons, companies and opportunities, one createOrUpdate per ≤ BatchSize
// records keyed on their external id.
type objectWriter struct {
	b    *batch
	kind string
}

func (w objectWriter) write(ctx context.Context, recs []*rec) error {
	record := func(r *rec) marketotype.Record { return recordOf(&w.b.s.cfg, r) }
	if err := w.b.mk.upsert(ctx, w.kind, recs, marketotype.SyncRequest{Action: "createOrUpdate", DedupeBy: "dedupeFields"}, record, nil); err != nil {
		return err
	}
	return w.b.persist(ctx, recs)
}

type pausedError struct{}

func (*pausedError) Error() string { return "marketo calls paused (quota or configuration)" }
