// Package syncbench measures how fast the syncer drains a backlog into the
// Marketo simulator running at Marketo's real limits (100 calls per 20 s,
// 10 concurrent calls, 300 records per call). It wires real adapters (the
// SQLite queue and store, the Marketo client and simulator), so it lives
// beside the syncer rather than in it; `msisync bench sync` runs it.
package syncbench

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/marketo"
	"github.com/msisync/msisync/internal/marketo/marketosim"
	"github.com/msisync/msisync/internal/marketo/marketotype"
	"github.com/msisync/msisync/internal/queue"
	"github.com/msisync/msisync/internal/queue/sqlitequeue"
	"github.com/msisync/msisync/internal/store/sqlitestore"
	"github.com/msisync/msisync/internal/syncer"
)

// Options configures a run. Zero values take the defaults noted.
type Options struct {
	Events         int           // backlog size (default 30,000)
	CallsPerWindow int           // Marketo rate limit (default 100)
	Window         time.Duration // rate window (default 20 s)
	MaxConcurrent  int           // concurrent calls (default 10)
	BatchSize      int           // records per Marketo call (default 300)
	// ReceiveMax is the messages per syncer batch (default: what msisync's
	// worker takes on the embedded queue, syncer.DefaultReceiveMax, 15,000
	// at 300 per call). Each batch ends every object type with a partial
	// call and rewrites records changed again since the previous batch: at
	// 6,000 a 30,000-event backlog took 206 calls (ideal 182), past the 200
	// that fit in two rate windows, so it waited for a third (drain 60 s,
	// ideal 40 s); at 15,000 it takes 196. The whole backlog in one batch
	// (183 calls) drains slower: its save and settle of 30,000 messages
	// come after the last call.
	ReceiveMax int
	// Cold skips the warm-up. By default the bench first fills the rate
	// window with CallsPerWindow cheap queries, so the drain is measured at
	// the steady rate rather than helped by an empty window's burst.
	Cold        bool
	Concurrency int // syncer batches in flight (default 1)
	// LookupExternalPersonID makes the simulator accept
	// lookupField=externalPersonId (one lead call instead of query + sync).
	LookupExternalPersonID bool
	Seed                   uint64
	Dir                    string        // directory for the SQLite files (default: a temporary one, removed)
	Timeout                time.Duration // give up after (default 15 min)
	Logger                 *slog.Logger
	// Progress, when set, is called about once a second with the messages settled so far.
	Progress func(settled, total int)
}

// Report is what a run measured.
type Report struct {
	Events   int
	Strategy string // lead strategy the syncer detected
	Drain    time.Duration
	// LastCall is when the last Marketo call ended, from the drain's start:
	// Drain - LastCall is the syncer's own tail (save and settle).
	LastCall     time.Duration
	Requeued     int            // messages re-sent with a delay (dependencies, retries)
	Rescheduled  int            // messages re-sent shortly (record locked, Marketo paused)
	Calls        map[string]int // simulator requests by endpoint (identity excluded)
	TotalCalls   int
	Records      map[string]int     // distinct records per Marketo object in the backlog
	Written      map[string]int     // records the syncer wrote per object (a record may be written more than once)
	SyncCalls    map[string]int     // sync calls per object
	PerCall      map[string]float64 // records per sync call per object
	IdealCalls   int                // Σ ceil(distinct records / BatchSize) over objects: writes only
	IdealLookups int                // lead lookups needed on top: by email (and externalPersonId with split)
	IdealDrain   time.Duration      // the ideal calls under the sliding-window limiter, no processing time
	RateDrain    time.Duration      // the ideal calls at the average rate CallsPerWindow / Window
	Ratio        float64            // IdealDrain / Drain
	// CallEfficiency is (IdealCalls + IdealLookups) / TotalCalls: the share
	// of the calls made that a perfect batcher would also have made.
	CallEfficiency float64
	Throttled606   int
	Throttled615   int
	DeadLettered   int
	Limits         string
	Warm           bool // the rate window was full when the drain started
}

