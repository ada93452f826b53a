package msi

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/dataverse"
	"github.com/msisync/msisync/internal/dataverse/dataversesim"
	"github.com/msisync/msisync/internal/marketo"
	"github.com/msisync/msisync/internal/marketo/marketosim"
	"github.com/msisync/msisync/internal/marketo/marketotype"
	"github.com/msisync/msisync/internal/store"
	"github.com/msisync/msisync/internal/store/sqlitestore"
)

// simEnv runs the MSI write-back against both simulators and the SQLite
// store, all on one fake clock.
type simEnv struct {
	clk  *clock.Fake
	mk   *marketosim.Server
	mc   *marketo.Client
	dv   *dataversesim.Server
	st   *sqlitestore.Store
	w    *Writer
	reqs *methodCounter
	// persons synced: GUID → entity
	persons map[string]string
	ids     []string
}

// methodCounter counts requests by method and path, to see the POST
// ?_method=GET form on the wire.
type methodCounter struct {
	mu sync.Mutex
	n  map[string]int
	h  http.Handler
}

func (m *methodCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	m.n[r.Method+" "+r.URL.Path+"?"+r.URL.RawQuery]++
	m.mu.Unlock()
	m.h.ServeHTTP(w, r)
}

func (m *methodCounter) get(k string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.n[k]
}

func newSimEnv(t *testing.T, contacts, leads int, opts ...func(*dataversesim.Options, *Config)) *simEnv {
	t.Helper()
	ctx := context.Background()
	e := &simEnv{clk: clock.NewFake(time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC)), persons: map[string]string{}}
	sleep := func(ctx context.Context, d time.Duration) error { e.clk.Advance(d); return ctx.Err() }

	e.mk = marketosim.New(marketosim.Options{ClientID: "id", ClientSecret: "secret", Clock: e.clk, Seed: 7})
	e.reqs = &methodCounter{n: map[string]int{}, h: e.mk}
	msrv := httptest.NewServer(e.reqs)
	t.Cleanup(msrv.Close)
	mc, err := marketo.New(marketo.Config{BaseURL: msrv.URL, ClientID: "id", ClientSecret: "secret", Clock: e.clk,
		Sleep: sleep, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}

	dvo := dataversesim.Options{Clock: e.clk, Token: "tok", Logger: quietLogger()}
	wcfg := Config{Holder: "replica-a", Clock: e.clk, Logger: quietLogger()}
	for _, o := range opts {
		o(&dvo, &wcfg)
	}
	e.dv = dataversesim.New(dvo)
	dsrv := httptest.NewServer(e.dv)
	t.Cleanup(dsrv.Close)
	dc, err := dataverse.New(dataverse.Config{URL: dsrv.URL, Token: "tok", Clock: e.clk, Sleep: sleep})
	if err != nil {
		t.Fatal(err)
	}
	seeded, err := e.dv.Seed(dataversesim.SeedOptions{Contacts: contacts, Leads: leads, Accounts: 1, Users: 1})
	if err != nil {
		t.Fatal(err)
	}

	e.st, err = sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "store.db"), sqlitestore.Options{Clock: e.clk, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.st.Close() })

	// The persons as the syncer would have left them: in Marketo with
	// externalPersonId, and linked in the store.
	var input []marketotype.Record
	var links []store.Link
	for _, entity := range []string{"contact", "lead"} {
		for _, id := range seeded.IDs[entity] {
			e.persons[id] = entity
			e.ids = append(e.ids, id)
			input = append(input, marketotype.Record{"email": id + "@example.com", "externalPersonId": id})
			links = append(links, store.Link{Kind: store.KindPerson, ExternalID: id, Entity: entity})
		}
	}
	res, err := mc.Sync(ctx, marketotype.Leads, marketotype.SyncRequest{Action: "createOnly", Input: input})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Status != "created" {
			t.Fatalf("seed lead %d: %+v", i, r)
		}
		links[i].MarketoID = fmt.Sprint(r.ID)
	}
	if err := e.st.PutLinks(ctx, links); err != nil {
		t.Fatal(err)
	}

	e.mc = mc
	wcfg.Store, wcfg.Marketo, wcfg.Dataverse = e.st, mc, dc
	e.w, err = New(wcfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *simEnv) leadQueries() int { return e.mk.Stats().Requests["GET /rest/v1/leads.json"] }

