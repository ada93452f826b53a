// Package reconcile closes the gaps webhooks leave: it reads what changed in
// Dataverse since the last cycle (change tracking delta links, or a
// modifiedon-filtered read for tables without change tracking), compares
// every changed row with the version msisync last applied, and enqueues only
// what msisync has not seen, as events with source "reconcile", into the
// same queue and syncer as webhooks.
//
// Why: Dataverse retries an asynchronous webhook only for a while and then
// fails its system job; a step can be disabled; msisync can be down longer
// than the retries last. Polling with change tracking costs one small
// request per table when nothing changed.
package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/msisync/msisync/internal/backfill"
	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/dataverse"
	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/queue"
	"github.com/msisync/msisync/internal/store"
)

// Store keys and defaults.
const (
	// StatePrefix + entity is the Meta key of a table's state (TableState).
	StatePrefix = "reconcile/table/"
	// LastReportKey is the Meta key of the last cycle's Report.
	LastReportKey = "reconcile/last"
	// LeaseName is the store lease that keeps reconcile on one replica.
	LeaseName = "reconcile"

	DefaultInterval  = 15 * time.Minute
	DefaultPageSize  = dataverse.MaxPageSize
	DefaultSendBatch = 500
	// DefaultOverlap is how far before the last successful cycle a
	// modifiedon read starts: replica clock skew and rows committed late
	// within a second. Re-reading a row costs nothing: the store's version
	// shows it applied.
	DefaultOverlap = 5 * time.Minute
)

// tombstone is the version the syncer stores for a deleted record.
const tombstone = int64(math.MaxInt64)

// Lister reads Dataverse tables page by page (*dataverse.Client).
type Lister interface {
	ListPage(ctx context.Context, logicalName string, opts dataverse.ListOptions, nextLink string) (dataverse.Page, error)
}

// TrackingChecker may be implemented by the Lister (*dataverse.Client does):
// tables without change tracking are named at start-up and read by modifiedon.
type TrackingChecker interface {
	ChangeTrackingEnabled(ctx context.Context, logicalName string) (bool, error)
}

// Store is what reconcile needs from the store (store.Store satisfies it).
type Store interface {
	GetVersions(ctx context.Context, keys []string) (map[string]int64, error)
	GetMeta(ctx context.Context, key string) (string, bool, error)
	PutMeta(ctx context.Context, key, value string) error
	AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error)
	ReleaseLease(ctx context.Context, name, holder string) error
}

// Config configures a Reconciler.
type Config struct {
	Dataverse Lister
	Sender    queue.Sender
	Store     Store
	// Entities to reconcile (all synced entities when empty), always in
	// dependency order.
	Entities []string
	// Columns gives an entity's mapped columns (the syncer's mapping); the
	// id and modifiedon are always added. nil selects all columns.
	Columns func(entity string) []string
	// Interval between cycles in Run (DefaultInterval).
	Interval time.Duration
	// Holder names this replica for the lease; LeaseTTL (default 2 ×
	// Interval, at least 10 min) bounds how long a crashed holder blocks others.
	Holder   string
	LeaseTTL time.Duration
	// PageSize is odata.maxpagesize (DefaultPageSize).
	PageSize int
	// SendBatch is the number of messages per Send (DefaultSendBatch).
	SendBatch int
	// MaxMessageBytes, when > 0, reduces larger events to a reference the
	// worker re-reads; taken from the Sender when it has MaxMessageBytes().
	MaxMessageBytes int
	// AppUserID is msisync's own Dataverse application user: rows it modified
	// last (the MSI write-back, which fires no webhook) are re-sent but not
	// counted as changes webhooks missed.
	AppUserID string
	// Overlap: see DefaultOverlap.
	Overlap        time.Duration
	OrgID, OrgName string
	Clock          clock.Clock
	Logger         *slog.Logger
	Registerer     prometheus.Registerer
	// After waits between cycles (default: the clock's timer); tests pass
	// a channel they control.
	After func(d time.Duration) <-chan time.Time
}

// Methods a table was read with in a cycle.
const (
	MethodDelta      = "delta"      // followed the stored delta link
	MethodBaseline   = "baseline"   // first cycle: read everything to take a token
	MethodRecovery   = "recovery"   // token refused: modifiedon read, then a new token
	MethodModifiedOn = "modifiedon" // no change tracking: modifiedon read
)

