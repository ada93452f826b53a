package receiver

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/msisync/msisync/internal/queue"
)

func bearer(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

func seedDLQ(hs *harness) {
	now := hs.clk.Now()
	hs.dlq.items = []queue.DeadLetter{
		{ID: "1", MessageID: "m1", Body: []byte(`{"schema":1,"entity":"contact"}`), Properties: map[string]string{queue.PropEntity: "contact"},
			Reason: "MarketoError", Description: "1003 invalid email", DeadLetteredAt: now.Add(-2 * time.Hour)},
		{ID: "2", MessageID: "m2", Body: []byte{0xff, 0x00}, Properties: map[string]string{queue.PropEntity: "account"},
			Reason: queue.ReasonMaxDelivery, DeadLetteredAt: now.Add(-30 * time.Minute)},
		{ID: "3", MessageID: "m3", Body: []byte(`{}`), Properties: map[string]string{queue.PropEntity: "contact"},
			Reason: "MissingDependency", Description: "account b1a2 not synced", DeadLetteredAt: now.Add(-10 * time.Minute)},
	}
}

func TestAdminAuth(t *testing.T) {
	t.Run("disabled without a token", func(t *testing.T) {
		hs := newHarness(t, func(c *Config) { c.AdminToken = "" })
		for _, r := range []req{
			{method: "GET", path: RouteDLQ, header: bearer("")},
			{method: "GET", path: RouteDLQ, header: bearer(admin)},
			{method: "POST", path: RouteDLQReplay, body: []byte(`{"all":true}`), header: bearer("")},
		} {
			if w := hs.do(t, r); w.Code != http.StatusNotFound {
				t.Errorf("%s %s: %d, want 404", r.method, r.path, w.Code)
			}
		}
	})
	hs := newHarness(t, nil)
	seedDLQ(hs)
	for name, h := range map[string]map[string]string{
		"no header":      nil,
		"wrong token":    bearer("wrong"),
		"token prefix":   bearer(admin[:len(admin)-1]),
		"basic scheme":   {"Authorization": "Basic " + admin},
		"webhook key":    {DefaultHeader: key},
		"empty bearer":   bearer(""),
		"token no space": {"Authorization": "Bearer" + admin},
	} {
		for _, r := range []req{
			{method: "GET", path: RouteDLQ, header: h},
			{method: "GET", path: "/admin/v1/dlq/1", header: h},
			{method: "POST", path: RouteDLQReplay, body: []byte(`{"all":true}`), header: h},
			{method: "POST", path: RouteDLQPurge, body: []byte(`{"all":true,"confirm":true}`), header: h},
		} {
			w := hs.do(t, r)
			if w.Code != http.StatusUnauthorized || w.Header().Get("WWW-Authenticate") == "" {
				t.Errorf("%s: %s %s: %d", name, r.method, r.path, w.Code)
			}
		}
	}
	if len(hs.dlq.calls) != 0 || len(hs.dlq.items) != 3 {
		t.Errorf("unauthenticated calls reached the DLQ: %v", hs.dlq.calls)
	}
}

func TestAdminList(t *testing.T) {
	hs := newHarness(t, nil)
	seedDLQ(hs)
	w := hs.do(t, req{method: "GET", path: RouteDLQ + "?entity=contact&reason=missing&since=1h&limit=5", header: bearer(admin)})
	if w.Code != 200 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	list := decodeJSON[DeadLetterList](t, w)
	if list.Count != 1 || len(list.Items) != 1 || list.Items[0].ID != "3" || list.Limit != 5 {
		t.Errorf("list %+v", list)
	}
	f := hs.dlq.filters[0]
	if f.Entity != "contact" || f.Reason != "missing" || f.Limit != 5 || !f.Since.Equal(hs.clk.Now().Add(-time.Hour)) {
		t.Errorf("filter %+v", f)
	}
	if strings.Contains(w.Body.String(), `"body"`) {
		t.Error("the list carries message bodies; only GET /dlq/{id} should")
	}

	w = hs.do(t, req{method: "GET", path: RouteDLQ, header: bearer(admin)})
	if list := decodeJSON[DeadLetterList](t, w); list.Count != 3 || list.Limit != defaultDLQLimit {
		t.Errorf("unfiltered list %+v", list)
	}
	// A full page names the next one; the list asks the queue for pages
	// without bodies.
	w = hs.do(t, req{method: "GET", path: RouteDLQ + "?limit=2", header: bearer(admin)})
	if list := decodeJSON[DeadLetterList](t, w); list.Count != 2 || list.Next != list.Items[1].ID {
		t.Errorf("page of 2: %+v, want next = the last id", list)
	}
	w = hs.do(t, req{method: "GET", path: RouteDLQ + "?limit=2&after=2", header: bearer(admin)})
	if last := hs.dlq.filters[len(hs.dlq.filters)-1]; w.Code != 200 || last.After != "2" || !last.NoBody {
		t.Errorf("after=2: status %d, filter %+v, want After 2 and NoBody", w.Code, last)
	}
	for _, q := range []string{"?limit=0", "?limit=x", "?limit=100000", "?since=yesterday", "?since=-1h", "?after=x", "?after=-3"} {
		w := hs.do(t, req{method: "GET", path: RouteDLQ + q, header: bearer(admin)})
		p := decodeJSON[Problem](t, w)
		if w.Code != 400 || len(p.Errors) == 0 || !strings.Contains(q, p.Errors[0].Field) {
			t.Errorf("%s: %d %+v", q, w.Code, p)
		}
	}
}

func TestAdminGet(t *testing.T) {
	hs := newHarness(t, nil)
	seedDLQ(hs)
	w := hs.do(t, req{method: "GET", path: "/admin/v1/dlq/1", header: bearer(admin)})
	d := decodeJSON[DeadLetterDetail](t, w)
	if w.Code != 200 || d.ID != "1" || string(d.Body) != `{"schema":1,"entity":"contact"}` || d.Description != "1003 invalid email" {
		t.Errorf("%d %+v", w.Code, d)
	}
	w = hs.do(t, req{method: "GET", path: "/admin/v1/dlq/2", header: bearer(admin)})
	d = decodeJSON[DeadLetterDetail](t, w)
	if d.Body != nil || string(d.BodyBase64) != "\xff\x00" {
		t.Errorf("binary body: %+v", d)
	}
	w = hs.do(t, req{method: "GET", path: "/admin/v1/dlq/99", header: bearer(admin)})
	if p := decodeJSON[Problem](t, w); w.Code != 404 || p.Type != ProblemTypePrefix+probNotFound {
		t.Errorf("missing: %d %+v", w.Code, p)
	}
}

func TestAdminReplay(t *testing.T) {
	hs := newHarness(t, nil)
	seedDLQ(hs)
	// A dry run lists and changes nothing.
	w := hs.do(t, req{path: RouteDLQReplay, body: []byte(`{"all":true,"entity":"contact","dryRun":true}`), header: bearer(admin)})
	res := decodeJSON[BulkResult](t, w)
	if w.Code != 200 || !res.DryRun || res.Matched != 2 || strings.Join(res.IDs, ",") != "1,3" || res.Replayed != nil {
		t.Errorf("dry run: %d %s", w.Code, w.Body)
	}
	if strings.Join(hs.dlq.calls, ",") != "list" || len(hs.dlq.items) != 3 {
		t.Fatalf("dry run changed something: %v", hs.dlq.calls)
	}
	w = hs.do(t, req{path: RouteDLQReplay, body: []byte(`{"ids":["2","3"]}`), header: bearer(admin)})
	res = decodeJSON[BulkResult](t, w)
	if w.Code != 200 || res.Replayed == nil || *res.Replayed != 2 {
		t.Fatalf("replay: %d %s", w.Code, w.Body)
	}
	if f := hs.dlq.filters[1]; strings.Join(f.IDs, ",") != "2,3" || f.Entity != "" {
		t.Errorf("filter %+v", f)
	}
	w = hs.do(t, req{path: RouteDLQReplay, body: []byte(`{"all":true,"reason":"maxdelivery","since":"2026-01-01T00:00:00Z"}`), header: bearer(admin)})
	if res := decodeJSON[BulkResult](t, w); w.Code != 200 || *res.Replayed != 0 {
		t.Errorf("replay all: %d %s", w.Code, w.Body)
	}
	if f := hs.dlq.filters[2]; f.Reason != "maxdelivery" || !f.Since.Equal(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("filter %+v", f)
	}
}

func TestAdminPurge(t *testing.T) {
	hs := newHarness(t, nil)
	seedDLQ(hs)
	w := hs.do(t, req{path: RouteDLQPurge, body: []byte(`{"all":true,"entity":"contact"}`), header: bearer(admin)})
	if p := decodeJSON[Problem](t, w); w.Code != 422 || len(p.Errors) != 1 || p.Errors[0].Field != "confirm" {
		t.Errorf("unconfirmed purge: %d %s", w.Code, w.Body)
	}
	if len(hs.dlq.calls) != 0 {
		t.Fatalf("unconfirmed purge reached the DLQ: %v", hs.dlq.calls)
	}
	w = hs.do(t, req{path: RouteDLQPurge, body: []byte(`{"all":true,"entity":"contact","confirm":true}`), header: bearer(admin)})
	res := decodeJSON[BulkResult](t, w)
	if w.Code != 200 || res.Purged == nil || *res.Purged != 2 || len(hs.dlq.items) != 1 || hs.dlq.items[0].ID != "2" {
		t.Errorf("purge: %d %s, left %v", w.Code, w.Body, hs.dlq.items)
	}
}

func TestAdminSelectorErrors(t *testing.T) {
	hs := newHarness(t, nil)
	seedDLQ(hs)
	for _, tc := range []struct {
		path, body string
		status     int
		field      string
	}{
		{RouteDLQReplay, `{}`, 422, "ids"},
		{RouteDLQReplay, `{"entity":"contact"}`, 422, "ids"},
		{RouteDLQReplay, `{"ids":["1"],"all":true}`, 422, "all"},
		{RouteDLQReplay, `{"ids":[""]}`, 422, "ids[0]"},
		{RouteDLQReplay, `{"all":true,"since":"soon"}`, 422, "since"},
		{RouteDLQReplay, `{"all":true,"limit":-1}`, 422, "limit"},
		{RouteDLQReplay, `{"all":true,"dry_run":true}`, 400, "body"}, // a typo must not replay everything
		{RouteDLQPurge, `{"all":true,"confirm":"yes"}`, 400, "body"},
		{RouteDLQPurge, `{"all":`, 400, "body"},
	} {
		w := hs.do(t, req{path: tc.path, body: []byte(tc.body), header: bearer(admin)})
		p := decodeJSON[Problem](t, w)
		if w.Code != tc.status || len(p.Errors) == 0 || p.Errors[0].Field != tc.field {
			t.Errorf("%s %s: %d %+v", tc.path, tc.body, w.Code, p)
		}
	}
	if len(hs.dlq.calls) != 0 || len(hs.dlq.items) != 3 {
		t.Errorf("bad selectors reached the DLQ: %v", hs.dlq.calls)
	}
}

func TestAdminExtraRoutes(t *testing.T) {
	hs := newHarness(t, func(c *Config) {
		c.Extra = func(r chi.Router) {
			r.Get("/admin/v1/ping", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, 200, map[string]string{"pong": "yes"}) })
		}
	})
	if w := hs.do(t, req{method: "GET", path: "/admin/v1/ping"}); w.Code != 401 {
		t.Errorf("extra route without token: %d", w.Code)
	}
	if w := hs.do(t, req{method: "GET", path: "/admin/v1/ping", header: bearer(admin)}); w.Code != 200 || !strings.Contains(w.Body.String(), "pong") {
		t.Errorf("extra route: %d %s", w.Code, w.Body)
	}
}
