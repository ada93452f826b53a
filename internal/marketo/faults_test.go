package marketo

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/marketo/marketosim"
	"github.com/msisync/msisync/internal/marketo/marketotype"
)

func TestTokenExpiresInTheMiddleOfAMultiCallBatch(t *testing.T) {
	e := newEnv(t, marketosim.Options{})
	e.rec.after = func(n int, r *http.Request) {
		if n == 1 { // after the first of three sync calls
			e.sim.ExpireTokens()
		}
	}
	c := e.client(nil)
	in := leads(900, "mid")
	res, err := c.Sync(context.Background(), marketotype.Leads, marketotype.SyncRequest{Input: in})
	if err != nil {
		t.Fatal(err)
	}
	e.checkLeadResults(in, res)
	st := e.sim.Stats()
	if st.Responses["602"] != 1 || st.IdentityCalls != 2 || len(e.sim.Dump().Leads) != 900 {
		t.Fatalf("want one 602, two identity calls, 900 leads: %+v leads=%d", st, len(e.sim.Dump().Leads))
	}
}

func TestTokenShortLivedAndExpiresInZero(t *testing.T) {
	// Tokens that live 3 s: the client renews as they lapse, never sending
	// an expired one, and waits out an expires_in of 0.
	e := newEnv(t, marketosim.Options{TokenTTL: 3 * time.Second})
	c := e.client(nil)
	ctx := context.Background()
	for i := 0; i < 10; i++ {
		if _, err := c.Describe(ctx, marketotype.Companies); err != nil {
			t.Fatal(err)
		}
		e.clk.Advance(700 * time.Millisecond)
	}
	st := e.sim.Stats()
	if st.Responses["602"] != 0 || st.IdentityCalls < 3 {
		t.Fatalf("602s %d identity calls %d", st.Responses["602"], st.IdentityCalls)
	}
	// expires_in 0: the token is in its last second.
	e2 := newEnv(t, marketosim.Options{TokenTTL: time.Hour})
	c2 := e2.client(nil)
	warm := e2.client(nil) // another client takes the token first
	if _, err := warm.Describe(ctx, marketotype.Companies); err != nil {
		t.Fatal(err)
	}
	e2.clk.Advance(time.Hour - 400*time.Millisecond)
	if _, err := c2.Describe(ctx, marketotype.Companies); err != nil {
		t.Fatal(err)
	}
	if st := e2.sim.Stats(); st.Responses["602"] != 0 || st.IdentityCalls != 3 {
		t.Fatalf("expires_in 0 not waited out: 602=%d identity=%d", st.Responses["602"], st.IdentityCalls)
	}
}

func TestFailNext606_604_611_602_502Converges(t *testing.T) {
	e := newEnv(t, marketosim.Options{TokenTTL: 5 * time.Second})
	c := e.client(nil)
	e.sim.FailNext("606", "604", "611", "602", "502")
	in := leads(10, "conv")
	res, err := c.Sync(context.Background(), marketotype.Leads, marketotype.SyncRequest{Input: in})
	if err != nil {
		t.Fatal(err)
	}
	e.checkLeadResults(in, res)
	if st := c.Stats(); st.Retries != 5 || st.Codes["606"] != 1 || st.Codes["HTTP 502"] != 1 {
		t.Fatalf("client stats: %+v", st)
	}
}