// TableReport is what one cycle found in one table.
type TableReport struct {
	Entity   string `json:"entity"`
	Method   string `json:"method"`
	Requests int    `json:"requests"` // Dataverse list requests
	Rows     int    `json:"rows"`     // changed rows read
	Deletes  int    `json:"deletes"`  // deletions read
	// Applied rows and deletions the store shows msisync already applied.
	Applied int `json:"applied"`
	// Missed: rows msisync had, at an older version (a lost update).
	Missed int `json:"missed"`
	// New: rows msisync never saw (a lost create).
	New int `json:"new"`
	// Deleted: deletions of records msisync had and still holds (a lost delete).
	Deleted int `json:"deleted"`
	// Baseline rows were read only to take the first token, not enqueued.
	Baseline int `json:"baseline"`
	// Unsure rows: the store has the record at the same modifiedon second
	// and no RowVersion to tell; enqueued (a repeat write costs less than a
	// lost change), not counted as found.
	Unsure int `json:"unsure"`
	// Own rows were last modified by msisync's application user (the MSI
	// write-back): re-sent, not counted as found.
	Own int `json:"own"`
	// Ignored rows are ones the syncer does not sync (the reciprocal row of
	// a connection).
	Ignored int `json:"ignored"`
	// Unknown deletions are of records msisync never had: nothing to do.
	Unknown  int    `json:"unknown"`
	Invalid  int    `json:"invalid"`
	Enqueued int    `json:"enqueued"`
	Reason   string `json:"reason,omitempty"` // why a token was (re)taken
	Error    string `json:"error,omitempty"`
	// DurationMS is the table's wall time in milliseconds.
	DurationMS int64 `json:"durationMs"`
}

// Found is the number of changes webhooks had not delivered.
func (t TableReport) Found() int { return t.Missed + t.New + t.Deleted }

// Report is one cycle.
type Report struct {
	Started  time.Time     `json:"started"`
	Duration time.Duration `json:"duration"`
	Tables   []TableReport `json:"tables"`
	Requests int           `json:"requests"`
	Enqueued int           `json:"enqueued"`
	Found    int           `json:"found"`
	// Untracked tables are read by modifiedon (change tracking off).
	Untracked []string `json:"untracked,omitempty"`
	Skipped   bool     `json:"skipped,omitempty"` // another replica holds the lease
	Error     string   `json:"error,omitempty"`
}

func (r Report) String() string {
	if r.Skipped {
		return "reconcile: skipped (another replica holds the lease)"
	}
	var b strings.Builder
	for _, t := range r.Tables {
		fmt.Fprintf(&b, "%-12s %-10s %3d requests, %d rows, %d deletes: %d applied, %d missed, %d new, %d deleted, %d unsure, %d own, %d baseline → %d enqueued",
			t.Entity, t.Method, t.Requests, t.Rows, t.Deletes, t.Applied, t.Missed, t.New, t.Deleted, t.Unsure, t.Own, t.Baseline, t.Enqueued)
		if t.Reason != "" {
			fmt.Fprintf(&b, " (%s)", t.Reason)
		}
		if t.Error != "" {
			fmt.Fprintf(&b, " ERROR %s", t.Error)
		}
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "reconcile: %d requests, %d changes webhooks missed, %d events enqueued in %s",
		r.Requests, r.Found, r.Enqueued, r.Duration.Round(time.Millisecond))
	return b.String()
}

// TableState is what the store keeps per table (JSON under StatePrefix+entity).
type TableState struct {
	DeltaLink string `json:"deltaLink,omitempty"`
	// Select is the column list the delta link was taken with: a delta
	// link returns the columns of its first query, so a changed mapping
	// takes a new token (the modifiedon read covers the gap).
	Select string `json:"select,omitempty"`
	// LastSuccess is when the last successful cycle of the table started:
	// a modifiedon read (no tracking, or a refused token) starts there.
	LastSuccess time.Time `json:"lastSuccess,omitzero"`
}

// Reconciler runs reconcile cycles.
type Reconciler struct {
	cfg      Config
	entities []string
	metrics  *metrics
	// untracked: tables without change tracking, checked once per process.
	untracked map[string]bool
	checked   bool
	// sent: event ids sent for the current table (a recovery reads a row
	// twice: by modifiedon and for the new token).
	sent map[string]bool
}

