// Package backfill pages through Dataverse tables in MSI dependency order
// and enqueues one event per row (source "backfill") into the same pipeline
// webhooks feed, checkpointing after every page so an interrupted backfill
// resumes where it stopped.
package backfill

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/dataverse"
	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/queue"
)

// Defaults and limits.
const (
	DefaultPageSize  = 1000
	MaxPageSize      = 5000 // Dataverse's odata.maxpagesize ceiling
	DefaultSendBatch = 500
	// CheckpointPrefix + entity is the store Meta key of an entity's checkpoint.
	CheckpointPrefix = "backfill/"
	// maxSeen bounds Checkpoint.SeenAtHighWater; rows beyond it that share
	// the high-water second are simply sent again (the syncer upserts).
	maxSeen = 2000
)

// Lister reads Dataverse tables page by page (*dataverse.Client). With a
// nextLink it fetches that page (the link carries the query).
type Lister interface {
	ListPage(ctx context.Context, logicalName string, opts dataverse.ListOptions, nextLink string) (dataverse.Page, error)
}

// Counter may be implemented by a Lister (*dataverse.Client does) to give
// the progress bar a total.
type Counter interface {
	Count(ctx context.Context, logicalName, filter string) (int, error)
}

// MetaStore keeps checkpoints (store.Store satisfies it).
type MetaStore interface {
	GetMeta(ctx context.Context, key string) (string, bool, error)
	PutMeta(ctx context.Context, key, value string) error
}

// Config configures a backfill.
type Config struct {
	Dataverse Lister
	Sender    queue.Sender
	Store     MetaStore
	// Entities to backfill; all synced entities when empty. They always run
	// in dependency order (users, accounts, contacts, leads, opportunities,
	// connections), whatever order they are given in.
	Entities []string
	// Since limits the backfill to rows with modifiedon ≥ Since. When zero,
	// an entity whose last backfill completed resumes from that pass's
	// latest modifiedon (only what changed since).
	Since time.Time
	// Restart ignores checkpoints and backfills everything again (or from Since).
	Restart bool
	// PageSize is odata.maxpagesize (DefaultPageSize; 1..5000).
	PageSize int
	// SendBatch is the number of messages per Send call (DefaultSendBatch).
	SendBatch int
	// MaxMessageBytes, when > 0, reduces larger events to a reference the
	// worker re-reads (event.Reduced), as the receiver does. When 0 it is
	// taken from the Sender if it has MaxMessageBytes() (queue.Queue does).
	MaxMessageBytes int
	// Columns gives the $select of an entity (the syncer's mapped columns);
	// the id column and modifiedon are always added. nil selects all columns.
	Columns func(entity string) []string
	// Progress, when set, shows a progress bar with done/total, rate and
	// ETA (on a terminal) or one line per page (anything else).
	Progress io.Writer
	// OnProgress is called after each page with rows done and total (-1
	// when unknown).
	OnProgress func(entity string, done, total int)
	// OrgID and OrgName are stamped on events, as webhook events carry them.
	OrgID, OrgName string
	Clock          clock.Clock
	Logger         *slog.Logger
}

// EntityReport describes one entity's backfill.
type EntityReport struct {
	Entity  string
	From    time.Time // modifiedon lower bound of this pass (zero: all rows)
	Resumed bool      // continued an interrupted pass
	Rows    int       // rows read in this run
	Sent    int       // events sent in this run
	Invalid int       // rows without a valid id (logged, not sent)
	// Unchanged rows were sent by the previous pass (rows at its high-water mark).
	Unchanged int
	Reduced   int // events reduced to a reference because of their size
	Pages     int
	Duration  time.Duration
}

// Rate is rows read per second (0 before any time has passed).
func (r EntityReport) Rate() float64 {
	if s := r.Duration.Seconds(); s > 0 {
		return float64(r.Rows) / s
	}
	return 0
}

