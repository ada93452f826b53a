package marketo_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/marketo"
	"github.com/msisync/msisync/internal/marketo/marketosim"
	"github.com/msisync/msisync/internal/marketo/marketotype"
	"github.com/msisync/msisync/internal/store/sqlitestore"
)

type budgetEnv struct {
	clk   *clock.Fake
	sim   *marketosim.Server
	url   string
	path  string
	logs  *bytes.Buffer
	reg   *prometheus.Registry
	store *sqlitestore.Store
}

func newBudgetEnv(t *testing.T) *budgetEnv {
	// 17:00 Chicago: the quota day is well defined.
	e := &budgetEnv{clk: clock.NewFake(time.Date(2026, 3, 10, 23, 0, 0, 0, time.UTC)), logs: &bytes.Buffer{},
		path: filepath.Join(t.TempDir(), "store.db")}
	e.sim = marketosim.New(marketosim.Options{ClientID: "b", ClientSecret: "b-secret", Clock: e.clk, CallsPerWindow: 100})
	srv := httptest.NewServer(e.sim)
	t.Cleanup(srv.Close)
	e.url = srv.URL
	e.reopen(t)
	return e
}

// reopen opens the store afresh, as a restarted process would.
func (e *budgetEnv) reopen(t *testing.T) {
	if e.store != nil {
		e.store.Close()
	}
	st, err := sqlitestore.Open(context.Background(), e.path, sqlitestore.Options{Clock: e.clk, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e.store = st
}

func (e *budgetEnv) client(t *testing.T, quota int, share float64) *marketo.Client {
	return e.clientOn(t, e.store, quota, share)
}

func (e *budgetEnv) clientOn(t *testing.T, slots marketo.SlotStore, quota int, share float64) *marketo.Client {
	e.reg = prometheus.NewRegistry()
	c, err := marketo.New(marketo.Config{BaseURL: e.url, ClientID: "b", ClientSecret: "b-secret", Clock: e.clk,
		DailyQuota: quota, CallsPerWindow: 100, Slots: slots, Holder: "test",
		Priorities: marketo.Priorities{BackgroundShare: share},
		Logger:     slog.New(slog.NewTextHandler(e.logs, nil)), Registerer: e.reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func call(c *marketo.Client, p marketo.Purpose) error {
	_, err := c.Describe(marketo.WithPurpose(context.Background(), p), marketotype.Companies)
	return err
}

func mustCall(t *testing.T, clk *clock.Fake, c *marketo.Client, p marketo.Purpose, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		clk.Advance(time.Second) // windows move on; the day does not end
		if err := call(c, p); err != nil {
			t.Fatalf("%s call %d: %v", p, i+1, err)
		}
	}
}

func wantPaused(t *testing.T, c *marketo.Client, reg *prometheus.Registry, p marketo.Purpose) {
	t.Helper()
	err := call(c, p)
	var qe *marketo.QuotaError
	if !errors.As(err, &qe) || !qe.Local || qe.Purpose != p {
		t.Fatalf("%s call = %v, want a local QuotaError for %s", p, err, p)
	}
	if v := testutil.ToFloat64(gaugeOf(t, reg, "msisync_marketo_budget_paused", string(p))); v != 1 {
		t.Fatalf("msisync_marketo_budget_paused{purpose=%q} = %v, want 1", p, v)
	}
}

func gaugeOf(t *testing.T, reg *prometheus.Registry, name, purpose string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "purpose" && l.GetValue() == purpose {
					g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "x"})
					g.Set(m.GetGauge().GetValue() + m.GetCounter().GetValue())
					return g
				}
			}
		}
	}
	t.Fatalf("no %s{purpose=%q}", name, purpose)
	return nil
}

// TestBudgetLadder: as the day's budget runs out the MSI write-back pauses
// first, then everything but sync writes, then everything; each step logs
// and sets a metric; Marketo never answers 607; the next day resumes.
func TestBudgetLadder(t *testing.T) {
	for _, shared := range []bool{true, false} {
		t.Run(map[bool]string{true: "shared", false: "local"}[shared], func(t *testing.T) { testBudgetLadder(t, shared) })
	}
}