// New checks the configuration.
func New(cfg Config) (*Reconciler, error) {
	entities, err := backfill.Entities(cfg.Entities)
	if err != nil {
		return nil, fmt.Errorf("reconcile: %w", err)
	}
	switch {
	case cfg.Dataverse == nil:
		return nil, errors.New("reconcile: config: Dataverse is required")
	case cfg.Sender == nil:
		return nil, errors.New("reconcile: config: Sender is required")
	case cfg.Store == nil:
		return nil, errors.New("reconcile: config: Store is required")
	case cfg.PageSize < 0 || cfg.PageSize > dataverse.MaxPageSize:
		return nil, fmt.Errorf("reconcile: page size %d is outside 1..%d", cfg.PageSize, dataverse.MaxPageSize)
	case cfg.Interval < 0:
		return nil, fmt.Errorf("reconcile: interval %s is negative", cfg.Interval)
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = max(2*cfg.Interval, 10*time.Minute)
	}
	if cfg.PageSize == 0 {
		cfg.PageSize = DefaultPageSize
	}
	if cfg.SendBatch <= 0 {
		cfg.SendBatch = DefaultSendBatch
	}
	if q, ok := cfg.Sender.(interface{ MaxMessageBytes() int }); ok && cfg.MaxMessageBytes == 0 {
		cfg.MaxMessageBytes = q.MaxMessageBytes()
	}
	if cfg.Overlap == 0 {
		cfg.Overlap = DefaultOverlap
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.System{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.AppUserID != "" {
		if !event.IsGUID(cfg.AppUserID) {
			return nil, fmt.Errorf("reconcile: AppUserID %q is not a GUID", cfg.AppUserID)
		}
		cfg.AppUserID = event.NormalizeID(cfg.AppUserID)
	}
	if cfg.Holder == "" {
		cfg.Holder = "reconcile"
	}
	if cfg.After == nil {
		cfg.After = func(d time.Duration) <-chan time.Time { return time.After(d) }
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("reconcile: metrics: %w", err)
	}
	return &Reconciler{cfg: cfg, entities: entities, metrics: m, untracked: map[string]bool{}}, nil
}

// CheckTables asks Dataverse which tables have change tracking and logs,
// once, the ones that do not, with how to enable it. It returns them.
func (r *Reconciler) CheckTables(ctx context.Context) ([]string, error) {
	tc, ok := r.cfg.Dataverse.(TrackingChecker)
	if !ok {
		r.checked = true
		return nil, nil
	}
	var out []string
	for _, e := range r.entities {
		on, err := tc.ChangeTrackingEnabled(ctx, e)
		if err != nil {
			return nil, fmt.Errorf("reconcile: %w", err)
		}
		r.untracked[e] = !on
		if !on {
			out = append(out, e)
		}
	}
	r.checked = true
	if len(out) > 0 {
		r.cfg.Logger.Warn("reconcile: change tracking is off on these tables, so they are reconciled by a slower modifiedon read; "+
			"enable it in Power Apps (Tables → the table → Properties → Advanced options → Track changes) or set EntityMetadata.ChangeTrackingEnabled",
			"tables", strings.Join(out, ","))
	}
	return out, nil
}

// RunOnce runs one cycle and releases the lease.
func (r *Reconciler) RunOnce(ctx context.Context) (Report, error) {
	rep, err := r.Cycle(ctx)
	if !rep.Skipped {
		if rerr := r.cfg.Store.ReleaseLease(context.WithoutCancel(ctx), LeaseName, r.cfg.Holder); rerr != nil {
			r.cfg.Logger.Warn("reconcile: release lease", "err", rerr)
		}
	}
	return rep, err
}

// Run runs a cycle every Interval until ctx ends, on the replica that holds
// the lease.
func (r *Reconciler) Run(ctx context.Context) error {
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := r.cfg.Store.ReleaseLease(rctx, LeaseName, r.cfg.Holder); err != nil {
			r.cfg.Logger.Warn("reconcile: release lease", "err", err)
		}
	}()
	for {
		rep, err := r.Cycle(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			r.cfg.Logger.Error("reconcile: cycle failed", "err", err)
		case rep.Skipped:
			r.cfg.Logger.Debug("reconcile: cycle skipped: another replica holds the lease")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-r.cfg.After(r.cfg.Interval):
		}
	}
}

// Cycle reconciles every table once, under the lease. A failing table is
// reported and the others still run; its state is kept, so the next cycle
// reads its changes again.
func (r *Reconciler) Cycle(ctx context.Context) (rep Report, err error) {
	rep.Started = r.cfg.Clock.Now().UTC()
	ok, err := r.cfg.Store.AcquireLease(ctx, LeaseName, r.cfg.Holder, r.cfg.LeaseTTL)
	if err != nil {
		r.metrics.cycles.WithLabelValues("error").Inc()
		return rep, fmt.Errorf("reconcile: acquire lease %q: %w", LeaseName, err)
	}
	if !ok {
		rep.Skipped = true
		r.metrics.cycles.WithLabelValues("skipped").Inc()
		return rep, nil
	}
	if !r.checked {
		if _, err := r.CheckTables(ctx); err != nil {
			// Not fatal: a table whose read returns no delta link is still
			// found out below.
			r.cfg.Logger.Warn("reconcile: cannot check which tables have change tracking", "err", err)
			r.checked = true
		}
	}
	var errs []error
	for _, entity := range r.entities {
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
			break
		}
		start := r.cfg.Clock.Now()
		tr, err := r.table(ctx, entity)
		tr.DurationMS = r.cfg.Clock.Now().Sub(start).Milliseconds()
		if err != nil {
			tr.Error = err.Error()
			errs = append(errs, err)
		}
		r.metrics.observeTable(tr)
		if tr.Found() > 0 {
			r.cfg.Logger.Warn("reconcile: found changes webhooks did not deliver", "entity", entity, "missed", tr.Missed,
				"new", tr.New, "deleted", tr.Deleted, "method", tr.Method)
		}
		r.cfg.Logger.Info("reconcile: table done", "entity", entity, "method", tr.Method, "requests", tr.Requests,
			"rows", tr.Rows, "deletes", tr.Deletes, "applied", tr.Applied, "found", tr.Found(), "enqueued", tr.Enqueued)
		rep.Tables = append(rep.Tables, tr)
		rep.Requests += tr.Requests
		rep.Enqueued += tr.Enqueued
		rep.Found += tr.Found()
	}
	for _, e := range r.entities {
		if r.untracked[e] {
			rep.Untracked = append(rep.Untracked, e)
		}
	}
	rep.Duration = r.cfg.Clock.Now().Sub(rep.Started)
	err = errors.Join(errs...)
	if err != nil {
		rep.Error = err.Error()
		r.metrics.cycles.WithLabelValues("error").Inc()
	} else {
		r.metrics.cycles.WithLabelValues("ok").Inc()
		r.metrics.lastSuccess.Set(float64(r.cfg.Clock.Now().Unix()))
	}
	r.metrics.duration.Observe(rep.Duration.Seconds())
	if b, merr := json.Marshal(rep); merr == nil {
		if perr := r.cfg.Store.PutMeta(context.WithoutCancel(ctx), LastReportKey, string(b)); perr != nil {
			r.cfg.Logger.Warn("reconcile: save the cycle report", "err", perr)
		}
	}
	return rep, err
}

