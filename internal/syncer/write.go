package syncer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"

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
			if b.plan.upserts(r) && b.depsReady(r) {
				recs = append(recs, r)
			}
		}
		if len(recs) == 0 {
			continue
		}
		if b.paused {
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
	if err := w.b.upsert(ctx, w.kind, recs, marketotype.SyncRequest{Action: "createOrUpdate", DedupeBy: "dedupeFields"}, record, nil); err != nil {
		return err
	}
	return w.b.persist(ctx, recs)
}

// upsert writes recs of one kind in calls of ≤ BatchSize and maps the
// results back; build makes each record's Marketo input, and stale (may be
// nil) takes a skipped record's result first (see applyResults).
func (b *batch) upsert(ctx context.Context, kind string, recs []*rec, req marketotype.SyncRequest, build func(*rec) marketotype.Record, stale func(*rec, marketotype.Result) bool) error {
	obj := objectOf[kind]
	for chunk := range slices.Chunk(recs, b.s.cfg.BatchSize) {
		in := make([]marketotype.Record, len(chunk))
		for i, r := range chunk {
			in[i] = build(r)
		}
		res, ok, err := b.syncCall(ctx, obj, chunk, req, in)
		if err != nil {
			return err
		}
		if ok {
			b.applyResults(obj, chunk, res, stale)
		}
	}
	return nil
}

// syncCall sends one Sync call of in (aligned with recs). A failed call
// fails every record of recs and reports ok false.
func (b *batch) syncCall(ctx context.Context, obj marketotype.Object, recs []*rec, req marketotype.SyncRequest, in []marketotype.Record) (res []marketotype.Result, ok bool, err error) {
	req.Input = in
	b.stats.Calls[string(obj)+" sync"]++
	res, err = b.s.cfg.Marketo.Sync(ctx, obj, req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, false, ctx.Err()
		}
		b.noteCallError(err)
		f := b.callFailure(err, "sync "+string(obj))
		for _, r := range recs {
			r.fail = f
		}
		return nil, false, nil
	}
	return res, true, nil
}

// applyResults maps the results of one Sync call back to its records;
// stale (may be nil) takes a skipped record's result first.
func (b *batch) applyResults(obj marketotype.Object, recs []*rec, res []marketotype.Result, stale func(*rec, marketotype.Result) bool) {
	for i, r := range recs {
		if i >= len(res) {
			r.fail = &failure{act: actRequeue, reason: ReasonGaveUp, desc: fmt.Sprintf("marketo returned %d results for %d %s", len(res), len(recs), obj)}
			continue
		}
		x := res[i]
		switch x.Status {
		case "created", "updated":
			r.written = true
			r.marketoID = x.MarketoGUID
			if x.ID != 0 {
				r.marketoID = strconv.FormatInt(x.ID, 10)
			}
			b.stats.Written[obj]++
		default:
			if stale != nil && stale(r, x) {
				continue
			}
			r.fail = b.recordFailure(r, obj, x)
		}
	}
}

// noteCallError pauses Marketo calls for the rest of the batch on quota and
// configuration errors, loudly.
func (b *batch) noteCallError(err error) {
	switch classOfErr(err) {
	case marketotype.ClassQuota, marketotype.ClassConfig:
		if !b.paused {
			b.s.log.Error("syncer: Marketo refuses calls (quota or configuration); pausing and rescheduling, nothing is dropped", "err", err)
		}
		b.paused = true
	}
}

// callFailure decides what a failed Marketo call means for its records.
func (b *batch) callFailure(err error, what string) *failure {
	var pe *pausedError
	if errors.As(err, &pe) {
		return &failure{act: actReschedule, delay: b.s.cfg.RequeueMax}
	}
	code, message := codeOfErr(err)
	switch classOfErr(err) {
	case marketotype.ClassQuota, marketotype.ClassConfig:
		return &failure{act: actReschedule, delay: b.s.cfg.RequeueMax}
	case marketotype.ClassPermanent:
		return &failure{act: actDead, reason: ReasonRejected, desc: fmt.Sprintf("%s: marketo %s: %s", what, code, message)}
	case marketotype.ClassDependency:
		return &failure{act: actRequeue, reason: ReasonMissingDependency, desc: fmt.Sprintf("%s: marketo %s: %s", what, code, message)}
	}
	return &failure{act: actRequeue, reason: ReasonGaveUp, desc: fmt.Sprintf("%s: %v", what, err)}
}

// recordFailure decides what a skipped record means.
func (b *batch) recordFailure(r *rec, obj marketotype.Object, res marketotype.Result) *failure {
	code, message := "", "skipped without a reason"
	if len(res.Reasons) > 0 {
		code, message = res.Reasons[0].Code, res.Reasons[0].Message
	}
	desc := fmt.Sprintf("marketo %s: %s (%s %s)", code, message, obj, r.name())
	switch marketotype.ClassOf(code) {
	case marketotype.ClassQuota, marketotype.ClassConfig:
		b.paused = true
		b.s.log.Error("syncer: Marketo refuses writes (quota or configuration); rescheduling", "object", obj, "code", code, "message", message)
		return &failure{act: actReschedule, delay: b.s.cfg.RequeueMax}
	case marketotype.ClassThrottled, marketotype.ClassTransient, marketotype.ClassReauth:
		return &failure{act: actRequeue, reason: ReasonGaveUp, desc: desc}
	case marketotype.ClassDependency:
		return &failure{act: actRequeue, reason: ReasonMissingDependency, desc: desc}
	}
	return &failure{act: actDead, reason: ReasonRejected, desc: desc}
}

type pausedError struct{}

func (*pausedError) Error() string { return "marketo calls paused (quota or configuration)" }