// String renders the report for the terminal.
func (r Report) String() string {
	var b strings.Builder
	start := "rate window full at start (steady state)"
	if !r.Warm {
		start = "rate window empty at start (cold: one window's burst is free)"
	}
	fmt.Fprintf(&b, "sync benchmark: %d events, Marketo limits %s, lead strategy %s, %s, real time\n", r.Events, r.Limits, r.Strategy, start)
	fmt.Fprintf(&b, "drain time        %v (last Marketo call ended at %v)\n", r.Drain.Round(time.Millisecond), r.LastCall.Round(time.Millisecond))
	fmt.Fprintf(&b, "ideal drain time  %v (%d write calls", r.IdealDrain.Round(time.Millisecond), r.IdealCalls)
	if r.IdealLookups > 0 {
		fmt.Fprintf(&b, " + %d lead lookups", r.IdealLookups)
	}
	fmt.Fprintf(&b, " under the %s limiter; %v at the average rate)\n", r.Limits[:strings.Index(r.Limits, ",")], r.RateDrain.Round(time.Millisecond))
	fmt.Fprintf(&b, "ideal / measured  %.2f\n", r.Ratio)
	fmt.Fprintf(&b, "call efficiency   %.2f (ideal calls / calls made)\n", r.CallEfficiency)
	fmt.Fprintf(&b, "calls             %d (606: %d, 615: %d), dead letters %d, requeued %d, rescheduled %d\n", r.TotalCalls, r.Throttled606, r.Throttled615, r.DeadLettered, r.Requeued, r.Rescheduled)
	b.WriteString("records per call by object:\n")
	for _, o := range objects {
		if r.SyncCalls[o] == 0 && r.Records[o] == 0 {
			continue
		}
		fmt.Fprintf(&b, "  %-20s %6d records, %6d written in %4d calls: %6.1f per call\n", o, r.Records[o], r.Written[o], r.SyncCalls[o], r.PerCall[o])
	}
	b.WriteString("calls by endpoint:\n")
	for _, ep := range slices.Sorted(mapsKeys(r.Calls)) {
		fmt.Fprintf(&b, "  %-40s %6d\n", ep, r.Calls[ep])
	}
	return b.String()
}