// LastReport returns the last cycle's report, or nil when none ran.
func LastReport(ctx context.Context, st interface {
	GetMeta(ctx context.Context, key string) (string, bool, error)
}) (*Report, error) {
	raw, ok, err := st.GetMeta(ctx, LastReportKey)
	if err != nil {
		return nil, fmt.Errorf("reconcile: read last report: %w", err)
	}
	if !ok || raw == "" {
		return nil, nil
	}
	var rep Report
	if err := json.Unmarshal([]byte(raw), &rep); err != nil {
		return nil, fmt.Errorf("reconcile: read last report: %w", err)
	}
	return &rep, nil
}

// table reconciles one table and saves its state when it succeeded.
func (r *Reconciler) table(ctx context.Context, entity string) (TableReport, error) {
	tr := TableReport{Entity: entity}
	r.sent = map[string]bool{}
	key := StatePrefix + entity
	st, err := r.loadState(ctx, key)
	if err != nil {
		return tr, err
	}
	cycleStart := r.cfg.Clock.Now().UTC()
	// since bounds a modifiedon read: the last successful cycle, less the overlap.
	since := time.Time{}
	if !st.LastSuccess.IsZero() {
		since = st.LastSuccess.Add(-r.cfg.Overlap)
	}
	selected := strings.Join(r.listOptions(entity).Select, ",")
	next := TableState{LastSuccess: cycleStart, Select: selected}
	if st.DeltaLink != "" && st.Select != selected {
		tr.Reason = "the mapped columns changed: new token"
		st.DeltaLink = ""
	}

	switch {
	case r.untracked[entity]:
		tr.Method = MethodModifiedOn
		if since.IsZero() {
			tr.Reason = "first cycle: changes are read from now on"
			break
		}
		if err := r.modifiedSince(ctx, entity, since, &tr); err != nil {
			return tr, err
		}
	case st.DeltaLink != "":
		tr.Method = MethodDelta
		link, err := r.delta(ctx, entity, st.DeltaLink, &tr)
		if err == nil {
			next.DeltaLink = link
			break
		}
		if !dataverse.IsDeltaTokenRejected(err) {
			return tr, err
		}
		tr.Method, tr.Reason = MethodRecovery, "delta token refused: "+err.Error()
		r.metrics.tokenResets.WithLabelValues(entity).Inc()
		r.cfg.Logger.Warn("reconcile: delta token refused; reading rows modified since the last successful cycle, then taking a new token",
			"entity", entity, "since", since, "err", err)
		fallthrough
	default:
		if tr.Method == "" {
			tr.Method = MethodBaseline
			if !since.IsZero() {
				// State without a token (tracking enabled since the last cycle).
				tr.Method = MethodRecovery
			}
		}
		if !since.IsZero() {
			if err := r.modifiedSince(ctx, entity, since, &tr); err != nil {
				return tr, err
			}
		}
		link, err := r.baseline(ctx, entity, since, &tr)
		if err != nil {
			return tr, err
		}
		if link == "" {
			// The read came back without a delta link: change tracking is
			// off after all. Read by modifiedon from now on.
			r.untracked[entity] = true
			tr.Reason = "no delta link: change tracking is off; reconciled by modifiedon"
			r.cfg.Logger.Warn("reconcile: change tracking is off on a table; reconciling it by modifiedon "+
				"(enable Track changes on the table in Power Apps)", "entity", entity)
		}
		next.DeltaLink = link
	}
	return tr, r.saveState(ctx, key, next)
}

