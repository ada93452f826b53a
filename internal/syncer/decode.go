package syncer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/queue"
)

// decode reads our envelope, or Dataverse's native Service Bus message.
func (s *Syncer) decode(d *queue.Delivery) (*msg, error) {
	m := &msg{d: d}
	if a, err := strconv.Atoi(d.Properties[queue.PropAttempt]); err == nil {
		m.attempt = a
	}
	native := false
	for k := range d.Properties {
		if strings.HasPrefix(k, "http://schemas.microsoft.com/xrm/2011/Claims/") {
			native = true
			break
		}
	}
	var err error
	if native && s.cfg.ParseNative != nil {
		m.ev, err = s.cfg.ParseNative(d.Body, d.Properties)
	} else {
		m.ev, err = event.Decode(d.Body)
		if err != nil && s.cfg.ParseNative != nil {
			if ev, nerr := s.cfg.ParseNative(d.Body, d.Properties); nerr == nil {
				m.ev, err = ev, nil
			}
		}
	}
	if err != nil {
		return nil, err
	}
	if m.ev == nil {
		return nil, errors.New("decode: empty event")
	}
	m.ev.RecordID = event.NormalizeID(m.ev.RecordID)
	return m, nil
}

// ignore reports whether the event needs no write: not ours to sync, made
// by msisync itself, or touching only MSI write-back columns.
func (s *Syncer) ignore(m *msg) bool {
	ev := m.ev
	app := s.cfg.AppUserID
	switch {
	case !event.IsSyncedEntity(ev.Entity) || !event.IsSyncedMessage(ev.Message):
		return true
	case ev.Message == event.MessageQualifyLead:
		return true // the new contact's Create (with originatingleadid) carries the change
	case app != "" && (event.NormalizeID(ev.UserID) == app || event.NormalizeID(ev.InitiatingUserID) == app):
		return true
	case ev.Message == event.MessageUpdate && !ev.Truncated && len(ev.Attributes) > 0:
		idCol := ev.Entity + "id"
		for c := range ev.Attributes {
			if systemColumns[c] || c == idCol || s.cfg.Mapping.IsWriteBack(c) {
				continue
			}
			return false
		}
		return true
	}
	return false
}

func sortVersion(m *msg) int64 {
	if m.ev.Message == event.MessageDelete && m.ev.Version == 0 {
		return tombstone // a Delete carries no modifiedon but is the last word
	}
	return m.ev.Version
}

// group coalesces messages per record and drops stale versions.
func (b *batch) group(ctx context.Context, msgs []*msg) error {
	for _, m := range msgs {
		key := m.ev.Entity + "/" + m.ev.RecordID
		r := b.recs[key]
		if r == nil {
			r = &rec{entity: m.ev.Entity, id: m.ev.RecordID, key: key, kind: kindOf(m.ev.Entity)}
			b.recs[key] = r
		}
		r.msgs = append(r.msgs, m)
	}
	if len(b.recs) == 0 {
		return nil
	}
	// Versions per record (tombstones) and per column: an Update carries only
	// the columns it changed, so an older Update arriving late must still
	// apply the columns no newer event has written.
	var keys []string
	for key, r := range b.recs {
		keys = append(keys, key)
		for _, m := range r.msgs {
			for c := range m.ev.Attributes {
				keys = append(keys, key+"#"+c)
			}
			// Image columns too: a late event's post image is an older
			// state and must not overwrite columns a newer event wrote.
			for _, imgs := range []map[string]event.Attributes{m.ev.PreImages, m.ev.PostImages} {
				for _, img := range imgs {
					for c := range img {
						if _, ok := m.ev.Attributes[c]; !ok {
							keys = append(keys, key+"#"+c)
						}
					}
				}
			}
		}
	}
	versions, err := b.s.cfg.Store.GetVersions(ctx, keys)
	if err != nil {
		return fmt.Errorf("syncer: get versions: %w", err)
	}
	for key, r := range b.recs {
		slices.SortStableFunc(r.msgs, func(x, y *msg) int {
			return cmp.Or(cmp.Compare(sortVersion(x), sortVersion(y)),
				cmp.Compare(x.ev.RowVersion, y.ev.RowVersion),
				x.ev.OccurredAt.Compare(y.ev.OccurredAt),
				x.d.EnqueuedAt.Compare(y.d.EnqueuedAt),
				cmp.Compare(x.d.SequenceNumber, y.d.SequenceNumber))
		})
		if versions[key] == tombstone {
			b.early = append(b.early, r.msgs...) // deleted: every event is stale
			delete(b.recs, key)
			continue
		}
		if !fold(r, versions) {
			b.early = append(b.early, r.msgs...) // every column already newer in Marketo
			delete(b.recs, key)
		}
	}
	return nil
}

// fold folds the messages (in version order) into the record's state,
// leaving out columns a newer applied event already wrote. It reports
// whether anything is left to do.
func fold(r *rec, stored map[string]int64) bool {
	r.attrs, r.formatted, r.colVersion = event.Attributes{}, map[string]string{}, map[string]int64{}
	start := 0
	for i, m := range r.msgs {
		if m.ev.Message == event.MessageDelete {
			start = i + 1
		}
	}
	r.deleted = start == len(r.msgs)
	if r.deleted {
		return true
	}
	work := false
	for _, m := range r.msgs[start:] {
		ev := m.ev
		v := ev.Version
		set := func(attrs event.Attributes, target bool) {
			for c, val := range attrs {
				if v > 0 && v < stored[r.key+"#"+c] {
					continue
				}
				cur, have := r.attrs[c]
				val, apply := overlay(cur, have, val, ev, c, target)
				if !apply {
					continue
				}
				if _, ok := ev.Formatted[c]; !ok && have && !sameScalar(cur, val) {
					delete(r.formatted, c) // an older event's label describes the older value
				}
				r.attrs[c] = val
				r.colVersion[c] = max(r.colVersion[c], v)
			}
		}
		for _, img := range ev.PreImages {
			set(img, false)
		}
		for _, img := range ev.PostImages {
			set(img, false)
		}
		set(ev.Attributes, true)
		maps.Copy(r.formatted, ev.Formatted)
		r.version = max(r.version, v)
		r.rowVersion = max(r.rowVersion, ev.RowVersion)
		if ev.Truncated || len(ev.Attributes) == 0 || fresh(ev, r, stored) {
			work = true
		}
		if ev.Message == event.MessageCreate && !ev.Truncated {
			r.full = true
		}
	}
	return work
}

// fresh reports whether the event supplies at least one column not stale.
func fresh(ev *event.Event, r *rec, stored map[string]int64) bool {
	for c := range ev.Attributes {
		if ev.Version == 0 || ev.Version >= stored[r.key+"#"+c] {
			return true
		}
	}
	return false
}
