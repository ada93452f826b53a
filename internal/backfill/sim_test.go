package backfill

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/dataverse"
	"github.com/msisync/msisync/internal/dataverse/dataversesim"
	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/queue"
	"github.com/msisync/msisync/internal/queue/sqlitequeue"
	"github.com/msisync/msisync/internal/store/sqlitestore"
)

type simEnv struct {
	clk    *clock.Fake
	sim    *dataversesim.Server
	client *dataverse.Client
	seeded dataversesim.SeedResult
}

func newSim(tb testing.TB, o dataversesim.SeedOptions) *simEnv {
	tb.Helper()
	e := &simEnv{clk: clock.NewFake(time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC))}
	e.sim = dataversesim.New(dataversesim.Options{Clock: e.clk, Token: "tok", Logger: quiet()})
	srv := httptest.NewServer(e.sim)
	tb.Cleanup(srv.Close)
	var err error
	e.client, err = dataverse.New(dataverse.Config{URL: srv.URL, Token: "tok", Clock: e.clk,
		Sleep: func(ctx context.Context, d time.Duration) error { e.clk.Advance(d); return ctx.Err() }})
	if err != nil {
		tb.Fatal(err)
	}
	if e.seeded, err = e.sim.Seed(o); err != nil {
		tb.Fatal(err)
	}
	return e
}

// failingSender fails the n-th Send, as a queue outage (or a kill) would.
type failingSender struct {
	queue.Sender
	calls  atomic.Int32
	failAt int32
}

func (f *failingSender) Send(ctx context.Context, msgs ...queue.Message) error {
	if f.calls.Add(1) == f.failAt {
		return context.DeadlineExceeded
	}
	return f.Sender.Send(ctx, msgs...)
}

