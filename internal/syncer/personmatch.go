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

// How a person record finds the Marketo person it is written to (the lead
// strategies, see doc.go "Lead upsert"): by externalPersonId, by a stored
// or found Marketo id, or by email, never taking over a person linked to
// another record.

// syncLookup writes persons in one createOrUpdate keyed on externalPersonId.
// When probing, a 1011 answer means the instance does not support it: the
// result is remembered and the caller falls back to split.
func (w *personWriter) syncLookup(ctx context.Context, recs []*rec, probe bool) (bool, error) {
	b := w.b
	if !probe {
		return true, w.sync(ctx, recs, marketotype.SyncRequest{Action: "createOrUpdate", LookupField: "externalPersonId"})
	}
	in := make([]marketotype.Record, len(recs))
	for i, r := range recs {
		in[i] = recordOf(&b.s.cfg, r)
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
			b.mk.noteCallError(err)
			f := b.mk.callFailure(err, "sync leads")
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
	b.mk.applyResults(marketotype.Leads, first, res, w.stale)
	if len(recs) > b.s.cfg.BatchSize {
		return true, w.sync(ctx, recs[b.s.cfg.BatchSize:], marketotype.SyncRequest{Action: "createOrUpdate", LookupField: "externalPersonId"})
	}
	return true, nil
}

// syncSplit finds Marketo ids by externalPersonId and updates found persons
// by id. The rest are matched by email (one query per ≤ 300 emails): a
// person without an externalPersonId (a form fill, a list import) is linked
// by id; a person linked to another record is never taken over, so the
// record gets a new person (createDuplicate), as it does with no match.
func (w *personWriter) syncSplit(ctx context.Context, recs []*rec) error {
	b := w.b
	unseen, err := w.unseen(ctx, recs)
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
		f := b.mk.callFailure(err, "look up persons by externalPersonId")
		for _, r := range recs {
			r.fail = f
		}
		return nil
	}
	var byID, fresh, create []*rec
	for _, r := range recs {
		if l, ok := b.links[store.KindPerson][r.id]; ok && l.MarketoID != "" {
			w.of(r).byID = l.MarketoID
			byID = append(byID, r)
			continue
		}
		if w.email(r) == "" {
			r.fail = &failure{act: actDead, reason: ReasonMissingData,
				desc: fmt.Sprintf("%s is not in Marketo and has no email (emailaddress1): with lead strategy split a person is created by email", r.name())}
			continue
		}
		fresh = append(fresh, r)
	}
	if byID, create, err = w.matchByEmail(ctx, fresh, byID); err != nil {
		return err
	}
	if len(byID) > 0 {
		if err := w.sync(ctx, byID, marketotype.SyncRequest{Action: "updateOnly", LookupField: "id"}); err != nil {
			return err
		}
	}
	if len(create) > 0 {
		if err := w.markCreating(ctx, create); err != nil {
			return err
		}
		// createDuplicate always creates: an email held only by persons
		// linked to other records must not re-link them.
		if err := w.sync(ctx, create, marketotype.SyncRequest{Action: "createDuplicate"}); err != nil {
			return err
		}
	}
	return nil
}

// matchByEmail matches fresh records (not found by externalPersonId) by
// email: a record takes its own or an unlinked person (added to byID, each
// person once, none already in byID), else it is to be created.
func (w *personWriter) matchByEmail(ctx context.Context, fresh, byID []*rec) (_, create []*rec, err error) {
	b := w.b
	if fresh, err = w.lockEmails(ctx, fresh); err != nil {
		return nil, nil, err
	}
	if len(fresh) == 0 {
		return byID, nil, nil
	}
	matches, err := w.personsByEmail(ctx, fresh)
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		f := b.mk.callFailure(err, "look up persons by email")
		for _, r := range fresh {
			r.fail = f
		}
		fresh = nil
	}
	claimed := map[string]bool{}
	for _, r := range byID {
		claimed[w.of(r).byID] = true
	}
	for _, r := range fresh {
		if p, ok := pickPerson(matches[emailKey(w.email(r))], r.id, claimed); ok {
			w.of(r).byID = p
			claimed[p] = true
			byID = append(byID, r)
			continue
		}
		if _, ok := r.attrs["emailaddress1"]; !ok {
			r.attrs["emailaddress1"] = event.String(w.email(r))
		}
		if n := len(matches[emailKey(w.email(r))]); n > 0 {
			b.s.log.Info("syncer: email held only by Marketo persons linked to other records; creating a separate person",
				"record", r.name(), "persons", n)
		}
		create = append(create, r)
	}
	return byID, create, nil
}