// delta follows a delta link to its end and returns the next one.
func (r *Reconciler) delta(ctx context.Context, entity, link string, tr *TableReport) (string, error) {
	opts := r.listOptions(entity)
	opts.TrackChanges = true
	for next := link; ; {
		tr.Requests++
		p, err := r.cfg.Dataverse.ListPage(ctx, entity, opts, next)
		if err != nil {
			return "", err
		}
		if err := r.consider(ctx, entity, p, false, time.Time{}, tr); err != nil {
			return "", err
		}
		if p.NextLink == "" {
			if p.DeltaLink == "" {
				return "", fmt.Errorf("reconcile: %s: the delta answer has neither a next nor a delta link", entity)
			}
			return p.DeltaLink, nil
		}
		next = p.NextLink
	}
}

// baseline reads the whole table with change tracking to take a token.
// Rows are not enqueued (the backfill or the webhooks brought them), except
// rows the store has at an older version, and, when since is set (a
// recovery), rows changed since then.
func (r *Reconciler) baseline(ctx context.Context, entity string, since time.Time, tr *TableReport) (string, error) {
	opts := r.listOptions(entity)
	opts.TrackChanges = true
	for next := ""; ; {
		tr.Requests++
		p, err := r.cfg.Dataverse.ListPage(ctx, entity, opts, next)
		if err != nil {
			return "", err
		}
		if err := r.consider(ctx, entity, p, true, since, tr); err != nil {
			return "", err
		}
		if p.NextLink == "" {
			return p.DeltaLink, nil
		}
		next = p.NextLink
	}
}

// modifiedSince reads the rows modified since a time (no token needed).
func (r *Reconciler) modifiedSince(ctx context.Context, entity string, since time.Time, tr *TableReport) error {
	opts := r.listOptions(entity)
	opts.Filter = "modifiedon ge " + since.UTC().Format(time.RFC3339)
	for next := ""; ; {
		tr.Requests++
		p, err := r.cfg.Dataverse.ListPage(ctx, entity, opts, next)
		if err != nil {
			return fmt.Errorf("reconcile: %s modified since %s: %w", entity, since.Format(time.RFC3339), err)
		}
		if err := r.consider(ctx, entity, p, false, time.Time{}, tr); err != nil {
			return err
		}
		if p.NextLink == "" {
			return nil
		}
		next = p.NextLink
	}
}

