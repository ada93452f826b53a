package backfill

import (
	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/queue"
)

// RowOptions stamp an event built from a Web API row.
type RowOptions struct {
	Source         string // event.SourceBackfill when empty
	OrgID, OrgName string
	Clock          clock.Clock // OccurredAt when the row has no modifiedon
}

// RowEvent turns one Web API row (with its formatted values) into the event
// a backfill sends for it: a Create carrying every selected column, versioned
// by modifiedon. Other readers of Web API rows (reconcile) use it so that a
// row becomes the same event whoever reads it.
func RowEvent(entity string, row event.Attributes, formatted map[string]string, o RowOptions) (*event.Event, error) {
	cfg := &Config{OrgID: o.OrgID, OrgName: o.OrgName, Clock: o.Clock}
	if cfg.Clock == nil {
		cfg.Clock = clock.System{}
	}
	ev, err := buildEvent(cfg, entity, row)
	if err != nil {
		return nil, err
	}
	if len(formatted) > 0 {
		ev.Formatted = formatted
	}
	if o.Source != "" && o.Source != ev.Source {
		ev.Source = o.Source
	}
	return ev, nil
}

// RowMessage encodes an event as a queue message the way backfill does
// (entity, record and message properties; reduced to a reference above
// maxBytes when maxBytes > 0). It reports whether the event was reduced.
func RowMessage(e *event.Event, maxBytes int) (queue.Message, bool, error) {
	return message(&Config{MaxMessageBytes: maxBytes}, e)
}
