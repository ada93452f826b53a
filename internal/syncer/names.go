package syncer

import (
	"context"
	"fmt"
	"strings"

	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/syncer/mapping"
)

// metaRefName is the store key of a referenced row's primary name, learnt
// from an image or a Dataverse read, so a later event whose Target lookup
// has no name (the usual case: a caller binds a lookup by id) still finds it.
func metaRefName(logicalName, id string) string { return "refname/" + logicalName + "/" + id }

// primaryNameColumn is the primary name column of the tables a lookup may
// point to; a table not listed is assumed to use "name".
var primaryNameColumn = map[string]string{
	"connectionrole":        "name",
	event.EntityAccount:     "name",
	event.EntityOpportunity: "name",
	event.EntitySystemUser:  "fullname",
	event.EntityContact:     "fullname",
	event.EntityLead:        "fullname",
	"team":                  "name",
	"businessunit":          "name",
}

type cachedName struct {
	name  string
	found bool
}

// overlay applies one value of an event on top of what the record holds,
// keeping what the new value cannot know:
//   - a lookup without a name (the Target of a real webhook: the caller bound
//     it by id) takes the name of the same row from the event's post images,
//     then its pre images, then what the record already holds;
//   - a null is applied only when the message really set it (the Target of a
//     Create or Update is what the caller sent, so null there is a clear);
//     other messages' attributes are built from their inputs, and a null
//     there must not erase an image's value.
func overlay(cur event.Value, have bool, val event.Value, ev *event.Event, col string, fromTarget bool) (event.Value, bool) {
	if fromTarget && val.IsNull() && have && !cur.IsNull() &&
		ev.Message != event.MessageCreate && ev.Message != event.MessageUpdate {
		return cur, false
	}
	ref, ok := val.Reference()
	if !ok || ref.Name != "" || ref.ID == "" {
		return val, true
	}
	if fromTarget {
		for _, imgs := range []map[string]event.Attributes{ev.PostImages, ev.PreImages} {
			for _, img := range imgs {
				if n := sameRefName(img[col], ref); n != "" {
					return event.Reference(ref.LogicalName, ref.ID, n), true
				}
			}
		}
	}
	if have {
		if n := sameRefName(cur, ref); n != "" {
			return event.Reference(ref.LogicalName, ref.ID, n), true
		}
	}
	return val, true
}

// sameScalar reports whether two values are the same for the purpose of
// keeping a display label: same kind and same text (a lookup by its id).
func sameScalar(a, b event.Value) bool {
	return a.Kind == b.Kind && a.Text() == b.Text()
}

// sameRefName returns v's name when v is a lookup to the same row as ref.
func sameRefName(v event.Value, ref event.Ref) string {
	o, ok := v.Reference()
	if !ok || o.Name == "" || !strings.EqualFold(event.NormalizeID(o.ID), event.NormalizeID(ref.ID)) {
		return ""
	}
	if o.LogicalName != "" && ref.LogicalName != "" && o.LogicalName != ref.LogicalName {
		return ""
	}
	return o.Name
}

