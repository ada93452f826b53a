// Package msi copies the Marketo Sales Insight fields (interesting moments,
// priority, urgency, relative score) from Marketo leads back onto the
// Dataverse leads and contacts msisync synced, on an interval, on one
// replica at a time.
package msi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/dataverse"
	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/marketo"
	"github.com/msisync/msisync/internal/marketo/marketotype"
	"github.com/msisync/msisync/internal/store"
)

// ChunkSize is the number of persons read per Marketo call: the limit of
// filterValues on Get Leads by Filter Type.
const ChunkSize = 300

// Defaults.
const (
	DefaultInterval  = 15 * time.Minute
	DefaultLeaseName = "msi-writeback"
	DefaultBatchSize = 100
	DefaultSweep     = 24 * time.Hour
	// FilterType is the Marketo filter that finds a lead by Dataverse GUID.
	FilterType = "externalPersonId"
)

// LeadQuerier reads Marketo records by filter type (*marketo.Client). The
// write-back makes one call per 300 persons; the client sends 300 GUIDs as
// POST …?_method=GET since they pass the 8 KB URL limit.
type LeadQuerier interface {
	Query(ctx context.Context, obj marketotype.Object, filterType string, values []string, fields []string) ([]marketotype.Record, error)
}

// PersonWriter updates Dataverse rows, never creating one (*dataverse.Client:
// PATCH with If-Match: *, and $batch of ≤ 1000 operations; it retries 429s
// honouring Retry-After). A missing row is an error wrapping
// dataverse.ErrNotFound.
type PersonWriter interface {
	Update(ctx context.Context, logicalName, id string, fields map[string]any) error
	UpdateBatch(ctx context.Context, ops []dataverse.BatchOp) ([]dataverse.BatchResult, error)
}

// Store is what the write-back needs of msisync's state (store.Store has
// it): the synced persons, the values last written to Dataverse, the lease
// one replica holds, and the paging token and sweep cursor kept in meta.
type Store interface {
	GetLinks(ctx context.Context, kind string, externalIDs []string) (map[string]store.Link, error)
	ListLinks(ctx context.Context, kind string, after string, limit int) ([]store.Link, error)
	CountLinks(ctx context.Context, kind string) (int, error)
	GetMSIValues(ctx context.Context, personIDs []string) (map[string]map[string]string, error)
	PutMSIValues(ctx context.Context, values map[string]map[string]string) error
	AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error)
	ReleaseLease(ctx context.Context, name, holder string) error
	GetMeta(ctx context.Context, key string) (string, bool, error)
	PutMeta(ctx context.Context, key, value string) error
}

// Config configures a Writer.
type Config struct {
	Store     Store
	Marketo   LeadQuerier
	Dataverse PersonWriter
	// Fields to copy; DefaultFields("relativeScore") when empty.
	Fields []FieldMap
	// Interval between cycles in Run (DefaultInterval when 0).
	Interval time.Duration
	// Holder identifies this replica in the lease (required).
	Holder string
	// LeaseName is the store lease only one replica holds (DefaultLeaseName).
	LeaseName string
	// LeaseTTL is how long a taken lease lasts without renewal (2×Interval
	// when 0): a crashed holder is replaced after at most this long.
	LeaseTTL time.Duration
	// BatchSize is the number of person updates per Dataverse $batch
	// (DefaultBatchSize; at most 1000).
	BatchSize int
	Clock     clock.Clock
	// After returns a channel that fires after d; time.After when nil.
	// Tests pass a function whose channels they fire.
	After      func(d time.Duration) <-chan time.Time
	Logger     *slog.Logger
	Registerer prometheus.Registerer

	// Activities, when set, makes cycles incremental: only the persons
	// with new Interesting Moment or Change Score activities (and Data
	// Value Changes of the MSI fields) are read, plus a slice of a rolling
	// full sweep. Without it every cycle reads every synced person.
	Activities ActivityReader
	// Sweep is how long the rolling sweep takes to read every synced person
	// once (DefaultSweep when 0): urgency and priority move with time alone.
	Sweep time.Duration
	// SkipLeadChanges leaves out the lead-changes feed (for instances known
	// not to log Data Value Changes of computed MSI fields; UNCONFIRMED).
	SkipLeadChanges bool
}

