package syncer

import (
	"maps"
	"slices"
	"testing"

	"github.com/msisync/msisync/internal/event"
)

// WebhookShape gives a hand-built event the shape a Dataverse webhook has:
// the Target's lookups lose their names (a caller binds a lookup by id),
// and a post image carries the columns with the names, as Dataverse reads
// them from the database. A Delete (no Target columns) is left alone.
func WebhookShape(ev *event.Event) *event.Event {
	if len(ev.Attributes) == 0 || ev.Message == event.MessageDelete {
		return ev
	}
	img := maps.Clone(ev.Attributes)
	for c, v := range ev.Attributes {
		if r, ok := v.Reference(); ok && r.Name != "" {
			ev.Attributes[c] = event.Reference(r.LogicalName, r.ID, "")
		}
	}
	if ev.PostImages == nil {
		ev.PostImages = map[string]event.Attributes{}
	}
	ev.PostImages["PostImage"] = img
	return ev
}

// CheckTargetNames is the guard of the test helpers that send Dataverse
// events: a Target lookup carrying a name is a shape real webhooks do not
// send (the bug of issue 10 hid behind such events), so it fails the test
// unless the test says why it needs one (why != "").
func CheckTargetNames(t testing.TB, ev *event.Event, why string) {
	t.Helper()
	if why != "" || ev.Source == event.SourceCustom {
		return // the simple envelope may name its lookups
	}
	for _, c := range slices.Sorted(maps.Keys(ev.Attributes)) {
		if r, ok := ev.Attributes[c].Reference(); ok && r.Name != "" {
			t.Fatalf("%s %s: Target lookup %s carries the name %q; a real webhook's Target has none: put it in a post image (WebhookShape) or say why the test needs it",
				ev.Entity, ev.RecordID, c, r.Name)
		}
	}
}
