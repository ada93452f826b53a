package console

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/config"
	"github.com/msisync/msisync/internal/queue"
	"github.com/msisync/msisync/internal/store"
)

const testToken = "console-test-token-0123456789"

type fakeDead struct {
	mu       sync.Mutex
	items    []queue.DeadLetter
	replayed []string
}

func (f *fakeDead) ListDead(_ context.Context, flt queue.Filter) ([]queue.DeadLetter, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []queue.DeadLetter
	for _, d := range f.items {
		if flt.Entity != "" && d.Properties[queue.PropEntity] != flt.Entity {
			continue
		}
		if flt.Reason != "" && !strings.Contains(strings.ToLower(d.Reason+" "+d.Description), strings.ToLower(flt.Reason)) {
			continue
		}
		out = append(out, d)
	}
	return out, nil
}

func (f *fakeDead) GetDead(_ context.Context, id string) (queue.DeadLetter, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, d := range f.items {
		if d.ID == id {
			return d, nil
		}
	}
	return queue.DeadLetter{}, queue.ErrNotFound
}

func (f *fakeDead) take(ids []string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, id := range ids {
		for i, d := range f.items {
			if d.ID == id {
				f.items = append(f.items[:i], f.items[i+1:]...)
				f.replayed = append(f.replayed, id)
				n++
				break
			}
		}
	}
	return n
}

func (f *fakeDead) ReplayDead(_ context.Context, flt queue.Filter) (int, error) {
	return f.take(flt.IDs), nil
}
func (f *fakeDead) PurgeDead(_ context.Context, flt queue.Filter) (int, error) {
	return f.take(flt.IDs), nil
}

type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *logBuf) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