func (r *Reconciler) listOptions(entity string) dataverse.ListOptions {
	opts := dataverse.ListOptions{PageSize: r.cfg.PageSize}
	cols := []string{entity + "id", "modifiedon", "versionnumber"}
	if r.cfg.AppUserID != "" {
		cols = append(cols, "modifiedby")
	}
	if r.cfg.Columns != nil {
		for _, c := range r.cfg.Columns(entity) {
			c = strings.ToLower(strings.TrimSpace(c))
			if c != "" && !slices.Contains(cols, c) {
				cols = append(cols, c)
			}
		}
		opts.Select = cols
	}
	return opts
}

// selects reports whether the mapping itself selects a column.
func (r *Reconciler) selects(entity, column string) bool {
	return r.cfg.Columns != nil && slices.Contains(r.cfg.Columns(entity), column)
}

// consider compares a page with the store's versions and enqueues what
// msisync has not applied. In a baseline read, rows msisync never saw are
// enqueued only when modified at or after since (a recovery).
func (r *Reconciler) consider(ctx context.Context, entity string, p dataverse.Page, baseline bool, since time.Time, tr *TableReport) error {
	tr.Rows += len(p.Rows)
	tr.Deletes += len(p.Deleted)
	if len(p.Rows)+len(p.Deleted) == 0 {
		return nil
	}
	evs := make([]*event.Event, 0, len(p.Rows))
	keys := make([]string, 0, len(p.Rows)+len(p.Deleted))
	for i, row := range p.Rows {
		var f map[string]string
		if i < len(p.Formatted) {
			f = p.Formatted[i]
		}
		ev, err := backfill.RowEvent(entity, row, f, backfill.RowOptions{Source: event.SourceReconcile,
			OrgID: r.cfg.OrgID, OrgName: r.cfg.OrgName, Clock: r.cfg.Clock})
		if err != nil {
			tr.Invalid++
			r.cfg.Logger.Warn("reconcile: skipping row", "entity", entity, "err", err)
			continue
		}
		evs = append(evs, ev)
		keys = append(keys, entity+"/"+ev.RecordID, store.RowVersionKey(entity+"/"+ev.RecordID))
	}
	for _, id := range p.Deleted {
		keys = append(keys, entity+"/"+event.NormalizeID(id))
	}
	versions, err := r.cfg.Store.GetVersions(ctx, keys)
	if err != nil {
		return fmt.Errorf("reconcile: %s: get %d versions: %w", entity, len(keys), err)
	}
	var out []*event.Event
	for _, ev := range evs {
		if r.sent[sentKey(ev)] {
			continue // read a second time in this cycle (recovery)
		}
		stored, known := versions[entity+"/"+ev.RecordID]
		own := false
		if mb, ok := ev.Attributes["modifiedby"]; ok && !r.selects(entity, "modifiedby") {
			ref, _ := mb.Reference()
			own = r.cfg.AppUserID != "" && event.NormalizeID(ref.ID) == r.cfg.AppUserID
			delete(ev.Attributes, "modifiedby") // read only to tell; not a mapped column
		}
		state := stateApplied
		if known {
			state = compare(ev, stored, versions[store.RowVersionKey(entity+"/"+ev.RecordID)])
		}
		switch {
		case !known && ignored(ev):
			tr.Ignored++
		case known && state == stateApplied:
			tr.Applied++
		case known && state == stateUnsure && baseline:
			tr.Applied++ // a baseline takes what it cannot tell apart for applied
		case known && state == stateUnsure:
			tr.Unsure++
			out = append(out, supersede(ev, stored))
		case known && own:
			tr.Own++
			out = append(out, supersede(ev, stored))
		case known:
			tr.Missed++
			out = append(out, supersede(ev, stored))
		case baseline && (since.IsZero() || ev.Version > 0 && ev.OccurredAt.Before(since)):
			tr.Baseline++
		default:
			tr.New++
			out = append(out, ev)
		}
	}
	for _, id := range p.Deleted {
		id = event.NormalizeID(id)
		stored, known := versions[entity+"/"+id]
		switch {
		case !known:
			tr.Unknown++ // never synced (or created and deleted between two cycles)
		case stored == tombstone:
			tr.Applied++
		default:
			tr.Deleted++
			ev := &event.Event{Schema: event.SchemaVersion, Source: event.SourceReconcile, OrgID: r.cfg.OrgID, OrgName: r.cfg.OrgName,
				Entity: entity, RecordID: id, Message: event.MessageDelete, OccurredAt: r.cfg.Clock.Now().UTC()}
			ev.ID = ev.DeriveID()
			out = append(out, ev)
		}
	}
	return r.send(ctx, entity, out, tr)
}

