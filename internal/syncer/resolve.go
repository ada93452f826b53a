package syncer

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/store"
)

// loadLinks reads the store links of every record in the batch, and the
// stored connections of connection records (roleWriter.load).
func (b *batch) loadLinks(ctx context.Context) error {
	byKind := map[string][]string{}
	for _, r := range b.recs {
		byKind[r.kind] = append(byKind[r.kind], r.id)
	}
	for kind, ids := range byKind {
		if err := b.storeLinks(ctx, kind, ids); err != nil {
			return err
		}
	}
	return b.roles.load(ctx)
}

func (b *batch) storeLinks(ctx context.Context, kind string, ids []string) error {
	var want []string
	for _, id := range ids {
		if _, ok := b.links[kind][id]; ok {
			continue
		}
		// Not saved yet: the batch's own changes speak for the id.
		if l, put, ok := b.changes.Link(kind, id); ok {
			if put {
				b.links[kind][id] = l
			}
			continue
		}
		want = append(want, id)
	}
	if len(want) == 0 {
		return nil
	}
	got, err := b.s.cfg.Store.GetLinks(ctx, kind, want)
	if err != nil {
		return fmt.Errorf("syncer: get %s links: %w", kind, err)
	}
	maps.Copy(b.links[kind], got)
	return nil
}

// prepare interprets connections, applies lead qualification markers and
// re-reads records whose events do not carry enough to write them.
func (b *batch) prepare(ctx context.Context) error {
	for _, k := range slices.Sorted(maps.Keys(b.recs)) {
		r := b.recs[k]
		if r.fail != nil || r.deleted {
			continue
		}
		if r.entity == event.EntityLead {
			if _, ok, err := b.s.cfg.Store.GetMeta(ctx, metaQualified(r.id)); err != nil {
				return fmt.Errorf("syncer: get meta: %w", err)
			} else if ok {
				r.fail = &failure{act: actSkip}
				continue
			}
		}
		truncated := false
		for _, m := range r.msgs {
			truncated = truncated || m.ev.Truncated
		}
		_, linked := b.links[r.kind][r.id]
		var missing []string
		if !r.full && !linked {
			for _, c := range required[r.entity] {
				if _, ok := r.attrs[c]; !ok {
					missing = append(missing, c)
				}
			}
			if r.entity == event.EntityConnection && b.roles.of(r).old != nil {
				missing = nil // the stored connection knows the opportunity, contact and role
			}
		}
		if truncated || len(missing) > 0 {
			if err := b.reread(ctx, r, truncated, missing); err != nil {
				return err
			}
			if r.fail != nil {
				continue
			}
		}
		if err := b.s.nameRefs(ctx, r); err != nil {
			return err
		}
		if r.fail != nil {
			continue
		}
		if r.entity == event.EntityConnection {
			b.roles.interpretConnection(r)
			if r.fail == nil {
				if err := b.roles.classifyConnection(ctx, r); err != nil {
					return err
				}
			}
		}
	}
	// In-batch qualification: a lead whose contact is in this batch is not written.
	for _, r := range b.recs {
		if r.entity != event.EntityContact || r.deleted || r.fail != nil {
			continue
		}
		if ref, ok := refOf(r.attrs, "originatingleadid"); ok && ref.LogicalName == event.EntityLead {
			if lr := b.recs[event.EntityLead+"/"+ref.ID]; lr != nil && lr.fail == nil && !lr.deleted {
				lr.fail = &failure{act: actSkip}
			}
		}
	}
	return nil
}