func (r EntityReport) String() string {
	s := fmt.Sprintf("%s: %d rows in %d pages, %d sent", r.Entity, r.Rows, r.Pages, r.Sent)
	if r.Unchanged > 0 {
		s += fmt.Sprintf(", %d already sent", r.Unchanged)
	}
	if r.Invalid > 0 {
		s += fmt.Sprintf(", %d invalid", r.Invalid)
	}
	if r.Reduced > 0 {
		s += fmt.Sprintf(", %d reduced", r.Reduced)
	}
	if r.Resumed {
		s += ", resumed"
	}
	if !r.From.IsZero() {
		s += ", modified since " + r.From.UTC().Format(time.RFC3339)
	}
	return s + fmt.Sprintf(", %s, %.0f rows/s", r.Duration.Round(time.Millisecond), r.Rate())
}

// Report describes a backfill run.
type Report struct {
	Entities []EntityReport
	Rows     int
	Duration time.Duration
}

func (r Report) String() string {
	var b strings.Builder
	for _, e := range r.Entities {
		b.WriteString(e.String())
		b.WriteByte('\n')
	}
	rate := 0.0
	if s := r.Duration.Seconds(); s > 0 {
		rate = float64(r.Rows) / s
	}
	fmt.Fprintf(&b, "backfill: %d rows in %s (%.0f rows/s)", r.Rows, r.Duration.Round(time.Millisecond), rate)
	return b.String()
}

// Checkpoint is what the store keeps per entity (JSON under
// CheckpointPrefix+entity).
type Checkpoint struct {
	From      time.Time `json:"from,omitzero"`      // lower bound of the pass
	NextLink  string    `json:"nextLink,omitempty"` // next page; empty when Done
	HighWater time.Time `json:"highWater,omitzero"` // latest modifiedon sent in the pass
	// SeenAtHighWater are the message ids sent for rows modified exactly at
	// HighWater (up to maxSeen): the next pass filters "modifiedon ge
	// HighWater" so as not to miss rows changed within that second, and
	// skips these so that it does not send them again.
	SeenAtHighWater []string  `json:"seenAtHighWater,omitempty"`
	Done            bool      `json:"done"`
	Rows            int       `json:"rows"` // rows sent in the pass so far
	Pages           int       `json:"pages"`
	UpdatedAt       time.Time `json:"updatedAt"`
}

// Entities checks a list of entity names and returns them in dependency
// order without duplicates; an empty list means all synced entities.
func Entities(names []string) ([]string, error) {
	if len(names) == 0 {
		return slices.Clone(event.SyncedEntities), nil
	}
	want := map[string]bool{}
	for _, n := range names {
		n = strings.ToLower(strings.TrimSpace(n))
		if n == "" {
			continue
		}
		if !event.IsSyncedEntity(n) {
			return nil, fmt.Errorf("backfill: unknown entity %q (allowed: %s)", n, strings.Join(event.SyncedEntities, ", "))
		}
		want[n] = true
	}
	if len(want) == 0 {
		return nil, fmt.Errorf("backfill: no entity given (allowed: %s)", strings.Join(event.SyncedEntities, ", "))
	}
	var out []string
	for _, e := range event.SyncedEntities {
		if want[e] {
			out = append(out, e)
		}
	}
	return out, nil
}

