package msi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/marketo/marketotype"
	"github.com/msisync/msisync/internal/syncer/mapping"
)

func guid(i int) string { return fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i) }

func entityOf(i int) string {
	if i%2 == 0 {
		return "contact"
	}
	return "lead"
}

type env struct {
	clock *clock.Fake
	store *memStore
	mkto  *fakeMarketo
	dv    *fakeDataverse
	w     *Writer
	reg   *prometheus.Registry
}

var t0 = time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newEnv builds n synced persons present in Marketo and Dataverse; every
// person has MSI values in Marketo (score = i % 100).
func newEnv(t testing.TB, n int, mod func(*Config)) *env {
	t.Helper()
	e := &env{clock: clock.NewFake(t0), mkto: newFakeMarketo(), dv: newFakeDataverse(), reg: prometheus.NewRegistry()}
	e.store = newMemStore(e.clock)
	for i := range n {
		id := guid(i)
		e.store.addPerson(entityOf(i), id)
		e.dv.add(entityOf(i), id)
		e.mkto.set(id, map[string]any{
			"msiLastInterestingMomentType":   "Web",
			"msiLastInterestingMomentDate":   "2026-11-01T10:00:00Z",
			"msiLastInterestingMomentDesc":   fmt.Sprintf("Visited page %d", i),
			"msiLastInterestingMomentSource": "Web page visit",
			"priority":                       float64(i % 5),
			"relativeUrgency":                float64(i % 7),
			"relativeScore":                  float64(i % 100),
		})
	}
	cfg := Config{Store: e.store, Marketo: e.mkto, Dataverse: e.dv, Holder: "replica-a", Clock: e.clock,
		Logger: quietLogger(), Registerer: e.reg}
	if mod != nil {
		mod(&cfg)
	}
	w, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.w = w
	return e
}

func (e *env) run(t testing.TB) Report {
	t.Helper()
	rep, err := e.w.RunOnce(context.Background())
	if err != nil {
		t.Fatalf("RunOnce: %v", err)
	}
	return rep
}

func TestTenThousandPersonsOnePercentChanged(t *testing.T) {
	const n = 10000
	e := newEnv(t, n, nil)

	first := e.run(t)
	if first.Persons != n || first.Written != n || first.MarketoCalls != 34 {
		t.Fatalf("first cycle: %v; want %d persons, 34 Marketo calls, %d written", first, n, n)
	}

	// 1% of persons get a new score in Marketo.
	changed := map[string]bool{}
	for i := 0; i < n; i += 100 {
		e.mkto.set(guid(i), map[string]any{"relativeScore": float64(1000 + i)})
		changed[guid(i)] = true
	}
	calls0 := e.mkto.callCount()
	req0, ops0 := e.dv.counts()

	rep := e.run(t)
	req, ops := e.dv.counts()
	t.Logf("10,000 synced persons, 1%% changed: %d Marketo calls, %d person writes in %d Dataverse requests", e.mkto.callCount()-calls0, ops-ops0, req-req0)
	if got := e.mkto.callCount() - calls0; got != 34 || rep.MarketoCalls != 34 {
		t.Errorf("Marketo calls = %d (report %d), want ceil(10000/300) = 34", got, rep.MarketoCalls)
	}
	if e.mkto.maxValues != 300 {
		t.Errorf("largest Marketo call had %d values, want 300", e.mkto.maxValues)
	}
	if ops-ops0 != 100 || rep.Written != 100 || rep.Changed != 100 || rep.Unchanged != n-100 {
		t.Errorf("writes = %d, report %v; want 100 written, %d unchanged", ops-ops0, rep, n-100)
	}
	if req-req0 != 1 {
		t.Errorf("Dataverse requests = %d, want 1 $batch of 100", req-req0)
	}
	for i := 0; i < n; i += 100 {
		row := e.dv.row(entityOf(i), guid(i))
		if row[ColumnScore] != int64(1000+i) {
			t.Fatalf("%s/%s %s = %#v, want %d", entityOf(i), guid(i), ColumnScore, row[ColumnScore], 1000+i)
		}
	}

	// Only the changed column is sent.
	e.mkto.set(guid(7), map[string]any{"priority": float64(4)})
	before := len(e.dv.row("lead", guid(7)))
	e.dv.row("lead", guid(7))[ColumnUrgency] = "tampered"
	e.run(t)
	if row := e.dv.row("lead", guid(7)); row[ColumnPriority] != int64(4) || row[ColumnUrgency] != "tampered" || len(row) != before {
		t.Errorf("row after a priority change = %v; want only %s updated", row, ColumnPriority)
	}

	again := e.run(t)
	if again.Written != 0 || again.Changed != 0 || again.MarketoCalls != 34 {
		t.Errorf("unchanged cycle: %v; want 34 calls and nothing written", again)
	}
}