const (
	stateApplied = iota
	stateMissed
	stateUnsure
)

// compare tells whether the store shows the row's current state applied:
// by RowVersion when both sides have one (exact); else by modifiedon, which
// Dataverse keeps in whole seconds while a webhook's version may carry the
// operation's milliseconds, so the same second is unsure.
func compare(ev *event.Event, stored, storedRowVersion int64) int {
	switch {
	case stored == tombstone:
		return stateApplied
	case storedRowVersion > 0 && ev.RowVersion > 0:
		if storedRowVersion >= ev.RowVersion {
			return stateApplied
		}
		return stateMissed
	case ev.Version <= 0:
		return stateUnsure
	}
	switch s, r := stored/1000, ev.Version/1000; {
	case s > r:
		return stateApplied
	case s < r:
		return stateMissed
	}
	return stateUnsure
}

// supersede makes a re-read row newer than what the store holds: the row is
// Dataverse's current state, but modifiedon has whole seconds while a stored
// webhook version may carry the operation's milliseconds, and the syncer
// drops columns older than the stored ones.
func supersede(ev *event.Event, stored int64) *event.Event {
	if stored >= ev.Version && stored < tombstone-1 {
		ev.Version = stored + 1
		ev.ID = ev.DeriveID()
	}
	return ev
}

// ignored reports rows the syncer never applies, so the store has no version
// for them and they are not losses: the reciprocal (contact → opportunity)
// row of a stakeholder connection, and connections between other tables.
func ignored(ev *event.Event) bool {
	if ev.Entity != event.EntityConnection {
		return false
	}
	r1, ok1 := ev.Attributes["record1id"].Reference()
	r2, ok2 := ev.Attributes["record2id"].Reference()
	return ok1 && ok2 && (r1.LogicalName != event.EntityOpportunity || r2.LogicalName != event.EntityContact)
}

func (r *Reconciler) send(ctx context.Context, entity string, evs []*event.Event, tr *TableReport) error {
	msgs := make([]queue.Message, 0, len(evs))
	for _, ev := range evs {
		if r.sent != nil {
			r.sent[sentKey(ev)] = true
		}
		m, _, err := backfill.RowMessage(ev, r.cfg.MaxMessageBytes)
		if err != nil {
			return fmt.Errorf("reconcile: %s %s: %w", entity, ev.RecordID, err)
		}
		msgs = append(msgs, m)
	}
	for chunk := range slices.Chunk(msgs, r.cfg.SendBatch) {
		if err := r.cfg.Sender.Send(ctx, chunk...); err != nil {
			return fmt.Errorf("reconcile: send %d %s events: %w", len(chunk), entity, err)
		}
		tr.Enqueued += len(chunk)
	}
	return nil
}

func (r *Reconciler) loadState(ctx context.Context, key string) (TableState, error) {
	var st TableState
	raw, ok, err := r.cfg.Store.GetMeta(ctx, key)
	if err != nil {
		return st, fmt.Errorf("reconcile: read state %s: %w", key, err)
	}
	if !ok || raw == "" {
		return st, nil
	}
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		// A damaged state only costs a baseline read.
		r.cfg.Logger.Warn("reconcile: unreadable state; taking a new token", "key", key, "err", err)
		return TableState{}, nil
	}
	return st, nil
}

func (r *Reconciler) saveState(ctx context.Context, key string, st TableState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("reconcile: write state %s: %w", key, err)
	}
	if err := r.cfg.Store.PutMeta(ctx, key, string(b)); err != nil {
		return fmt.Errorf("reconcile: write state %s: %w", key, err)
	}
	return nil
}

// sentKey names a row's state: its RowVersion and modifiedon (not Version,
// which supersede may raise).
func sentKey(ev *event.Event) string {
	return fmt.Sprint(ev.Entity, "/", ev.RecordID, "@", ev.RowVersion, "/", ev.OccurredAt.UnixMilli())
}