func Test606Storm_BacksOffThenSucceedsOrGivesUpBounded(t *testing.T) {
	e := newEnv(t, marketosim.Options{})
	var slept []time.Duration
	var mu sync.Mutex
	c := e.client(func(cfg *Config) {
		cfg.MaxRetries = 6
		sleep := cfg.Sleep
		cfg.Sleep = func(ctx context.Context, d time.Duration) error {
			mu.Lock()
			slept = append(slept, d)
			mu.Unlock()
			return sleep(ctx, d)
		}
	})
	e.sim.FailNext("606", "606", "606", "606", "606")
	res, err := c.Sync(context.Background(), marketotype.Companies, marketotype.SyncRequest{Input: []marketotype.Record{{"externalCompanyId": "a"}}})
	if err != nil || res[0].Status != "created" {
		t.Fatalf("after 5×606: %+v %v", res, err)
	}
	if len(slept) != 5 || slept[4] <= slept[0] || slept[4] > 2*time.Second*3/2 {
		t.Fatalf("backoff waits %v: want 5 growing waits bounded by MaxBackoff", slept)
	}
	// A storm longer than MaxRetries returns a throttled error, not a hang.
	e.sim.SetFault("606", 1)
	_, err = c.Sync(context.Background(), marketotype.Companies, marketotype.SyncRequest{Input: []marketotype.Record{{"externalCompanyId": "b"}}})
	var me *marketotype.Error
	if !errors.As(err, &me) || me.Class() != marketotype.ClassThrottled || me.Code != "606" {
		t.Fatalf("endless 606: %v", err)
	}
	if n := c.Stats().Codes["606"]; n != 5+7 {
		t.Fatalf("606 responses seen %d, want 12 (5 + 1 try + 6 retries)", n)
	}
}

func TestTransientFaults_RetriedIncludingDroppedConnections(t *testing.T) {
	e := newEnv(t, marketosim.Options{})
	c := e.client(nil)
	for _, code := range []string{"502", "5xx", "503", "604", "608", "611", "713", "615"} {
		e.sim.FailNext(code, code)
		if _, err := c.Describe(context.Background(), marketotype.Companies); err != nil {
			t.Fatalf("%s twice: %v", code, err)
		}
	}
	e.sim.DropConnections(1)
	done := make(chan struct{})
	e.rec.after = func(n int, r *http.Request) {
		select {
		case <-done:
		default:
			close(done)
			e.sim.DropConnections(0)
		}
	}
	in := leads(3, "drop")
	res, err := c.Sync(context.Background(), marketotype.Leads, marketotype.SyncRequest{Input: in})
	if err != nil {
		t.Fatalf("after dropped connection: %v", err)
	}
	e.checkLeadResults(in, res)
	if c.Stats().Codes["network"] == 0 {
		t.Fatal("no network error was seen")
	}
	// Persistent 611 ends with a transient error naming the operation.
	e.sim.SetFault("611", 1)
	_, err = c.Query(context.Background(), marketotype.Leads, "email", []string{"a@example.com"}, nil)
	if marketotype.ClassOfError(err) != marketotype.ClassTransient || !strings.Contains(err.Error(), "query leads by email") {
		t.Fatalf("persistent 611: %v", err)
	}
}

func TestQuota607_StopsAllCallsUntilMidnightChicago(t *testing.T) {
	e := newEnv(t, marketosim.Options{})
	chicago, _ := time.LoadLocation("America/Chicago")
	e.clk.Set(time.Date(2026, 7, 1, 21, 30, 0, 0, chicago))
	c := e.client(nil)
	e.sim.FailNext("607")
	_, err := c.Describe(context.Background(), marketotype.Companies)
	var qe *QuotaError
	if !errors.As(err, &qe) || !errors.Is(err, marketotype.ErrQuotaExhausted) || marketotype.ClassOfError(err) != marketotype.ClassQuota {
		t.Fatalf("607: %v", err)
	}
	want := time.Date(2026, 7, 2, 0, 0, 0, 0, chicago)
	if !qe.ResetAt.Equal(want) {
		t.Fatalf("ResetAt %v, want %v", qe.ResetAt, want)
	}
	before := len(e.rec.requests())
	e.clk.Set(time.Date(2026, 7, 1, 23, 59, 0, 0, chicago))
	if _, err := c.Sync(context.Background(), marketotype.Leads, marketotype.SyncRequest{Input: leads(1, "q")}); !errors.Is(err, marketotype.ErrQuotaExhausted) {
		t.Fatalf("before reset: %v", err)
	}
	if len(e.rec.requests()) != before {
		t.Fatal("client called Marketo while the quota was exhausted")
	}
	e.clk.Set(want.Add(time.Second))
	if _, err := c.Describe(context.Background(), marketotype.Companies); err != nil {
		t.Fatalf("after reset: %v", err)
	}
}

