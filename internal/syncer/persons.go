package syncer

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/marketo/marketotype"
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

// personWriter writes leads and contacts (see writePersons).
type personWriter struct{ b *batch }

func (w personWriter) write(ctx context.Context, recs []*rec) error {
	if err := w.b.writePersons(ctx, recs); err != nil {
		return err
	}
	return w.b.persist(ctx, recs)
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
		if err := b.syncObjects(ctx, store.KindPerson, moved, marketotype.SyncRequest{Action: "updateOnly", LookupField: "id"}); err != nil {
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
		// A person never linked by msisync may already be in Marketo as an
		// unlinked person with its email (a form fill): link that one by id
		// instead of creating a second person keyed on externalPersonId.
		if rest, err = b.linkFormFills(ctx, rest); err != nil || len(rest) == 0 {
			return err
		}
		if err := b.markCreating(ctx, rest); err != nil {
			return err
		}
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
		return true, b.syncObjects(ctx, store.KindPerson, recs, marketotype.SyncRequest{Action: "createOrUpdate", LookupField: "externalPersonId"})
	}
	in := make([]marketotype.Record, len(recs))
	for i, r := range recs {
		in[i] = b.record(r)
	}
	b.stats.Calls[string(marketotype.Leads)+" sync"]++
	res, err := b.s.cfg.Marketo.Sync(ctx, marketotype.Leads, marketotype.SyncRequest{Action: "createOrUpdate", LookupField: "externalPersonId", Input: in[:min(len(in), b.s.cfg.BatchSize)]})
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
	b.applyResults(marketotype.Leads, first, res, b.stalePerson)
	if len(recs) > b.s.cfg.BatchSize {
		return true, b.syncObjects(ctx, store.KindPerson, recs[b.s.cfg.BatchSize:], marketotype.SyncRequest{Action: "createOrUpdate", LookupField: "externalPersonId"})
	}
	return true, nil
}

// syncSplit finds Marketo ids by externalPersonId and updates found persons
// by id. The rest are matched by email (one query per ≤ 300 emails): a
// person without an externalPersonId (a form fill, a list import) is linked
// by id; a person linked to another record is never taken over, so the
// record gets a new person (createDuplicate), as it does with no match.
func (b *batch) syncSplit(ctx context.Context, recs []*rec) error {
	unseen, err := b.unseen(ctx, recs)
	if err != nil {
		return err
	}
	ids := map[string]string{}
	for _, r := range recs {
		if !unseen[r] {
			ids[r.id] = r.entity
		}
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
	var byID, fresh, create []*rec
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
		fresh = append(fresh, r)
	}
	if fresh, err = b.lockEmails(ctx, fresh); err != nil {
		return err
	}
	if len(fresh) > 0 {
		matches, err := b.personsByEmail(ctx, fresh)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			f := b.callFailure(err, "look up persons by email")
			for _, r := range fresh {
				r.fail = f
			}
			fresh = nil
		}
		claimed := map[string]bool{}
		for _, r := range byID {
			claimed[r.byID] = true
		}
		for _, r := range fresh {
			if p, ok := pickPerson(matches[emailKey(b.email(r))], r.id, claimed); ok {
				r.byID = p
				claimed[p] = true
				byID = append(byID, r)
				continue
			}
			if _, ok := r.attrs["emailaddress1"]; !ok {
				r.attrs["emailaddress1"] = event.String(b.email(r))
			}
			if n := len(matches[emailKey(b.email(r))]); n > 0 {
				b.s.log.Info("syncer: email held only by Marketo persons linked to other records; creating a separate person",
					"record", r.name(), "persons", n)
			}
			create = append(create, r)
		}
	}
	if len(byID) > 0 {
		if err := b.syncObjects(ctx, store.KindPerson, byID, marketotype.SyncRequest{Action: "updateOnly", LookupField: "id"}); err != nil {
			return err
		}
	}
	if len(create) > 0 {
		if err := b.markCreating(ctx, create); err != nil {
			return err
		}
		// createDuplicate always creates: an email held only by persons
		// linked to other records must not re-link them.
		if err := b.syncObjects(ctx, store.KindPerson, create, marketotype.SyncRequest{Action: "createDuplicate"}); err != nil {
			return err
		}
	}
	return nil
}