func TestNullValuesNeverWrittenCostNothing(t *testing.T) {
	e := newEnv(t, 0, nil)
	e.store.addPerson("contact", guid(1))
	e.dv.add("contact", guid(1))
	e.mkto.set(guid(1), nil) // a lead with no MSI activity yet
	rep := e.run(t)
	if rep.Changed != 0 || rep.Unchanged != 1 {
		t.Fatalf("report %v; want the all-null person unchanged", rep)
	}
	if _, ops := e.dv.counts(); ops != 0 {
		t.Fatalf("%d Dataverse writes for a person without MSI values", ops)
	}
	// Values that go back to null are cleared in Dataverse.
	e.mkto.set(guid(1), map[string]any{"priority": 3})
	e.run(t)
	e.mkto.set(guid(1), map[string]any{"priority": nil})
	rep = e.run(t)
	row := e.dv.row("contact", guid(1))
	if v, ok := row[ColumnPriority]; !ok || v != nil || rep.Written != 1 {
		t.Fatalf("after clearing priority: row %v report %v; want %s written as null", row, rep, ColumnPriority)
	}
}

func TestNormalisedValuesAreNotChanges(t *testing.T) {
	e := newEnv(t, 1, nil)
	e.run(t)
	// Same instant, other spelling; same numbers, other types.
	e.mkto.set(guid(0), map[string]any{
		"msiLastInterestingMomentDate": "2026-11-01T11:00:00+0100",
		"priority":                     "0",
		"relativeUrgency":              0.0,
		"relativeScore":                "0.000",
	})
	if rep := e.run(t); rep.Changed != 0 {
		t.Fatalf("report %v; want re-spelt values recognised as unchanged", rep)
	}
	e.mkto.set(guid(0), map[string]any{"msiLastInterestingMomentDate": "2026-11-02T09:30:00.000+0000"})
	rep := e.run(t)
	if got := e.dv.row("contact", guid(0))[ColumnLIMDate]; rep.Written != 1 || got != "2026-11-02T09:30:00Z" {
		t.Fatalf("date written = %#v (report %v), want 2026-11-02T09:30:00Z", got, rep)
	}
}

func TestLeaseHeldElsewhereSkips(t *testing.T) {
	e := newEnv(t, 10, nil)
	if ok, _ := e.store.AcquireLease(context.Background(), DefaultLeaseName, "replica-b", time.Hour); !ok {
		t.Fatal("setup: lease not taken")
	}
	rep := e.run(t)
	if !rep.Skipped || !strings.Contains(rep.SkipReason, "another replica") {
		t.Fatalf("report %v; want skipped", rep)
	}
	if e.mkto.callCount() != 0 {
		t.Fatalf("%d Marketo calls while another replica holds the lease", e.mkto.callCount())
	}
	if got := counterValue(t, e.reg, "msisync_msi_cycles_total", "skipped"); got != 1 {
		t.Errorf("skipped cycles metric = %v, want 1", got)
	}
	// When the other holder stops renewing, the lease expires and we take over.
	e.clock.Advance(time.Hour + time.Second)
	rep = e.run(t)
	if rep.Skipped || rep.Written != 10 {
		t.Fatalf("after expiry: %v; want the cycle to run", rep)
	}
	// A single cycle gives the lease back, for the loop of another replica.
	if h := e.store.leaseHolder(DefaultLeaseName); h != "" {
		t.Fatalf("lease holder after RunOnce = %q, want none", h)
	}
}