// drain receives everything in the queue and returns the events by key.
func drain(t *testing.T, q *sqlitequeue.Queue) map[string][]*event.Event {
	t.Helper()
	ctx := context.Background()
	out := map[string][]*event.Event{}
	for {
		ds, err := q.Receive(ctx, 500, 10*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) == 0 {
			return out
		}
		for _, d := range ds {
			e, err := event.Decode(d.Body)
			if err != nil {
				t.Fatal(err)
			}
			out[e.Key()] = append(out[e.Key()], e)
			if err := q.Complete(ctx, d); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestSimulatorBackfillKilledHalfWayAndResumed(t *testing.T) {
	ctx := context.Background()
	e := newSim(t, dataversesim.SeedOptions{Users: 4, Accounts: 30, Contacts: 250, Leads: 120, Opportunities: 40, Connections: 30})
	dir := t.TempDir()
	q, err := sqlitequeue.Open(ctx, filepath.Join(dir, "queue.db"), sqlitequeue.Options{Clock: e.clk})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	st, err := sqlitestore.Open(ctx, filepath.Join(dir, "store.db"), sqlitestore.Options{Clock: e.clk, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })

	total := 0
	for _, ent := range event.SyncedEntities {
		total += e.sim.Count(ent)
	}
	columns := map[string][]string{
		"contact": {"firstname", "lastname", "emailaddress1", "parentcustomerid", "ownerid"},
		"account": {"name", "ownerid"},
	}
	// Page 100, sends of 40: the failing send (the 7th: users 1, accounts 1, contact page 1 three, page 2 the second) is mid-page, so the
	// resumed run re-sends part of a page that the queue already holds.
	sender := &failingSender{Sender: q, failAt: 7}
	cfg := Config{Dataverse: e.client, Sender: sender, Store: st, PageSize: 100, SendBatch: 40,
		Columns: func(ent string) []string { return columns[ent] }, Clock: e.clk, Logger: quiet(),
		OrgID: e.sim.OrgID(), OrgName: e.sim.OrgName()}
	var totals = map[string]int{}
	cfg.OnProgress = func(ent string, done, tot int) { totals[ent] = tot }

	rep1, err := Run(ctx, cfg)
	if err == nil || !strings.Contains(err.Error(), "backfill: send 40 contact events (page 2)") {
		t.Fatalf("first run error = %v; want the failing send of a contact page", err)
	}
	rep2, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	got := drain(t, q)
	if len(got) != total {
		t.Fatalf("queue holds %d records, want all %d rows of the synced tables", len(got), total)
	}
	for key, evs := range got {
		if len(evs) != 1 {
			t.Fatalf("%s enqueued %d times", key, len(evs))
		}
	}
	// The resumed run read only what the first did not finish: the account
	// pass (complete) is reread only from its high-water mark.
	var contacts2 EntityReport
	for _, er := range rep2.Entities {
		if er.Entity == "contact" {
			contacts2 = er
		}
	}
	if !contacts2.Resumed || contacts2.Rows != 150 || contacts2.Pages != 2 {
		t.Fatalf("resumed contact pass = %+v; want 150 rows in 2 pages (page 1 was checkpointed)", contacts2)
	}
	if rep1.Rows+rep2.Rows > total+100+10 {
		t.Fatalf("rows read %d + %d for %d rows: the rerun started over", rep1.Rows, rep2.Rows, total)
	}
	if totals["contact"] != 250 {
		t.Errorf("progress total for contacts = %d, want 250 (from the count)", totals["contact"])
	}

	// Event shape from the real client: lower-case id, Create, version from
	// modifiedon, the selected columns with the lookup as a reference.
	cid := e.seeded.IDs["contact"][0]
	ev := got["contact/"+event.NormalizeID(cid)][0]
	row, _ := e.sim.Get("contact", cid)
	mod := row["modifiedon"].(time.Time)
	if ev.Source != event.SourceBackfill || ev.Message != event.MessageCreate || ev.Version != mod.UnixMilli() ||
		ev.OrgID != e.sim.OrgID() || ev.Attributes["emailaddress1"].Text() != row["emailaddress1"] {
		t.Fatalf("contact event = %+v; row %v", ev, row)
	}
	if ref, ok := ev.Attributes["parentcustomerid"].Reference(); ok && ref.LogicalName != "account" && ref.LogicalName != "contact" {
		t.Fatalf("parentcustomerid = %+v", ref)
	}
	if _, ok := ev.Attributes["ownerid"].Reference(); !ok {
		t.Fatalf("ownerid is not a reference: %+v (attributes %v)", ev.Attributes["ownerid"], ev.Attributes)
	}

	// Nothing changed: a rerun re-reads only rows at each high-water mark
	// (rows created in the same second, like the seeded connections) and
	// enqueues nothing new.
	rep3, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if again := drain(t, q); len(again) != 0 || rep3.Rows > total/4 {
		t.Fatalf("rerun without changes read %d rows and enqueued %d records", rep3.Rows, len(again))
	}

	// A contact changes: the next rerun sends it.
	e.clk.Advance(time.Hour)
	if err := e.sim.Update("contact", cid, map[string]any{"lastname": "Changed"}); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	again := drain(t, q)
	if len(again) != 1 || again["contact/"+event.NormalizeID(cid)][0].Attributes["lastname"].Text() != "Changed" {
		t.Fatalf("after one change the rerun enqueued %v", keys(again))
	}
}

func keys(m map[string][]*event.Event) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// discardSender counts messages and bytes.
type discardSender struct{ msgs, bytes int }

func (d *discardSender) Send(_ context.Context, msgs ...queue.Message) error {
	d.msgs += len(msgs)
	for _, m := range msgs {
		d.bytes += len(m.Body)
	}
	return nil
}

// BenchmarkSimulatorBackfill50k backfills 50,000 contacts from the
// Dataverse simulator over HTTP through the real client into a sender that
// keeps nothing, and reports rows per second.
func BenchmarkSimulatorBackfill50k(b *testing.B) {
	e := newSim(b, dataversesim.SeedOptions{Users: 5, Accounts: 200, Contacts: 50000})
	cols := []string{"firstname", "lastname", "emailaddress1", "parentcustomerid", "ownerid", "jobtitle", "telephone1"}
	b.ResetTimer()
	rows, start := 0, time.Now()
	var s discardSender
	for i := 0; i < b.N; i++ {
		rep, err := Run(context.Background(), Config{Dataverse: e.client, Sender: &s, Store: newMemMeta(),
			Entities: []string{"contact"}, PageSize: 5000, Columns: func(string) []string { return cols }, Logger: quiet()})
		if err != nil || rep.Rows != 50000 {
			b.Fatalf("rows %d, err %v", rep.Rows, err)
		}
		rows += rep.Rows
	}
	b.ReportMetric(float64(rows)/time.Since(start).Seconds(), "rows/s")
	b.ReportMetric(float64(s.bytes)/float64(s.msgs), "bytes/event")
}

// BenchmarkSimulatorBackfill50kIntoSQLiteQueue is the same backfill into the
// embedded queue (durable sends, duplicate detection), as `msisync backfill`
// runs without Service Bus.
func BenchmarkSimulatorBackfill50kIntoSQLiteQueue(b *testing.B) {
	e := newSim(b, dataversesim.SeedOptions{Users: 5, Accounts: 200, Contacts: 50000})
	cols := []string{"firstname", "lastname", "emailaddress1", "parentcustomerid", "ownerid", "jobtitle", "telephone1"}
	b.ResetTimer()
	var elapsed time.Duration
	rows := 0
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		q, err := sqlitequeue.Open(context.Background(), filepath.Join(b.TempDir(), "q.db"), sqlitequeue.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		rep, err := Run(context.Background(), Config{Dataverse: e.client, Sender: q, Store: newMemMeta(),
			Entities: []string{"contact"}, PageSize: 5000, Columns: func(string) []string { return cols }, Logger: quiet()})
		elapsed += time.Since(start)
		if err != nil || rep.Rows != 50000 {
			b.Fatalf("rows %d, err %v", rep.Rows, err)
		}
		rows += rep.Rows
		b.StopTimer()
		q.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(rows)/elapsed.Seconds(), "rows/s")
}