func TestDailyBudget_LocalQuotaStopsBeforeMarketo(t *testing.T) {
	e := newEnv(t, marketosim.Options{})
	c := e.client(func(cfg *Config) { cfg.DailyQuota = 2 })
	for i := 0; i < 2; i++ {
		if _, err := c.Describe(context.Background(), marketotype.Companies); err != nil {
			t.Fatal(err)
		}
	}
	_, err := c.Describe(context.Background(), marketotype.Companies)
	var qe *QuotaError
	if !errors.As(err, &qe) || !qe.Local {
		t.Fatalf("third call: %v", err)
	}
	if n := e.sim.Stats().CountedCalls; n != 2 {
		t.Fatalf("simulator counted %d calls", n)
	}
}

func TestConfigErrors_ReturnedOnceWithoutRetry(t *testing.T) {
	for _, code := range []string{"603", "605", "609", "610", "612", "1018"} {
		e := newEnv(t, marketosim.Options{})
		c := e.client(nil)
		e.sim.FailNext(code)
		_, err := c.Describe(context.Background(), marketotype.Companies)
		var me *marketotype.Error
		if !errors.As(err, &me) || me.Code != code || me.Class() != marketotype.ClassConfig || me.HTTPStatus != 200 {
			t.Fatalf("%s: %v", code, err)
		}
		if n := e.sim.Stats().Requests["GET /rest/v1/companies/describe.json"]; n != 1 {
			t.Fatalf("%s: %d calls, want 1 (no retry)", code, n)
		}
	}
	// CRM-enabled instance: records are skipped with 1018 → ClassConfig.
	e := newEnv(t, marketosim.Options{CRMEnabled: true})
	res, err := e.client(nil).Sync(context.Background(), marketotype.Companies, marketotype.SyncRequest{Input: []marketotype.Record{{"externalCompanyId": "a"}}})
	if err != nil || res[0].Class() != marketotype.ClassConfig {
		t.Fatalf("CRM enabled: %+v %v", res, err)
	}
}