var objects = []string{string(marketotype.SalesPersons), string(marketotype.Companies), string(marketotype.Leads), string(marketotype.Opportunities), string(marketotype.Roles)}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func (o *Options) defaults() {
	if o.Events <= 0 {
		o.Events = 30000
	}
	if o.CallsPerWindow <= 0 {
		o.CallsPerWindow = marketo.InstanceCallsPerWindow
	}
	if o.Window <= 0 {
		o.Window = marketo.InstanceWindow
	}
	if o.MaxConcurrent <= 0 {
		o.MaxConcurrent = marketo.InstanceMaxConcurrent
	}
	if o.BatchSize <= 0 {
		o.BatchSize = marketo.MaxBatch
	}
	if o.ReceiveMax <= 0 {
		o.ReceiveMax = syncer.DefaultReceiveMax(o.BatchSize, false)
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 1
	}
	if o.Timeout <= 0 {
		o.Timeout = 15 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
}

// Bench generates a backlog, enqueues it, and measures how long the syncer
// takes to drain it into the simulator.
func Bench(ctx context.Context, opts Options) (Report, error) {
	opts.defaults()
	dir := opts.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "msisync-bench-")
		if err != nil {
			return Report{}, fmt.Errorf("bench: temp dir: %w", err)
		}
		defer os.RemoveAll(d)
		dir = d
	}
	sim := marketosim.New(marketosim.Options{ClientID: "bench", ClientSecret: "bench-secret", CallsPerWindow: opts.CallsPerWindow,
		Window: opts.Window, MaxConcurrent: opts.MaxConcurrent, LookupExternalPersonID: opts.LookupExternalPersonID, Seed: int64(opts.Seed)})
	// The time of the last Marketo call: what the drain spends after it
	// (saving, settling the last batch) is the syncer's own tail.
	var lastCall atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sim.ServeHTTP(w, r)
		lastCall.Store(time.Now().UnixNano())
	}))
	defer srv.Close()
	q, err := sqlitequeue.Open(ctx, filepath.Join(dir, "queue.db"), sqlitequeue.Options{Logger: opts.Logger})
	if err != nil {
		return Report{}, fmt.Errorf("bench: %w", err)
	}
	defer q.Close()
	st, err := sqlitestore.Open(ctx, filepath.Join(dir, "store.db"), sqlitestore.Options{Logger: opts.Logger})
	if err != nil {
		return Report{}, fmt.Errorf("bench: %w", err)
	}
	defer st.Close()
	mk, err := marketo.New(marketo.Config{BaseURL: srv.URL, ClientID: "bench", ClientSecret: "bench-secret", CallsPerWindow: opts.CallsPerWindow,
		Window: opts.Window, MaxConcurrent: opts.MaxConcurrent, Logger: opts.Logger, HTTPClient: srv.Client()})
	if err != nil {
		return Report{}, fmt.Errorf("bench: %w", err)
	}

	g := newBacklog(opts.Seed, opts.Events)
	for chunk := range slices.Chunk(g.events, 1000) {
		msgs := make([]queue.Message, len(chunk))
		for i, ev := range chunk {
			b, err := event.Encode(ev)
			if err != nil {
				return Report{}, fmt.Errorf("bench: %w", err)
			}
			msgs[i] = queue.Message{ID: ev.ID, Body: b, Properties: map[string]string{queue.PropEntity: ev.Entity}}
		}
		if err := q.Send(ctx, msgs...); err != nil {
			return Report{}, fmt.Errorf("bench: enqueue backlog: %w", err)
		}
	}

	if !opts.Cold {
		if err := warmUp(ctx, mk, opts.CallsPerWindow, opts.MaxConcurrent); err != nil {
			return Report{}, err
		}
	}
	before := sim.Stats()

	var (
		mu       sync.Mutex
		total    syncer.Stats
		settled  int
		lastWork time.Time
		lastLog  = time.Now()
		drained  = make(chan struct{})
	)
	start := time.Now()
	s, err := syncer.New(syncer.Config{Queue: q, Store: st, Marketo: mk, BatchSize: opts.BatchSize, ReceiveMax: opts.ReceiveMax,
		CallConcurrency: opts.MaxConcurrent, // as msisync's worker: what the governor allows
		Concurrency:     opts.Concurrency, IdleWait: 200 * time.Millisecond, Logger: opts.Logger, WorkerID: "bench",
		OnBatch: func(b syncer.Stats) {
			mu.Lock()
			defer mu.Unlock()
			total.Add(b)
			// Every event ends completed (written or skipped) or dead-lettered
			// exactly once; requeued copies count when they end.
			before := settled
			settled += b.Completed + b.DeadLettered
			lastWork = time.Now()
			if opts.Progress != nil && time.Since(lastLog) > time.Second {
				opts.Progress(settled, len(g.events))
				lastLog = time.Now()
			}
			if before < len(g.events) && settled >= len(g.events) {
				close(drained)
			}
		}})
	if err != nil {
		return Report{}, fmt.Errorf("bench: %w", err)
	}
	runCtx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- s.Run(runCtx) }()
	select {
	case <-drained:
	case <-runCtx.Done():
	}
	cancel()
	<-ran
	mu.Lock()
	defer mu.Unlock()
	if settled < len(g.events) {
		return Report{}, fmt.Errorf("bench: not drained after %v (%d of %d messages settled)", opts.Timeout, settled, len(g.events))
	}
	drain := lastWork.Sub(start)
	lastCallAt := time.Unix(0, lastCall.Load()).Sub(start)

	simStats := sim.Stats()
	r := Report{Events: len(g.events), Drain: drain, LastCall: lastCallAt, Requeued: total.Requeued, Rescheduled: total.Rescheduled, Calls: map[string]int{}, Records: g.records, Written: map[string]int{},
		SyncCalls: map[string]int{}, PerCall: map[string]float64{}, Throttled606: simStats.Throttled606, Throttled615: simStats.Throttled615,
		DeadLettered: total.DeadLettered,
		Limits:       fmt.Sprintf("%d calls / %v, %d concurrent, %d per call", opts.CallsPerWindow, opts.Window, opts.MaxConcurrent, opts.BatchSize)}
	r.Throttled606 -= before.Throttled606
	r.Throttled615 -= before.Throttled615
	for ep, n := range simStats.Requests {
		n -= before.Requests[ep]
		if ep == "identity" || n == 0 {
			continue
		}
		r.Calls[ep] = n
		r.TotalCalls += n
	}
	r.Warm = !opts.Cold
	for o, n := range total.Written {
		r.Written[string(o)] = n
	}
	for k, n := range total.Calls {
		if obj, ok := strings.CutSuffix(k, " sync"); ok {
			r.SyncCalls[obj] += n
		}
	}
	for _, o := range objects {
		if r.SyncCalls[o] > 0 {
			r.PerCall[o] = float64(r.Written[o]) / float64(r.SyncCalls[o])
		}
		r.IdealCalls += (r.Records[o] + opts.BatchSize - 1) / opts.BatchSize
	}
	// Lead lookups on top of the writes, per BatchSize new persons: one query
	// by email (a form fill is linked, a person linked to another record is
	// not taken over) and, with split, one by externalPersonId (a backlog
	// may hold persons msisync linked before).
	perBatch := (r.Records[string(marketotype.Leads)] + opts.BatchSize - 1) / opts.BatchSize
	r.Strategy, r.IdealLookups = syncer.LeadLookup, perBatch
	if v, ok, _ := st.GetMeta(ctx, "marketo.leads.lookupExternalPersonId"); ok && v == "false" {
		r.Strategy, r.IdealLookups = syncer.LeadSplit, 2*perBatch
	}
	// The ideal: the minimum number of calls, made with no processing time
	// under the same sliding-window limiter. From a full window each block
	// of CallsPerWindow calls waits for one window; from an empty one the
	// first block is free. RateDrain is the same count at the average rate.
	calls := r.IdealCalls + r.IdealLookups
	L := opts.CallsPerWindow
	if opts.Cold {
		r.IdealDrain = time.Duration((calls-1)/L) * opts.Window
	} else {
		r.IdealDrain = time.Duration((calls+L-1)/L) * opts.Window
	}
	r.RateDrain = time.Duration(calls) * opts.Window / time.Duration(L)
	if r.TotalCalls > 0 {
		r.CallEfficiency = float64(calls) / float64(r.TotalCalls)
	}
	if drain > 0 {
		r.Ratio = float64(r.IdealDrain) / float64(drain)
	}
	return r, nil
}