func (b *batch) reread(ctx context.Context, r *rec, truncated bool, missing []string) error {
	dv := b.s.cfg.Dataverse
	if dv == nil {
		desc := fmt.Sprintf("update of %s carries only %s and the record is not in Marketo yet (missing %s): register a post image on the Dataverse Update step or set MSISYNC_DATAVERSE_URL so the worker can re-read it",
			r.name(), changedColumns(r), strings.Join(missing, ", "))
		if truncated {
			desc = fmt.Sprintf("event for %s was truncated (over 256 KB) and Dataverse access is not configured: set MSISYNC_DATAVERSE_URL so the worker can re-read it", r.name())
		}
		r.fail = &failure{act: actRequeue, reason: ReasonMissingData, desc: desc}
		return nil
	}
	attrs, err := dv.Read(ctx, r.entity, r.id, b.s.cfg.Mapping.Columns(r.entity))
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if b.s.cfg.IsNotFound != nil && b.s.cfg.IsNotFound(err) {
			// Gone from Dataverse: its Delete event will do the rest.
			r.fail = &failure{act: actSkip}
			return nil
		}
		r.fail = &failure{act: actRequeue, reason: ReasonGaveUp, desc: fmt.Sprintf("re-read %s from Dataverse: %v", r.name(), err)}
		return nil
	}
	maps.Copy(r.attrs, attrs)
	r.full = true
	if t, ok := attrs["modifiedon"]; ok {
		if tv, ok := t.TimeValue(); ok {
			r.version = max(r.version, tv.UnixMilli())
			for c := range attrs {
				r.colVersion[c] = r.version
			}
		}
	}
	return nil
}

func changedColumns(r *rec) string {
	var cols []string
	for c := range r.attrs {
		if !systemColumns[c] && c != r.entity+"id" {
			cols = append(cols, c)
		}
	}
	slices.Sort(cols)
	if len(cols) == 0 {
		return "no columns"
	}
	return strings.Join(cols, ", ")
}

func refOf(attrs event.Attributes, col string) (event.Ref, bool) {
	v, ok := attrs[col]
	if !ok {
		return event.Ref{}, false
	}
	ref, ok := v.Reference()
	if !ok || ref.ID == "" {
		return event.Ref{}, false
	}
	ref.ID = event.NormalizeID(ref.ID)
	return ref, true
}

// resolver is the resolve stage: it finds the dependencies of the planned
// records in the batch, then the store, then Marketo (one query per kind),
// then Dataverse (read, added to the batch and the plan, written first);
// a dependency found nowhere fails its record.
type resolver struct{ b *batch }

// run resolves every dependency, latest stage first so that a dependency
// read from Dataverse gets its own dependencies resolved too.
func (v resolver) run(ctx context.Context) error {
	b := v.b
	for i := len(stages) - 1; i >= 1; i-- {
		recs := b.plan.live(stages[i])
		need := map[string]map[string]string{} // kind → id → entity
		for _, r := range recs {
			for _, d := range b.plan.deps[r] {
				if dr := b.recs[d.entity+"/"+d.id]; dr != nil && !dr.deleted {
					continue // written earlier in this batch
				}
				if need[d.kind] == nil {
					need[d.kind] = map[string]string{}
				}
				need[d.kind][d.id] = d.entity
			}
		}
		queryErr := map[string]error{}
		for kind, ids := range need {
			if err := b.lookup(ctx, kind, ids); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				queryErr[kind] = err
			}
		}
		// Dependencies nowhere to be found: read them from Dataverse.
		var reads []dep
		for _, r := range recs {
			for _, d := range b.plan.deps[r] {
				if _, ok := b.links[d.kind][d.id]; ok || queryErr[d.kind] != nil {
					continue
				}
				if dr := b.recs[d.entity+"/"+d.id]; dr != nil {
					continue
				}
				reads = append(reads, d)
			}
		}
		if err := v.readDeps(ctx, reads); err != nil {
			return err
		}
		for _, r := range recs {
			for _, d := range b.plan.deps[r] {
				if _, ok := b.links[d.kind][d.id]; ok {
					continue
				}
				if dr := b.recs[d.entity+"/"+d.id]; dr != nil && !dr.deleted && dr.fail == nil {
					continue
				}
				if err := queryErr[d.kind]; err != nil {
					r.fail = b.mk.callFailure(err, "look up "+d.String())
					break
				}
				r.fail = &failure{act: actRequeue, reason: ReasonMissingDependency, desc: "missing dependency: " + d.String()}
				break
			}
		}
	}
	return nil
}