// nameRefs makes sure every lookup mapped to a refname field carries its
// name before the record is mapped: a refname field must never receive a
// GUID. Sources after the events themselves (Target, post image, pre image,
// see overlay): FormattedValues, the store, then a Dataverse read of the
// referenced row's primary name (connectionrole: cached with its category).
// Without a name the record is requeued and, after MaxAttempts,
// dead-lettered with a reason naming the lookup and the fix.
func (s *Syncer) nameRefs(ctx context.Context, r *rec) error {
	for _, f := range s.cfg.Mapping.Fields(r.entity) {
		if f.Type != mapping.TypeRefName {
			continue
		}
		v, ok := r.attrs[f.Column]
		if !ok {
			continue
		}
		ref, ok := v.Reference()
		if !ok || ref.ID == "" {
			continue
		}
		ref.ID = event.NormalizeID(ref.ID)
		if ref.Name != "" {
			s.rememberName(ctx, ref)
			continue
		}
		name, gone, err := s.refName(ctx, r, f.Column, ref)
		if err != nil || r.fail != nil {
			return err
		}
		if gone {
			continue // deleted in Dataverse: the role check drops it, the field stays unset
		}
		if name == "" {
			if _, ok := f.Labels[0]; ok {
				continue // the mapping names a default label for lookups without a name
			}
			desc := fmt.Sprintf("lookup %s of %s (%s %s) has no name in the event: register a post image with %s on the Dataverse steps of %s (msisync dataverse register does) or set MSISYNC_DATAVERSE_URL so the worker can read %s.%s",
				f.Column, r.name(), ref.LogicalName, ref.ID, f.Column, r.entity, ref.LogicalName, nameColumn(ref.LogicalName))
			r.fail = &failure{act: actRequeue, reason: ReasonMissingData, desc: desc}
			return nil
		}
		r.attrs[f.Column] = event.Reference(ref.LogicalName, ref.ID, name)
	}
	return nil
}

func nameColumn(logicalName string) string {
	if c, ok := primaryNameColumn[logicalName]; ok {
		return c
	}
	return "name"
}

// refName finds the name of a lookup the events left nameless; gone
// reports that Dataverse says the row does not exist. A failed Dataverse
// read sets r.fail (requeue) and returns "".
func (s *Syncer) refName(ctx context.Context, r *rec, col string, ref event.Ref) (name string, gone bool, err error) {
	if f := r.formatted[col]; f != "" && !event.IsGUID(f) {
		return f, false, nil
	}
	key := metaRefName(ref.LogicalName, ref.ID)
	if c, ok := s.names.Load(key); ok && c.(cachedName).found {
		return c.(cachedName).name, false, nil
	}
	if stored, ok, err := s.cfg.Store.GetMeta(ctx, key); err != nil {
		return "", false, fmt.Errorf("syncer: get meta %s: %w", key, err)
	} else if ok && stored != "" {
		s.names.Store(key, cachedName{name: stored, found: true})
		return stored, false, nil
	}
	if s.cfg.Dataverse == nil {
		return "", false, nil
	}
	if ref.LogicalName == "connectionrole" {
		c, err := s.readRole(ctx, r, ref.ID)
		if err != nil || r.fail != nil {
			return "", false, err
		}
		if !c.found {
			return "", true, nil
		}
		if c.name != "" {
			s.rememberName(ctx, event.Ref{LogicalName: ref.LogicalName, ID: ref.ID, Name: c.name})
		}
		return c.name, false, nil
	}
	column := nameColumn(ref.LogicalName)
	attrs, err := s.cfg.Dataverse.Read(ctx, ref.LogicalName, ref.ID, []string{column})
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return "", false, ctx.Err()
	case s.cfg.IsNotFound != nil && s.cfg.IsNotFound(err):
		return "", true, nil
	default:
		r.fail = &failure{act: actRequeue, reason: ReasonGaveUp,
			desc: fmt.Sprintf("read %s %s (lookup %s of %s) from Dataverse: %v", ref.LogicalName, ref.ID, col, r.name(), err)}
		return "", false, nil
	}
	name = attrs[column].Text()
	if name != "" {
		s.rememberName(ctx, event.Ref{LogicalName: ref.LogicalName, ID: ref.ID, Name: name})
	}
	return name, false, nil
}

// rememberName stores a name learnt from an event or a read, once per
// process and name, so later nameless lookups of the same row find it.
func (s *Syncer) rememberName(ctx context.Context, ref event.Ref) {
	key := metaRefName(ref.LogicalName, event.NormalizeID(ref.ID))
	if c, ok := s.names.Load(key); ok && c.(cachedName).name == ref.Name {
		return
	}
	if err := s.cfg.Store.PutMeta(ctx, key, ref.Name); err != nil {
		s.log.Warn("syncer: remember lookup name", "key", key, "err", err)
		return
	}
	s.names.Store(key, cachedName{name: ref.Name, found: true})
}
