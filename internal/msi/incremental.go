package msi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/marketo"
	"github.com/msisync/msisync/internal/marketo/marketotype"
	"github.com/msisync/msisync/internal/store"
)

// ActivityReader reads Marketo's activity feeds (*marketo.Client).
type ActivityReader interface {
	PagingToken(ctx context.Context, since time.Time) (string, error)
	ActivityTypes(ctx context.Context) ([]marketo.ActivityType, error)
	Activities(ctx context.Context, token string, typeIDs []int) ([]marketo.Activity, string, error)
	LeadChanges(ctx context.Context, token string, fields []string) ([]marketo.Activity, string, error)
}

// Activity types whose appearance means a lead's MSI values moved, looked
// up by name (their ids differ between instances: Interesting Moment is 41
// or 46, UNCONFIRMED).
var activityTypeNames = []string{"Interesting Moment", "Change Score"}

// Store meta keys of the incremental write-back.
const (
	metaActivitiesToken  = "msi.activities.token"
	metaLeadChangesToken = "msi.leadchanges.token"
	metaActivityTypes    = "msi.activity.types"
	metaSweepCursor      = "msi.sweep.cursor"
	metaSweepAt          = "msi.sweep.at"
	typesTTL             = 24 * time.Hour
)

type cachedTypes struct {
	Fetched time.Time      `json:"fetched"`
	IDs     map[string]int `json:"ids"`
}

// incremental runs one incremental cycle: the activity feeds since the
// stored tokens, the leads they name read back by id, and the due slice of
// the rolling sweep (all persons when full or when a token was lost).
func (w *Writer) incremental(ctx context.Context, rep *Report, full bool, leaseAt time.Time) error {
	now := w.cfg.Clock.Now()
	rep.Mode = "incremental"
	leadIDs, tokens, err := w.readFeeds(ctx, rep, now)
	if err != nil {
		return err
	}
	if rep.TokenLost {
		full = true
	}
	if full {
		rep.Mode = "full"
	}
	if !full && len(leadIDs) > 0 {
		if err := w.readChanged(ctx, rep, leadIDs); err != nil {
			return err
		}
	}
	if err := w.sweep(ctx, rep, full, now, leaseAt); err != nil {
		return err
	}
	// The tokens move on only once what they named is written, so a failed
	// cycle reads the same activities again.
	for k, v := range tokens {
		if err := w.cfg.Store.PutMeta(ctx, k, v); err != nil {
			return fmt.Errorf("msi: store paging token %s: %w", k, err)
		}
	}
	return nil
}

// readFeeds reads the activity feeds from the stored tokens. It returns
// the distinct lead ids named and the tokens to store after the cycle; a
// missing or rejected token sets rep.TokenLost and starts from now.
func (w *Writer) readFeeds(ctx context.Context, rep *Report, now time.Time) (map[int64]bool, map[string]string, error) {
	leads := map[int64]bool{}
	tokens := map[string]string{}
	feeds := []string{metaActivitiesToken}
	if !w.cfg.SkipLeadChanges {
		feeds = append(feeds, metaLeadChangesToken)
	}
	for _, key := range feeds {
		tok, ok, err := w.cfg.Store.GetMeta(ctx, key)
		if err != nil {
			return nil, nil, fmt.Errorf("msi: read paging token %s: %w", key, err)
		}
		var acts []marketo.Activity
		next := tok
		if ok && tok != "" {
			if key == metaActivitiesToken {
				var ids []int
				if ids, err = w.activityTypeIDs(ctx, now); err == nil {
					acts, next, err = w.cfg.Activities.Activities(ctx, tok, ids)
				}
			} else {
				acts, next, err = w.cfg.Activities.LeadChanges(ctx, tok, w.fields[1:])
			}
			if err != nil && !tokenRejected(err) {
				return nil, nil, fmt.Errorf("msi: read activity feed %s: %w", key, err)
			}
		}
		if !ok || tok == "" || err != nil {
			// Never silence: without a usable token the sweep reads everyone.
			rep.TokenLost = true
			w.cfg.Logger.Warn("msi: activity paging token missing or rejected; this cycle sweeps every synced person",
				"feed", key, "err", err)
			if next, err = w.cfg.Activities.PagingToken(ctx, now); err != nil {
				return nil, nil, fmt.Errorf("msi: new paging token for %s: %w", key, err)
			}
			acts = nil
		}
		tokens[key] = next
		for _, a := range acts {
			// The lead-changes feed also carries New Lead activities: a new
			// lead has no MSI values yet, so only value changes count.
			if key == metaLeadChangesToken && len(a.Fields) == 0 {
				continue
			}
			rep.Activities++
			if a.LeadID > 0 {
				leads[a.LeadID] = true
			}
		}
	}
	rep.ChangedLeads = len(leads)
	return leads, tokens, nil
}