// readDeps reads missing dependencies from Dataverse and adds them to the
// batch, locked, as records to write first.
func (v resolver) readDeps(ctx context.Context, deps []dep) error {
	b := v.b
	dv := b.s.cfg.Dataverse
	if dv == nil || len(deps) == 0 {
		return nil
	}
	seen := map[string]bool{}
	for _, d := range deps {
		key := d.entity + "/" + d.id
		if seen[key] {
			continue
		}
		seen[key] = true
		got, err := b.s.cfg.Store.LockRecords(ctx, b.s.cfg.WorkerID, []string{key}, b.s.cfg.RecordLockTTL)
		if err != nil {
			return fmt.Errorf("syncer: lock records: %w", err)
		}
		if len(got) == 0 {
			continue // another worker is on it: the dependent waits
		}
		b.lockMu.Lock()
		b.locked = append(b.locked, key)
		b.lockMu.Unlock()
		attrs, err := dv.Read(ctx, d.entity, d.id, b.s.cfg.Mapping.Columns(d.entity))
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if b.s.cfg.IsNotFound == nil || !b.s.cfg.IsNotFound(err) {
				b.s.log.Warn("syncer: read dependency from Dataverse", "dependency", d.String(), "err", err)
			}
			continue
		}
		r := &rec{entity: d.entity, id: d.id, key: key, kind: d.kind, attrs: attrs, formatted: map[string]string{}, full: true, synthetic: true}
		if t, ok := attrs["modifiedon"]; ok {
			if tv, ok := t.TimeValue(); ok {
				r.version = tv.UnixMilli()
			}
		}
		b.recs[key] = r
		b.plan.add(r)
	}
	return nil
}

// lookup finds Marketo ids for ids of a kind: store first, then one Marketo
// query per 300 ids. Found links are cached in the store when the batch
// is saved.
func (b *batch) lookup(ctx context.Context, kind string, ids map[string]string) error {
	var want []string
	for id := range ids {
		if _, ok := b.links[kind][id]; !ok && !b.absent[kind][id] {
			want = append(want, id)
		}
	}
	if len(want) == 0 {
		return nil
	}
	slices.Sort(want)
	if err := b.storeLinks(ctx, kind, want); err != nil {
		return err
	}
	var ask []string
	for _, id := range want {
		if _, ok := b.links[kind][id]; !ok {
			ask = append(ask, id)
		}
	}
	if len(ask) == 0 {
		return nil
	}
	if b.mk.paused {
		return &pausedError{}
	}
	obj := objectOf[kind]
	field := externalField[kind]
	idField := "id"
	if kind == store.KindOpportunity {
		idField = "marketoGUID"
	}
	var found []store.Link
	fields := []string{idField, field}
	if kind == store.KindPerson || kind == store.KindSalesPerson {
		fields = append(fields, "email")
	}
	chunks := slices.Collect(slices.Chunk(ask, 300))
	got := b.mk.queries(ctx, obj, field, chunks, fields)
	for n := range chunks {
		recs, err := got[n].recs, got[n].err
		if err != nil {
			b.mk.noteCallError(err)
			return fmt.Errorf("query %s by %s: %w", obj, field, err)
		}
		for _, r := range recs {
			ext := event.NormalizeID(fmt.Sprint(r[field]))
			if _, asked := ids[ext]; !asked {
				continue
			}
			l := store.Link{Kind: kind, ExternalID: ext, MarketoID: marketoID(r[idField]), Entity: ids[ext], UpdatedAt: b.s.clk.Now()}
			if e, ok := r["email"].(string); ok {
				l.Email = e
			}
			b.links[kind][ext] = l
			found = append(found, l)
		}
	}
	for _, id := range ask {
		if _, ok := b.links[kind][id]; !ok {
			b.absent[kind][id] = true
		}
	}
	// Found links are bookkeeping like any other: saved with the batch's
	// one transaction (a batch that fails queries them again).
	b.changes.PutLinks(found...)
	return nil
}

// ready checks, at write time, that r's dependencies are in Marketo: those
// written earlier in the batch too. A dependency that failed fails r.
func (v resolver) ready(r *rec) bool {
	b := v.b
	for _, d := range b.plan.deps[r] {
		if _, ok := b.links[d.kind][d.id]; ok {
			continue
		}
		if dr := b.recs[d.entity+"/"+d.id]; dr != nil && dr.fail != nil && dr.fail.act == actReschedule {
			r.fail = &failure{act: actReschedule, delay: dr.fail.delay}
			return false
		}
		r.fail = &failure{act: actRequeue, reason: ReasonMissingDependency, desc: "missing dependency: " + d.String() + " did not sync"}
		return false
	}
	return true
}
