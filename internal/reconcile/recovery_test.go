package reconcile_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/dataverse"
	"github.com/msisync/msisync/internal/dataverse/dataversesim"
	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/reconcile"
	"github.com/msisync/msisync/internal/syncer/mapping"
)

func ids(evs []*event.Event) map[string]bool {
	out := map[string]bool{}
	for _, ev := range evs {
		out[ev.Entity+"/"+ev.RecordID] = true
	}
	return out
}

// Expired token → a modifiedon read since the last good cycle → a new token,
// without missing a row changed while the new token was being taken.
func TestExpiredTokenFallsBackWithoutMissingARow(t *testing.T) {
	e := newEnv(t, seed)
	e.applyAll(t)
	e.cycle(t) // baseline: tokens
	contacts := e.seeded.IDs["contact"]

	// msisync is away for longer than Dataverse keeps change tracking.
	e.clk.Advance(dataversesim.DefaultChangeTrackingExpiry + time.Hour)
	if err := e.sim.Update("contact", contacts[2], map[string]any{"jobtitle": "changed while away"}); err != nil {
		t.Fatal(err)
	}
	// A row changes between the fallback read and the new token's read.
	var between string
	e.lister.after = func(opts dataverse.ListOptions, next string) {
		if strings.HasPrefix(opts.Filter, "modifiedon ge") && between == "" && opts.Select[0] == "contactid" {
			between = contacts[3]
			if err := e.sim.Update("contact", between, map[string]any{"jobtitle": "changed in between"}); err != nil {
				t.Error(err)
			}
		}
	}
	rep := e.cycle(t)
	e.lister.after = nil
	c := table(rep, "contact")
	if c.Method != reconcile.MethodRecovery || !strings.Contains(c.Reason, "0x80044352") {
		t.Errorf("contact table: method %s reason %q; want a recovery after ExpiredVersionStamp", c.Method, c.Reason)
	}
	got := ids(e.sink.take(t))
	for _, id := range []string{contacts[2], between} {
		if !got["contact/"+id] {
			t.Errorf("contact %s changed during the outage or the recovery was not enqueued (got %v)", id, got)
		}
	}
	if c.Missed != 2 {
		t.Errorf("contact table: %+v; want the 2 changed rows as missed", c)
	}
	if v := metric(t, e.reg, "msisync_reconcile_token_resets_total", "contact"); v != 1 {
		t.Errorf("token resets metric = %v, want 1", v)
	}

	// The new token works: the next cycle is a delta again and sees a new change.
	e.applyAll(t)
	e.clk.Advance(15 * time.Minute)
	if err := e.sim.Update("contact", contacts[4], map[string]any{"jobtitle": "after recovery"}); err != nil {
		t.Fatal(err)
	}
	rep = e.cycle(t)
	if c := table(rep, "contact"); c.Method != reconcile.MethodDelta || c.Missed != 1 || c.Enqueued != 1 {
		t.Errorf("after recovery: %+v; want a delta with the one change", c)
	}
}

func TestTablesWithoutChangeTrackingAreReadByModifiedOn(t *testing.T) {
	e := newEnv(t, seed, func(e *env) { e.sim.SetChangeTracking("lead", false) })
	untracked, err := e.rec.CheckTables(context.Background())
	if err != nil || len(untracked) != 1 || untracked[0] != "lead" {
		t.Fatalf("CheckTables = %v, %v; want [lead]", untracked, err)
	}
	e.applyAll(t)
	first := e.cycle(t)
	if l := table(first, "lead"); l.Method != reconcile.MethodModifiedOn || l.Requests != 0 {
		t.Errorf("first cycle of an untracked table: %+v; want no read (changes are read from now on)", l)
	}
	if len(first.Untracked) != 1 {
		t.Errorf("report names untracked tables %v", first.Untracked)
	}
	e.clk.Advance(15 * time.Minute)
	lead := e.seeded.IDs["lead"][0]
	if err := e.sim.Update("lead", lead, map[string]any{"jobtitle": "Lost"}); err != nil {
		t.Fatal(err)
	}
	rep := e.cycle(t)
	l := table(rep, "lead")
	if l.Method != reconcile.MethodModifiedOn || l.Missed != 1 || l.Enqueued != 1 || l.Requests != 1 {
		t.Errorf("untracked lead table: %+v; want one modifiedon request finding the lost update", l)
	}
	if got := ids(e.sink.take(t)); !got["lead/"+lead] {
		t.Errorf("lost lead update not enqueued: %v", got)
	}
}

