package syncer

import (
	"context"
	"fmt"
	"slices"
	"strconv"

	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/marketo/marketotype"
	"github.com/msisync/msisync/internal/store"
)

// personWriter writes leads and contacts (Marketo persons) by the lead
// strategy. It owns what identifies each person record in Marketo and the
// batch's cache of persons found by email.
type personWriter struct {
	b     *batch
	state map[*rec]*personState
	// byEmail caches the Marketo persons found by email (personsByEmail).
	byEmail map[string][]emailPerson
}

// personState is how a person record is written to Marketo.
type personState struct {
	byID      string // Marketo id the record is updated by (split strategy, qualification, form fill)
	staleLink bool   // byID was not found in Marketo
	noCompany bool   // leave company fields out (the person is linked to a company: 1021)
	movedFrom string // lead GUID whose Marketo person this contact takes over
}

func newPersonWriter(b *batch) *personWriter {
	return &personWriter{b: b, state: map[*rec]*personState{}}
}

// of returns r's person state, created empty on first use.
func (w *personWriter) of(r *rec) *personState {
	p := w.state[r]
	if p == nil {
		p = &personState{}
		w.state[r] = p
	}
	return p
}

// write upserts recs and records their bookkeeping: links and versions
// (persist), stale and moved links, qualified-lead markers.
func (w *personWriter) write(ctx context.Context, recs []*rec) error {
	if err := w.upsert(ctx, recs); err != nil {
		return err
	}
	b := w.b
	var stale, movedFrom []string
	for _, r := range recs {
		p := w.state[r]
		if p == nil {
			continue
		}
		if p.staleLink {
			stale = append(stale, r.id)
			delete(b.links[r.kind], r.id)
		}
		if !r.written {
			continue
		}
		// Updated by id: the link keeps that id when neither Marketo's
		// result nor the stored link names one.
		if r.marketoID == "" && p.byID != "" && b.links[r.kind][r.id].MarketoID == "" {
			r.marketoID = p.byID
		}
		if p.movedFrom != "" {
			movedFrom = append(movedFrom, p.movedFrom)
		}
	}
	b.changes.DeleteLinks(store.KindPerson, stale...)
	if err := b.persist(ctx, recs); err != nil {
		return err
	}
	b.changes.DeleteLinks(store.KindPerson, movedFrom...)
	for _, id := range movedFrom {
		delete(b.links[store.KindPerson], id)
	}
	for _, r := range recs {
		if !r.written || r.entity != event.EntityContact {
			continue
		}
		if ref, ok := refOf(r.attrs, "originatingleadid"); ok && ref.LogicalName == event.EntityLead {
			b.changes.PutMeta(metaQualified(ref.ID), r.id)
		}
	}
	return nil
}

// leadMode returns the lead strategy in force: lookup or split, or "" while
// auto has not detected it yet.
func (w *personWriter) leadMode(ctx context.Context) (string, error) {
	b := w.b
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

func (w *personWriter) email(r *rec) string {
	b := w.b
	if v, ok := r.attrs["emailaddress1"]; ok {
		return v.Text()
	}
	return b.links[store.KindPerson][r.id].Email
}

// upsert upserts leads and contacts: qualified contacts take over the
// Marketo person of their lead; the rest follow the lead strategy.
func (w *personWriter) upsert(ctx context.Context, recs []*rec) error {
	rest, err := w.takeOverLeads(ctx, recs)
	if err != nil || len(rest) == 0 {
		return err
	}
	mode, err := w.leadMode(ctx)
	if err != nil {
		return err
	}
	if mode == "" || mode == LeadLookup {
		// A person never linked by msisync may already be in Marketo as an
		// unlinked person with its email (a form fill): link that one by id
		// instead of creating a second person keyed on externalPersonId.
		if rest, err = w.linkFormFills(ctx, rest); err != nil || len(rest) == 0 {
			return err
		}
		if err := w.markCreating(ctx, rest); err != nil {
			return err
		}
		supported, err := w.syncLookup(ctx, rest, mode == "")
		if err != nil || supported {
			return err
		}
	}
	return w.syncSplit(ctx, rest)
}

// takeOverLeads writes the contacts created by lead qualification, not yet
// linked, onto their lead's Marketo person (updateOnly by id), and returns
// the records left to write by the lead strategy.
func (w *personWriter) takeOverLeads(ctx context.Context, recs []*rec) ([]*rec, error) {
	b := w.b
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
				return nil, ctx.Err()
			}
			f := b.mk.callFailure(err, "look up qualified leads")
			for _, r := range recs {
				r.fail = f
			}
			return nil, nil
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
				return nil, fmt.Errorf("syncer: put meta: %w", err)
			}
		}
	}
	var moved, rest []*rec
	for _, r := range recs {
		if r.entity == event.EntityContact {
			if _, linked := b.links[store.KindPerson][r.id]; !linked {
				if ref, ok := refOf(r.attrs, "originatingleadid"); ok {
					if l, ok := b.links[store.KindPerson][ref.ID]; ok && l.Entity != event.EntityContact {
						w.of(r).byID, w.of(r).movedFrom = l.MarketoID, ref.ID
						moved = append(moved, r)
						continue
					}
				}
			}
		}
		rest = append(rest, r)
	}
	if len(moved) > 0 {
		if err := w.sync(ctx, moved, marketotype.SyncRequest{Action: "updateOnly", LookupField: "id"}); err != nil {
			return nil, err
		}
	}
	return rest, nil
}