func TestMissingInDataverseDoesNotBlockOthers(t *testing.T) {
	e := newEnv(t, 5, nil)
	e.dv.mu.Lock()
	delete(e.dv.rows, "lead/"+guid(3)) // deleted in Dataverse
	e.dv.fail["contact/"+guid(4)] = 500
	e.dv.mu.Unlock()

	rep := e.run(t)
	if rep.Written != 3 || rep.Missing != 1 || rep.Failed != 1 {
		t.Fatalf("report %v; want 3 written, 1 missing, 1 failed", rep)
	}
	for _, i := range []int{0, 1, 2} {
		if e.dv.row(entityOf(i), guid(i))[ColumnScore] != int64(i) {
			t.Errorf("person %d not written", i)
		}
	}
	// Next cycle: the failed one is retried, the missing one is not.
	e.dv.mu.Lock()
	delete(e.dv.fail, "contact/"+guid(4))
	e.dv.mu.Unlock()
	_, ops0 := e.dv.counts()
	rep = e.run(t)
	_, ops := e.dv.counts()
	if rep.Written != 1 || rep.Missing != 0 || ops-ops0 != 1 {
		t.Fatalf("second cycle %v with %d writes; want only the failed person retried", rep, ops-ops0)
	}
	if got := counterValue(t, e.reg, "msisync_msi_persons_missing_total", ""); got != 1 {
		t.Errorf("missing metric = %v, want 1", got)
	}
	// A new value for the missing person tries once more.
	e.mkto.set(guid(3), map[string]any{"priority": 4})
	if rep = e.run(t); rep.Missing != 1 {
		t.Fatalf("after a change of the missing person: %v; want one more attempt", rep)
	}
}

func TestWholeRequestFailureRetriedNextCycle(t *testing.T) {
	e := newEnv(t, 3, nil)
	e.dv.err = errors.New("503 service unavailable")
	if rep := e.run(t); rep.Failed != 3 || rep.Written != 0 {
		t.Fatalf("report %v; want 3 failed", rep)
	}
	e.dv.err = nil
	if rep := e.run(t); rep.Written != 3 {
		t.Fatalf("report %v; want the 3 persons written on retry", rep)
	}
}

func TestConfigurableFieldNames(t *testing.T) {
	fields, err := ParseFields("relativeScoring=new_relativescorevalue:number, msiLastInterestingMomentDate=new_limdate:datetime")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, 0, func(c *Config) { c.Fields = fields })
	e.store.addPerson("lead", guid(1))
	e.dv.add("lead", guid(1))
	e.mkto.set(guid(1), map[string]any{"relativeScoring": 42, "relativeScore": 7, "msiLastInterestingMomentDate": "2026-10-10T00:00:00Z"})
	if rep := e.run(t); rep.Written != 1 {
		t.Fatalf("report %v", rep)
	}
	row := e.dv.row("lead", guid(1))
	want := map[string]any{"new_relativescorevalue": int64(42), "new_limdate": "2026-10-10T00:00:00Z"}
	if fmt.Sprint(row) != fmt.Sprint(want) {
		t.Fatalf("row = %v, want %v", row, want)
	}
	if got := strings.Join(e.mkto.fields, ","); got != "externalPersonId,relativeScoring,msiLastInterestingMomentDate" {
		t.Fatalf("Marketo fields requested = %s", got)
	}
	if got := strings.Join(e.w.MarketoFields(), ","); got != "externalPersonId,relativeScoring,msiLastInterestingMomentDate" {
		t.Fatalf("MarketoFields() = %s", got)
	}
	if got := strings.Join(e.w.Columns(), ","); got != "new_relativescorevalue,new_limdate" {
		t.Fatalf("Columns() = %s", got)
	}
	// The score field name of the defaults is configurable too.
	if f := DefaultFields("relativeScoring"); f[len(f)-1].Marketo != "relativeScoring" || f[len(f)-1].Dataverse != ColumnScore {
		t.Fatalf("DefaultFields(relativeScoring) last = %+v", f[len(f)-1])
	}
}

