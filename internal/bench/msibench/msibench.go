// Package msibench measures the Marketo calls of the MSI write-back against
// the Marketo simulator: today's full scan (every synced person every
// cycle) beside the incremental design (activity feeds since a paging token,
// changed leads read by id, a rolling sweep once per day).
package msibench

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/dataverse"
	"github.com/msisync/msisync/internal/marketo"
	"github.com/msisync/msisync/internal/marketo/marketosim"
	"github.com/msisync/msisync/internal/msi"
	"github.com/msisync/msisync/internal/store"
	"github.com/msisync/msisync/internal/store/sqlitestore"
)

// Options of a run. Zero values mean the defaults noted.
type Options struct {
	Persons       int           // synced persons in the simulator (default 200,000)
	ChangePerHour float64       // share of persons with MSI changes per hour (default 0.01)
	Interval      time.Duration // write-back interval (default 15 min)
	Sweep         time.Duration // rolling sweep period (default 24 h)
	Hours         int           // simulated hours of the incremental design (default 24: a whole sweep)
	Logger        *slog.Logger
}

// Result is what one run measured.
type Result struct {
	Persons       int
	ChangePerHour float64
	Interval      time.Duration
	Sweep         time.Duration
	Hours         int

	FullScanCallsPerCycle int // measured: one full-scan cycle
	FullScanCallsPerDay   int // × cycles per day

	// Incremental, measured over Hours after the first (token) cycle.
	IncrementalCalls int
	FeedPages        int // activities.json + leadchanges.json
	LeadReads        int // leads by id
	SweepReads       int // leads by externalPersonId (the sweep)
	TypeLookups      int
	Written          int
	// Per day: the measured hours scaled to 24 (a steady state: each hour
	// costs the same).
	IncrementalCallsPerDay int
	Elapsed                time.Duration
}