// linkFormFills handles, for the lookup strategy (and its probe), records
// msisync has never linked: an unlinked Marketo person with the record's
// email is linked by id (updateOnly), unless a person with the record's
// externalPersonId already exists. It returns the records left for the
// createOrUpdate keyed on externalPersonId.
func (b *batch) linkFormFills(ctx context.Context, recs []*rec) ([]*rec, error) {
	var fresh []*rec
	for _, r := range recs {
		if _, linked := b.links[store.KindPerson][r.id]; !linked && b.email(r) != "" {
			fresh = append(fresh, r)
		}
	}
	fresh, err := b.lockEmails(ctx, fresh)
	if err != nil {
		return nil, err
	}
	recs = slices.DeleteFunc(recs, func(r *rec) bool { return r.fail != nil })
	if len(fresh) == 0 {
		return recs, nil
	}
	matches, err := b.personsByEmail(ctx, fresh)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		// Without the email query the keyed upsert still gives one person
		// per record; only a form fill may be duplicated. Fail instead, so
		// the rule holds: the records are retried.
		f := b.callFailure(err, "look up persons by email")
		for _, r := range fresh {
			r.fail = f
		}
		return slices.DeleteFunc(recs, func(r *rec) bool { return r.fail != nil }), nil
	}
	claimed := map[string]bool{}
	cand := map[*rec]string{}
	ids := map[string]string{}
	for _, r := range fresh {
		ms := matches[emailKey(b.email(r))]
		if slices.ContainsFunc(ms, func(p emailPerson) bool { return p.ext == r.id }) {
			continue // its own person: the keyed upsert finds it
		}
		if p, ok := pickPerson(ms, r.id, claimed); ok {
			claimed[p] = true
			cand[r] = p
			ids[r.id] = r.entity
		}
	}
	if len(cand) == 0 {
		return recs, nil
	}
	// A person with the record's externalPersonId but another email (the
	// store lost the link) wins over the form fill.
	if err := b.lookup(ctx, store.KindPerson, ids); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		f := b.callFailure(err, "look up persons by externalPersonId")
		for r := range cand {
			r.fail = f
		}
		return slices.DeleteFunc(recs, func(r *rec) bool { return r.fail != nil }), nil
	}
	var link, rest []*rec
	for _, r := range recs {
		if p, ok := cand[r]; ok {
			if _, found := b.links[store.KindPerson][r.id]; !found {
				r.byID = p
				link = append(link, r)
				continue
			}
		}
		rest = append(rest, r)
	}
	if len(link) > 0 {
		if err := b.syncObjects(ctx, store.KindPerson, link, marketotype.SyncRequest{Action: "updateOnly", LookupField: "id"}); err != nil {
			return nil, err
		}
	}
	return rest, nil
}