// warmUp fills the rate window with cheap queries (a sales person that does
// not exist), as a busy integration's window is.
func warmUp(ctx context.Context, mk *marketo.Client, calls, concurrent int) error {
	errs := make(chan error, calls)
	sem := make(chan struct{}, concurrent)
	for i := 0; i < calls; i++ {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			_, err := mk.Query(ctx, marketotype.SalesPersons, "externalSalesPersonId", []string{"00000000-0000-4000-8000-000000000000"}, []string{"id"})
			errs <- err
		}()
	}
	for i := 0; i < calls; i++ {
		if err := <-errs; err != nil {
			return fmt.Errorf("bench: warm-up query: %w", err)
		}
	}
	return nil
}

// backlog is a chronological Dataverse history: each record's dependencies
// were created before it, as a backfill or a busy day produces them.
type backlog struct {
	rnd     *rand.Rand
	n       int
	ver     int64
	events  []*event.Event
	records map[string]int
}

func (g *backlog) id() string {
	g.n++
	x := g.rnd.Uint64()
	return fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", uint32(x), uint16(x>>32), g.n%4096, uint16(x>>48)%4096, g.n)
}

func (g *backlog) emit(entity, id, msg string, attrs event.Attributes) {
	g.ver++
	ev := &event.Event{Schema: event.SchemaVersion, Source: event.SourceBackfill, Entity: entity, RecordID: id, Message: msg,
		Attributes: attrs, Version: g.ver, OccurredAt: time.Unix(1_790_000_000+g.ver, 0).UTC()}
	ev.ID = ev.DeriveID()
	g.events = append(g.events, ev)
}

