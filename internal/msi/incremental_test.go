package msi

import (
	"context"
	"testing"
	"time"
)

// incrementalEnv is a simEnv whose writer reads the activity feeds.
func incrementalEnv(t *testing.T, persons int) *simEnv {
	e := newSimEnv(t, persons/2, persons-persons/2)
	e.w.cfg.Activities = e.mc
	return e
}

func (e *simEnv) marketoRequests() map[string]int { return e.mk.Stats().Requests }

func delta(after, before map[string]int, keys ...string) int {
	n := 0
	for _, k := range keys {
		n += after[k] - before[k]
	}
	return n
}

const (
	reqLeads       = "GET /rest/v1/leads.json"
	reqLeadsPost   = "POST /rest/v1/leads.json"
	reqActivities  = "GET /rest/v1/activities.json"
	reqLeadChanges = "GET /rest/v1/activities/leadchanges.json"
	reqTypes       = "GET /rest/v1/activities/types.json"
	reqToken       = "GET /rest/v1/activities/pagingtoken.json"
)

// TestIncrementalCycleReadsOnlyChangedPersons: with 50,000 synced persons
// (10,000 under -race) and 100 of them changed through activities, one
// cycle reads the activity pages, ⌈100/300⌉ = 1 lead page by id, and
// writes exactly the 100.
func TestIncrementalCycleReadsOnlyChangedPersons(t *testing.T) {
	n := 50000
	if raceEnabled {
		n = 10000
	}
	e := incrementalEnv(t, n)
	// The simulator's clock moves while the client backs off from 606s;
	// a long sweep period keeps the sweep's share of that time below one
	// person, so the cycle shows the feed-driven reads alone.
	e.w.cfg.Sweep = 10000 * time.Hour
	ctx := context.Background()

	// First cycle: no paging token yet, so it sweeps everyone (nothing to
	// write: no MSI values yet) and stores the tokens. It starts a second
	// after the seeding, whose 50,000 New Lead activities would otherwise
	// be in the lead-changes feed (Marketo lists them there too; they cost
	// one page per ~1,000 and name no MSI change).
	e.clk.Advance(time.Second)
	rep, err := e.w.RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.TokenLost || rep.Mode != "full" || rep.Swept != n || rep.Written != 0 {
		t.Fatalf("first cycle: %v; want a full sweep of %d with a new token", rep, n)
	}

	e.mk.TickMSI(100)
	before := e.marketoRequests()
	dv0 := e.dv.Stats().Requests
	rep, err = e.w.RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	after := e.marketoRequests()
	leadReads := delta(after, before, reqLeads, reqLeadsPost)
	feedPages := delta(after, before, reqActivities, reqLeadChanges)
	t.Logf("incremental cycle, %d persons, 100 changed: %v; Marketo: %d lead reads, %d feed pages, %d type lookups",
		n, rep, leadReads, feedPages, delta(after, before, reqTypes))
	if rep.Mode != "incremental" || rep.TokenLost {
		t.Fatalf("second cycle: %v, want incremental", rep)
	}
	if leadReads != 1 || rep.LeadReads != 1 {
		t.Errorf("%d lead reads, want ⌈100/300⌉ = 1", leadReads)
	}
	// 200 activities (a moment and a score change per lead) fit one page;
	// lead changes: one (empty) page since MSI changes emit no Data Value
	// Change here.
	if feedPages != 2 {
		t.Errorf("%d activity feed pages, want 2", feedPages)
	}
	if rep.Written != 100 || rep.Changed != 100 || rep.ChangedLeads != 100 || rep.Swept != 0 {
		t.Errorf("report %v: want 100 changed leads, 100 written, nothing swept (no time passed)", rep)
	}
	if got := e.dv.Stats().Requests - dv0; got != 1 {
		t.Errorf("%d Dataverse requests, want 1 $batch of 100", got)
	}
	if total := delta(after, before, reqLeads, reqLeadsPost, reqActivities, reqLeadChanges, reqTypes, reqToken); total > 4 {
		t.Errorf("%d Marketo calls in the cycle, want at most 4 (1 types, 2 feed pages, 1 lead read)", total)
	}

	// Nothing new: the next cycle reads only the (empty) feeds.
	before = e.marketoRequests()
	rep, err = e.w.RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := delta(e.marketoRequests(), before, reqLeads, reqLeadsPost); d != 0 || rep.Written != 0 {
		t.Errorf("idle cycle: %d lead reads, %v; want none", d, rep)
	}
}

// TestIncrementalSweepFollowsTime: urgency decays without activities, so
// each cycle also reads the slice of persons the elapsed time is of the
// sweep period, and after a whole period everyone was read once.
func TestIncrementalSweepFollowsTime(t *testing.T) {
	e := incrementalEnv(t, 1200)
	e.w.cfg.Sweep = 4 * time.Hour // 16 cycles of 15 min
	ctx := context.Background()
	if _, err := e.w.RunOnce(ctx); err != nil { // full sweep, tokens
		t.Fatal(err)
	}
	e.mk.TickMSI(1200) // every person gets values
	if rep, err := e.w.RunOnceFull(ctx); err != nil || rep.Written != 1200 {
		t.Fatalf("--full: %v %v, want 1200 written", rep, err)
	}
	swept := 0
	for i := 0; i < 16; i++ {
		e.clk.Advance(15 * time.Minute)
		rep, err := e.w.RunOnce(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// 75 persons are due per cycle; the sweep waits for a whole call.
		if want := map[bool]int{true: 300, false: 0}[i%4 == 3]; rep.Swept != want {
			t.Errorf("cycle %d swept %d, want %d (a full call of 300 every 4th cycle)", i, rep.Swept, want)
		}
		swept += rep.Swept
	}
	if swept != 1200 {
		t.Errorf("one sweep period read %d persons, want each of 1200 once", swept)
	}
	// The decay of urgency came through the sweep, without activities.
	e.clk.Advance(24 * time.Hour)
	e.mk.DecayMSI()
	rep, err := e.w.RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Written == 0 || rep.Activities != 0 {
		t.Errorf("after a day of decay: %v, want decayed persons written by the sweep with no activities", rep)
	}
}

// TestIncrementalLostTokenFallsBackToSweep: a token Marketo rejects makes
// the cycle sweep everyone, never skip.
func TestIncrementalLostTokenFallsBackToSweep(t *testing.T) {
	e := incrementalEnv(t, 600)
	ctx := context.Background()
	if _, err := e.w.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.st.PutMeta(ctx, metaActivitiesToken, "bm90LWEtdG9rZW4"); err != nil {
		t.Fatal(err)
	}
	e.mk.TickMSI(10)
	rep, err := e.w.RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.TokenLost || rep.Mode != "full" || rep.Swept != 600 || rep.Written != 10 {
		t.Fatalf("after a rejected token: %v; want a full sweep writing the 10 changed", rep)
	}
	tok, _, _ := e.st.GetMeta(ctx, metaActivitiesToken)
	if tok == "bm90LWEtdG9rZW4" {
		t.Fatal("the rejected token was kept")
	}
}