func TestOneReplicaAtATime(t *testing.T) {
	e := newEnv(t, seed)
	ok, err := e.store.AcquireLease(context.Background(), reconcile.LeaseName, "other-replica", time.Hour)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	rep := e.cycle(t)
	if !rep.Skipped || rep.Requests != 0 {
		t.Errorf("cycle while another replica holds the lease: %+v", rep)
	}
	e.clk.Advance(2 * time.Hour) // the other replica died; its lease expires
	if rep := e.cycle(t); rep.Skipped {
		t.Error("cycle skipped after the other lease expired")
	}
}

func TestThrottledDataverseIsWaitedOut(t *testing.T) {
	// Service protection at 4 requests a minute: a cycle over 6 tables
	// meets 429 + Retry-After; the client waits (on the fake clock) and the
	// cycle completes with the same findings.
	e := newEnvOpts(t, dataversesim.Options{RequestsPerWindow: 4, Window: time.Minute}, seed)
	e.applyAll(t)
	e.cycle(t)
	e.clk.Advance(time.Hour)
	if err := e.sim.Update("account", e.seeded.IDs["account"][0], map[string]any{"name": "renamed"}); err != nil {
		t.Fatal(err)
	}
	before := e.sim.Stats().Throttled
	rep := e.cycle(t)
	if e.sim.Stats().Throttled == before {
		t.Fatal("the simulator did not throttle")
	}
	if a := table(rep, "account"); a.Missed != 1 || a.Enqueued != 1 {
		t.Errorf("throttled cycle: %+v", a)
	}
}

// A delta link keeps the columns of its first query: when the mapping
// changes, reconcile takes a new token (reading what changed meanwhile).
func TestChangedMappingTakesANewToken(t *testing.T) {
	e := newEnv(t, seed)
	e.applyAll(t)
	e.cycle(t)
	e.clk.Advance(time.Minute)
	c := e.seeded.IDs["contact"][9]
	if err := e.sim.Update("contact", c, map[string]any{"department": "Sales"}); err != nil {
		t.Fatal(err)
	}
	cols := func(entity string) []string {
		out := mapping.Default().Columns(entity)
		if entity == "contact" {
			out = append(out, "department")
		}
		return out
	}
	rec, err := reconcile.New(reconcile.Config{Dataverse: e.lister, Sender: e.sink, Store: e.store, Columns: cols,
		Clock: e.clk, Logger: quiet(), Holder: "test"})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := rec.Cycle(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	tr := table(rep, "contact")
	if tr.Method != reconcile.MethodRecovery || !strings.Contains(tr.Reason, "mapped columns changed") || tr.Missed != 1 {
		t.Errorf("contact after a mapping change: %+v; want a new token and the change found", tr)
	}
	evs := e.sink.take(t)
	if len(evs) != 1 || evs[0].Attributes["department"].Text() != "Sales" {
		t.Errorf("events %v; want the contact with the newly mapped column", evs)
	}
	if a := table(rep, "account"); a.Method != reconcile.MethodDelta {
		t.Errorf("account (mapping unchanged) method %s, want delta", a.Method)
	}
}

// A delta with more changes than a page is read page by page.
func TestDeltaPages(t *testing.T) {
	e := newEnv(t, seed)
	rec, err := reconcile.New(reconcile.Config{Dataverse: e.lister, Sender: e.sink, Store: e.store, Columns: mapping.Default().Columns,
		Clock: e.clk, Logger: quiet(), Holder: "test", PageSize: 4, Entities: []string{"contact"}})
	if err != nil {
		t.Fatal(err)
	}
	e.applyAll(t)
	if _, err := rec.Cycle(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(time.Minute)
	for _, c := range e.seeded.IDs["contact"][:10] {
		if err := e.sim.Update("contact", c, map[string]any{"jobtitle": "paged"}); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := rec.Cycle(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if tr := table(rep, "contact"); tr.Requests != 3 || tr.Missed != 10 || tr.Enqueued != 10 {
		t.Errorf("10 changes in pages of 4: %+v; want 3 requests finding all 10", tr)
	}
	e.applyAll(t)
	e.clk.Advance(time.Minute)
	if rep, _ := rec.Cycle(context.Background()); rep.Requests != 1 || rep.Enqueued != 0 {
		t.Errorf("after the paged delta: %d requests, %d enqueued; want 1 and 0 (the last page's delta link)", rep.Requests, rep.Enqueued)
	}
}