func newBacklog(seed uint64, n int) *backlog {
	g := &backlog{rnd: rand.New(rand.NewPCG(seed, seed*7919+1)), records: map[string]int{}}
	users := make([]string, max(5, n/600))
	for i := range users {
		users[i] = g.id()
		g.emit(event.EntitySystemUser, users[i], event.MessageCreate, event.Attributes{
			"internalemailaddress": event.String(fmt.Sprintf("rep%d@example.com", i)), "lastname": event.String(fmt.Sprint("Rep ", i))})
	}
	g.records[string(marketotype.SalesPersons)] = len(users)
	owner := func() event.Value { return event.Reference(event.EntitySystemUser, users[g.rnd.IntN(len(users))], "") }
	var accounts, contacts, opps []string
	for len(accounts) < 3 {
		id := g.id()
		accounts = append(accounts, id)
		g.emit(event.EntityAccount, id, event.MessageCreate, event.Attributes{"name": event.String("Account " + id[:8]), "ownerid": owner()})
	}
	roles := []string{"Stakeholder", "Champion", "Decision Maker", "End User", "Economic Buyer", "Influencer", "Technical Buyer"}
	for len(g.events) < n {
		switch k := g.rnd.IntN(100); {
		case k < 10: // account
			id := g.id()
			accounts = append(accounts, id)
			g.emit(event.EntityAccount, id, event.MessageCreate, event.Attributes{"name": event.String("Account " + id[:8]), "ownerid": owner(),
				"websiteurl": event.String("https://" + id[:8] + ".example.com")})
		case k < 50: // contact
			id := g.id()
			contacts = append(contacts, id)
			g.emit(event.EntityContact, id, event.MessageCreate, event.Attributes{"emailaddress1": event.String("c" + id[:8] + fmt.Sprint(g.n) + "@example.com"),
				"firstname": event.String("Pat"), "lastname": event.String("Lee " + id[:4]), "ownerid": owner(),
				"parentcustomerid": event.Reference(event.EntityAccount, accounts[g.rnd.IntN(len(accounts))], "")})
		case k < 60: // lead
			id := g.id()
			g.emit(event.EntityLead, id, event.MessageCreate, event.Attributes{"emailaddress1": event.String("l" + id[:8] + fmt.Sprint(g.n) + "@example.com"),
				"lastname": event.String("Lead " + id[:4]), "companyname": event.String("Prospect"), "ownerid": owner()})
			g.records[string(marketotype.Leads)]++
		case k < 70: // opportunity
			id := g.id()
			opps = append(opps, id)
			g.emit(event.EntityOpportunity, id, event.MessageCreate, event.Attributes{"name": event.String("Deal " + id[:6]), "ownerid": owner(),
				"parentaccountid": event.Reference(event.EntityAccount, accounts[g.rnd.IntN(len(accounts))], ""), "estimatedvalue": event.Money("25000"),
				"statecode": event.Option(0)})
		case k < 80: // stakeholder connection
			if len(opps) == 0 || len(contacts) == 0 {
				continue
			}
			id, role := g.id(), g.rnd.IntN(len(roles))
			// Backfill reads name lookups (FormattedValue); one id per role.
			g.emit(event.EntityConnection, id, event.MessageCreate, event.Attributes{
				"record1id":     event.Reference(event.EntityOpportunity, opps[g.rnd.IntN(len(opps))], ""),
				"record2id":     event.Reference(event.EntityContact, contacts[g.rnd.IntN(len(contacts))], ""),
				"record2roleid": event.Reference("connectionrole", fmt.Sprintf("00000000-0000-4000-8000-%012d", role+1), roles[role])})
			g.records[string(marketotype.Roles)]++
		default: // partial update of an earlier record
			switch {
			case k < 90 && len(contacts) > 0:
				g.emit(event.EntityContact, contacts[g.rnd.IntN(len(contacts))], event.MessageUpdate, event.Attributes{"jobtitle": event.String(fmt.Sprint("Title ", g.n))})
			case k < 95 && len(opps) > 0:
				g.emit(event.EntityOpportunity, opps[g.rnd.IntN(len(opps))], event.MessageUpdate, event.Attributes{"estimatedvalue": event.Money(json.Number(fmt.Sprint(1000 * g.rnd.IntN(100))))})
			default:
				g.emit(event.EntityAccount, accounts[g.rnd.IntN(len(accounts))], event.MessageAssign, event.Attributes{"ownerid": owner()})
			}
		}
	}
	g.records[string(marketotype.Companies)] = len(accounts)
	g.records[string(marketotype.Leads)] += len(contacts)
	g.records[string(marketotype.Opportunities)] = len(opps)
	return g
}
