package receiver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/queue"
)

const (
	key      = "k3y-current-0123456789"
	oldKey   = "k3y-previous-9876543210"
	admin    = "adm1n-t0ken"
	contact  = "c0ffee00-1234-4567-89ab-cdef01234567"
	orgID    = "7c8d3b5e-1f2a-4b6c-9d0e-123456789abc"
	exampleU = "../../api/examples/dataverse-update-contact.json"
	exampleC = "../../api/examples/custom-event.json"
)

type harness struct {
	h    http.Handler
	q    *recorder
	dlq  *fakeDLQ
	reg  *prometheus.Registry
	logs *bytes.Buffer
	clk  *clock.Fake
}

func newHarness(t testing.TB, mod func(*Config)) *harness {
	t.Helper()
	hs := &harness{q: &recorder{}, dlq: &fakeDLQ{}, reg: prometheus.NewRegistry(), logs: &bytes.Buffer{},
		clk: clock.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))}
	cfg := Config{
		Keys:        []string{key},
		AdminToken:  admin,
		Queue:       hs.q,
		DeadLetters: hs.dlq,
		Logger:      slog.New(slog.NewJSONHandler(hs.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registerer:  hs.reg,
		Clock:       hs.clk,
	}
	if mod != nil {
		mod(&cfg)
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs.h = h
	return hs
}

func read(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func fixture(t testing.TB, name string) []byte {
	return read(t, filepath.Join("..", "dataverse", "remotecontext", "testdata", name))
}

type req struct {
	method, path string
	body         []byte
	header       map[string]string
	chunked      bool
}

func (hs *harness) do(t testing.TB, r req) *httptest.ResponseRecorder {
	t.Helper()
	if r.method == "" {
		r.method = http.MethodPost
	}
	var body io.Reader = bytes.NewReader(r.body)
	if r.chunked {
		body = io.MultiReader(bytes.NewReader(r.body)) // hides the length
	}
	hr := httptest.NewRequest(r.method, r.path, body)
	if r.chunked {
		hr.ContentLength = -1
	}
	if r.body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	for k, v := range r.header {
		if v == "" {
			hr.Header.Del(k)
		} else {
			hr.Header.Set(k, v)
		}
	}
	w := httptest.NewRecorder()
	hs.h.ServeHTTP(w, hr)
	return w
}

func withKey(h map[string]string) map[string]string {
	out := map[string]string{DefaultHeader: key}
	for k, v := range h {
		out[k] = v
	}
	return out
}

func decodeJSON[T any](t testing.TB, w *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
		t.Fatalf("body %q: %v", w.Body.String(), err)
	}
	return v
}

func TestWebhookQueuesDataverseEvent(t *testing.T) {
	hs := newHarness(t, nil)
	w := hs.do(t, req{path: RouteDataverse, body: read(t, exampleU), header: withKey(map[string]string{
		"x-ms-dynamics-organization": "contoso.crm.dynamics.com", "x-ms-dynamics-entity-name": "contact",
		"x-ms-dynamics-request-name": "Update", "x-ms-correlation-request-id": "9f1e2d3c-4b5a-4697-8877-665544332211",
	})})
	if w.Code != http.StatusAccepted {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	acc := decodeJSON[Accepted](t, w)
	sent := hs.q.messages()
	if len(sent) != 1 {
		t.Fatalf("sent %d messages", len(sent))
	}
	m := sent[0]
	e, err := event.Decode(m.Body)
	if err != nil {
		t.Fatal(err)
	}
	if acc.Status != "queued" || acc.ID != e.ID || m.ID != e.ID || e.ID != e.DeriveID() {
		t.Errorf("answer %+v, message id %s, event id %s", acc, m.ID, e.ID)
	}
	if m.Properties[queue.PropEntity] != "contact" || m.Properties[queue.PropRecordID] != contact || m.Properties[queue.PropMessage] != "Update" {
		t.Errorf("properties %v", m.Properties)
	}
	if e.Source != event.SourceWebhook || e.OrgID != orgID || e.Truncated || e.Attributes["jobtitle"].Str != "Head of Analytics" {
		t.Errorf("event %+v", e)
	}
	if len(hs.q.deadlines) != 1 || hs.q.deadlines[0].After(time.Now().Add(DefaultTimeout)) {
		t.Errorf("Send ran without the request deadline: %v", hs.q.deadlines)
	}
	if got := testutil.ToFloat64(hs.m(t).events.WithLabelValues("webhook", "contact", "Update", OutcomeQueued)); got != 1 {
		t.Errorf("queued metric = %v", got)
	}
}

// m digs out the metrics so tests can read them.
func (hs *harness) m(t testing.TB) *metrics {
	m, err := newMetrics(hs.reg) // returns the already-registered collectors
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestWebhookQueuesCustomEvent(t *testing.T) {
	hs := newHarness(t, nil)
	w := hs.do(t, req{path: RouteEvents + "?code=" + key, body: read(t, exampleC)})
	if w.Code != http.StatusAccepted {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	sent := hs.q.messages()
	if len(sent) != 1 {
		t.Fatalf("sent %d", len(sent))
	}
	e, err := event.Decode(sent[0].Body)
	if err != nil {
		t.Fatal(err)
	}
	if e.Source != event.SourceCustom || e.RecordID != contact || !e.OccurredAt.Equal(hs.clk.Now()) {
		t.Errorf("event %+v (occurredAt must default to the receiver clock)", e)
	}
}

func TestBadInputEnqueuesNothing(t *testing.T) {
	valid := read(t, exampleU)
	big := append([]byte(`{"MessageName":"Update","x":"`), bytes.Repeat([]byte("a"), 2048)...)
	big = append(big, `"}`...)
	for _, tc := range []struct {
		name   string
		cfg    func(*Config)
		r      req
		status int
		typ    string
		field  string
	}{
		{name: "no key", r: req{path: RouteDataverse, body: valid}, status: 401, typ: probUnauthorized},
		{name: "wrong header key", r: req{path: RouteDataverse, body: valid, header: map[string]string{DefaultHeader: "nope"}}, status: 401, typ: probUnauthorized},
		{name: "wrong code", r: req{path: RouteDataverse + "?code=nope", body: valid}, status: 401, typ: probUnauthorized},
		{name: "key in the wrong header", r: req{path: RouteDataverse, body: valid, header: map[string]string{"x-other": key}}, status: 401, typ: probUnauthorized},
		{name: "custom envelope without key", r: req{path: RouteEvents, body: read(t, exampleC)}, status: 401, typ: probUnauthorized},
		{name: "GET", r: req{method: http.MethodGet, path: RouteDataverse, header: withKey(nil)}, status: 405, typ: probMethod, field: "method"},
		{name: "PUT", r: req{method: http.MethodPut, path: RouteEvents, body: valid, header: withKey(nil)}, status: 405, typ: probMethod, field: "method"},
		{name: "text/plain", r: req{path: RouteDataverse, body: valid, header: withKey(map[string]string{"Content-Type": "text/plain"})}, status: 415, typ: probMediaType, field: "Content-Type"},
		{name: "form", r: req{path: RouteEvents, body: valid, header: withKey(map[string]string{"Content-Type": "application/x-www-form-urlencoded"})}, status: 415, typ: probMediaType, field: "Content-Type"},
		{name: "over the limit (Content-Length)", cfg: func(c *Config) { c.MaxBodyBytes = 1024 }, r: req{path: RouteDataverse, body: big, header: withKey(nil)}, status: 413, typ: probTooLarge, field: "body"},
		{name: "over the limit (chunked)", cfg: func(c *Config) { c.MaxBodyBytes = 1024 }, r: req{path: RouteDataverse, body: big, header: withKey(nil), chunked: true}, status: 413, typ: probTooLarge, field: "body"},
		{name: "over the default 1 MiB", r: req{path: RouteDataverse, body: bytes.Repeat([]byte(" "), DefaultMaxBodyBytes+1), header: withKey(nil)}, status: 413, typ: probTooLarge, field: "body"},
		{name: "malformed JSON", r: req{path: RouteDataverse, body: valid[:len(valid)/2], header: withKey(nil)}, status: 400, typ: probMalformed, field: "body"},
		{name: "empty body", r: req{path: RouteDataverse, body: []byte{}, header: withKey(nil)}, status: 400, typ: probMalformed, field: "body"},
		{name: "malformed custom", r: req{path: RouteEvents, body: []byte(`{"entity":"contact",`), header: withKey(nil)}, status: 400, typ: probMalformed, field: "body"},
		{name: "missing PrimaryEntityId", r: req{path: RouteDataverse, body: []byte(`{"MessageName":"Update","PrimaryEntityName":"contact"}`), header: withKey(nil)}, status: 422, typ: probInvalid, field: "PrimaryEntityId"},
		{name: "missing MessageName", r: req{path: RouteDataverse, body: []byte(`{"PrimaryEntityName":"contact","PrimaryEntityId":"` + contact + `"}`), header: withKey(nil)}, status: 422, typ: probInvalid, field: "MessageName"},
		{name: "id not a GUID", r: req{path: RouteDataverse, body: []byte(`{"MessageName":"Update","PrimaryEntityName":"contact","PrimaryEntityId":"12345"}`), header: withKey(nil)}, status: 422, typ: probInvalid, field: "PrimaryEntityId"},
		{name: "lookup id not a GUID", r: req{path: RouteDataverse, body: bytes.Replace(valid, []byte(`"Id":"b1a2c3d4-e5f6-4789-9abc-def012345678"`), []byte(`"Id":"account-1"`), 1), header: withKey(nil)}, status: 422, typ: probInvalid},
		{name: "JSON array", r: req{path: RouteDataverse, body: []byte(`[]`), header: withKey(nil)}, status: 422, typ: probInvalid, field: "$"},
		{name: "custom without id", r: req{path: RouteEvents, body: []byte(`{"entity":"contact","message":"Update"}`), header: withKey(nil)}, status: 422, typ: probInvalid, field: "id"},
		{name: "custom bad lookup", r: req{path: RouteEvents, body: []byte(`{"entity":"contact","id":"` + contact + `","message":"Update","attributes":{"parentcustomerid":{"id":"x"}}}`), header: withKey(nil)}, status: 422, typ: probInvalid, field: "attributes.parentcustomerid.logicalName"},
		{name: "org not allowed", cfg: func(c *Config) { c.Orgs = []string{"fabrikam"} }, r: req{path: RouteDataverse, body: valid, header: withKey(nil)}, status: 403, typ: probForbiddenOrg, field: "OrganizationId"},
		{name: "custom org not allowed", cfg: func(c *Config) { c.Orgs = []string{"fabrikam"} }, r: req{path: RouteEvents, body: read(t, exampleC), header: withKey(nil)}, status: 403, typ: probForbiddenOrg, field: "organization"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hs := newHarness(t, tc.cfg)
			w := hs.do(t, tc.r)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type %q", ct)
			}
			p := decodeJSON[Problem](t, w)
			if p.Type != ProblemTypePrefix+tc.typ || p.Status != tc.status || p.Title == "" || p.Detail == "" {
				t.Errorf("problem %+v", p)
			}
			if tc.field != "" && (len(p.Errors) == 0 || p.Errors[0].Field != tc.field || p.Errors[0].Reason == "") {
				t.Errorf("errors %+v, want field %q first", p.Errors, tc.field)
			}
			if tc.status == 401 && (len(p.Errors) != 0 || strings.Contains(strings.ToLower(p.Detail), "key") || strings.Contains(p.Detail, "code")) {
				t.Errorf("401 hints at what was wrong: %+v", p)
			}
			if tc.status == 405 && w.Header().Get("Allow") != "POST" {
				t.Errorf("Allow %q", w.Header().Get("Allow"))
			}
			if n := len(hs.q.messages()); n != 0 {
				t.Errorf("enqueued %d messages on a %d", n, tc.status)
			}
			if len(hs.q.deadlines) != 0 {
				t.Error("Send was called")
			}
		})
	}
}

func TestIgnoredEvents(t *testing.T) {
	for _, tc := range []struct {
		name, reason string
		body         []byte
		path         string
	}{
		{name: "unsynced entity, sparse body without id", path: RouteDataverse, body: fixture(t, "incident_sparse.json"), reason: `entity "incident"`},
		{name: "unsynced entity with party list", path: RouteDataverse, body: fixture(t, "email_create_partylist.json"), reason: `entity "email"`},
		{name: "unsynced message", path: RouteDataverse, body: []byte(`{"MessageName":"GrantAccess","PrimaryEntityName":"contact","PrimaryEntityId":"` + contact + `"}`), reason: `message "GrantAccess"`},
		{name: "custom unsynced entity", path: RouteEvents, body: []byte(`{"entity":"task","id":"` + contact + `","message":"Create"}`), reason: `entity "task"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hs := newHarness(t, nil)
			w := hs.do(t, req{path: tc.path, body: tc.body, header: withKey(nil)})
			if w.Code != http.StatusAccepted {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
			acc := decodeJSON[Accepted](t, w)
			if acc.Status != "ignored" || !strings.Contains(acc.Reason, tc.reason) || acc.ID != "" {
				t.Errorf("answer %+v", acc)
			}
			if len(hs.q.messages()) != 0 {
				t.Error("ignored event enqueued")
			}
			var total float64
			for _, src := range []string{"webhook", "custom"} {
				for _, msg := range []string{"other", "Create"} {
					total += testutil.ToFloat64(hs.m(t).events.WithLabelValues(src, "other", msg, OutcomeIgnored))
				}
				total += testutil.ToFloat64(hs.m(t).events.WithLabelValues(src, "contact", "other", OutcomeIgnored))
			}
			if total != 1 {
				t.Errorf("ignored metric total = %v, want 1", total)
			}
		})
	}
}

func TestAuthModesAndKeyRotation(t *testing.T) {
	hs := newHarness(t, func(c *Config) {
		c.Keys = []string{key, oldKey}
		c.Header = "x-custom-secret"
	})
	body := fixture(t, "contact_create.json")
	for _, tc := range []struct {
		name   string
		path   string
		header map[string]string
		want   int
	}{
		{"configured header, current key", RouteDataverse, map[string]string{"x-custom-secret": key}, 202},
		{"configured header, previous key", RouteDataverse, map[string]string{"x-custom-secret": oldKey}, 202},
		{"?code=, current key", RouteDataverse + "?code=" + key, nil, 202},
		{"?code=, previous key", RouteDataverse + "?code=" + oldKey, nil, 202},
		{"default header no longer used", RouteDataverse, map[string]string{DefaultHeader: key}, 401},
		{"prefix of a key", RouteDataverse + "?code=" + key[:len(key)-1], nil, 401},
		{"key plus suffix", RouteDataverse, map[string]string{"x-custom-secret": key + "x"}, 401},
		{"wrong header but right code", RouteDataverse + "?code=" + key, map[string]string{"x-custom-secret": "wrong"}, 202},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(hs.q.messages())
			w := hs.do(t, req{path: tc.path, body: body, header: tc.header})
			if w.Code != tc.want {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.want, w.Body)
			}
			if got := len(hs.q.messages()) - before; (tc.want == 202) != (got == 1) {
				t.Errorf("enqueued %d", got)
			}
		})
	}
	if strings.Contains(hs.logs.String(), key) || strings.Contains(hs.logs.String(), oldKey) {
		t.Error("a webhook key appears in the logs")
	}
	if !strings.Contains(hs.logs.String(), `"status":401`) {
		t.Error("401s were not logged at all (the log assertion above would be vacuous)")
	}
}

func TestConfigErrors(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no queue":   {Keys: []string{key}},
		"no keys":    {Queue: &recorder{}},
		"empty key":  {Queue: &recorder{}, Keys: []string{key, " "}},
		"bad header": {Queue: &recorder{}, Keys: []string{key}, Header: "x bad"},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestOrgAllowList(t *testing.T) {
	body := read(t, exampleU)
	for _, tc := range []struct {
		orgs   []string
		header string
		want   int
	}{
		{orgs: []string{strings.ToUpper(orgID)}, want: 202},
		{orgs: []string{"UNQ7C8D3B5E1F2A4B6C9D0E12345678"}, want: 202},
		{orgs: []string{"fabrikam", "contoso"}, header: "contoso.crm.dynamics.com", want: 202},
		{orgs: []string{"contoso.crm4.dynamics.com"}, header: "contoso.crm4.dynamics.com", want: 202},
		{orgs: []string{"fabrikam"}, header: "contoso.crm.dynamics.com", want: 403},
	} {
		hs := newHarness(t, func(c *Config) { c.Orgs = tc.orgs })
		w := hs.do(t, req{path: RouteDataverse, body: body, header: withKey(map[string]string{"x-ms-dynamics-organization": tc.header})})
		if w.Code != tc.want {
			t.Errorf("orgs %v header %q: status %d, want %d", tc.orgs, tc.header, w.Code, tc.want)
		}
		if got := len(hs.q.messages()); (tc.want == 202) != (got == 1) {
			t.Errorf("orgs %v: enqueued %d", tc.orgs, got)
		}
	}
}

func TestContentTypes(t *testing.T) {
	for _, ct := range []string{"", "application/json", "application/json; charset=utf-8", "Application/JSON;charset=UTF-8", "application/problem+json"} {
		hs := newHarness(t, nil)
		w := hs.do(t, req{path: RouteDataverse, body: fixture(t, "lead_update.json"), header: withKey(map[string]string{"Content-Type": ct})})
		if w.Code != http.StatusAccepted || len(hs.q.messages()) != 1 {
			t.Errorf("Content-Type %q: status %d, sent %d", ct, w.Code, len(hs.q.messages()))
		}
	}
}

func TestQueueFailureIs503(t *testing.T) {
	hs := newHarness(t, nil)
	hs.q.err = errors.New("disk full")
	w := hs.do(t, req{path: RouteDataverse, body: read(t, exampleU), header: withKey(nil)})
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
		t.Fatalf("status %d, Retry-After %q", w.Code, w.Header().Get("Retry-After"))
	}
	p := decodeJSON[Problem](t, w)
	if p.Type != ProblemTypePrefix+probQueueUnavailable || strings.Contains(p.Detail, "disk full") {
		t.Errorf("problem %+v (internal errors stay in the logs)", p)
	}
	if got := testutil.ToFloat64(hs.m(t).events.WithLabelValues("webhook", "contact", "Update", OutcomeFailed)); got != 1 {
		t.Errorf("failed metric = %v", got)
	}
}

func TestOversizeEventSentReduced(t *testing.T) {
	check := func(t *testing.T, hs *harness) {
		t.Helper()
		w := hs.do(t, req{path: RouteDataverse, body: read(t, exampleU), header: withKey(nil)})
		if w.Code != http.StatusAccepted {
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
		if acc := decodeJSON[Accepted](t, w); !acc.Reduced || acc.Status != "queued" {
			t.Errorf("answer %+v", acc)
		}
		sent := hs.q.messages()
		if len(sent) != 1 {
			t.Fatalf("sent %d", len(sent))
		}
		e, err := event.Decode(sent[0].Body)
		if err != nil {
			t.Fatal(err)
		}
		if !e.Truncated || e.Attributes != nil || e.PreImages != nil || e.RecordID != contact || sent[0].ID != e.ID {
			t.Errorf("reduced event %+v", e)
		}
	}
	t.Run("configured limit", func(t *testing.T) {
		hs := newHarness(t, func(c *Config) { c.MaxMessageBytes = 1024 })
		check(t, hs)
		if len(hs.q.deadlines) != 1 {
			t.Errorf("Send called %d times, want once", len(hs.q.deadlines))
		}
	})
	t.Run("adapter says too large", func(t *testing.T) {
		hs := newHarness(t, nil)
		hs.q.reject = func(m queue.Message) error {
			if len(m.Body) > 1024 {
				return queue.ErrTooLarge
			}
			return nil
		}
		check(t, hs)
	})
}

// MaxMessageBytes limits queue.Message.Size (body and properties, not the
// message id): a message of exactly that size is sent whole, one byte less
// and it is reduced.
func TestMaxMessageBytesLimitsMessageSize(t *testing.T) {
	send := func(t *testing.T, limit int) (queue.Message, Accepted) {
		t.Helper()
		hs := newHarness(t, func(c *Config) { c.MaxMessageBytes = limit })
		w := hs.do(t, req{path: RouteDataverse, body: read(t, exampleU), header: withKey(nil)})
		if w.Code != http.StatusAccepted {
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
		sent := hs.q.messages()
		if len(sent) != 1 {
			t.Fatalf("sent %d", len(sent))
		}
		return sent[0], decodeJSON[Accepted](t, w)
	}
	whole, acc := send(t, 0)
	if acc.Reduced || whole.ID == "" {
		t.Fatalf("unlimited: %+v", acc)
	}
	size := whole.Size()
	if m, acc := send(t, size); acc.Reduced || !bytes.Equal(m.Body, whole.Body) {
		t.Errorf("limit = Size() %d: reduced %v", size, acc.Reduced)
	}
	if m, acc := send(t, size-1); !acc.Reduced || m.Size() >= size {
		t.Errorf("limit = Size()-1: reduced %v, size %d", acc.Reduced, m.Size())
	}
}

func TestRedeliveryKeepsMessageID(t *testing.T) {
	hs := newHarness(t, nil)
	for i := 0; i < 2; i++ {
		if w := hs.do(t, req{path: RouteDataverse, body: read(t, exampleU), header: withKey(nil)}); w.Code != 202 {
			t.Fatalf("status %d", w.Code)
		}
	}
	sent := hs.q.messages()
	if len(sent) != 2 || sent[0].ID != sent[1].ID || sent[0].ID == "" {
		t.Fatalf("ids %v; a re-sent delivery must keep its message id so the queue drops it", sent)
	}
}

func TestHealthReadyMetrics(t *testing.T) {
	var readyErr error
	hs := newHarness(t, func(c *Config) {
		c.Ready = func(ctx context.Context) error {
			if _, ok := ctx.Deadline(); !ok {
				return errors.New("no deadline")
			}
			return readyErr
		}
	})
	if w := hs.do(t, req{method: "GET", path: RouteHealth}); w.Code != 200 {
		t.Errorf("healthz %d", w.Code)
	}
	if w := hs.do(t, req{method: "GET", path: RouteReady}); w.Code != 200 {
		t.Errorf("readyz %d: %s", w.Code, w.Body)
	}
	readyErr = errors.New("queue: ping: database is locked")
	if w := hs.do(t, req{method: "GET", path: RouteReady}); w.Code != 503 || !strings.Contains(w.Body.String(), "database is locked") {
		t.Errorf("readyz when not ready: %d %s", w.Code, w.Body)
	}
	hs.do(t, req{path: RouteDataverse, body: read(t, exampleU), header: withKey(nil)})
	w := hs.do(t, req{method: "GET", path: RouteMetrics})
	for _, want := range []string{
		`msisync_receiver_requests_total{code="202",route="/webhooks/dataverse"} 1`,
		`msisync_receiver_requests_total{code="503",route="/readyz"} 1`,
		`msisync_receiver_events_total{entity="contact",message="Update",outcome="queued",source="webhook"} 1`,
		`msisync_receiver_enqueue_duration_seconds_count 1`,
	} {
		if !strings.Contains(w.Body.String(), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if w := hs.do(t, req{method: "GET", path: "/nope"}); w.Code != 404 || w.Header().Get("Content-Type") != "application/problem+json" {
		t.Errorf("unknown path: %d %s", w.Code, w.Header().Get("Content-Type"))
	}
}

func TestNewSharesMetricsOnOneRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	for i := 0; i < 2; i++ {
		h, err := New(Config{Keys: []string{key}, Queue: &recorder{}, Registerer: reg})
		if err != nil {
			t.Fatalf("New #%d: %v", i+1, err)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, RouteHealth, nil))
		if w.Code != http.StatusOK {
			t.Fatalf("receiver #%d: healthz %d", i+1, w.Code)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []float64
	for _, mf := range mfs {
		if mf.GetName() != "msisync_receiver_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["route"] == RouteHealth && labels["code"] == "200" {
				got = append(got, m.GetCounter().GetValue())
			}
		}
	}
	// One series counting both receivers' requests.
	if len(got) != 1 || got[0] != 2 {
		t.Fatalf("requests_total{route=%q,code=\"200\"} = %v, want one series at 2", RouteHealth, got)
	}
}

var _ chi.Router = chi.NewRouter()

func TestTruncatedDelivery(t *testing.T) {
	hs := newHarness(t, nil)
	w := hs.do(t, req{path: RouteDataverse, body: fixture(t, "contact_update_truncated.json"),
		header: withKey(map[string]string{"x-ms-dynamics-msg-size-exceeded": "true"})})
	if w.Code != http.StatusAccepted {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	sent := hs.q.messages()
	if len(sent) != 1 {
		t.Fatalf("sent %d", len(sent))
	}
	e, err := event.Decode(sent[0].Body)
	if err != nil {
		t.Fatal(err)
	}
	if !e.Truncated || e.RecordID != contact || e.Entity != "contact" {
		t.Errorf("event %+v: the worker must be told to re-read the record", e)
	}
	// Without the header the same body is an ordinary (sparse) Update.
	hs.do(t, req{path: RouteDataverse, body: fixture(t, "contact_update_truncated.json"), header: withKey(nil)})
	if e, _ := event.Decode(hs.q.messages()[1].Body); e == nil || e.Truncated {
		t.Errorf("truncated without the header: %+v", e)
	}
}

func TestDisableWebhooks(t *testing.T) {
	q := &recorder{}
	h, err := New(Config{DisableWebhooks: true, AdminToken: admin, DeadLetters: &fakeDLQ{}, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatalf("New without keys and queue: %v", err)
	}
	hs := &harness{h: h, q: q}
	for _, path := range []string{RouteDataverse + "?code=" + key, RouteEvents} {
		if w := hs.do(t, req{path: path, body: read(t, exampleU), header: withKey(nil)}); w.Code != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", path, w.Code)
		}
	}
	if w := hs.do(t, req{method: "GET", path: RouteHealth}); w.Code != 200 {
		t.Errorf("healthz %d", w.Code)
	}
	if w := hs.do(t, req{method: "GET", path: RouteDLQ, header: bearer(admin)}); w.Code != 200 {
		t.Errorf("admin %d", w.Code)
	}
}