type env struct {
	srv  *httptest.Server
	dead *fakeDead
	logs *logBuf
	clk  *clock.Fake
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{dead: &fakeDead{items: []queue.DeadLetter{{
		ID: "dl-1", MessageID: "m1", Reason: "MissingDependency", Description: "missing dependency: account 5b…",
		Properties: map[string]string{queue.PropEntity: "contact", queue.PropRecordID: "9a100000-0000-4000-8000-000000000003", queue.PropMessage: "Update"},
		Body:       []byte(`{"entity":"contact"}`),
	}}}, logs: &logBuf{}, clk: clock.NewFake(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC))}
	act, err := NewActivity(e.clk, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(Config{
		Token: testToken, DeadLetters: e.dead, Activity: act, Clock: e.clk, Role: "serve",
		Settings: config.Effective(func(k string) string {
			return map[string]string{"MSISYNC_ADMIN_TOKEN": testToken, "MSISYNC_BATCH_SIZE": "42"}[k]
		}),
		Logger: slog.New(slog.NewJSONHandler(e.logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(h)
	t.Cleanup(e.srv.Close)
	return e
}

func (e *env) client(t *testing.T) *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

var nonceRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// login fetches the form (for its nonce cookie) and posts token.
func (e *env) login(t *testing.T, c *http.Client, token string) *http.Response {
	t.Helper()
	resp, err := c.Get(e.srv.URL + "/console/login")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := nonceRE.FindSubmatch(body)
	if m == nil {
		t.Fatalf("login form has no csrf field:\n%s", body)
	}
	resp, err = c.PostForm(e.srv.URL+"/console/login", url.Values{"csrf": {string(m[1])}, "token": {token}, "next": {"/console/"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func (e *env) csrf(t *testing.T, c *http.Client) string {
	t.Helper()
	resp, err := c.Get(e.srv.URL + "/console/settings")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`data-csrf="([^"]+)"`).FindSubmatch(body)
	if resp.StatusCode != 200 || m == nil {
		t.Fatalf("settings page %d without csrf", resp.StatusCode)
	}
	return string(m[1])
}

func TestLoginSetsAStrictHttpOnlySession(t *testing.T) {
	e := newEnv(t)
	c := e.client(t)
	resp, err := c.Get(e.srv.URL + "/console/deadletters")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/console/login?next=") {
		t.Fatalf("page without a session: %d → %q, want a redirect to the login form", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp = e.login(t, c, testToken)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/" {
		t.Fatalf("login: %d → %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	var sc *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == sessionCookie {
			sc = ck
		}
	}
	if sc == nil || !sc.HttpOnly || sc.SameSite != http.SameSiteStrictMode || sc.Path != "/console" || strings.Contains(sc.Value, testToken) {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/console, no token inside", sc)
	}
	resp, err = c.Get(e.srv.URL + "/console/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `id="overview"`) {
		t.Fatalf("overview after login: %d", resp.StatusCode)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP %q", csp)
	}
}

func TestWrongTokenIsRefusedRateLimitedAndNotLogged(t *testing.T) {
	e := newEnv(t)
	c := e.client(t)
	wrong := "wrong-token-abcdefghijkl"
	for i := 0; i < loginBurst; i++ {
		if resp := e.login(t, c, wrong); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("wrong token attempt %d: %d, want 401", i+1, resp.StatusCode)
		}
	}
	resp := e.login(t, c, testToken) // even the right one waits now
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("attempt after %d failures: %d (Retry-After %q), want 429", loginBurst, resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	e.clk.Advance(loginWindow)
	if resp := e.login(t, c, testToken); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("right token after the window: %d, want 303", resp.StatusCode)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "console login failed") {
		t.Errorf("failed logins were not logged:\n%s", logs)
	}
	if strings.Contains(logs, wrong) || strings.Contains(logs, testToken) {
		t.Errorf("a token reached the logs:\n%s", logs)
	}
}

func TestLoginFormNeedsItsCSRFNonce(t *testing.T) {
	e := newEnv(t)
	c := e.client(t)
	resp, err := c.PostForm(e.srv.URL+"/console/login", url.Values{"token": {testToken}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("login post without the form's nonce: %d, want 403", resp.StatusCode)
	}
}

func replay(t *testing.T, c *http.Client, base, csrf string, ids ...string) (int, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"ids": ids})
	req, _ := http.NewRequest(http.MethodPost, base+"/console/api/deadletters/replay", bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	if csrf != "" {
		req.Header.Set(csrfHeader, csrf)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func TestStateChangesNeedTheCSRFToken(t *testing.T) {
	e := newEnv(t)
	c := e.client(t)
	e.login(t, c, testToken)
	if code, _ := replay(t, c, e.srv.URL, "", "dl-1"); code != http.StatusForbidden {
		t.Fatalf("replay without CSRF token: %d, want 403", code)
	}
	if code, _ := replay(t, c, e.srv.URL, "not-the-token", "dl-1"); code != http.StatusForbidden {
		t.Fatalf("replay with a wrong CSRF token: %d, want 403", code)
	}
	if len(e.dead.replayed) != 0 {
		t.Fatalf("refused requests replayed %v", e.dead.replayed)
	}
	tok := e.csrf(t, c)
	if code, out := replay(t, c, e.srv.URL, tok); code != http.StatusUnprocessableEntity || !strings.Contains(out["detail"].(string), "ids") {
		t.Fatalf("replay of nothing: %d %v, want 422 naming ids", code, out)
	}
	// A page on another site cannot use the token either (Origin check).
	b, _ := json.Marshal(map[string]any{"ids": []string{"dl-1"}})
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/console/api/deadletters/replay", bytes.NewReader(b))
	req.Header.Set(csrfHeader, tok)
	req.Header.Set("Origin", "https://evil.example")
	if resp, err := c.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-origin replay: %v %v, want 403", resp.StatusCode, err)
	}
	code, out := replay(t, c, e.srv.URL, tok, "dl-1")
	if code != 200 || out["replayed"] != 1.0 || len(e.dead.replayed) != 1 {
		t.Fatalf("replay: %d %v (replayed %v)", code, out, e.dead.replayed)
	}
	// Purge goes through the same checks and port.
	e.dead.mu.Lock()
	e.dead.items = append(e.dead.items, queue.DeadLetter{ID: "dl-2", Reason: "MarketoRejected"})
	e.dead.mu.Unlock()
	pb, _ := json.Marshal(map[string]any{"ids": []string{"dl-2"}})
	req, _ = http.NewRequest(http.MethodPost, e.srv.URL+"/console/api/deadletters/purge", bytes.NewReader(pb))
	req.Header.Set(csrfHeader, tok)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var pout map[string]int
	_ = json.NewDecoder(resp.Body).Decode(&pout)
	resp.Body.Close()
	if resp.StatusCode != 200 || pout["purged"] != 1 {
		t.Fatalf("purge: %d %v", resp.StatusCode, pout)
	}
	if _, err := e.dead.GetDead(context.Background(), "dl-2"); err == nil {
		t.Fatal("dl-2 is still there after the purge")
	}
	// Another client (no session) with the same CSRF token gets nothing.
	if code, _ := replay(t, e.client(t), e.srv.URL, tok, "dl-1"); code != http.StatusUnauthorized {
		t.Fatalf("replay without a session: %d, want 401", code)
	}
}

func TestLogoutEndsTheSession(t *testing.T) {
	e := newEnv(t)
	c := e.client(t)
	e.login(t, c, testToken)
	tok := e.csrf(t, c)
	u, _ := url.Parse(e.srv.URL + "/console/")
	old := c.Jar.Cookies(u)
	resp, err := c.PostForm(e.srv.URL+"/console/logout", url.Values{"csrf": {tok}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	// Even a copy of the old cookie no longer works.
	c2 := e.client(t)
	c2.Jar.SetCookies(u, old)
	resp, err = c2.Get(e.srv.URL + "/console/settings")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("old session after logout: %d, want a redirect to the login form", resp.StatusCode)
	}
}

func TestPagesShowTheirDataAndNameBadFilters(t *testing.T) {
	e := newEnv(t)
	c := e.client(t)
	e.login(t, c, testToken)
	getPage := func(path string) (int, string) {
		resp, err := c.Get(e.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := getPage("/console/settings")
	if code != 200 || !strings.Contains(body, "MSISYNC_BATCH_SIZE") || !strings.Contains(body, ">42") || strings.Contains(body, testToken) {
		t.Fatalf("settings page %d: want the batch size 42 and no token", code)
	}
	code, body = getPage("/console/deadletters?entity=contact")
	if code != 200 || !strings.Contains(body, "dl-1") || !strings.Contains(body, "MissingDependency") {
		t.Fatalf("dead letters page %d:\n%s", code, body)
	}
	if code, body = getPage("/console/deadletters?entity=account"); code != 200 || strings.Contains(body, `value="dl-1"`) {
		t.Fatalf("dead letters filtered to account still list dl-1 (%d)", code)
	}
	if code, body = getPage("/console/deadletters?since=3w"); code != 400 || !strings.Contains(body, "1h, 24h, 7d, 30d") {
		t.Fatalf("bad since: %d, want 400 naming the choices", code)
	}
	if code, body = getPage("/console/deadletters/dl-1"); code != 200 || !strings.Contains(body, "missing dependency: account") || !strings.Contains(body, "&#34;entity&#34;") {
		t.Fatalf("dead letter page %d:\n%s", code, body)
	}
	if code, _ = getPage("/console/deadletters/nope"); code != 404 {
		t.Fatalf("unknown dead letter: %d, want 404", code)
	}
	if code, body = getPage("/console/records?entity=contact&id=not-a-guid"); code != 400 || !strings.Contains(body, "is not a GUID") {
		t.Fatalf("bad record id: %d", code)
	}
	if code, body = getPage("/console/records?entity=contact&id=9A100000-0000-4000-8000-000000000003"); code != 200 || !strings.Contains(body, "9a100000-0000-4000-8000-000000000003") {
		t.Fatalf("record page %d", code)
	}
}

func TestActivitySeriesAndLag(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 12, 1, 10, 0, 30, 0, time.UTC))
	reg := prometheus.NewRegistry()
	recv := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "msisync_receiver_events_total"}, []string{"source", "entity", "message", "outcome"})
	msgs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "msisync_syncer_messages_total"}, []string{"outcome"})
	reg.MustRegister(recv, msgs)
	a, err := NewActivity(clk, reg, reg)
	if err != nil {
		t.Fatal(err)
	}
	recv.WithLabelValues("dataverse", "contact", "Update", "queued").Add(7)
	recv.WithLabelValues("dataverse", "contact", "Update", "rejected").Add(100) // not received
	msgs.WithLabelValues("completed").Add(5)
	msgs.WithLabelValues("skipped").Add(1) // completed includes skipped
	a.Sample()
	clk.Advance(time.Minute)
	recv.WithLabelValues("custom", "account", "Create", "queued").Add(3)
	a.Sample()
	var entries []store.HistoryEntry
	for i := 1; i <= 20; i++ {
		entries = append(entries, store.HistoryEntry{Outcome: store.OutcomeSynced, ReceivedAt: clk.Now(), At: clk.Now().Add(time.Duration(i) * time.Second)})
	}
	entries = append(entries, store.HistoryEntry{Outcome: store.OutcomeRequeued, ReceivedAt: clk.Now(), At: clk.Now().Add(time.Hour)})
	a.Settled(context.Background(), entries)
	s := a.Snapshot()
	if len(s.Series) != 60 || s.Received != 10 || s.Synced != 4 {
		t.Fatalf("snapshot: %d points, received %d, synced %d; want 60, 10, 4", len(s.Series), s.Received, s.Synced)
	}
	if last, prev := s.Series[59], s.Series[58]; last.Received != 3 || prev.Received != 7 || prev.Synced != 4 {
		t.Fatalf("last minutes %+v %+v", prev, last)
	}
	if s.Lag.Count != 20 || s.Lag.P50 != 10*time.Second || s.Lag.P95 != 19*time.Second {
		t.Fatalf("lag %+v, want 20 samples, p50 10s, p95 19s", s.Lag)
	}
	clk.Advance(2 * time.Hour)
	if s := a.Snapshot(); s.Received != 0 || s.Lag.Count != 0 {
		t.Fatalf("two hours later: received %d, lag %+v; want the hour to have rolled off", s.Received, s.Lag)
	}
}

func TestLoginRedirectStaysInTheConsole(t *testing.T) {
	for in, want := range map[string]string{
		"/console/deadletters?entity=contact": "/console/deadletters?entity=contact",
		"//evil.example/console/":             "/console/",
		"https://evil.example/":               "/console/",
		"/console/\\evil":                     "/console/",
		"/metrics":                            "/console/",
		"":                                    "/console/",
	} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

type fakeBudget struct{}

func (fakeBudget) Budget(context.Context) (Budget, error) {
	return Budget{Day: "2026-12-01", Quota: 50000, Used: 41000, ByPurpose: map[string]int{"sync": 40000, "msi": 1000},
		WindowCalls: 37, WindowLimit: 50, Window: 20 * time.Second}, nil
}

type fakeCycles struct{}

func (fakeCycles) Cycles(context.Context) ([]Cycle, error) {
	return []Cycle{{Name: "Reconcile", OK: false, Detail: "change tracking token expired", Finished: time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)}}, nil
}

type fakeCounter struct{}

func (fakeCounter) Counts(context.Context) (queue.Counts, error) {
	return queue.Counts{Active: 12, Scheduled: 3, Locked: -1, Dead: 1}, nil
}

// The overview shows what its sources report, and "not available" for the
// ones a process does not have.
func TestOverviewShowsBudgetCyclesAndQueue(t *testing.T) {
	render := func(cfg Config) string {
		t.Helper()
		cfg.Token = testToken
		cfg.Logger = slog.New(slog.DiscardHandler)
		h, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(h)
		defer srv.Close()
		e := &env{srv: srv}
		c := e.client(t)
		e.login(t, c, testToken)
		resp, err := c.Get(srv.URL + "/console/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	body := render(Config{Budget: fakeBudget{}, Cycles: fakeCycles{}, Queue: fakeCounter{}, DeadLetters: &fakeDead{}})
	for _, want := range []string{"<strong>41000</strong> of 50000 calls (82 %)", "<td>sync</td><td class=\"num\">40000</td>",
		"<strong>37</strong> of 50 calls", "change tracking token expired", `id="q-active">12<`, `id="q-locked">—<`} {
		if !strings.Contains(body, want) {
			t.Errorf("overview lacks %q", want)
		}
	}
	body = render(Config{})
	for _, want := range []string{"Not available in this version or process.", "this queue cannot count its messages"} {
		if !strings.Contains(body, want) {
			t.Errorf("overview without sources lacks %q", want)
		}
	}
}

func TestChartDrawsEveryMinute(t *testing.T) {
	var series []Point
	for i := range 60 {
		series = append(series, Point{Start: time.Date(2026, 12, 1, 10, i, 0, 0, time.UTC), Received: i % 7, Synced: i % 5})
	}
	svg := string(chart(series))
	if n := strings.Count(svg, "<rect"); n != 48 { // minutes with synced > 0: 60 - 12 multiples of 5
		t.Errorf("%d bars, want 48", n)
	}
	pts := regexp.MustCompile(`points="([^"]*)"`).FindStringSubmatch(svg)
	if pts == nil || len(strings.Fields(pts[1])) != 60 {
		t.Fatalf("received line: %v", pts)
	}
	if !strings.Contains(svg, "peak 6") || !strings.Contains(svg, "10:59: 4 synced") {
		t.Errorf("chart labels missing:\n%s", svg[:300])
	}
}