func (o *Options) defaults() {
	if o.Persons <= 0 {
		o.Persons = 200000
	}
	if o.ChangePerHour <= 0 {
		o.ChangePerHour = 0.01
	}
	if o.Interval <= 0 {
		o.Interval = msi.DefaultInterval
	}
	if o.Sweep <= 0 {
		o.Sweep = msi.DefaultSweep
	}
	if o.Hours <= 0 {
		o.Hours = 24
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// countingWriter stands in for Dataverse: the bench counts Marketo calls.
type countingWriter struct{ n int }

func (w *countingWriter) Update(context.Context, string, string, map[string]any) error {
	w.n++
	return nil
}

func (w *countingWriter) UpdateBatch(_ context.Context, ops []dataverse.BatchOp) ([]dataverse.BatchResult, error) {
	w.n += len(ops)
	out := make([]dataverse.BatchResult, len(ops))
	for i := range out {
		out[i].Status = 204
	}
	return out, nil
}

// Run runs the bench.
func Run(ctx context.Context, o Options) (Result, error) {
	o.defaults()
	start := time.Now()
	res := Result{Persons: o.Persons, ChangePerHour: o.ChangePerHour, Interval: o.Interval, Sweep: o.Sweep, Hours: o.Hours}
	clk := clock.NewFake(time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC))
	sleep := func(ctx context.Context, d time.Duration) error { clk.Advance(d); return ctx.Err() }
	sim := marketosim.New(marketosim.Options{ClientID: "bench", ClientSecret: "bench-secret", Clock: clk,
		CallsPerWindow: 1 << 30, DailyQuota: 1 << 30, Seed: 1})
	leads := make([]map[string]any, o.Persons)
	links := make([]store.Link, o.Persons)
	for i := range leads {
		id := uuid.NewSHA1(uuid.NameSpaceOID, []byte(fmt.Sprint("person-", i))).String()
		leads[i] = map[string]any{"id": int64(1001 + i), "email": id + "@example.com", "externalPersonId": id}
		links[i] = store.Link{Kind: store.KindPerson, ExternalID: id, MarketoID: fmt.Sprint(1001 + i), Entity: "contact"}
	}
	if err := sim.Restore(marketosim.State{Leads: leads}); err != nil {
		return res, fmt.Errorf("msibench: seed simulator: %w", err)
	}
	srv := httptest.NewServer(sim)
	defer srv.Close()
	dir, err := os.MkdirTemp("", "msibench-*")
	if err != nil {
		return res, fmt.Errorf("msibench: temp dir: %w", err)
	}
	defer os.RemoveAll(dir)
	st, err := sqlitestore.Open(ctx, filepath.Join(dir, "store.db"), sqlitestore.Options{Clock: clk, Logger: o.Logger})
	if err != nil {
		return res, fmt.Errorf("msibench: store: %w", err)
	}
	defer st.Close()
	for lo := 0; lo < len(links); lo += 5000 {
		if err := st.PutLinks(ctx, links[lo:min(lo+5000, len(links))]); err != nil {
			return res, fmt.Errorf("msibench: store links: %w", err)
		}
	}
	mc, err := marketo.New(marketo.Config{BaseURL: srv.URL, ClientID: "bench", ClientSecret: "bench-secret", Clock: clk,
		Sleep: sleep, CallsPerWindow: 100, MaxConcurrent: 10, Logger: o.Logger})
	if err != nil {
		return res, err
	}
	dv := &countingWriter{}
	calls := func() map[string]int { return sim.Stats().Requests }

	// Today's design: every synced person every cycle.
	full, err := msi.New(msi.Config{Store: st, Marketo: mc, Dataverse: dv, Holder: "bench-full", Clock: clk,
		Interval: o.Interval, Logger: o.Logger, LeaseName: "bench-full"})
	if err != nil {
		return res, err
	}
	before := calls()
	if _, err := full.RunOnce(ctx); err != nil {
		return res, fmt.Errorf("msibench: full-scan cycle: %w", err)
	}
	res.FullScanCallsPerCycle = restCalls(calls(), before)
	cyclesPerDay := int(24 * time.Hour / o.Interval)
	res.FullScanCallsPerDay = res.FullScanCallsPerCycle * cyclesPerDay

	// The incremental design, after its first cycle (which sweeps everyone
	// once to start the tokens, like a fresh install).
	inc, err := msi.New(msi.Config{Store: st, Marketo: mc, Dataverse: dv, Holder: "bench-inc", Clock: clk,
		Interval: o.Interval, Sweep: o.Sweep, Activities: mc, Logger: o.Logger, LeaseName: "bench-inc"})
	if err != nil {
		return res, err
	}
	clk.Advance(time.Second)
	if _, err := inc.RunOnce(ctx); err != nil {
		return res, fmt.Errorf("msibench: first incremental cycle: %w", err)
	}
	perCycle := o.ChangePerHour * float64(o.Persons) * o.Interval.Hours()
	carry := 0.0
	before = calls()
	cycles := o.Hours * int(time.Hour/o.Interval)
	for i := 0; i < cycles; i++ {
		// Marketo computes new MSI values for the hour's share of persons,
		// spread over the cycle, and urgency decays meanwhile.
		carry += perCycle
		n := int(carry)
		carry -= float64(n)
		clk.Advance(o.Interval / 2)
		sim.TickMSI(n)
		clk.Advance(o.Interval - o.Interval/2)
		rep, err := inc.RunOnce(ctx)
		if err != nil {
			return res, fmt.Errorf("msibench: incremental cycle %d: %w", i+1, err)
		}
		res.Written += rep.Written
		res.LeadReads += rep.LeadReads
	}
	after := calls()
	res.IncrementalCalls = restCalls(after, before)
	res.FeedPages = after["GET /rest/v1/activities.json"] - before["GET /rest/v1/activities.json"] +
		after["GET /rest/v1/activities/leadchanges.json"] - before["GET /rest/v1/activities/leadchanges.json"]
	res.TypeLookups = after["GET /rest/v1/activities/types.json"] - before["GET /rest/v1/activities/types.json"]
	leadCalls := after["GET /rest/v1/leads.json"] + after["POST /rest/v1/leads.json"] -
		before["GET /rest/v1/leads.json"] - before["POST /rest/v1/leads.json"]
	res.SweepReads = leadCalls - res.LeadReads
	// Types are looked up once a day, the rest scales with time.
	res.IncrementalCallsPerDay = int(math.Round(float64(res.IncrementalCalls-res.TypeLookups)*24/float64(o.Hours))) + 1
	res.Elapsed = time.Since(start)
	return res, nil
}

// restCalls counts the REST calls between two snapshots of the
// simulator's requests (identity calls do not count toward Marketo's
// limits).
func restCalls(after, before map[string]int) int {
	n := 0
	for k, v := range after {
		if strings.Contains(k, " /rest/") {
			n += v - before[k]
		}
	}
	return n
}

// String is the report `msisync bench msi` prints.
func (r Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "MSI write-back, %d synced persons, %.1f%% with MSI changes per hour, interval %s, sweep %s (measured over %d h, %s)\n",
		r.Persons, r.ChangePerHour*100, r.Interval, r.Sweep, r.Hours, r.Elapsed.Round(time.Second))
	fmt.Fprintf(&b, "full scan:    %d calls per cycle = %d calls/day\n", r.FullScanCallsPerCycle, r.FullScanCallsPerDay)
	fmt.Fprintf(&b, "incremental:  %d calls in %d h (%d feed pages, %d changed-lead reads by id, %d sweep reads, %d type lookups; %d persons written) = %d calls/day\n",
		r.IncrementalCalls, r.Hours, r.FeedPages, r.LeadReads, r.SweepReads, r.TypeLookups, r.Written, r.IncrementalCallsPerDay)
	return b.String()
}
