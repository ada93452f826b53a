package marketo

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/marketo/marketosim"
	"github.com/msisync/msisync/internal/marketo/marketotype"
)

const (
	testID     = "client-id"
	testSecret = "s3cr3t-value"
)

// recorder wraps the simulator: it notes every request and can run a hook
// after each REST call.
type recorder struct {
	next http.Handler
	mu   sync.Mutex
	reqs []seen
	// after runs after a REST request was served (nth counts from 1).
	after func(nth int, r *http.Request)
	rest  int
}

type seen struct {
	Method, Path, RawQuery string
	URILen                 int
	Bearer                 bool
}

func (rc *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rc.mu.Lock()
	rc.reqs = append(rc.reqs, seen{Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery,
		URILen: len(r.RequestURI), Bearer: strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ")})
	rc.mu.Unlock()
	rc.next.ServeHTTP(w, r)
	if strings.HasPrefix(r.URL.Path, "/rest/") {
		rc.mu.Lock()
		rc.rest++
		n, after := rc.rest, rc.after
		rc.mu.Unlock()
		if after != nil {
			after(n, r)
		}
	}
}

func (rc *recorder) requests() []seen {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]seen(nil), rc.reqs...)
}

type env struct {
	t   *testing.T
	sim *marketosim.Server
	srv *httptest.Server
	clk *clock.Fake
	rec *recorder
}

// newEnv starts a simulator; with a fake clock both sides share it.
func newEnv(t *testing.T, opts marketosim.Options) *env {
	t.Helper()
	e := &env{t: t, clk: clock.NewFake(time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC))}
	opts.ClientID, opts.ClientSecret = testID, testSecret
	if opts.Clock == nil {
		opts.Clock = e.clk
	}
	e.sim = marketosim.New(opts)
	e.rec = &recorder{next: e.sim}
	e.srv = httptest.NewServer(e.rec)
	t.Cleanup(func() {
		e.srv.Close()
		e.assertNoQueryToken()
	})
	return e
}

// assertNoQueryToken fails the test if any request carried the token (or
// any REST request lacked the Bearer header).
func (e *env) assertNoQueryToken() {
	for _, r := range e.rec.requests() {
		if strings.Contains(r.RawQuery, "access_token") {
			e.t.Errorf("request %s %s carried access_token in the query string", r.Method, r.Path)
		}
		if strings.HasPrefix(r.Path, "/rest/") && !r.Bearer {
			e.t.Errorf("request %s %s had no Authorization: Bearer header", r.Method, r.Path)
		}
	}
}

// client returns a client on the fake clock whose sleeps advance it.
func (e *env) client(mod func(*Config)) *Client {
	e.t.Helper()
	cfg := Config{BaseURL: e.srv.URL, ClientID: testID, ClientSecret: testSecret, Clock: e.clk,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), InitialBackoff: 100 * time.Millisecond,
		MaxBackoff: 2 * time.Second,
		Sleep: func(ctx context.Context, d time.Duration) error {
			e.clk.Advance(d)
			return ctx.Err()
		}}
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func leads(n int, prefix string) []marketotype.Record {
	out := make([]marketotype.Record, n)
	for i := range out {
		out[i] = marketotype.Record{"email": fmt.Sprintf("%s%d@example.com", prefix, i), "firstName": fmt.Sprintf("F%d", i)}
	}
	return out
}

// emailsByID maps the simulator's leads by id.
func (e *env) emailsByID() map[int64]string {
	m := map[int64]string{}
	for _, l := range e.sim.Dump().Leads {
		m[l["id"].(int64)] = l["email"].(string)
	}
	return m
}

// checkLeadResults asserts every input lead landed and results[i] is the
// id of input i.
func (e *env) checkLeadResults(in []marketotype.Record, res []marketotype.Result) {
	e.t.Helper()
	if len(res) != len(in) {
		e.t.Fatalf("%d results for %d inputs", len(res), len(in))
	}
	byID := e.emailsByID()
	for i, r := range res {
		if r.Status != "created" && r.Status != "updated" {
			e.t.Fatalf("result %d: %+v", i, r)
		}
		if byID[r.ID] != in[i]["email"] || r.Seq != i {
			e.t.Fatalf("result %d: id %d is %q, want %q", i, r.ID, byID[r.ID], in[i]["email"])
		}
	}
}