func (e *simEnv) cycle(t *testing.T) (Report, int, int64) {
	t.Helper()
	q0, r0 := e.leadQueries(), e.dv.Stats().Requests
	rep, err := e.w.RunOnce(context.Background())
	if err != nil {
		t.Fatalf("RunOnce: %v", err)
	}
	return rep, e.leadQueries() - q0, e.dv.Stats().Requests - r0
}

// TestSimulatorsTenThousandPersonsOnePercentChanged runs 10,000 persons
// (3,000 under -race) through the Marketo and Dataverse simulators.
func TestSimulatorsTenThousandPersonsOnePercentChanged(t *testing.T) {
	n := 10000
	if raceEnabled {
		n = 3000
	}
	e := newSimEnv(t, n*6/10, n*4/10)
	wantCalls := (n + ChunkSize - 1) / ChunkSize
	changed := n / 100

	// No MSI activity yet: nothing to write.
	rep, calls, dvReqs := e.cycle(t)
	if rep.Persons != n || calls != wantCalls || rep.Written != 0 || dvReqs != 0 {
		t.Fatalf("first cycle: %v, %d Marketo calls, %d Dataverse requests; want %d calls and nothing written", rep, calls, dvReqs, wantCalls)
	}
	// 300 GUIDs pass 8 KB, so full chunks go as POST ?_method=GET; a last
	// short chunk may fit a GET.
	posts := e.reqs.get("POST /rest/v1/leads.json?_method=GET")
	if full := n / ChunkSize; posts < full || posts > wantCalls {
		t.Errorf("%d POST ?_method=GET lead queries, want at least %d (one per full chunk of 300)", posts, full)
	}

	// Marketo computes new MSI values for 1% of the persons.
	e.mk.TickMSI(changed)
	rep, calls, dvReqs = e.cycle(t)
	t.Logf("simulators, %d synced persons, 1%% changed: %d Marketo calls, %d persons written, %d Dataverse requests", n, calls, rep.Written, dvReqs)
	if calls != wantCalls || rep.Written != changed || rep.Changed != changed || dvReqs != 1 {
		t.Fatalf("cycle after TickMSI(%d): %v, %d Marketo calls, %d Dataverse requests; want %d calls, %d written in 1 $batch",
			changed, rep, calls, dvReqs, wantCalls, changed)
	}

	// The new values are on the Dataverse rows, on the right entity.
	checked := 0
	for _, l := range e.mk.Dump().Leads {
		if l["msiLastInterestingMomentType"] == nil {
			continue
		}
		id := l["externalPersonId"].(string)
		row, ok := e.dv.Get(e.persons[id], id)
		if !ok {
			t.Fatalf("%s %s missing in Dataverse", e.persons[id], id)
		}
		if fmt.Sprint(row[ColumnScore]) != fmt.Sprint(l["relativeScore"]) || row[ColumnLIMType] != l["msiLastInterestingMomentType"] {
			t.Fatalf("%s %s: score %v type %v; Marketo has %v %v", e.persons[id], id, row[ColumnScore], row[ColumnLIMType], l["relativeScore"], l["msiLastInterestingMomentType"])
		}
		checked++
	}
	if checked != changed {
		t.Fatalf("checked %d changed persons, want %d", checked, changed)
	}

	// A second run writes nothing.
	rep, calls, dvReqs = e.cycle(t)
	if calls != wantCalls || rep.Written != 0 || dvReqs != 0 {
		t.Fatalf("unchanged cycle: %v, %d calls, %d Dataverse requests; want nothing written", rep, calls, dvReqs)
	}
}