// Run backfills the configured entities one after another. On error (or
// cancellation) it returns what was done so far; checkpoints make a rerun
// continue from the last completed page.
func Run(ctx context.Context, cfg Config) (rep Report, err error) {
	entities, err := Entities(cfg.Entities)
	if err != nil {
		return rep, err
	}
	switch {
	case cfg.Dataverse == nil:
		return rep, errors.New("backfill: config: Dataverse is required")
	case cfg.Sender == nil:
		return rep, errors.New("backfill: config: Sender is required")
	case cfg.Store == nil:
		return rep, errors.New("backfill: config: Store is required")
	case cfg.PageSize < 0 || cfg.PageSize > MaxPageSize:
		return rep, fmt.Errorf("backfill: page size %d is outside 1..%d", cfg.PageSize, MaxPageSize)
	case cfg.SendBatch < 0:
		return rep, fmt.Errorf("backfill: send batch %d is negative", cfg.SendBatch)
	}
	if cfg.PageSize == 0 {
		cfg.PageSize = DefaultPageSize
	}
	if cfg.SendBatch == 0 {
		cfg.SendBatch = DefaultSendBatch
	}
	if q, ok := cfg.Sender.(interface{ MaxMessageBytes() int }); ok && cfg.MaxMessageBytes == 0 {
		cfg.MaxMessageBytes = q.MaxMessageBytes() // message() counts the properties too
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.System{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	start := cfg.Clock.Now()
	defer func() { rep.Duration = cfg.Clock.Now().Sub(start) }()
	for _, entity := range entities {
		er, err := runEntity(ctx, &cfg, entity)
		rep.Entities = append(rep.Entities, er)
		rep.Rows += er.Rows
		if err != nil {
			return rep, err
		}
	}
	return rep, nil
}

func runEntity(ctx context.Context, cfg *Config, entity string) (er EntityReport, err error) {
	er.Entity = entity
	start := cfg.Clock.Now()
	defer func() {
		er.Duration = cfg.Clock.Now().Sub(start)
	}()
	key := CheckpointPrefix + entity
	cp, err := loadCheckpoint(ctx, cfg.Store, key)
	if err != nil {
		return er, err
	}

	// Decide where this pass starts.
	var pass Checkpoint
	switch {
	case cfg.Restart || cp == nil:
		pass.From = cfg.Since
	case !cp.Done && (cfg.Since.IsZero() || !cfg.Since.Before(cp.From)):
		// The unfinished pass covers what is asked (a relative --since
		// such as 720h moves a little between runs): continue it.
		pass = *cp
		er.Resumed = true
	case cfg.Since.IsZero() && cp.Done:
		pass.From = cp.HighWater
		pass.HighWater, pass.SeenAtHighWater = cp.HighWater, cp.SeenAtHighWater
	default:
		pass.From = cfg.Since
	}
	er.From = pass.From
	if pass.HighWater.Before(pass.From) {
		// An empty pass must not forget how far the previous one got.
		pass.HighWater = pass.From
	}
	// skip: rows the previous pass sent at the mark this pass starts from.
	// seen: rows sent at this pass's current high-water mark.
	skip, seen := map[string]bool{}, map[string]bool{}
	for _, id := range pass.SeenAtHighWater {
		seen[id] = true
		if !pass.From.IsZero() && pass.HighWater.Equal(pass.From) {
			skip[id] = true
		}
	}

	opts := dataverse.ListOptions{PageSize: cfg.PageSize}
	if !pass.From.IsZero() {
		opts.Filter = "modifiedon ge " + pass.From.UTC().Format(time.RFC3339)
	}
	if cfg.Columns != nil {
		opts.Select = selectColumns(entity, cfg.Columns(entity))
	}

	total := -1
	if c, ok := cfg.Dataverse.(Counter); ok {
		if n, err := c.Count(ctx, entity, opts.Filter); err == nil {
			total = n
		} else {
			cfg.Logger.Debug("backfill: count rows", "entity", entity, "err", err)
		}
	}
	prog := newProgress(cfg, entity, total, pass.Rows)
	defer func() { prog.finish(pass.Done) }()
	if er.Resumed {
		cfg.Logger.Info("backfill: resuming", "entity", entity, "rowsDone", pass.Rows, "pages", pass.Pages)
	}

	// The next page is fetched while this one is sent: reading Dataverse
	// and writing the queue overlap.
	pages, stop := prefetch(ctx, cfg, entity, opts, pass.NextLink, er.Resumed)
	defer stop()
	for {
		var f fetched
		select {
		case f = <-pages:
		case <-ctx.Done():
		}
		if err := ctx.Err(); err != nil {
			return er, fmt.Errorf("backfill: %s (page %d): %w", entity, pass.Pages+1, err)
		}
		if f.restarted {
			pass = Checkpoint{From: pass.From, HighWater: pass.From}
			clear(seen)
		}
		page, err := f.page, f.err
		if err != nil {
			return er, fmt.Errorf("backfill: list %s (page %d): %w", entity, pass.Pages+1, err)
		}
		msgs := make([]queue.Message, 0, len(page.Rows))
		for i, row := range page.Rows {
			er.Rows++
			ev, err := buildEvent(cfg, entity, row)
			if err != nil {
				er.Invalid++
				cfg.Logger.Warn("backfill: skipping row", "entity", entity, "err", err)
				continue
			}
			if i < len(page.Formatted) && len(page.Formatted[i]) > 0 {
				ev.Formatted = page.Formatted[i]
			}
			if ev.Version != 0 {
				switch {
				case ev.OccurredAt.Equal(pass.From) && skip[ev.ID]:
					er.Unchanged++ // sent by the previous pass at its high-water mark
					continue
				case seen[ev.ID]:
				case ev.OccurredAt.After(pass.HighWater):
					pass.HighWater, pass.SeenAtHighWater = ev.OccurredAt, nil
					clear(seen)
					fallthrough
				case ev.OccurredAt.Equal(pass.HighWater) && len(pass.SeenAtHighWater) < maxSeen:
					pass.SeenAtHighWater = append(pass.SeenAtHighWater, ev.ID)
					seen[ev.ID] = true
				}
			}
			m, reduced, err := message(cfg, ev)
			if err != nil {
				return er, err
			}
			if reduced {
				er.Reduced++
			}
			msgs = append(msgs, m)
		}
		for i := 0; i < len(msgs); i += cfg.SendBatch {
			batch := msgs[i:min(i+cfg.SendBatch, len(msgs))]
			if err := cfg.Sender.Send(ctx, batch...); err != nil {
				return er, fmt.Errorf("backfill: send %d %s events (page %d): %w", len(batch), entity, pass.Pages+1, err)
			}
			er.Sent += len(batch)
		}
		er.Pages++
		pass.Pages++
		pass.Rows += len(page.Rows)
		pass.NextLink = page.NextLink
		pass.Done = page.NextLink == ""
		pass.UpdatedAt = cfg.Clock.Now()
		if err := saveCheckpoint(ctx, cfg.Store, key, pass); err != nil {
			return er, err
		}
		prog.add(len(page.Rows), pass.Rows)
		if pass.Done {
			return er, nil
		}
	}
}

type fetched struct {
	page      dataverse.Page
	err       error
	restarted bool // the saved link was refused and the pass started over
}

// prefetch lists pages one ahead of the consumer. stop cancels it and
// waits for it to end, so no request outlives the run.
func prefetch(ctx context.Context, cfg *Config, entity string, opts dataverse.ListOptions, next string, resumed bool) (<-chan fetched, func()) {
	fctx, cancel := context.WithCancel(ctx)
	out := make(chan fetched, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		first := true
		for {
			page, err := cfg.Dataverse.ListPage(fctx, entity, opts, next)
			restarted := false
			if err != nil && first && resumed && next != "" && fctx.Err() == nil {
				// A paging link from an older run may no longer be accepted:
				// start the pass over (duplicate ids drop what was already sent).
				cfg.Logger.Warn("backfill: saved next page link refused; restarting the pass", "entity", entity, "err", err)
				restarted = true
				page, err = cfg.Dataverse.ListPage(fctx, entity, opts, "")
			}
			first = false
			select {
			case out <- fetched{page, err, restarted}:
			case <-fctx.Done():
				return
			}
			if err != nil || page.NextLink == "" {
				return
			}
			next = page.NextLink
		}
	}()
	return out, func() { cancel(); <-done }
}

// selectColumns adds the id, modifiedon and versionnumber to the mapped columns.
func selectColumns(entity string, cols []string) []string {
	out := []string{entity + "id", "modifiedon", "versionnumber"} // versionnumber: the RowVersion the syncer stores
	for _, c := range cols {
		c = strings.ToLower(strings.TrimSpace(c))
		if c != "" && !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out
}

// buildEvent turns a row into an event. Message is Create: a backfilled row
// carries every selected column, as a Create's Target does, whereas an Update
// carries only the changed ones; the syncer upserts on Create, so a record
// already in Marketo is updated, not duplicated.
func buildEvent(cfg *Config, entity string, row event.Attributes) (*event.Event, error) {
	idCol := entity + "id"
	v, ok := row[idCol]
	if !ok {
		return nil, fmt.Errorf("row without %s", idCol)
	}
	id := event.NormalizeID(v.Text())
	if !event.IsGUID(id) {
		return nil, fmt.Errorf("%s %q is not a GUID", idCol, v.Text())
	}
	e := &event.Event{
		Schema:     event.SchemaVersion,
		Source:     event.SourceBackfill,
		OrgID:      cfg.OrgID,
		OrgName:    cfg.OrgName,
		Entity:     entity,
		RecordID:   id,
		Message:    event.MessageCreate,
		OccurredAt: cfg.Clock.Now().UTC(),
		Attributes: row,
	}
	if mv, ok := row["modifiedon"]; ok {
		if t, ok := mv.TimeValue(); ok {
			e.Version = t.UnixMilli()
			e.OccurredAt = t
		}
	}
	if vn, ok := row["versionnumber"]; ok {
		if n, ok := vn.Int(); ok {
			e.RowVersion = n
		}
	}
	// Same row, same version → same id: a rerun inside the queue's duplicate
	// detection window sends nothing new.
	e.ID = e.DeriveID()
	return e, nil
}

func message(cfg *Config, e *event.Event) (queue.Message, bool, error) {
	body, err := event.Encode(e)
	if err != nil {
		return queue.Message{}, false, fmt.Errorf("backfill: %w", err)
	}
	msg := queue.Message{
		ID:   e.ID,
		Body: body,
		Properties: map[string]string{
			queue.PropEntity:   e.Entity,
			queue.PropRecordID: e.RecordID,
			queue.PropMessage:  e.Message,
		},
	}
	// The queue's limit counts the properties too.
	if cfg.MaxMessageBytes <= 0 || msg.Size() <= cfg.MaxMessageBytes {
		return msg, false, nil
	}
	if msg.Body, err = event.Encode(e.Reduced()); err != nil {
		return queue.Message{}, false, fmt.Errorf("backfill: %w", err)
	}
	return msg, true, nil
}

func loadCheckpoint(ctx context.Context, st MetaStore, key string) (*Checkpoint, error) {
	raw, ok, err := st.GetMeta(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("backfill: read checkpoint %s: %w", key, err)
	}
	if !ok || raw == "" {
		return nil, nil
	}
	var cp Checkpoint
	if err := json.Unmarshal([]byte(raw), &cp); err != nil {
		return nil, fmt.Errorf("backfill: read checkpoint %s: %w (rerun with restart to start over)", key, err)
	}
	return &cp, nil
}

func saveCheckpoint(ctx context.Context, st MetaStore, key string, cp Checkpoint) error {
	b, err := json.Marshal(cp)
	if err != nil {
		return fmt.Errorf("backfill: write checkpoint %s: %w", key, err)
	}
	if err := st.PutMeta(ctx, key, string(b)); err != nil {
		return fmt.Errorf("backfill: write checkpoint %s: %w", key, err)
	}
	return nil
}

// Checkpoints returns the saved checkpoint of each entity (absent when none),
// for a status display.
func Checkpoints(ctx context.Context, st MetaStore, entities []string) (map[string]Checkpoint, error) {
	entities, err := Entities(entities)
	if err != nil {
		return nil, err
	}
	out := map[string]Checkpoint{}
	for _, e := range entities {
		cp, err := loadCheckpoint(ctx, st, CheckpointPrefix+e)
		if err != nil {
			return nil, err
		}
		if cp != nil {
			out[e] = *cp
		}
	}
	return out, nil
}
