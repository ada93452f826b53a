package marketo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/msisync/msisync/internal/marketo/marketosim"
	"github.com/msisync/msisync/internal/marketo/marketotype"
)

// gate stands in front of the simulator like a proxy or Marketo's own
// front end: refuse decides per REST request whether to answer a status
// instead of passing it on.
type gate struct {
	next   http.Handler
	mu     sync.Mutex
	refuse func(r *http.Request, body []byte) int
	rest   []string // bearer token of each REST request
	codes  []int    // what each REST request got from the gate (0: passed on)
}

func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(r.URL.Path, "/rest/") {
		g.next.ServeHTTP(w, r)
		return
	}
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	code := g.refuse(r, body)
	g.mu.Lock()
	g.rest = append(g.rest, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
	g.codes = append(g.codes, code)
	g.mu.Unlock()
	if code != 0 {
		w.WriteHeader(code)
		return
	}
	g.next.ServeHTTP(w, r)
}

func gated(t *testing.T, refuse func(r *http.Request, body []byte) int) (*env, *gate) {
	t.Helper()
	e := newEnv(t, marketosim.Options{})
	g := &gate{next: e.rec, refuse: refuse}
	e.srv.Config.Handler = g
	return e, g
}

// An HTTP 401 on a REST call (a token a gateway rejects) must not be
// retried on the cached token: the client drops it and asks for one.
func TestHTTP401DropsTheCachedTokenBeforeTheRetry(t *testing.T) {
	first := true
	e, g := gated(t, func(r *http.Request, _ []byte) int {
		if first {
			first = false
			return http.StatusUnauthorized
		}
		return 0
	})
	c := e.client(nil)
	res, err := c.Sync(context.Background(), marketotype.Leads, marketotype.SyncRequest{Input: leads(2, "a")})
	if err != nil {
		t.Fatal(err)
	}
	e.checkLeadResults(leads(2, "a"), res)
	if len(g.rest) != 2 || g.codes[0] != http.StatusUnauthorized {
		t.Fatalf("REST requests %v with codes %v, want a 401 then one retry", g.rest, g.codes)
	}
	// Marketo may hand back the same token while it lives; what matters is
	// that the client asked again instead of trusting its cached copy.
	identity := 0
	for _, r := range e.rec.requests() {
		if strings.HasPrefix(r.Path, "/identity/") {
			identity++
		}
	}
	if identity != 2 {
		t.Fatalf("%d identity calls, want 2 (the token is fetched again after the 401)", identity)
	}
}

// A proxy refuses bodies over a limit (HTTP 413): the batch is split in
// halves until the calls fit; the one record too big on its own is skipped
// with the reason, the others are written.
func TestHTTP413SplitsTheBatchDownToTheRecordTooLarge(t *testing.T) {
	const limit = 4000
	e, g := gated(t, func(r *http.Request, body []byte) int {
		if r.Method == http.MethodPost && len(body) > limit {
			return http.StatusRequestEntityTooLarge
		}
		return 0
	})
	in := leads(12, "b")
	in[5]["company"] = strings.Repeat("x", limit) // too large even alone
	res, err := e.client(nil).Sync(context.Background(), marketotype.Leads, marketotype.SyncRequest{Input: in})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if i == 5 {
			if r.Status != "skipped" || len(r.Reasons) == 0 || r.Reasons[0].Code != "413" || !strings.Contains(r.Reasons[0].Message, "413") {
				t.Errorf("record 5: %+v, want skipped with reason 413", r)
			}
			continue
		}
		if r.Status != "created" || r.Seq != i {
			t.Errorf("record %d: %+v, want created", i, r)
		}
	}
	if n := len(e.sim.Dump().Leads); n != 11 {
		t.Fatalf("%d leads in Marketo, want the 11 that fit", n)
	}
	refused := 0
	for _, c := range g.codes {
		if c == http.StatusRequestEntityTooLarge {
			refused++
		}
	}
	// 12 → 6+6 → (3+3) → (1+2) → (1+1): the path to record 5 is refused at
	// each level; the halves without it go through at once.
	if refused < 2 || refused > 6 {
		t.Fatalf("%d calls refused with 413 (codes %v), want the few on the path to the large record", refused, g.codes)
	}
}

// A URL over a front end's limit (HTTP 414) splits the query's values.
func TestHTTP414SplitsTheQueryValues(t *testing.T) {
	e, _ := gated(t, func(r *http.Request, _ []byte) int {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "leads.json") && len(r.URL.RawQuery) > 400 {
			return http.StatusRequestURITooLong
		}
		return 0
	})
	c := e.client(nil)
	in := leads(20, "c")
	if _, err := c.Sync(context.Background(), marketotype.Leads, marketotype.SyncRequest{Input: in}); err != nil {
		t.Fatal(err)
	}
	var emails []string
	for _, r := range in {
		emails = append(emails, r["email"].(string))
	}
	got, err := c.Query(context.Background(), marketotype.Leads, "email", emails, []string{"email"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(emails) {
		t.Fatalf("%d leads found, want %d", len(got), len(emails))
	}
}

// A server that never stops sending nextPageToken: the client stops at its
// page cap with an error, never a short list the caller would take as all.
func TestPagingCapIsAnError(t *testing.T) {
	old := maxPages
	maxPages = 3
	t.Cleanup(func() { maxPages = old })
	page := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/identity/") {
			json.NewEncoder(w).Encode(map[string]any{"access_token": "tok", "expires_in": 3600, "token_type": "bearer"})
			return
		}
		page++
		json.NewEncoder(w).Encode(map[string]any{"success": true, "requestId": fmt.Sprint(page),
			"result": []map[string]any{{"id": page}}, "nextPageToken": fmt.Sprintf("page-%d", page)})
	}))
	t.Cleanup(srv.Close)
	c, err := New(Config{BaseURL: srv.URL, ClientID: testID, ClientSecret: testSecret, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	recs, err := c.Query(context.Background(), marketotype.Leads, "email", []string{"a@example.com"}, nil)
	if err == nil || !strings.Contains(err.Error(), "stopped after 3 pages") {
		t.Fatalf("err %v with %d records, want the page cap error", err, len(recs))
	}
	if marketotype.ClassOfError(err) != marketotype.ClassPermanent {
		t.Fatalf("class %v, want permanent (retrying would hit the cap again)", marketotype.ClassOfError(err))
	}
}