func TestParseFieldsErrors(t *testing.T) {
	for in, want := range map[string]string{
		"priority":                    "want marketoField=dataverseColumn",
		"priority=":                   "Dataverse column is empty",
		"priority=a,priority=b":       `Marketo field "priority" is listed twice`,
		"priority=a,relativeScore=A":  `Dataverse column "A" is listed twice`,
		"priority=a:int":              `unknown type "int"`,
		"externalPersonId=x":          "externalPersonId is the key",
		"":                            "at least one field",
		"=msi_x":                      "Marketo name is empty",
		"relativeScore=msi_s:number,": "", // trailing comma is fine
	} {
		_, err := ParseFields(in)
		if want == "" {
			if err != nil {
				t.Errorf("ParseFields(%q): %v", in, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseFields(%q) error = %v, want it to contain %q", in, err, want)
		}
	}
}

func TestBadLinksAndMarketoErrors(t *testing.T) {
	e := newEnv(t, 2, nil)
	e.store.addPerson("account", guid(9)) // wrong entity
	e.store.addPerson("lead", "not-a-guid")
	e.store.addPerson("contact", guid(8)) // synced but not in Marketo
	rep := e.run(t)
	if rep.Invalid != 2 || rep.NotInMarketo != 1 || rep.Written != 2 {
		t.Fatalf("report %v; want 2 invalid, 1 not in Marketo, 2 written", rep)
	}
	// The quota runs out on the second call of a cycle: the changes the
	// first call found are still written (batch size 1000 holds them back
	// until the end of the cycle otherwise).
	for i := range 400 {
		e.store.addPerson("contact", guid(1000+i))
		e.dv.add("contact", guid(1000+i))
		e.mkto.set(guid(1000+i), map[string]any{"priority": 1})
	}
	e.w.cfg.BatchSize = 1000
	e.mkto.failAfter = e.mkto.callCount() + 1
	rep, err := e.w.RunOnce(context.Background())
	// First chunk: guid 0, 1 (unchanged), 8 (not in Marketo), 9 (account)
	// and 296 new persons.
	if err == nil || rep.MarketoCalls != 2 || rep.Written != 296 {
		t.Fatalf("quota mid-cycle: %v, %v; want the first chunk's changes written and the error returned", rep, err)
	}
	e.mkto.failAfter = 0
	e.mkto.err = errors.New("marketo: 607 daily quota reached")
	_, err = e.w.RunOnce(context.Background())
	if err == nil || !strings.Contains(err.Error(), "607") || !strings.Contains(err.Error(), "query marketo leads") {
		t.Fatalf("RunOnce error = %v; want the Marketo error wrapped", err)
	}
	if got := counterValue(t, e.reg, "msisync_msi_cycles_total", "error"); got != 2 {
		t.Errorf("error cycles metric = %v", got)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	ok := Config{Store: newMemStore(clock.NewFake(t0)), Marketo: newFakeMarketo(), Dataverse: newFakeDataverse(), Holder: "a"}
	for name, c := range map[string]struct {
		mod  func(*Config)
		want string
	}{
		"store":  {func(c *Config) { c.Store = nil }, "Store is required"},
		"holder": {func(c *Config) { c.Holder = "" }, "Holder"},
		"batch":  {func(c *Config) { c.BatchSize = 1001 }, "BatchSize 1001"},
		"ttl":    {func(c *Config) { c.LeaseTTL = -time.Minute }, "LeaseTTL -1m0s is negative"},
		"fields": {func(c *Config) { c.Fields = []FieldMap{{"priority", "", TypeNumber}} }, "Dataverse column is empty"},
	} {
		cfg := ok
		c.mod(&cfg)
		if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: New error = %v, want %q", name, err, c.want)
		}
	}
}

func TestRunLoopsOnTicksAndReleasesLease(t *testing.T) {
	waits := make(chan chan time.Time)
	var gotInterval time.Duration
	e := newEnv(t, 4, func(c *Config) {
		c.Interval = 5 * time.Minute
		c.After = func(d time.Duration) <-chan time.Time {
			gotInterval = d
			ch := make(chan time.Time, 1)
			waits <- ch
			return ch
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- e.w.Run(ctx) }()

	tick := <-waits // first cycle ran at start
	if gotInterval != 5*time.Minute {
		t.Fatalf("waited %s, want the 5m interval", gotInterval)
	}
	if e.mkto.callCount() != 1 || e.store.leaseHolder(DefaultLeaseName) != "replica-a" {
		t.Fatalf("after first cycle: %d calls, holder %q", e.mkto.callCount(), e.store.leaseHolder(DefaultLeaseName))
	}
	e.mkto.set(guid(2), map[string]any{"priority": 4})
	e.clock.Advance(5 * time.Minute)
	tick <- e.clock.Now()
	<-waits // second cycle done
	if e.mkto.callCount() != 2 || e.dv.row(entityOf(2), guid(2))[ColumnPriority] != int64(4) {
		t.Fatalf("after tick: %d calls, row %v", e.mkto.callCount(), e.dv.row(entityOf(2), guid(2)))
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if h := e.store.leaseHolder(DefaultLeaseName); h != "" {
		t.Fatalf("lease still held by %q after Run returned", h)
	}
	if got := counterValue(t, e.reg, "msisync_msi_persons_written_total", ""); got != 5 {
		t.Errorf("persons written metric = %v, want 5", got)
	}
	if got := counterValue(t, e.reg, "msisync_msi_marketo_calls_total", ""); got != 2 {
		t.Errorf("marketo calls metric = %v, want 2", got)
	}
}

func TestLongCycleRenewsLeaseAndStopsWhenLost(t *testing.T) {
	e := newEnv(t, 900, func(c *Config) { c.LeaseTTL = 3 * time.Minute })
	// Each Marketo call takes 2 minutes of fake time; a 3-minute lease would
	// run out mid-cycle without renewal.
	slow := &slowQuerier{LeadQuerier: e.mkto, clock: e.clock, step: 2 * time.Minute}
	e.w.cfg.Marketo = slow
	rep := e.run(t)
	if rep.LeaseLost || rep.MarketoCalls != 3 {
		t.Fatalf("report %v; want 3 calls and the lease kept", rep)
	}
	// Another replica steals an expired lease mid-cycle: we stop.
	slow.hook = func() {
		e.clock.Advance(10 * time.Minute)
		e.store.AcquireLease(context.Background(), DefaultLeaseName, "replica-b", time.Hour)
	}
	rep = e.run(t)
	if !rep.LeaseLost || rep.MarketoCalls != 1 {
		t.Fatalf("report %v; want the cycle stopped after losing the lease", rep)
	}
}

type slowQuerier struct {
	LeadQuerier
	clock *clock.Fake
	step  time.Duration
	hook  func()
}

func (s *slowQuerier) Query(ctx context.Context, obj marketotype.Object, ft string, v, f []string) ([]marketotype.Record, error) {
	s.clock.Advance(s.step)
	if s.hook != nil {
		s.hook()
		s.hook = nil
	}
	return s.LeadQuerier.Query(ctx, obj, ft, v, f)
}

func counterValue(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
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
			if label != "" && (len(m.GetLabel()) == 0 || m.GetLabel()[0].GetValue() != label) {
				continue
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// BenchmarkCycleTenThousand reports Marketo calls and Dataverse writes of an
// MSI cycle over 10,000 synced persons of which 1% changed.
func BenchmarkCycleTenThousand(b *testing.B) {
	e := newEnv(b, 10000, nil)
	e.run(b)
	b.ResetTimer()
	var rep Report
	for i := 0; i < b.N; i++ {
		for j := 0; j < 10000; j += 100 {
			e.mkto.set(guid(j), map[string]any{"relativeScore": float64(i*7 + j + 1)})
		}
		rep = e.run(b)
	}
	b.ReportMetric(float64(rep.MarketoCalls), "marketo-calls/cycle")
	b.ReportMetric(float64(rep.Written), "persons-written/cycle")
	b.ReportMetric(float64(rep.DataverseRequests), "dataverse-requests/cycle")
}

// The syncer's loop prevention and the webhook registration leave out the
// write-back columns; their defaults must be the columns written here.
func TestDefaultColumnsMatchSyncerWriteBack(t *testing.T) {
	got := Columns(DefaultFields(""))
	if strings.Join(got, ",") != strings.Join(mapping.DefaultWriteBack, ",") {
		t.Fatalf("msi default columns %v differ from syncer/mapping.DefaultWriteBack %v", got, mapping.DefaultWriteBack)
	}
}