func TestSimulatorsSingleChangeAndDeletedRow(t *testing.T) {
	e := newSimEnv(t, 3, 2)
	ctx := context.Background()
	// One person changes: a single PATCH, not a $batch.
	e.mk.SetMSI(e.ids[0], map[string]any{"score": 55, "priority": 3, "msiLastInterestingMomentDate": e.clk.Now().Add(-time.Hour)})
	rep, calls, dvReqs := e.cycle(t)
	if calls != 1 || rep.Written != 1 || dvReqs != 1 {
		t.Fatalf("report %v, %d calls, %d requests", rep, calls, dvReqs)
	}
	row, _ := e.dv.Get(e.persons[e.ids[0]], e.ids[0])
	if fmt.Sprint(row[ColumnScore]) != "55" || fmt.Sprint(row[ColumnPriority]) != "3" {
		t.Fatalf("row = %v", row)
	}
	if v, ok := row[ColumnLIMDate].(string); !ok || v != "2026-11-29T07:00:00Z" {
		t.Fatalf("date column = %v", row[ColumnLIMDate])
	}
	values, _ := e.st.GetMSIValues(ctx, []string{e.ids[0]})
	if values[e.ids[0]][ColumnLIMDate] != "2026-11-29T07:00:00Z" {
		t.Fatalf("stored values = %v", values)
	}

	// A person deleted in Dataverse answers 404; the other still gets written.
	if err := e.dv.Delete(e.persons[e.ids[1]], e.ids[1]); err != nil {
		t.Fatal(err)
	}
	e.mk.SetMSI(e.ids[1], map[string]any{"score": 10})
	e.mk.SetMSI(e.ids[2], map[string]any{"score": 20})
	rep, _, _ = e.cycle(t)
	if rep.Written != 1 || rep.Missing != 1 || rep.Failed != 0 {
		t.Fatalf("report %v; want 1 written, 1 missing", rep)
	}
	if row, _ := e.dv.Get(e.persons[e.ids[2]], e.ids[2]); fmt.Sprint(row[ColumnScore]) != "20" {
		t.Fatalf("other person not written: %v", row)
	}
	if rep, _, dvReqs = e.cycle(t); rep.Missing != 0 || dvReqs != 0 {
		t.Fatalf("missing person retried: %v, %d requests", rep, dvReqs)
	}
}

func TestSimulatorsLeaseAcrossReplicas(t *testing.T) {
	e := newSimEnv(t, 2, 0)
	// Replica A runs its loop (a tick channel we never fire) and keeps the lease.
	waiting := make(chan struct{})
	a, err := New(Config{Store: e.st, Marketo: e.w.cfg.Marketo, Dataverse: e.w.cfg.Dataverse, Holder: "replica-a",
		Clock: e.clk, Logger: quietLogger(),
		After: func(time.Duration) <-chan time.Time { close(waiting); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- a.Run(ctx) }()
	<-waiting
	q0 := e.leadQueries()
	if q0 != 1 {
		t.Fatalf("replica A made %d queries, want 1", q0)
	}

	// Replica B's single cycle (msi sync --once) is skipped while A holds it.
	b, err := New(Config{Store: e.st, Marketo: e.w.cfg.Marketo, Dataverse: e.w.cfg.Dataverse, Holder: "replica-b",
		Clock: e.clk, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := b.RunOnce(context.Background())
	if err != nil || !rep.Skipped || e.leadQueries() != q0 {
		t.Fatalf("replica B: %v %v, %d queries; want skipped", rep, err, e.leadQueries()-q0)
	}
	// B's skipped cycle did not take A's lease away.
	if ok, _ := e.st.AcquireLease(context.Background(), DefaultLeaseName, "replica-c", time.Minute); ok {
		t.Fatal("lease free while replica A runs")
	}

	// A stops and releases: B runs at once, without waiting for expiry.
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if rep, err = b.RunOnce(context.Background()); err != nil || rep.Skipped {
		t.Fatalf("after A stopped: %v %v; want replica B to run", rep, err)
	}
	// And B's single cycle gave the lease back.
	if ok, _ := e.st.AcquireLease(context.Background(), DefaultLeaseName, "replica-c", time.Minute); !ok {
		t.Fatal("lease still held after a single cycle")
	}
}

func TestSimulatorsThrottledDataverseStillWritesAll(t *testing.T) {
	// Two requests per minute; six changed persons in $batches of two: the
	// client waits out the 429s (Retry-After, on the fake clock).
	e := newSimEnv(t, 6, 0, func(o *dataversesim.Options, c *Config) {
		o.RequestsPerWindow, o.Window = 2, time.Minute
		c.BatchSize = 2
	})
	for _, id := range e.ids {
		e.mk.SetMSI(id, map[string]any{"score": 77})
	}
	start := e.clk.Now()
	rep, _, _ := e.cycle(t)
	if rep.Written != 6 || rep.Failed != 0 || rep.DataverseRequests != 3 {
		t.Fatalf("report %v; want 6 written in 3 batches", rep)
	}
	if st := e.dv.Stats(); st.Throttled == 0 || e.clk.Now().Sub(start) < time.Minute {
		t.Fatalf("throttled %d, waited %s; want 429s waited out", st.Throttled, e.clk.Now().Sub(start))
	}
	for _, id := range e.ids {
		if row, _ := e.dv.Get("contact", id); fmt.Sprint(row[ColumnScore]) != "77" {
			t.Fatalf("contact %s score %v", id, row[ColumnScore])
		}
	}
}