func TestBadCredentials_ConfigErrorWithoutSecret(t *testing.T) {
	e := newEnv(t, marketosim.Options{})
	c := e.client(func(cfg *Config) { cfg.ClientSecret = "wrong-secret-xyz" })
	_, err := c.Describe(context.Background(), marketotype.Companies)
	if marketotype.ClassOfError(err) != marketotype.ClassConfig || strings.Contains(err.Error(), "wrong-secret-xyz") || !strings.Contains(err.Error(), "401") {
		t.Fatalf("bad credentials: %v", err)
	}
	// A network failure on identity does not leak the secret either.
	c2, _ := New(Config{BaseURL: "http://127.0.0.1:1", ClientID: "id", ClientSecret: "topsecret-abc",
		MaxRetries: 1, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	_, err = c2.Describe(context.Background(), marketotype.Companies)
	if err == nil || strings.Contains(err.Error(), "topsecret-abc") {
		t.Fatalf("identity network error: %v", err)
	}
}

func TestContextCancelStopsBackoff(t *testing.T) {
	e := newEnv(t, marketosim.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	c := e.client(func(cfg *Config) {
		cfg.Sleep = func(context.Context, time.Duration) error { cancel(); return context.Canceled }
	})
	e.sim.SetFault("606", 1)
	_, err := c.Describe(ctx, marketotype.Companies)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("want context.Canceled, got %v", err)
	}
}

// TestGovernor_50GoroutinesNeverTrip606Or615 drives one client from 50
// goroutines against a simulator whose limits equal the client's, on the
// real clock with a short window.
func TestGovernor_50GoroutinesNeverTrip606Or615(t *testing.T) {
	e := newEnv(t, marketosim.Options{CallsPerWindow: 10, Window: 200 * time.Millisecond, MaxConcurrent: 3,
		Clock: clock.System{}})
	c, err := New(Config{BaseURL: e.srv.URL, ClientID: testID, ClientSecret: testSecret,
		CallsPerWindow: 10, Window: 200 * time.Millisecond, MaxConcurrent: 3,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := 0; g < 50; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			in := leads(2, "g"+itoa3(g)+"-")
			res, err := c.Sync(context.Background(), marketotype.Leads, marketotype.SyncRequest{Input: in})
			if err != nil || res[0].Status != "created" || res[1].Status != "created" {
				t.Errorf("goroutine %d: %+v %v", g, res, err)
			}
		}(g)
	}
	wg.Wait()
	st := e.sim.Stats()
	if st.Throttled606 != 0 || st.Throttled615 != 0 || st.MaxConcurrency > 3 {
		t.Fatalf("simulator saw 606=%d 615=%d max concurrency %d", st.Throttled606, st.Throttled615, st.MaxConcurrency)
	}
	if n := len(e.sim.Dump().Leads); n != 100 || c.Stats().Retries != 0 {
		t.Fatalf("leads %d retries %d", n, c.Stats().Retries)
	}
}

func TestGovernor_RollingWindowWaitsOnInjectedClock(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	var waits []time.Duration
	g := newGovernor(clk, func(ctx context.Context, d time.Duration) error {
		waits = append(waits, d)
		clk.Advance(d)
		return nil
	}, 2, 20*time.Second, 5, 0)
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		rel, _, err := g.acquire(ctx, "t")
		if err != nil {
			t.Fatal(err)
		}
		clk.Advance(3 * time.Second)
		rel() // completes at 3 s and 6 s
	}
	rel, _, err := g.acquire(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	rel()
	// Third call waits until the first completed call (at 3 s) is 20 s old.
	if len(waits) != 1 || waits[0] != 17*time.Second {
		t.Fatalf("waits %v, want [17s]", waits)
	}
}

func TestGovernor_InFlightCallsCountUntilDone(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	g := newGovernor(clk, func(ctx context.Context, d time.Duration) error {
		clk.Advance(d)
		return nil
	}, 1, time.Second, 5, 0)
	rel, _, _ := g.acquire(context.Background(), "t")
	clk.Advance(time.Hour) // in flight: still counts however old
	got := make(chan time.Time, 1)
	go func() {
		r2, _, err := g.acquire(context.Background(), "t")
		if err != nil {
			t.Error(err)
		}
		got <- clk.Now()
		r2()
	}()
	done := clk.Now()
	rel()
	// The waiter wakes on the completion, then waits a full window from it.
	if at := <-got; at.Sub(done) < time.Second {
		t.Fatalf("second call admitted %v after the first completed; want ≥ 1 s", at.Sub(done))
	}
}

func TestTimeoutsAndLostResponses_RetriedWithoutDuplicates(t *testing.T) {
	e := newEnv(t, marketosim.Options{ServerTimeout: time.Minute})
	c := e.client(func(cfg *Config) { cfg.HTTPClient = &http.Client{Timeout: 100 * time.Millisecond} })
	e.sim.FailNext("timeout", "timeout-after", "drop-after")
	in := leads(5, "to")
	res, err := c.Sync(context.Background(), marketotype.Leads, marketotype.SyncRequest{Input: in})
	if err != nil {
		t.Fatal(err)
	}
	e.checkLeadResults(in, res)
	// Three faults, three retries at least: on a loaded machine a healthy
	// call can also outlast the 100 ms client timeout and be retried, which
	// must not duplicate anything either.
	if res[0].Status != "updated" || len(e.sim.Dump().Leads) != 5 || c.Stats().Retries < 3 {
		t.Fatalf("want the retry to update the leads the lost call created: %+v, %d leads, %d retries",
			res[0], len(e.sim.Dump().Leads), c.Stats().Retries)
	}
}