// lockEmails locks the emails of records about to be matched by email
// (store record locks keyed "email/<address>"), so that two workers never
// link one unlinked Marketo person to two records. Records whose email
// another worker holds are rescheduled shortly; the rest are returned.
func (b *batch) lockEmails(ctx context.Context, recs []*rec) ([]*rec, error) {
	want := map[string]bool{}
	for _, r := range recs {
		if k := emailKey(b.email(r)); k != "" {
			want["email/"+k] = true
		}
	}
	if len(want) == 0 {
		return recs, nil
	}
	keys := slices.Sorted(maps.Keys(want))
	got, err := b.s.cfg.Store.LockRecords(ctx, b.s.cfg.WorkerID, keys, b.s.cfg.RecordLockTTL)
	if err != nil {
		return nil, fmt.Errorf("syncer: lock emails: %w", err)
	}
	b.lockMu.Lock() // the renewal goroutine reads locked
	b.locked = append(b.locked, got...)
	b.lockMu.Unlock()
	have := map[string]bool{}
	for _, k := range got {
		have[k] = true
	}
	var out []*rec
	for _, r := range recs {
		if k := emailKey(b.email(r)); k != "" && !have["email/"+k] {
			r.fail = &failure{act: actReschedule, delay: b.s.cfg.LockedDelay}
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

// creatingKey marks, in the store's versions, that msisync is about to
// create (or created) a Marketo person for a record.
func creatingKey(id string) string { return "person-creating/" + id }

// markCreating durably marks the records msisync may create a person for,
// before the call: a record that was being created when a worker died is
// then looked up by externalPersonId again (see unseen). One store call.
func (b *batch) markCreating(ctx context.Context, recs []*rec) error {
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
func (b *batch) unseen(ctx context.Context, recs []*rec) (map[*rec]bool, error) {
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

// emailPerson is a Marketo person found by email.
type emailPerson struct {
	id  string // Marketo lead id
	ext string // externalPersonId, normalised; "" when unlinked
}

func emailKey(e string) string { return strings.ToLower(strings.TrimSpace(e)) }

// personsByEmail finds the Marketo persons holding the emails of recs: one
// filterType=email query per ≤ 300 distinct emails, remembered for the
// batch. The result is keyed by emailKey, persons in ascending id order.
func (b *batch) personsByEmail(ctx context.Context, recs []*rec) (map[string][]emailPerson, error) {
	if b.byEmail == nil {
		b.byEmail = map[string][]emailPerson{}
	}
	var ask []string
	seen := map[string]bool{}
	for _, r := range recs {
		k := emailKey(b.email(r))
		if _, done := b.byEmail[k]; done || seen[k] || k == "" || strings.Contains(k, ",") {
			continue // a comma cannot be queried (nor is it a valid address)
		}
		seen[k] = true
		ask = append(ask, k)
	}
	if len(ask) > 0 && b.paused {
		return nil, &pausedError{}
	}
	slices.Sort(ask)
	for chunk := range slices.Chunk(ask, 300) {
		b.stats.Calls[string(marketotype.Leads)+" query"]++
		got, err := b.s.cfg.Marketo.Query(ctx, marketotype.Leads, "email", chunk, []string{"id", "email", "externalPersonId"})
		if err != nil {
			b.noteCallError(err)
			return nil, fmt.Errorf("query leads by email: %w", err)
		}
		for _, k := range chunk {
			b.byEmail[k] = []emailPerson{}
		}
		for _, x := range got {
			e, _ := x["email"].(string)
			k := emailKey(e)
			if _, asked := b.byEmail[k]; !asked {
				continue
			}
			p := emailPerson{id: marketoID(x["id"])}
			if v := x["externalPersonId"]; v != nil {
				p.ext = event.NormalizeID(fmt.Sprint(v))
			}
			b.byEmail[k] = append(b.byEmail[k], p)
		}
	}
	for k, ps := range b.byEmail {
		slices.SortFunc(ps, func(x, y emailPerson) int {
			xi, _ := strconv.ParseInt(x.id, 10, 64)
			yi, _ := strconv.ParseInt(y.id, 10, 64)
			return cmp.Or(cmp.Compare(xi, yi), cmp.Compare(x.id, y.id))
		})
		b.byEmail[k] = ps
	}
	return b.byEmail, nil
}

// pickPerson chooses, among the persons holding a record's email, the one
// the record may take: its own (externalPersonId is the record), else the
// unlinked one with the lowest id not claimed by another record of the
// batch. A person linked to another record is never chosen.
func pickPerson(ps []emailPerson, id string, claimed map[string]bool) (string, bool) {
	for _, p := range ps {
		if p.ext == id && !claimed[p.id] {
			return p.id, true
		}
	}
	for _, p := range ps {
		if p.ext == "" && !claimed[p.id] {
			return p.id, true
		}
	}
	return "", false
}