// Writer runs the MSI write-back.
type Writer struct {
	cfg     Config
	fields  []string // Marketo fields requested (MSI fields + externalPersonId)
	metrics *metrics
	mu      sync.Mutex // one cycle at a time
}

// New checks the configuration and registers the metrics.
func New(cfg Config) (*Writer, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("msi: config: Store is required")
	case cfg.Marketo == nil:
		return nil, errors.New("msi: config: Marketo is required")
	case cfg.Dataverse == nil:
		return nil, errors.New("msi: config: Dataverse is required")
	case cfg.Holder == "":
		return nil, errors.New("msi: config: Holder (replica id for the lease) is required")
	case cfg.Interval < 0:
		return nil, fmt.Errorf("msi: config: Interval %s is negative", cfg.Interval)
	case cfg.LeaseTTL < 0:
		return nil, fmt.Errorf("msi: config: LeaseTTL %s is negative", cfg.LeaseTTL)
	case cfg.BatchSize < 0 || cfg.BatchSize > 1000:
		return nil, fmt.Errorf("msi: config: BatchSize %d is outside 1..1000 (Dataverse $batch limit)", cfg.BatchSize)
	}
	if len(cfg.Fields) == 0 {
		cfg.Fields = DefaultFields("")
	}
	if err := validateFields(cfg.Fields); err != nil {
		return nil, fmt.Errorf("msi: config: %w", err)
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.LeaseName == "" {
		cfg.LeaseName = DefaultLeaseName
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = 2 * cfg.Interval
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.Sweep < 0 {
		return nil, fmt.Errorf("msi: config: Sweep %s is negative", cfg.Sweep)
	}
	if cfg.Sweep == 0 {
		cfg.Sweep = DefaultSweep
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.System{}
	}
	if cfg.After == nil {
		cfg.After = time.After
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("msi: register metrics: %w", err)
	}
	w := &Writer{cfg: cfg, metrics: m, fields: []string{FilterType}}
	for _, f := range cfg.Fields {
		w.fields = append(w.fields, f.Marketo)
	}
	return w, nil
}

// Report describes one cycle.
type Report struct {
	// Skipped is set when another replica holds the lease; nothing was done.
	Skipped    bool
	SkipReason string
	// LeaseLost is set when the lease could not be renewed mid-cycle and the
	// cycle stopped early.
	LeaseLost bool

	Persons      int // synced persons examined
	MarketoCalls int // Get Leads by Filter Type calls
	NotInMarketo int // synced persons with no Marketo lead carrying their GUID
	Duplicates   int // persons with more than one Marketo lead (the first is used)
	Unchanged    int
	Changed      int // persons whose MSI values differ from the last written
	Written      int // persons written to Dataverse
	Missing      int // persons whose Dataverse row is gone (404); not retried until their values change
	Failed       int // persons whose write failed; retried next cycle
	Invalid      int // links that cannot be written (bad GUID or entity)

	DataverseRequests int // Dataverse write requests ($batch or single PATCH)
	Duration          time.Duration

	// Incremental cycles (Config.Activities set):
	Mode         string // "incremental", or "full" (first cycle, --full, or a lost paging token)
	Activities   int    // activities read from the feeds
	ChangedLeads int    // distinct Marketo leads they name
	LeadReads    int    // Get Leads by id calls (300 ids each)
	Swept        int    // persons read by the rolling sweep
	TokenLost    bool   // a paging token was missing or rejected
}

func (r Report) String() string {
	if r.Skipped {
		return "skipped: " + r.SkipReason
	}
	s := fmt.Sprintf("persons=%d marketoCalls=%d notInMarketo=%d changed=%d written=%d missing=%d failed=%d invalid=%d dataverseRequests=%d duration=%s",
		r.Persons, r.MarketoCalls, r.NotInMarketo, r.Changed, r.Written, r.Missing, r.Failed, r.Invalid, r.DataverseRequests, r.Duration)
	if r.Mode != "" {
		s += fmt.Sprintf(" mode=%s activities=%d changedLeads=%d leadReads=%d swept=%d tokenLost=%t",
			r.Mode, r.Activities, r.ChangedLeads, r.LeadReads, r.Swept, r.TokenLost)
	}
	return s
}

type change struct {
	link   store.Link
	id     string
	values map[string]string // full canonical values (stored on success)
	update dataverse.BatchOp // only the changed columns
}

// RunOnce runs one cycle (`msisync msi sync --once`) and then releases the
// lease, so that the loop of a running serve or worker need not wait for it
// to expire. It returns a Report with Skipped set, and no error, when
// another replica holds the lease.
func (w *Writer) RunOnce(ctx context.Context) (Report, error) {
	return w.runOnce(ctx, false)
}

// RunOnceFull is RunOnce reading every synced person (`msi sync --once
// --full`); with Config.Activities it also restarts the rolling sweep.
func (w *Writer) RunOnceFull(ctx context.Context) (Report, error) {
	return w.runOnce(ctx, true)
}

func (w *Writer) runOnce(ctx context.Context, full bool) (Report, error) {
	rep, err := w.runCycle(ctx, full)
	if !rep.Skipped {
		if rerr := w.Release(context.WithoutCancel(ctx)); rerr != nil {
			w.cfg.Logger.Warn("msi: release lease after a single cycle", "err", rerr)
		}
	}
	return rep, err
}

// runCycle runs one cycle and keeps the lease (Run renews it every tick).
func (w *Writer) runCycle(ctx context.Context, full bool) (Report, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	start := w.cfg.Clock.Now()
	// Charged to the background share of the Marketo budget.
	ctx = marketo.WithPurpose(ctx, marketo.PurposeMSI)
	rep, err := w.cycle(ctx, full)
	rep.Duration = w.cfg.Clock.Now().Sub(start)
	w.metrics.observe(rep, err)
	return rep, err
}

func (w *Writer) cycle(ctx context.Context, full bool) (Report, error) {
	var rep Report
	ok, err := w.cfg.Store.AcquireLease(ctx, w.cfg.LeaseName, w.cfg.Holder, w.cfg.LeaseTTL)
	if err != nil {
		return rep, fmt.Errorf("msi: acquire lease %q: %w", w.cfg.LeaseName, err)
	}
	if !ok {
		rep.Skipped = true
		rep.SkipReason = fmt.Sprintf("lease %q is held by another replica", w.cfg.LeaseName)
		return rep, nil
	}
	leaseAt := w.cfg.Clock.Now()
	if w.cfg.Activities != nil {
		err := w.incremental(ctx, &rep, full, leaseAt)
		return rep, err
	}

	var pending []change
	after := ""
	for {
		links, err := w.cfg.Store.ListLinks(ctx, store.KindPerson, after, ChunkSize)
		if err != nil {
			return rep, fmt.Errorf("msi: list synced persons after %q: %w", after, err)
		}
		if len(links) == 0 {
			break
		}
		after = links[len(links)-1].ExternalID
		changes, err := w.compare(ctx, links, &rep)
		if err != nil {
			// Still write what earlier chunks found (e.g. when the daily
			// Marketo quota runs out mid-cycle).
			if len(pending) > 0 && ctx.Err() == nil {
				if werr := w.write(ctx, pending, &rep); werr != nil {
					return rep, errors.Join(err, werr)
				}
			}
			return rep, err
		}
		pending = append(pending, changes...)
		for len(pending) >= w.cfg.BatchSize {
			if err := w.write(ctx, pending[:w.cfg.BatchSize], &rep); err != nil {
				return rep, err
			}
			pending = pending[w.cfg.BatchSize:]
		}
		if len(links) < ChunkSize {
			break
		}
		// Renew the lease in long cycles so that another replica does not
		// start a second copy.
		if now := w.cfg.Clock.Now(); now.Sub(leaseAt) > w.cfg.LeaseTTL/3 {
			ok, err := w.cfg.Store.AcquireLease(ctx, w.cfg.LeaseName, w.cfg.Holder, w.cfg.LeaseTTL)
			if err != nil {
				return rep, fmt.Errorf("msi: renew lease %q: %w", w.cfg.LeaseName, err)
			}
			if !ok {
				rep.LeaseLost = true
				w.cfg.Logger.Warn("msi: lease lost mid-cycle; stopping", "lease", w.cfg.LeaseName, "holder", w.cfg.Holder)
				return rep, nil
			}
			leaseAt = now
		}
	}
	if len(pending) > 0 {
		if err := w.write(ctx, pending, &rep); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// compare reads one chunk of persons from Marketo and returns those whose
// values differ from the ones last written.
func (w *Writer) compare(ctx context.Context, links []store.Link, rep *Report) ([]change, error) {
	rep.Persons += len(links)
	ids := make([]string, 0, len(links))
	valid := links[:0:0]
	for _, l := range links {
		id := event.NormalizeID(l.ExternalID)
		if !event.IsGUID(id) || (l.Entity != event.EntityLead && l.Entity != event.EntityContact) {
			rep.Invalid++
			w.cfg.Logger.Warn("msi: skipping synced person with a bad id or entity", "id", l.ExternalID, "entity", l.Entity)
			continue
		}
		ids = append(ids, id)
		valid = append(valid, l)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	rep.MarketoCalls++
	w.metrics.marketoCalls.Inc()
	recs, err := w.cfg.Marketo.Query(ctx, marketotype.Leads, FilterType, ids, w.fields)
	if err != nil {
		return nil, fmt.Errorf("msi: query marketo leads by %s (%d persons from %s): %w", FilterType, len(ids), ids[0], err)
	}
	return w.diff(ctx, valid, ids, recs, rep)
}

// diff compares Marketo's records of persons (valid links, ids their
// normalised GUIDs) with the values last written, and returns the changes.
func (w *Writer) diff(ctx context.Context, valid []store.Link, ids []string, recs []marketotype.Record, rep *Report) ([]change, error) {
	byID := make(map[string]map[string]any, len(recs))
	for _, r := range recs {
		id := event.NormalizeID(canonical(r[FilterType], TypeText))
		if id == "" {
			continue
		}
		if _, dup := byID[id]; dup {
			rep.Duplicates++
			w.cfg.Logger.Warn("msi: several Marketo leads carry one externalPersonId; using the first", "externalPersonId", id)
			continue
		}
		byID[id] = r
	}
	prev, err := w.cfg.Store.GetMSIValues(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("msi: read last written values (%d persons from %s): %w", len(ids), ids[0], err)
	}
	var out []change
	for i, l := range valid {
		id := ids[i]
		rec, ok := byID[id]
		if !ok {
			rep.NotInMarketo++
			continue
		}
		values := make(map[string]string, len(w.cfg.Fields))
		fields := map[string]any{}
		old := prev[id]
		for _, f := range w.cfg.Fields {
			v := canonical(rec[f.Marketo], f.Type)
			if v != "" {
				values[f.Dataverse] = v
			}
			// A column never written counts as null, so that persons without
			// MSI activity cost nothing.
			if v != old[f.Dataverse] {
				fields[f.Dataverse] = dataverseValue(v, f.Type)
			}
		}
		if len(fields) == 0 {
			rep.Unchanged++
			continue
		}
		rep.Changed++
		out = append(out, change{link: l, id: id, values: values,
			update: dataverse.BatchOp{LogicalName: l.Entity, ID: id, Fields: fields}})
	}
	return out, nil
}

// write sends one batch of changes (a single PATCH for one) and records
// what was written.
func (w *Writer) write(ctx context.Context, changes []change, rep *Report) error {
	ops := make([]dataverse.BatchOp, len(changes))
	for i, c := range changes {
		ops[i] = c.update
	}
	rep.DataverseRequests++
	var results []dataverse.BatchResult
	var err error
	if len(ops) == 1 {
		err = w.cfg.Dataverse.Update(ctx, ops[0].LogicalName, ops[0].ID, ops[0].Fields)
		results = []dataverse.BatchResult{{Status: 204, Err: err}}
		if err != nil {
			results[0].Status = 0
			if dataverse.IsNotFound(err) {
				results[0].Status, err = 404, nil
			}
		}
	} else {
		// On a failed request the client still returns one result per op
		// (those not executed carry the request's error).
		results, err = w.cfg.Dataverse.UpdateBatch(ctx, ops)
	}
	if ctx.Err() != nil && err != nil {
		return fmt.Errorf("msi: write %d persons to dataverse: %w", len(ops), err)
	}
	if len(results) != len(ops) {
		// The whole request failed (after the client's retries): try again
		// next cycle, since nothing was stored as written.
		rep.Failed += len(ops)
		w.metrics.failed.Add(float64(len(ops)))
		w.cfg.Logger.Error("msi: write persons to dataverse failed", "persons", len(ops), "first", ops[0].LogicalName+"/"+ops[0].ID, "err", err)
		return nil
	}
	done := make(map[string]map[string]string, len(changes))
	for i, r := range results {
		c := changes[i]
		switch {
		case r.Err == nil && r.Status < 300:
			rep.Written++
			w.metrics.written.Inc()
			done[c.id] = c.values
		case r.Status == 404 || dataverse.IsNotFound(r.Err):
			// Remember the values anyway: the row is gone, so retrying every
			// cycle would only repeat the 404. A later change tries again once.
			rep.Missing++
			w.metrics.missing.Inc()
			done[c.id] = c.values
			w.cfg.Logger.Warn("msi: person not found in Dataverse; not retried until its MSI values change", "entity", c.link.Entity, "id", c.id)
		default:
			rep.Failed++
			w.metrics.failed.Inc()
			w.cfg.Logger.Error("msi: write person to dataverse failed", "entity", c.link.Entity, "id", c.id, "status", r.Status, "err", r.Err)
		}
	}
	if len(done) > 0 {
		if err := w.cfg.Store.PutMSIValues(ctx, done); err != nil {
			return fmt.Errorf("msi: store written values of %d persons: %w", len(done), err)
		}
	}
	return nil
}

// Run runs a cycle now and then every Interval until ctx ends; then it
// releases the lease so another replica can take over at once. Cycle errors
// are logged, not returned: the next tick tries again.
func (w *Writer) Run(ctx context.Context) error {
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := w.Release(rctx); err != nil {
			w.cfg.Logger.Warn("msi: release lease", "err", err)
		}
	}()
	for {
		rep, err := w.runCycle(ctx, false)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			w.cfg.Logger.Error("msi: write-back cycle failed", "err", err, "report", rep.String())
		case rep.Skipped:
			w.cfg.Logger.Debug("msi: write-back cycle skipped", "reason", rep.SkipReason)
		default:
			w.cfg.Logger.Info("msi: write-back cycle done", "persons", rep.Persons, "marketoCalls", rep.MarketoCalls,
				"changed", rep.Changed, "written", rep.Written, "missing", rep.Missing, "failed", rep.Failed, "duration", rep.Duration)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-w.cfg.After(w.cfg.Interval):
		}
	}
}

// Release gives up the lease if this writer holds it.
func (w *Writer) Release(ctx context.Context) error {
	if err := w.cfg.Store.ReleaseLease(ctx, w.cfg.LeaseName, w.cfg.Holder); err != nil {
		return fmt.Errorf("msi: release lease %q: %w", w.cfg.LeaseName, err)
	}
	return nil
}

// MarketoFields lists the Marketo lead fields each query requests
// (externalPersonId first), e.g. for marketo.(*Client).CheckInstance.
func (w *Writer) MarketoFields() []string { return append([]string(nil), w.fields...) }

// Columns lists the Dataverse columns the write-back sets, so that webhook
// registration can leave them out of filtering attributes and the syncer can
// ignore updates that touch only them.
func (w *Writer) Columns() []string { return Columns(w.cfg.Fields) }

// Columns lists the Dataverse columns of fields (lower case).
func Columns(fields []FieldMap) []string {
	out := make([]string, len(fields))
	for i, f := range fields {
		out[i] = strings.ToLower(f.Dataverse)
	}
	return out
}