// tokenRejected reports whether Marketo refused a paging token (expired or
// invalid), as opposed to a call that failed.
func tokenRejected(err error) bool {
	var me *marketotype.Error
	if !errors.As(err, &me) {
		return false
	}
	return me.Code == "1003" || me.Code == "1029" || strings.Contains(strings.ToLower(me.Message), "token")
}

// activityTypeIDs looks the watched activity types up by name, cached in
// the store for a day.
func (w *Writer) activityTypeIDs(ctx context.Context, now time.Time) ([]int, error) {
	var c cachedTypes
	if raw, ok, err := w.cfg.Store.GetMeta(ctx, metaActivityTypes); err != nil {
		return nil, fmt.Errorf("msi: read cached activity types: %w", err)
	} else if ok {
		_ = json.Unmarshal([]byte(raw), &c)
	}
	if len(c.IDs) == 0 || now.Sub(c.Fetched) > typesTTL || now.Before(c.Fetched) {
		types, err := w.cfg.Activities.ActivityTypes(ctx)
		if err != nil {
			return nil, fmt.Errorf("msi: read activity types: %w", err)
		}
		c = cachedTypes{Fetched: now, IDs: map[string]int{}}
		for _, t := range types {
			for _, name := range activityTypeNames {
				if strings.EqualFold(t.Name, name) {
					c.IDs[name] = t.ID
				}
			}
		}
		for _, name := range activityTypeNames {
			if _, ok := c.IDs[name]; !ok {
				w.cfg.Logger.Warn("msi: activity type not found on this instance; its changes reach Dynamics through the sweep only", "type", name)
			}
		}
		b, _ := json.Marshal(c)
		if err := w.cfg.Store.PutMeta(ctx, metaActivityTypes, string(b)); err != nil {
			return nil, fmt.Errorf("msi: cache activity types: %w", err)
		}
	}
	ids := make([]int, 0, len(c.IDs))
	for _, id := range c.IDs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	if len(ids) == 0 {
		return nil, &marketotype.Error{Op: "msi: activity types", Code: "1003", Message: "no watched activity type on this instance (token unusable)"}
	}
	return ids, nil
}

// readChanged reads the named leads by Marketo id (300 per call), keeps the
// synced persons among them, and writes those whose values changed.
func (w *Writer) readChanged(ctx context.Context, rep *Report, leadIDs map[int64]bool) error {
	ids := make([]int64, 0, len(leadIDs))
	for id := range leadIDs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var pending []change
	for lo := 0; lo < len(ids); lo += ChunkSize {
		chunk := ids[lo:min(lo+ChunkSize, len(ids))]
		vals := make([]string, len(chunk))
		for i, id := range chunk {
			vals[i] = strconv.FormatInt(id, 10)
		}
		rep.LeadReads++
		rep.MarketoCalls++
		w.metrics.marketoCalls.Inc()
		recs, err := w.cfg.Marketo.Query(ctx, marketotype.Leads, "id", vals, w.fields)
		if err != nil {
			return errors.Join(fmt.Errorf("msi: read %d changed leads by id from %s: %w", len(vals), vals[0], err), w.flush(ctx, pending, rep))
		}
		var persons []string
		for _, r := range recs {
			if id := event.NormalizeID(canonical(r[FilterType], TypeText)); id != "" {
				persons = append(persons, id)
			}
		}
		if len(persons) == 0 {
			continue
		}
		links, err := w.cfg.Store.GetLinks(ctx, store.KindPerson, persons)
		if err != nil {
			return fmt.Errorf("msi: read links of %d changed persons: %w", len(persons), err)
		}
		var valid []store.Link
		var vids []string
		for _, p := range persons {
			l, ok := links[p]
			if !ok {
				continue // a Marketo lead msisync did not sync
			}
			if l.Entity != event.EntityLead && l.Entity != event.EntityContact {
				rep.Invalid++
				continue
			}
			valid = append(valid, l)
			vids = append(vids, p)
		}
		rep.Persons += len(valid)
		changes, err := w.diff(ctx, valid, vids, recs, rep)
		if err != nil {
			return err
		}
		pending = append(pending, changes...)
		for len(pending) >= w.cfg.BatchSize {
			if err := w.write(ctx, pending[:w.cfg.BatchSize], rep); err != nil {
				return err
			}
			pending = pending[w.cfg.BatchSize:]
		}
	}
	return w.flush(ctx, pending, rep)
}

