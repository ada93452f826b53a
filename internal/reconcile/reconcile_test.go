package reconcile_test

import (
	"context"
	"io"
	"log/slog"
	"math"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/dataverse"
	"github.com/msisync/msisync/internal/dataverse/dataversesim"
	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/queue"
	"github.com/msisync/msisync/internal/reconcile"
	"github.com/msisync/msisync/internal/store"
	"github.com/msisync/msisync/internal/store/sqlitestore"
	"github.com/msisync/msisync/internal/syncer/mapping"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// sink is a queue.Sender that keeps what it was sent.
type sink struct {
	mu   sync.Mutex
	msgs []queue.Message
}

func (s *sink) Send(_ context.Context, msgs ...queue.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs = append(s.msgs, msgs...)
	return nil
}

// take returns the events sent since the last take.
func (s *sink) take(t *testing.T) []*event.Event {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*event.Event
	for _, m := range s.msgs {
		ev, err := event.Decode(m.Body)
		if err != nil {
			t.Fatalf("decode %s: %v", m.Body, err)
		}
		out = append(out, ev)
	}
	s.msgs = nil
	return out
}

// countingLister counts list requests and can run a hook after one.
type countingLister struct {
	reconcile.Lister
	mu    sync.Mutex
	n     int
	after func(opts dataverse.ListOptions, next string)
}

func (c *countingLister) ListPage(ctx context.Context, entity string, opts dataverse.ListOptions, next string) (dataverse.Page, error) {
	c.mu.Lock()
	c.n++
	hook := c.after
	c.mu.Unlock()
	p, err := c.Lister.ListPage(ctx, entity, opts, next)
	if hook != nil {
		hook(opts, next)
	}
	return p, err
}

func (c *countingLister) ChangeTrackingEnabled(ctx context.Context, entity string) (bool, error) {
	return c.Lister.(reconcile.TrackingChecker).ChangeTrackingEnabled(ctx, entity)
}

type env struct {
	clk    *clock.Fake
	sim    *dataversesim.Server
	client *dataverse.Client
	lister *countingLister
	store  *sqlitestore.Store
	sink   *sink
	reg    *prometheus.Registry
	rec    *reconcile.Reconciler
	seeded dataversesim.SeedResult
	// appUser is set by a setup func to configure AppUserID.
	appUser string
}

func newEnv(t *testing.T, seed dataversesim.SeedOptions, setup ...func(*env)) *env {
	t.Helper()
	return newEnvOpts(t, dataversesim.Options{}, seed, setup...)
}

func newEnvOpts(t *testing.T, o dataversesim.Options, seed dataversesim.SeedOptions, setup ...func(*env)) *env {
	t.Helper()
	e := &env{clk: clock.NewFake(time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC)), sink: &sink{}, reg: prometheus.NewRegistry()}
	o.Clock, o.Token, o.Logger = e.clk, "tok", quiet()
	e.sim = dataversesim.New(o)
	srv := httptest.NewServer(e.sim)
	t.Cleanup(srv.Close)
	var err error
	e.client, err = dataverse.New(dataverse.Config{URL: srv.URL, Token: "tok", Clock: e.clk,
		Sleep: func(ctx context.Context, d time.Duration) error { e.clk.Advance(d); return ctx.Err() }})
	if err != nil {
		t.Fatal(err)
	}
	if e.seeded, err = e.sim.Seed(seed); err != nil {
		t.Fatal(err)
	}
	e.store, err = sqlitestore.Open(context.Background(), filepath.Join(t.TempDir(), "store.db"), sqlitestore.Options{Clock: e.clk, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.store.Close() })
	e.lister = &countingLister{Lister: e.client}
	for _, f := range setup {
		f(e)
	}
	e.rec, err = reconcile.New(reconcile.Config{Dataverse: e.lister, Sender: e.sink, Store: e.store, Columns: mapping.Default().Columns,
		Clock: e.clk, Logger: quiet(), Registerer: e.reg, Holder: "test", AppUserID: e.appUser})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// applyAll records every row as synced at its current modifiedon, as the
// syncer does after writing it to Marketo.
func (e *env) applyAll(t *testing.T) {
	t.Helper()
	v := map[string]int64{}
	for _, entity := range event.SyncedEntities {
		for _, id := range e.sim.IDs(entity) {
			row, _ := e.sim.Get(entity, id)
			if mo, ok := row["modifiedon"].(time.Time); ok {
				v[entity+"/"+id] = mo.UnixMilli()
			}
			if rv, ok := row["versionnumber"].(int64); ok {
				v[store.RowVersionKey(entity+"/"+id)] = rv
			}
		}
	}
	if err := e.store.PutVersions(context.Background(), v); err != nil {
		t.Fatal(err)
	}
}

func (e *env) apply(t *testing.T, entity, id string) {
	t.Helper()
	row, _ := e.sim.Get(entity, id)
	if err := e.store.PutVersions(context.Background(), map[string]int64{entity + "/" + id: row["modifiedon"].(time.Time).UnixMilli(),
		store.RowVersionKey(entity + "/" + id): row["versionnumber"].(int64)}); err != nil {
		t.Fatal(err)
	}
}

func (e *env) cycle(t *testing.T) reconcile.Report {
	t.Helper()
	e.lister.mu.Lock()
	e.lister.n = 0
	e.lister.mu.Unlock()
	rep, err := e.rec.Cycle(context.Background())
	if err != nil {
		t.Fatalf("cycle: %v\n%s", err, rep)
	}
	e.lister.mu.Lock()
	defer e.lister.mu.Unlock()
	if e.lister.n != rep.Requests {
		t.Errorf("report says %d requests, the lister saw %d", rep.Requests, e.lister.n)
	}
	return rep
}

func table(rep reconcile.Report, entity string) reconcile.TableReport {
	for _, t := range rep.Tables {
		if t.Entity == entity {
			return t
		}
	}
	return reconcile.TableReport{}
}

var seed = dataversesim.SeedOptions{Users: 3, Accounts: 20, Contacts: 30, Leads: 10, Opportunities: 8, Connections: 5, Seed: 4}

func TestFirstCycleTakesTokensThenUnchangedCostsOneRequestPerTable(t *testing.T) {
	e := newEnv(t, seed)
	e.applyAll(t)
	first := e.cycle(t)
	if first.Enqueued != 0 {
		t.Errorf("first cycle enqueued %d events; it should only take the tokens", first.Enqueued)
	}
	for _, tr := range first.Tables {
		if tr.Method != reconcile.MethodBaseline {
			t.Errorf("%s: first cycle method %s, want baseline", tr.Entity, tr.Method)
		}
	}
	if c := table(first, "contact"); c.Applied != 30 {
		t.Errorf("baseline of contacts: %d applied, want all 30 (the store has them)", c.Applied)
	}
	e.clk.Advance(15 * time.Minute)
	second := e.cycle(t)
	if second.Enqueued != 0 || second.Found != 0 {
		t.Errorf("unchanged organisation: %d enqueued, %d found; want 0", second.Enqueued, second.Found)
	}
	if second.Requests != len(event.SyncedEntities) {
		t.Errorf("unchanged organisation: %d requests, want one per table (%d)", second.Requests, len(event.SyncedEntities))
	}
	for _, tr := range second.Tables {
		if tr.Method != reconcile.MethodDelta || tr.Rows != 0 {
			t.Errorf("%s: %s with %d rows, want an empty delta", tr.Entity, tr.Method, tr.Rows)
		}
	}
	if len(e.sink.take(t)) != 0 {
		t.Error("events were sent")
	}
	last, err := reconcile.LastReport(context.Background(), e.store)
	if err != nil || last == nil || last.Requests != second.Requests || len(last.Tables) != len(event.SyncedEntities) {
		t.Errorf("last report in the store = %+v, %v", last, err)
	}
}

func TestCycleEnqueuesOnlyWhatMsisyncHasNotApplied(t *testing.T) {
	e := newEnv(t, seed)
	e.applyAll(t)
	e.cycle(t) // baseline
	contacts, accounts := e.seeded.IDs["contact"], e.seeded.IDs["account"]
	e.clk.Advance(time.Minute)
	// Delivered: the webhook came and the syncer applied it.
	if err := e.sim.Update("contact", contacts[0], map[string]any{"jobtitle": "Delivered"}); err != nil {
		t.Fatal(err)
	}
	e.apply(t, "contact", contacts[0])
	// Lost: an update, a create and a delete msisync never saw.
	if err := e.sim.Update("contact", strings.ToUpper(contacts[1]), map[string]any{"jobtitle": "Lost update"}); err != nil {
		t.Fatal(err)
	}
	added, err := e.sim.Create("contact", map[string]any{"lastname": "Lost create", "emailaddress1": "lost@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	lone, _ := e.sim.Create("account", map[string]any{"name": "never synced, then deleted"})
	if err := e.sim.Delete("account", lone); err != nil {
		t.Fatal(err)
	}
	victim := accounts[len(accounts)-1]
	for _, o := range e.seeded.IDs["opportunity"] { // keep the delete a plain one
		row, _ := e.sim.Get("opportunity", o)
		if r, ok := row["parentaccountid"].(dataversesim.Ref); ok && r.ID == victim {
			t.Skip("seeded account has an opportunity")
		}
	}
	if err := e.sim.Delete("account", victim); err != nil {
		t.Fatal(err)
	}
	// A delete msisync did apply (tombstone).
	gone := accounts[len(accounts)-2]
	if err := e.sim.Delete("account", gone); err != nil {
		t.Fatal(err)
	}
	if err := e.store.PutVersions(context.Background(), map[string]int64{"account/" + gone: math.MaxInt64}); err != nil {
		t.Fatal(err)
	}

	rep := e.cycle(t)
	c, a := table(rep, "contact"), table(rep, "account")
	if c.Applied != 1 || c.Missed != 1 || c.New != 1 || c.Enqueued != 2 {
		t.Errorf("contacts: %+v; want 1 applied, 1 missed, 1 new, 2 enqueued", c)
	}
	if a.Deleted != 1 || a.Applied != 1 || a.Unknown != 1 || a.Enqueued != 1 {
		t.Errorf("accounts: %+v; want 1 lost delete enqueued, 1 applied delete, 1 unknown", a)
	}
	got := map[string]*event.Event{}
	for _, ev := range e.sink.take(t) {
		got[ev.Entity+"/"+ev.RecordID] = ev
		if ev.Source != event.SourceReconcile {
			t.Errorf("event %s source %q, want reconcile", ev.RecordID, ev.Source)
		}
	}
	if len(got) != 3 {
		t.Errorf("%d events sent, want 3: %v", len(got), got)
	}
	upd := got["contact/"+contacts[1]]
	if upd == nil || upd.Message != event.MessageCreate || upd.Attributes["jobtitle"].Text() != "Lost update" || upd.Version == 0 {
		t.Errorf("lost update event = %+v", upd)
	} else if _, ok := upd.Attributes["msi_priority"]; ok || len(upd.Attributes) > len(mapping.Default().Columns("contact"))+2 {
		t.Errorf("lost update carries columns beyond the mapped ones: %v", upd.Attributes)
	}
	if ev := got["contact/"+added]; ev == nil || ev.Attributes["emailaddress1"].Text() != "lost@example.com" {
		t.Errorf("lost create event = %+v", ev)
	}
	if ev := got["account/"+victim]; ev == nil || ev.Message != event.MessageDelete {
		t.Errorf("lost delete event = %+v", ev)
	}
	if v := metric(t, e.reg, "msisync_reconcile_rows_total", "contact", "missed"); v != 1 {
		t.Errorf("metric rows_total{contact,missed} = %v, want 1", v)
	}

	// The syncer applies them; the next cycle finds nothing.
	e.applyAll(t)
	e.clk.Advance(15 * time.Minute)
	if rep := e.cycle(t); rep.Enqueued != 0 {
		t.Errorf("repeated cycle after the sync enqueued %d:\n%s", rep.Enqueued, rep)
	}
}

// metric returns the value of a counter series with these label values (in
// label-name order), or -1 when absent.
func metric(t *testing.T, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i, lp := range m.GetLabel() {
				if i >= len(labels) || lp.GetValue() != labels[i] {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return -1
}

// Two changes within one second share modifiedon; the RowVersion the syncer
// stores tells that the second one was lost.
func TestSecondChangeInTheSameSecondIsNotTakenForApplied(t *testing.T) {
	e := newEnv(t, seed)
	e.applyAll(t)
	e.cycle(t)
	c := e.seeded.IDs["contact"][5]
	e.clk.Advance(time.Minute)
	if err := e.sim.Update("contact", c, map[string]any{"jobtitle": "first"}); err != nil {
		t.Fatal(err)
	}
	e.apply(t, "contact", c) // delivered and applied
	if err := e.sim.Update("contact", c, map[string]any{"jobtitle": "second, same second"}); err != nil {
		t.Fatal(err)
	}
	rep := e.cycle(t)
	if tr := table(rep, "contact"); tr.Missed != 1 || tr.Enqueued != 1 {
		t.Errorf("contacts: %+v; want the same-second change found missed", tr)
	}
	evs := e.sink.take(t)
	if len(evs) != 1 || evs[0].Attributes["jobtitle"].Text() != "second, same second" {
		t.Errorf("events %v", evs)
	}
}

// The MSI write-back changes rows as msisync's application user and fires no
// webhook: reconcile re-sends such rows but does not count them as losses.
func TestOwnChangesAreNotCountedAsLosses(t *testing.T) {
	e := newEnv(t, seed, func(e *env) { e.appUser = strings.ToUpper(e.sim.AppUserID()) })
	e.applyAll(t)
	e.cycle(t)
	e.clk.Advance(time.Minute)
	c := e.seeded.IDs["contact"][7]
	if err := e.client.Update(context.Background(), "contact", c, map[string]any{"msi_priority": 4}); err != nil {
		t.Fatal(err)
	}
	rep := e.cycle(t)
	tr := table(rep, "contact")
	if tr.Own != 1 || tr.Found() != 0 || tr.Enqueued != 1 || rep.Found != 0 {
		t.Errorf("contacts after an MSI write-back: %+v; want 1 own row re-sent, 0 found", tr)
	}
	evs := e.sink.take(t)
	if len(evs) != 1 {
		t.Fatalf("%d events", len(evs))
	}
	if _, ok := evs[0].Attributes["modifiedby"]; ok {
		t.Error("modifiedby (read only to tell own changes) sent in the event")
	}
}