// creatingKey marks, in the store's versions, that msisync is about to
// create (or created) a Marketo person for a record.
func creatingKey(id string) string { return "person-creating/" + id }

// markCreating durably marks the records msisync may create a person for,
// before the call: a record that was being created when a worker died is
// then looked up by externalPersonId again (see unseen). One store call.
func (w *personWriter) markCreating(ctx context.Context, recs []*rec) error {
	b := w.b
	marks := map[string]int64{}
	for _, r := range recs {
		if _, linked := b.links[store.KindPerson][r.id]; !linked {
			marks[creatingKey(r.id)] = 1
		}
	}
	if len(marks) == 0 {
		return nil
	}
	if err := b.s.cfg.Store.PutVersions(ctx, marks); err != nil {
		return fmt.Errorf("syncer: mark persons being created: %w", err)
	}
	return nil
}

// unseen returns the records that cannot have a Marketo person yet, so the
// query by externalPersonId is skipped for them: created in Dataverse (only
// Create events from Dataverse itself: a backfill may follow a lost store),
// unknown to the store, and never marked as being created by msisync. The
// query by email still finds a person msisync made for them.
func (w *personWriter) unseen(ctx context.Context, recs []*rec) (map[*rec]bool, error) {
	b := w.b
	var keys []string
	cand := map[*rec]bool{}
	for _, r := range recs {
		if _, linked := b.links[store.KindPerson][r.id]; linked || r.synthetic || len(r.msgs) == 0 {
			continue
		}
		created := true
		for _, m := range r.msgs {
			if m.ev.Message != event.MessageCreate || (m.ev.Source != event.SourceWebhook && m.ev.Source != event.SourceServiceBus) {
				created = false
			}
		}
		if created {
			cand[r] = true
			keys = append(keys, creatingKey(r.id))
		}
	}
	if len(keys) == 0 {
		return cand, nil
	}
	marked, err := b.s.cfg.Store.GetVersions(ctx, keys)
	if err != nil {
		return nil, fmt.Errorf("syncer: get person markers: %w", err)
	}
	for r := range cand {
		if marked[creatingKey(r.id)] != 0 {
			delete(cand, r)
		}
	}
	return cand, nil
}

// sync writes persons in calls of ≤ BatchSize (CallConcurrency at once) and
// maps results back in chunk order.
func (w *personWriter) sync(ctx context.Context, recs []*rec, req marketotype.SyncRequest) error {
	b := w.b
	const kind, obj = store.KindPerson, marketotype.Leads
	chunks := slices.Collect(slices.Chunk(recs, b.s.cfg.BatchSize))
	ins := make([][]marketotype.Record, len(chunks))
	for n, chunk := range chunks {
		in := make([]marketotype.Record, len(chunk))
		for i, r := range chunk {
			in[i] = recordOf(&b.s.cfg, r)
			if w.of(r).noCompany {
				for _, f := range leadCompanyFields {
					delete(in[i], f)
				}
			}
			if w.of(r).byID != "" {
				delete(in[i], externalField[kind])
				if kind == store.KindPerson {
					in[i]["externalPersonId"] = r.id
				}
				id, _ := strconv.ParseInt(w.of(r).byID, 10, 64)
				in[i]["id"] = id
			}
		}
		ins[n] = in
	}
	sent := b.mk.syncCalls(ctx, obj, req, ins)
	var again []*rec
	for n, chunk := range chunks {
		res, ok, err := b.mk.syncResult(ctx, obj, chunk, sent[n])
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		b.mk.applyResults(obj, chunk, res, w.stale)
		// 1021: the person is linked to a company in Marketo, which owns the
		// company fields: send the record again without them.
		for i, r := range chunk {
			if obj == marketotype.Leads && !w.of(r).noCompany && i < len(res) && res[i].Status == "skipped" && len(res[i].Reasons) > 0 && res[i].Reasons[0].Code == "1021" {
				r.fail, w.of(r).noCompany = nil, true
				again = append(again, r)
			}
		}
	}
	if len(again) > 0 {
		return w.sync(ctx, again, req)
	}
	return nil
}

// stale takes a person written by a stored id that Marketo no longer
// has (1004: lead merged or deleted in Marketo): the link is forgotten and
// the record tried again by external id or email.
func (w *personWriter) stale(r *rec, x marketotype.Result) bool {
	b := w.b
	if w.of(r).byID == "" || len(x.Reasons) == 0 || x.Reasons[0].Code != "1004" {
		return false
	}
	r.fail = &failure{act: actReschedule, delay: b.s.cfg.LockedDelay}
	w.of(r).staleLink = true
	return true
}

// leadCompanyFields are the lead fields a linked company owns (1021).
var leadCompanyFields = []string{"company", "site", "billingStreet", "billingCity", "billingState", "billingCountry",
	"billingPostalCode", "website", "mainPhone", "annualRevenue", "numberOfEmployees", "industry", "sicCode"}
