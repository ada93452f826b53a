package syncer

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"

	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/marketo/marketotype"
	"github.com/msisync/msisync/internal/store"
)

// mergeable are the entities Dataverse merges (the Merge message).
var mergeable = map[string]bool{event.EntityAccount: true, event.EntityContact: true, event.EntityLead: true}

// A merger interprets Dataverse merges. A Merge event names the master (its
// record) and the subordinate (SubordinateID), which Dataverse deactivates
// and marks merged (merged = true, masterid): the subordinate is retired
// like a Delete (MSISYNC_DELETE_POLICY for its person, the company is
// deleted), the master is re-read and written again. The subordinate's own
// Update (merged = true) retires it too, so a merge is handled whichever
// event comes first, and without the Merge step registered. The children
// Dataverse moves to the master arrive as their own Updates. A merger owns
// which records of the batch were merged away, and into which master.
type merger struct {
	b    *batch
	away map[*rec]bool // retired like a Delete because Dataverse merged it
	into map[*rec]*rec // subordinate → the master whose Merge event named it
}

func newMerger(b *batch) *merger {
	return &merger{b: b, away: map[*rec]bool{}, into: map[*rec]*rec{}}
}

// find interprets the batch's merges (see merger).
func (g *merger) find(ctx context.Context) error {
	b := g.b
	subs := map[string]*rec{} // subordinate key → master
	for _, k := range slices.Sorted(maps.Keys(b.recs)) {
		r := b.recs[k]
		if !mergeable[r.entity] || r.fail != nil || r.deleted {
			continue
		}
		if v, ok := r.attrs["merged"]; ok && v.Kind == event.KindBool && v.Bool {
			r.deleted, g.away[r] = true, true
			continue
		}
		merge := false
		for _, m := range r.msgs {
			if m.ev.Message == event.MessageMerge && m.ev.SubordinateID != "" {
				merge = true
				if s := event.NormalizeID(m.ev.SubordinateID); s != r.id {
					subs[r.entity+"/"+s] = r
				}
			}
		}
		if merge && b.s.cfg.Dataverse != nil && !r.full {
			if err := b.reread(ctx, r, false, nil); err != nil {
				return err
			}
		}
	}
	if len(subs) == 0 {
		return nil
	}
	keys := slices.Sorted(maps.Keys(subs))
	versions, err := b.s.cfg.Store.GetVersions(ctx, keys)
	if err != nil {
		return fmt.Errorf("syncer: get versions: %w", err)
	}
	byKind := map[string][]string{}
	for _, key := range keys {
		master := subs[key]
		if r := b.recs[key]; r != nil {
			if r.fail == nil && !r.deleted {
				r.deleted, g.away[r] = true, true
			}
			g.into[r] = master
			continue
		}
		if versions[key] == tombstone {
			continue // already retired (its own Update came first, or a re-sent Merge)
		}
		got, err := b.s.cfg.Store.LockRecords(ctx, b.s.cfg.WorkerID, []string{key}, b.s.cfg.RecordLockTTL)
		if err != nil {
			return fmt.Errorf("syncer: lock records: %w", err)
		}
		if len(got) == 0 {
			// Another worker holds the subordinate: retry the Merge shortly.
			master.fail = &failure{act: actReschedule, delay: b.s.cfg.LockedDelay}
			continue
		}
		b.lockMu.Lock() // the renewal goroutine reads locked
		b.locked = append(b.locked, key)
		b.lockMu.Unlock()
		id := key[len(master.entity)+1:]
		r := &rec{entity: master.entity, id: id, key: key, kind: master.kind, attrs: event.Attributes{},
			formatted: map[string]string{}, colVersion: map[string]int64{}, synthetic: true, deleted: true}
		b.recs[key] = r
		g.away[r], g.into[r] = true, master
		byKind[master.kind] = append(byKind[master.kind], id)
	}
	for kind, ids := range byKind {
		if err := b.storeLinks(ctx, kind, ids); err != nil {
			return err
		}
	}
	return nil
}

// unlink runs before the deleter: with the keep policy the person of a
// merged-away contact or lead stays in Marketo with its history but loses
// its externalPersonId, so nothing shows it as the (deactivated) record.
// With the delete policy the deleter removes it.
func (g *merger) unlink(ctx context.Context) error {
	b := g.b
	if b.s.cfg.DeletePolicy == DeleteDelete {
		return nil
	}
	ids := map[string]string{}
	var recs []*rec
	for _, k := range slices.Sorted(maps.Keys(b.recs)) {
		r := b.recs[k]
		if g.away[r] && r.deleted && r.fail == nil && r.kind == store.KindPerson {
			ids[r.id] = r.entity
			recs = append(recs, r)
		}
	}
	if len(recs) == 0 {
		return nil
	}
	if b.mk.paused {
		for _, r := range recs {
			r.fail = &failure{act: actReschedule, delay: b.s.cfg.RequeueMax}
		}
		return nil
	}
	if err := b.lookup(ctx, store.KindPerson, ids); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		f := b.mk.callFailure(err, "look up merged persons")
		for _, r := range recs {
			r.fail = f
		}
		return nil
	}
	var in []marketotype.Record
	var linked []*rec
	for _, r := range recs {
		l, ok := b.links[store.KindPerson][r.id]
		if !ok || l.MarketoID == "" {
			continue // never in Marketo
		}
		id, err := strconv.ParseInt(l.MarketoID, 10, 64)
		if err != nil {
			continue
		}
		in = append(in, marketotype.Record{"id": id, "externalPersonId": nil})
		linked = append(linked, r)
	}
	return g.clearExternalIDs(ctx, linked, in)
}

// clearExternalIDs updates the persons of recs by id (in, aligned) with
// no externalPersonId, ≤ BatchSize a call.
func (g *merger) clearExternalIDs(ctx context.Context, linked []*rec, in []marketotype.Record) error {
	b := g.b
	for start := 0; start < len(in); start += b.s.cfg.BatchSize {
		end := min(start+b.s.cfg.BatchSize, len(in))
		b.stats.Calls[string(marketotype.Leads)+" sync"]++
		res, err := b.s.cfg.Marketo.Sync(ctx, marketotype.Leads, marketotype.SyncRequest{Action: "updateOnly", LookupField: "id", Input: in[start:end]})
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			b.mk.noteCallError(err)
			f := b.mk.callFailure(err, "unlink merged persons")
			for _, r := range linked[start:end] {
				r.fail = f
			}
			continue
		}
		for i, r := range linked[start:end] {
			if i >= len(res) {
				r.fail = &failure{act: actRequeue, reason: ReasonGaveUp, desc: "marketo returned too few results"}
				continue
			}
			x := res[i]
			if x.Status == "updated" || (len(x.Reasons) > 0 && x.Reasons[0].Code == "1004") {
				continue // unlinked, or already gone from Marketo
			}
			r.fail = b.mk.recordFailure(r, marketotype.Leads, x)
		}
	}
	return nil
}

// settle makes a master's messages wait for its subordinate: when the
// subordinate could not be retired, the Merge is retried.
func (g *merger) settle(context.Context) error {
	for _, r := range g.b.recs {
		if m := g.into[r]; m != nil && r.fail != nil && m.fail == nil {
			m.fail = r.fail
		}
	}
	return nil
}