func (w *Writer) flush(ctx context.Context, pending []change, rep *Report) error {
	if len(pending) == 0 || ctx.Err() != nil {
		return nil
	}
	return w.write(ctx, pending, rep)
}

// sweep reads the due slice of the rolling full sweep: the share of all
// synced persons that the time since the last slice is of Config.Sweep
// (every person when full), from the stored cursor on, wrapping around.
func (w *Writer) sweep(ctx context.Context, rep *Report, full bool, now, leaseAt time.Time) error {
	total, err := w.cfg.Store.CountLinks(ctx, store.KindPerson)
	if err != nil {
		return fmt.Errorf("msi: count synced persons: %w", err)
	}
	cursor, _, err := w.cfg.Store.GetMeta(ctx, metaSweepCursor)
	if err != nil {
		return fmt.Errorf("msi: read sweep cursor: %w", err)
	}
	due := total
	sweptUntil := now
	if !full {
		last := now.Add(-w.cfg.Interval)
		if raw, ok, err := w.cfg.Store.GetMeta(ctx, metaSweepAt); err != nil {
			return fmt.Errorf("msi: read sweep time: %w", err)
		} else if ok {
			if t, err := time.Parse(time.RFC3339Nano, raw); err == nil {
				last = t
			}
		}
		elapsed := max(now.Sub(last), 0)
		due = min(total, int(int64(total)*int64(elapsed)/int64(w.cfg.Sweep)))
		// Read whole calls of 300: a slice waits until a full one is due
		// (the time carries over), so the sweep costs ⌈persons/300⌉ calls
		// per period however short the interval.
		if due < total {
			due = due / ChunkSize * ChunkSize
		}
		if due == 0 {
			return nil
		}
		// Account only for the time the slice covers, so rounding never
		// loses persons from the period.
		if total > 0 && due < total {
			sweptUntil = last.Add(time.Duration(int64(w.cfg.Sweep) * int64(due) / int64(total)))
		}
	} else {
		cursor = ""
	}
	var pending []change
	wrapped := false
	for due > 0 {
		links, err := w.cfg.Store.ListLinks(ctx, store.KindPerson, cursor, min(ChunkSize, due))
		if err != nil {
			return fmt.Errorf("msi: list synced persons after %q: %w", cursor, err)
		}
		if len(links) == 0 {
			if cursor == "" || wrapped {
				break
			}
			cursor, wrapped = "", true
			continue
		}
		changes, err := w.compare(ctx, links, rep)
		if err != nil {
			return errors.Join(err, w.flush(ctx, pending, rep))
		}
		rep.Swept += len(links)
		due -= len(links)
		cursor = links[len(links)-1].ExternalID
		pending = append(pending, changes...)
		for len(pending) >= w.cfg.BatchSize {
			if err := w.write(ctx, pending[:w.cfg.BatchSize], rep); err != nil {
				return err
			}
			pending = pending[w.cfg.BatchSize:]
		}
		if err := w.cfg.Store.PutMeta(ctx, metaSweepCursor, cursor); err != nil {
			return fmt.Errorf("msi: store sweep cursor: %w", err)
		}
		if t := w.cfg.Clock.Now(); t.Sub(leaseAt) > w.cfg.LeaseTTL/3 {
			ok, err := w.cfg.Store.AcquireLease(ctx, w.cfg.LeaseName, w.cfg.Holder, w.cfg.LeaseTTL)
			if err != nil {
				return fmt.Errorf("msi: renew lease %q: %w", w.cfg.LeaseName, err)
			}
			if !ok {
				rep.LeaseLost = true
				return w.flush(ctx, pending, rep)
			}
			leaseAt = t
		}
	}
	if full {
		cursor = ""
		if err := w.cfg.Store.PutMeta(ctx, metaSweepCursor, cursor); err != nil {
			return fmt.Errorf("msi: store sweep cursor: %w", err)
		}
	}
	if err := w.flush(ctx, pending, rep); err != nil {
		return err
	}
	if err := w.cfg.Store.PutMeta(ctx, metaSweepAt, sweptUntil.UTC().Format(time.RFC3339Nano)); err != nil {
		return fmt.Errorf("msi: store sweep time: %w", err)
	}
	return nil
}