func testBudgetLadder(t *testing.T, shared bool) {
	e := newBudgetEnv(t)
	// 100 calls; share 100 % so only the ladder binds: MSI stops at 90,
	// lookups, backfill and doctor at 95, sync writes at 100.
	var slots marketo.SlotStore
	if shared {
		slots = e.store
	}
	c := e.clientOn(t, slots, 100, 1)
	mustCall(t, e.clk, c, marketo.PurposeSync, 89)
	mustCall(t, e.clk, c, marketo.PurposeMSI, 1)
	wantPaused(t, c, e.reg, marketo.PurposeMSI)
	mustCall(t, e.clk, c, marketo.PurposeLookup, 4)
	mustCall(t, e.clk, c, marketo.PurposeDoctor, 1)
	wantPaused(t, c, e.reg, marketo.PurposeLookup)
	wantPaused(t, c, e.reg, marketo.PurposeBackfill)
	mustCall(t, e.clk, c, marketo.PurposeSync, 5)
	wantPaused(t, c, e.reg, marketo.PurposeSync)
	if st := e.sim.Stats(); st.Responses["607"] != 0 || st.CountedCalls != 100 {
		t.Fatalf("simulator: %d × 607, %d calls counted; want 0 and exactly the budget of 100", st.Responses["607"], st.CountedCalls)
	}
	logs := e.logs.String()
	for _, p := range []string{"msi", "lookup", "backfill", "sync"} {
		if !strings.Contains(logs, "pausing calls for the rest of the quota day") || !strings.Contains(logs, "purpose="+p) {
			t.Errorf("no pause log line for %s:\n%s", p, logs)
		}
	}
	b, err := c.Budget(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if b.Used != 100 || b.Remaining != 0 || b.ByPurpose[marketo.PurposeSync] != 94 || b.ByPurpose[marketo.PurposeLookup] != 4 ||
		b.ByPurpose[marketo.PurposeMSI] != 1 || b.ByPurpose[marketo.PurposeDoctor] != 1 || b.Shared != shared {
		t.Fatalf("budget = %+v", b)
	}
	// Midnight in Chicago: everything resumes, and says so.
	e.clk.Set(time.Date(2026, 3, 11, 6, 0, 1, 0, time.UTC))
	mustCall(t, e.clk, c, marketo.PurposeMSI, 1)
	if v := testutil.ToFloat64(gaugeOf(t, e.reg, "msisync_marketo_budget_paused", "msi")); v != 0 {
		t.Fatalf("paused gauge after the reset = %v, want 0", v)
	}
	if !strings.Contains(e.logs.String(), "calls resume") {
		t.Errorf("no resume log line")
	}
}

// TestBudgetBackgroundShare: the background readers stop at their share
// while sync writes go on.
func TestBudgetBackgroundShare(t *testing.T) {
	e := newBudgetEnv(t)
	c := e.client(t, 100, 0.2)
	mustCall(t, e.clk, c, marketo.PurposeMSI, 15)
	mustCall(t, e.clk, c, marketo.PurposeDoctor, 5)
	wantPaused(t, c, e.reg, marketo.PurposeMSI)
	wantPaused(t, c, e.reg, marketo.PurposeDoctor)
	mustCall(t, e.clk, c, marketo.PurposeSync, 10)
}

// TestBudgetSurvivesRestart: a restarted process (new client, store
// reopened) continues the day's count instead of starting at zero.
func TestBudgetSurvivesRestart(t *testing.T) {
	e := newBudgetEnv(t)
	c := e.client(t, 10, 0.2)
	mustCall(t, e.clk, c, marketo.PurposeSync, 7)
	c.Close()
	e.reopen(t)
	c2 := e.client(t, 10, 0.2)
	b, err := c2.Budget(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if b.Used != 7 || b.Remaining != 3 {
		t.Fatalf("after a restart: used %d remaining %d, want 7 and 3", b.Used, b.Remaining)
	}
	mustCall(t, e.clk, c2, marketo.PurposeSync, 3)
	if err := call(c2, marketo.PurposeSync); !errors.Is(err, marketotype.ErrQuotaExhausted) {
		t.Fatalf("11th call of a 10-call day across a restart = %v, want the quota error", err)
	}
	if got := e.sim.Stats().CountedCalls; got != 10 {
		t.Fatalf("simulator counted %d calls, want 10", got)
	}
	if !strings.Contains(b.String(), "shared by every process") {
		t.Errorf("budget text does not say it is shared:\n%s", b)
	}
}