// linkFormFills handles, for the lookup strategy (and its probe), records
// msisync has never linked: an unlinked Marketo person with the record's
// email is linked by id (updateOnly), unless a person with the record's
// externalPersonId already exists. It returns the records left for the
// createOrUpdate keyed on externalPersonId.
func (w *personWriter) linkFormFills(ctx context.Context, recs []*rec) ([]*rec, error) {
	b := w.b
	var fresh []*rec
	for _, r := range recs {
		if _, linked := b.links[store.KindPerson][r.id]; !linked && w.email(r) != "" {
			fresh = append(fresh, r)
		}
	}
	fresh, err := w.lockEmails(ctx, fresh)
	if err != nil {
		return nil, err
	}
	recs = slices.DeleteFunc(recs, func(r *rec) bool { return r.fail != nil })
	if len(fresh) == 0 {
		return recs, nil
	}
	matches, err := w.personsByEmail(ctx, fresh)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		// Without the email query the keyed upsert still gives one person
		// per record; only a form fill may be duplicated. Fail instead, so
		// the rule holds: the records are retried.
		f := b.mk.callFailure(err, "look up persons by email")
		for _, r := range fresh {
			r.fail = f
		}
		return slices.DeleteFunc(recs, func(r *rec) bool { return r.fail != nil }), nil
	}
	claimed := map[string]bool{}
	cand := map[*rec]string{}
	ids := map[string]string{}
	for _, r := range fresh {
		ms := matches[emailKey(w.email(r))]
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
		f := b.mk.callFailure(err, "look up persons by externalPersonId")
		for r := range cand {
			r.fail = f
		}
		return slices.DeleteFunc(recs, func(r *rec) bool { return r.fail != nil }), nil
	}
	var link, rest []*rec
	for _, r := range recs {
		if p, ok := cand[r]; ok {
			if _, found := b.links[store.KindPerson][r.id]; !found {
				w.of(r).byID = p
				link = append(link, r)
				continue
			}
		}
		rest = append(rest, r)
	}
	if len(link) > 0 {
		if err := w.sync(ctx, link, marketotype.SyncRequest{Action: "updateOnly", LookupField: "id"}); err != nil {
			return nil, err
		}
	}
	return rest, nil
}

// lockEmails locks the emails of records about to be matched by email
// (store record locks keyed "email/<address>"), so that two workers never
// link one unlinked Marketo person to two records. Records whose email
// another worker holds are rescheduled shortly; the rest are returned.
func (w *personWriter) lockEmails(ctx context.Context, recs []*rec) ([]*rec, error) {
	b := w.b
	want := map[string]bool{}
	for _, r := range recs {
		if k := emailKey(w.email(r)); k != "" {
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
		if k := emailKey(w.email(r)); k != "" && !have["email/"+k] {
			r.fail = &failure{act: actReschedule, delay: b.s.cfg.LockedDelay}
			continue
		}
		out = append(out, r)
	}
	return out, nil
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
func (w *personWriter) personsByEmail(ctx context.Context, recs []*rec) (map[string][]emailPerson, error) {
	b := w.b
	if w.byEmail == nil {
		w.byEmail = map[string][]emailPerson{}
	}
	var ask []string
	seen := map[string]bool{}
	for _, r := range recs {
		k := emailKey(w.email(r))
		if _, done := w.byEmail[k]; done || seen[k] || k == "" || strings.Contains(k, ",") {
			continue // a comma cannot be queried (nor is it a valid address)
		}
		seen[k] = true
		ask = append(ask, k)
	}
	if len(ask) > 0 && b.mk.paused {
		return nil, &pausedError{}
	}
	slices.Sort(ask)
	chunks := slices.Collect(slices.Chunk(ask, 300))
	found := b.mk.queries(ctx, marketotype.Leads, "email", chunks, []string{"id", "email", "externalPersonId"})
	for n, chunk := range chunks {
		got, err := found[n].recs, found[n].err
		if err != nil {
			b.mk.noteCallError(err)
			return nil, fmt.Errorf("query leads by email: %w", err)
		}
		for _, k := range chunk {
			w.byEmail[k] = []emailPerson{}
		}
		for _, x := range got {
			e, _ := x["email"].(string)
			k := emailKey(e)
			if _, asked := w.byEmail[k]; !asked {
				continue
			}
			p := emailPerson{id: marketoID(x["id"])}
			if v := x["externalPersonId"]; v != nil {
				p.ext = event.NormalizeID(fmt.Sprint(v))
			}
			w.byEmail[k] = append(w.byEmail[k], p)
		}
	}
	for k, ps := range w.byEmail {
		slices.SortFunc(ps, func(x, y emailPerson) int {
			xi, _ := strconv.ParseInt(x.id, 10, 64)
			yi, _ := strconv.ParseInt(y.id, 10, 64)
			return cmp.Or(cmp.Compare(xi, yi), cmp.Compare(x.id, y.id))
		})
		w.byEmail[k] = ps
	}
	return w.byEmail, nil
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
