package reconcile_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/dataverse"
	"github.com/msisync/msisync/internal/dataverse/dataversesim"
	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/queue/sqlitequeue"
	"github.com/msisync/msisync/internal/reconcile"
	"github.com/msisync/msisync/internal/store"
	"github.com/msisync/msisync/internal/store/sqlitestore"
	"github.com/msisync/msisync/internal/syncer/mapping"
)

// BenchmarkReconcile100k: an organisation of 100,000 synced rows (users,
// accounts, contacts, leads, opportunities) in the Dataverse simulator over
// loopback HTTP, the SQLite store holding every row as applied, and the
// embedded SQLite queue. Sub-benchmarks: the first cycle (the baseline read
// that takes the tokens), a cycle with 0 % changed, with 1 % changed whose
// webhooks were lost, and with 1 % changed whose webhooks were delivered.
// Each reports Dataverse requests and enqueued events per cycle.
//
//	go test -run '^$' -bench Reconcile100k -benchtime 3x ./internal/reconcile
func BenchmarkReconcile100k(b *testing.B) {
	ctx := context.Background()
	clk := clock.NewFake(time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC))
	sim := dataversesim.New(dataversesim.Options{Clock: clk, Token: "tok", Logger: quiet()})
	srv := httptest.NewServer(sim)
	defer srv.Close()
	seed := dataversesim.SeedOptions{Users: 10, Accounts: 10000, Contacts: 70000, Leads: 15000, Opportunities: 4990, Seed: 9}
	if _, err := sim.Seed(seed); err != nil {
		b.Fatal(err)
	}
	client, err := dataverse.New(dataverse.Config{URL: srv.URL, Token: "tok", Clock: clk})
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	st, err := sqlitestore.Open(ctx, filepath.Join(dir, "store.db"), sqlitestore.Options{Clock: clk, Logger: quiet()})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	q, err := sqlitequeue.Open(ctx, filepath.Join(dir, "queue.db"), sqlitequeue.Options{Logger: quiet()})
	if err != nil {
		b.Fatal(err)
	}
	defer q.Close()
	lister := &countingLister{Lister: client}
	rec, err := reconcile.New(reconcile.Config{Dataverse: lister, Sender: q, Store: st, Columns: mapping.Default().Columns,
		Clock: clk, Logger: quiet(), Holder: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	// Every row synced, as after a backfill.
	total := 0
	applyRows := func(entity string, ids []string) {
		v := map[string]int64{}
		for _, id := range ids {
			row, _ := sim.Get(entity, id)
			v[entity+"/"+id] = row["modifiedon"].(time.Time).UnixMilli()
			v[store.RowVersionKey(entity+"/"+id)] = row["versionnumber"].(int64)
		}
		if err := st.PutVersions(ctx, v); err != nil {
			b.Fatal(err)
		}
	}
	for _, e := range event.SyncedEntities {
		ids := sim.IDs(e)
		total += len(ids)
		applyRows(e, ids)
	}
	contacts := sim.IDs("contact")

	report := func(b *testing.B, reps []reconcile.Report) {
		var req, enq, rows int
		for _, r := range reps {
			req += r.Requests
			enq += r.Enqueued
			for _, t := range r.Tables {
				rows += t.Rows
			}
		}
		n := float64(len(reps))
		b.ReportMetric(float64(req)/n, "requests/op")
		b.ReportMetric(float64(enq)/n, "enqueued/op")
		b.ReportMetric(float64(rows)/n, "rows-read/op")
	}
	cycle := func(b *testing.B) reconcile.Report {
		rep, err := rec.Cycle(ctx)
		if err != nil {
			b.Fatal(err)
		}
		return rep
	}
	b.Logf("organisation: %d rows", total)

	b.Run("baseline", func(b *testing.B) {
		var reps []reconcile.Report
		for range b.N {
			// Forget the tokens: each iteration is a first cycle.
			for _, e := range event.SyncedEntities {
				if err := st.PutMeta(ctx, reconcile.StatePrefix+e, ""); err != nil {
					b.Fatal(err)
				}
			}
			reps = append(reps, cycle(b))
		}
		report(b, reps)
	})
	changed := total / 100
	for _, tc := range []struct {
		name      string
		change    int
		delivered bool
	}{{"unchanged", 0, false}, {"1pct-webhooks-lost", changed, false}, {"1pct-webhooks-delivered", changed, true}} {
		b.Run(tc.name, func(b *testing.B) {
			var reps []reconcile.Report
			for i := range b.N {
				b.StopTimer()
				clk.Advance(time.Minute)
				ids := make([]string, 0, tc.change)
				for j := range tc.change {
					id := contacts[(i*tc.change+j)%len(contacts)]
					if err := sim.Update("contact", id, map[string]any{"jobtitle": fmt.Sprint("t", i, j)}); err != nil {
						b.Fatal(err)
					}
					ids = append(ids, id)
				}
				if tc.delivered {
					applyRows("contact", ids)
				}
				b.StartTimer()
				rep := cycle(b)
				if rep.Enqueued != map[bool]int{true: 0, false: tc.change}[tc.delivered] {
					b.Fatalf("%s: enqueued %d", tc.name, rep.Enqueued)
				}
				reps = append(reps, rep)
			}
			report(b, reps)
		})
	}
}
