package dataversesim_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/dataverse/dataversesim"
)

type api struct {
	t   *testing.T
	sim *dataversesim.Server
	srv *httptest.Server
}

func newAPI(t *testing.T, o dataversesim.Options) *api {
	t.Helper()
	if o.Clock == nil {
		o.Clock = clock.NewFake(time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC))
	}
	o.Token = "tok"
	a := &api{t: t, sim: dataversesim.New(o)}
	a.srv = httptest.NewServer(a.sim)
	t.Cleanup(a.srv.Close)
	return a
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
	return m
}

func (a *api) do(method, path string, body any, hdr ...string) resp {
	a.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, a.srv.URL+"/api/data/v9.2/"+path, rd)
	req.Header.Set("Authorization", "Bearer tok")
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return resp{res.StatusCode, res.Header, b}
}

func expect(t *testing.T, what string, r resp, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("%s: status %d (%s), want %d", what, r.status, r.body, status)
	}
}

const missing = "11111111-2222-3333-4444-555555555555"

func TestAuth(t *testing.T) {
	a := newAPI(t, dataversesim.Options{})
	for _, auth := range []string{"", "Bearer wrong", "Basic tok"} {
		req, _ := http.NewRequest("GET", a.srv.URL+"/api/data/v9.2/contacts", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 401 || res.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("Authorization %q: %d, want 401 with WWW-Authenticate", auth, res.StatusCode)
		}
	}
	expect(t, "right token", a.do("GET", "contacts", nil), 200)
}

func TestConditionalWrites(t *testing.T) {
	a := newAPI(t, dataversesim.Options{})
	r := a.do("POST", "contacts", map[string]any{"firstname": "Ada", "lastname": "L"})
	expect(t, "create", r, 204)
	loc := r.header.Get("OData-EntityId")
	id := loc[strings.LastIndex(loc, "(")+1 : len(loc)-1]

	r = a.do("GET", "contacts("+id+")?$select=fullname", nil)
	expect(t, "get", r, 200)
	etag := r.json(t)["@odata.etag"].(string)
	if r.json(t)["fullname"] != "Ada L" || !strings.HasPrefix(etag, `W/"`) {
		t.Fatalf("get: %s", r.body)
	}
	expect(t, "patch with current etag", a.do("PATCH", "contacts("+id+")", map[string]any{"jobtitle": "A"}, "If-Match", etag), 204)
	r = a.do("PATCH", "contacts("+id+")", map[string]any{"jobtitle": "B"}, "If-Match", etag)
	expect(t, "patch with stale etag", r, 412)
	if row, _ := a.sim.Get("contact", id); row["jobtitle"] != "A" {
		t.Errorf("stale etag write applied: %v", row["jobtitle"])
	}
	expect(t, "If-Match * on missing", a.do("PATCH", "contacts("+missing+")", map[string]any{"jobtitle": "X"}, "If-Match", "*"), 404)
	if _, ok := a.sim.Get("contact", missing); ok {
		t.Fatal("If-Match: * created a row")
	}
	expect(t, "If-None-Match * on existing", a.do("PATCH", "contacts("+id+")", map[string]any{"jobtitle": "X"}, "If-None-Match", "*"), 412)
	r = a.do("PATCH", "contacts("+missing+")", map[string]any{"lastname": "Upserted"}, "Prefer", "return=representation")
	expect(t, "upsert", r, 201)
	if r.json(t)["contactid"] != missing {
		t.Errorf("upsert returned %s", r.body)
	}
	expect(t, "update with representation", a.do("PATCH", "contacts("+missing+")", map[string]any{"jobtitle": "J"}, "Prefer", "return=representation"), 200)

	// statecode/statuscode consistency.
	expect(t, "inconsistent status", a.do("PATCH", "contacts("+id+")", map[string]any{"statecode": 0, "statuscode": 2}), 400)
	expect(t, "state alone", a.do("PATCH", "contacts("+id+")", map[string]any{"statecode": 1}), 204)
	if row, _ := a.sim.Get("contact", id); row["statuscode"] != dataversesim.OptionValue(2) {
		t.Errorf("statecode 1 alone gave statuscode %v, want the default 2", row["statuscode"])
	}

	// Lookups: written with @odata.bind, read as _x_value.
	r = a.do("POST", "accounts", map[string]any{"name": "Contoso"}, "Prefer", "return=representation")
	expect(t, "create account", r, 201)
	acc := r.json(t)["accountid"].(string)
	expect(t, "bind", a.do("PATCH", "contacts("+id+")", map[string]any{"parentcustomerid_account@odata.bind": "/accounts(" + acc + ")"}), 204)
	expect(t, "lookup set without bind", a.do("PATCH", "contacts("+id+")", map[string]any{"parentcustomerid": acc}), 400)
	expect(t, "bind to a missing row", a.do("PATCH", "contacts("+id+")", map[string]any{"parentcustomerid_account@odata.bind": "/accounts(" + missing + ")"}), 404)
	expect(t, "unknown column", a.do("PATCH", "contacts("+id+")", map[string]any{"nosuchcolumn": 1}), 400)
	expect(t, "select a lookup by logical name", a.do("GET", "contacts("+id+")?$select=parentcustomerid", nil), 400)
	r = a.do("GET", "contacts("+id+")?$select=_parentcustomerid_value", nil, "Prefer", `odata.include-annotations="*"`)
	expect(t, "select _x_value", r, 200)
	m := r.json(t)
	if m["_parentcustomerid_value"] != acc || m["_parentcustomerid_value@Microsoft.Dynamics.CRM.lookuplogicalname"] != "account" ||
		m["_parentcustomerid_value@OData.Community.Display.V1.FormattedValue"] != "Contoso" {
		t.Errorf("lookup read: %s", r.body)
	}
	r = a.do("GET", "contacts("+id+")?$select=_parentcustomerid_value", nil)
	if _, ok := r.json(t)["_parentcustomerid_value@Microsoft.Dynamics.CRM.lookuplogicalname"]; ok {
		t.Error("annotations sent without being asked for")
	}

	expect(t, "delete with stale etag", a.do("DELETE", "contacts("+id+")", nil, "If-Match", etag), 412)
	expect(t, "delete", a.do("DELETE", "contacts("+id+")", nil), 204)
	expect(t, "get deleted", a.do("GET", "contacts("+id+")", nil), 404)
}

func TestPagingAndQueryOptions(t *testing.T) {
	a := newAPI(t, dataversesim.Options{})
	if _, err := a.sim.Seed(dataversesim.SeedOptions{Accounts: 23}); err != nil {
		t.Fatal(err)
	}
	expect(t, "$skip", a.do("GET", "accounts?$skip=5", nil), 400)
	r := a.do("GET", "accounts?$select=name", nil, "Prefer", "odata.maxpagesize=10")
	expect(t, "page 1", r, 200)
	if got := r.header.Get("Preference-Applied"); got != "odata.maxpagesize=10" {
		t.Errorf("Preference-Applied = %q", got)
	}
	m := r.json(t)
	next, _ := m["@odata.nextLink"].(string)
	if len(m["value"].([]any)) != 10 || !strings.Contains(next, "%24skiptoken=") {
		t.Fatalf("page 1: %d rows, nextLink %q", len(m["value"].([]any)), next)
	}
	total := 10
	for next != "" {
		req, _ := http.NewRequest("GET", next, nil)
		req.Header.Set("Authorization", "Bearer tok")
		req.Header.Set("Prefer", "odata.maxpagesize=10")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var pm map[string]any
		json.NewDecoder(res.Body).Decode(&pm)
		res.Body.Close()
		total += len(pm["value"].([]any))
		next, _ = pm["@odata.nextLink"].(string)
	}
	if total != 23 {
		t.Errorf("paged %d rows, want 23", total)
	}
	r = a.do("GET", "accounts?$select=name&$orderby=name%20desc&$top=3", nil)
	vals := r.json(t)["value"].([]any)
	if len(vals) != 3 || strings.Compare(strings.ToLower(vals[0].(map[string]any)["name"].(string)), strings.ToLower(vals[1].(map[string]any)["name"].(string))) < 0 {
		t.Errorf("$orderby desc/$top: %s", r.body)
	}
	expect(t, "bad filter", a.do("GET", "accounts?$filter=name%20eq%20unquoted", nil), 400)
	expect(t, "unknown filter column", a.do("GET", "accounts?$filter=nosuch%20eq%201", nil), 400)
	r = a.do("GET", "accounts?$select=name&$filter=contains(name,'"+"Contoso"+"')%20or%20statecode%20eq%201", nil)
	expect(t, "contains/or", r, 200)
	for _, v := range r.json(t)["value"].([]any) {
		if !strings.Contains(v.(map[string]any)["name"].(string), "Contoso") {
			t.Errorf("contains filter returned %v", v)
		}
	}
}

func TestRegistrationTableRules(t *testing.T) {
	a := newAPI(t, dataversesim.Options{})
	r := a.do("POST", "serviceendpoints", map[string]any{"name": "x", "contract": 8, "authtype": 4, "url": "https://h.example.com/w", "authvalue": "sekret"}, "Prefer", "return=representation")
	expect(t, "create endpoint", r, 201)
	if bytes.Contains(r.body, []byte("sekret")) || bytes.Contains(r.body, []byte("authvalue")) {
		t.Errorf("authvalue returned: %s", r.body)
	}
	ep := r.json(t)["serviceendpointid"].(string)
	r = a.do("GET", "sdkmessages?$select=sdkmessageid&$filter=name%20eq%20'Update'", nil)
	msg := r.json(t)["value"].([]any)[0].(map[string]any)["sdkmessageid"].(string)
	r = a.do("GET", "sdkmessagefilters?$select=sdkmessagefilterid&$filter=_sdkmessageid_value%20eq%20"+msg+"%20and%20primaryobjecttypecode%20eq%20'contact'", nil)
	vals := r.json(t)["value"].([]any)
	if len(vals) != 1 {
		t.Fatalf("filters for Update of contact: %s", r.body)
	}
	flt := vals[0].(map[string]any)["sdkmessagefilterid"].(string)
	step := func(mode, stage int) map[string]any {
		return map[string]any{"name": "s", "mode": mode, "stage": stage, "eventhandler_serviceendpoint@odata.bind": "/serviceendpoints(" + ep + ")",
			"sdkmessageid@odata.bind": "/sdkmessages(" + msg + ")", "sdkmessagefilterid@odata.bind": "/sdkmessagefilters(" + flt + ")"}
	}
	expect(t, "async pre-operation", a.do("POST", "sdkmessageprocessingsteps", step(1, 20)), 400)
	expect(t, "stage 30", a.do("POST", "sdkmessageprocessingsteps", step(0, 30)), 400)
	r = a.do("POST", "sdkmessageprocessingsteps", step(1, 40), "Prefer", "return=representation")
	expect(t, "async post-operation", r, 201)
	sid := r.json(t)["sdkmessageprocessingstepid"].(string)
	img := func(typ int, alias string) map[string]any {
		return map[string]any{"name": alias, "entityalias": alias, "imagetype": typ, "messagepropertyname": "Target", "attributes": "fullname",
			"sdkmessageprocessingstepid@odata.bind": "/sdkmessageprocessingsteps(" + sid + ")"}
	}
	expect(t, "image", a.do("POST", "sdkmessageprocessingstepimages", img(2, "Both")), 204)
	expect(t, "image without alias", a.do("POST", "sdkmessageprocessingstepimages", img(1, "")), 400)
	expect(t, "delete endpoint with steps", a.do("DELETE", "serviceendpoints("+ep+")", nil), 400)
	expect(t, "delete step", a.do("DELETE", "sdkmessageprocessingsteps("+sid+")", nil), 204)
	if n := a.sim.Count("sdkmessageprocessingstepimage"); n != 0 {
		t.Errorf("images left after deleting their step: %d", n)
	}
	expect(t, "delete endpoint", a.do("DELETE", "serviceendpoints("+ep+")", nil), 204)
	expect(t, "write asyncoperations", a.do("POST", "asyncoperations", map[string]any{"name": "x"}), 403)
}

func TestThrottleRetryAfter(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC))
	a := newAPI(t, dataversesim.Options{Clock: clk, RequestsPerWindow: 3, Window: 60 * time.Second})
	for i := 0; i < 3; i++ {
		expect(t, "within limit", a.do("GET", "contacts", nil), 200)
		clk.Advance(10 * time.Second)
	}
	r := a.do("GET", "contacts", nil)
	expect(t, "over limit", r, 429)
	if r.header.Get("Retry-After") != "30" || !strings.Contains(string(r.body), "0x80072322") {
		t.Errorf("Retry-After %q body %s; want 30 s (the oldest request leaves the window at +60 s)", r.header.Get("Retry-After"), r.body)
	}
	clk.Advance(30 * time.Second)
	expect(t, "after Retry-After", a.do("GET", "contacts", nil), 200)
}

// batchBody builds a multipart $batch; a []string item is a change set.
func batchBody(items ...any) (string, string) {
	var b strings.Builder
	bnd := "batch_x"
	for i, it := range items {
		b.WriteString("--" + bnd + "\r\n")
		switch x := it.(type) {
		case string:
			b.WriteString("Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n" + x + "\r\n")
		case []string:
			cs := fmt.Sprintf("changeset_%d", i)
			b.WriteString("Content-Type: multipart/mixed; boundary=" + cs + "\r\n\r\n")
			for j, r := range x {
				fmt.Fprintf(&b, "--%s\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: %d\r\n\r\n%s\r\n", cs, j+1, r)
			}
			b.WriteString("--" + cs + "--\r\n")
		}
	}
	b.WriteString("--" + bnd + "--\r\n")
	return b.String(), "multipart/mixed; boundary=" + bnd
}

func patchReq(set, id, body string, ifMatch bool) string {
	h := ""
	if ifMatch {
		h = "If-Match: *\r\n"
	}
	return "PATCH /api/data/v9.2/" + set + "(" + id + ") HTTP/1.1\r\nContent-Type: application/json\r\n" + h + "\r\n" + body
}

func TestBatch(t *testing.T) {
	a := newAPI(t, dataversesim.Options{})
	con, _ := a.sim.Create("contact", map[string]any{"lastname": "L"})
	nAcc := a.sim.Count("account")

	// A change set is atomic: the failing PATCH undoes the POST and the other PATCH.
	body, ct := batchBody([]string{
		"POST /api/data/v9.2/accounts HTTP/1.1\r\nContent-Type: application/json\r\n\r\n{\"name\":\"In change set\"}",
		patchReq("contacts", con, `{"jobtitle":"changed"}`, true),
		patchReq("contacts", missing, `{"jobtitle":"x"}`, true),
	})
	r := a.do("POST", "$batch", body, "Content-Type", ct)
	expect(t, "failed change set", r, 400)
	if a.sim.Count("account") != nAcc {
		t.Error("change set POST survived the rollback")
	}
	if row, _ := a.sim.Get("contact", con); row["jobtitle"] != nil {
		t.Errorf("change set PATCH survived the rollback: %v", row["jobtitle"])
	}
	if !strings.Contains(string(r.body), "HTTP/1.1 404") {
		t.Errorf("failed change set response lacks the 404: %s", r.body)
	}

	// $1 references the row created earlier in the change set.
	body, ct = batchBody([]string{
		"POST /api/data/v9.2/accounts HTTP/1.1\r\nContent-Type: application/json\r\n\r\n{\"name\":\"Ref\"}",
		"PATCH $1 HTTP/1.1\r\nContent-Type: application/json\r\n\r\n{\"telephone1\":\"555\"}",
	})
	r = a.do("POST", "$batch", body, "Content-Type", ct)
	expect(t, "change set with $1", r, 200)
	if strings.Count(string(r.body), "HTTP/1.1 204") != 2 || a.sim.Count("account") != nAcc+1 {
		t.Fatalf("change set with $1: %s", r.body)
	}

	// Outside change sets: stop at the first error unless continue-on-error.
	c2, _ := a.sim.Create("contact", map[string]any{"lastname": "M"})
	ops := []any{patchReq("contacts", con, `{"jobtitle":"1"}`, true), patchReq("contacts", missing, `{"jobtitle":"2"}`, true), patchReq("contacts", c2, `{"jobtitle":"3"}`, true)}
	body, ct = batchBody(ops...)
	r = a.do("POST", "$batch", body, "Content-Type", ct)
	if strings.Count(string(r.body), "HTTP/1.1 ") != 2 {
		t.Errorf("stop on error: %d responses, want 2: %s", strings.Count(string(r.body), "HTTP/1.1 "), r.body)
	}
	if row, _ := a.sim.Get("contact", c2); row["jobtitle"] != nil {
		t.Error("request after the error ran without continue-on-error")
	}
	r = a.do("POST", "$batch", body, "Content-Type", ct, "Prefer", "odata.continue-on-error")
	expect(t, "continue-on-error", r, 200)
	if row, _ := a.sim.Get("contact", c2); row["jobtitle"] != "3" {
		t.Error("continue-on-error did not run the request after the error")
	}

	body, ct = batchBody([]string{"GET /api/data/v9.2/contacts HTTP/1.1\r\n\r\n"})
	expect(t, "GET in change set", a.do("POST", "$batch", body, "Content-Type", ct), 400)
	many := make([]any, 1001)
	for i := range many {
		many[i] = patchReq("contacts", con, `{"jobtitle":"x"}`, true)
	}
	body, ct = batchBody(many...)
	expect(t, "1001 requests", a.do("POST", "$batch", body, "Content-Type", ct), 400)
}

func TestDeliveryModes(t *testing.T) {
	for _, mode := range []string{dataversesim.DeliveryDuplicated, dataversesim.DeliveryShuffled} {
		var mu sync.Mutex
		got := map[string]int{}
		rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var m map[string]any
			json.NewDecoder(r.Body).Decode(&m)
			mu.Lock()
			got[m["PrimaryEntityId"].(string)]++
			mu.Unlock()
		}))
		a := newAPI(t, dataversesim.Options{Delivery: mode})
		registerStep(t, a, rcv.URL, "Create", "account")
		var ids []string
		for i := 0; i < 20; i++ {
			id, _ := a.sim.Create("account", map[string]any{"name": fmt.Sprint(i)})
			ids = append(ids, id)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := a.sim.WaitIdle(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
		rcv.Close()
		want := 1
		if mode == dataversesim.DeliveryDuplicated {
			want = 2
		}
		for _, id := range ids {
			if got[id] != want {
				t.Errorf("%s: %s delivered %d times, want %d", mode, id, got[id], want)
			}
		}
	}
}

// registerStep registers a WebhookKey endpoint and one async step directly.
func registerStep(t *testing.T, a *api, url, message, entity string) {
	t.Helper()
	registerStepMode(t, a, url, message, entity, 1, 40)
}

func registerStepMode(t *testing.T, a *api, url, message, entity string, mode, stage int) {
	t.Helper()
	r := a.do("POST", "serviceendpoints", map[string]any{"name": "t", "contract": 8, "authtype": 4, "url": url, "authvalue": "k"}, "Prefer", "return=representation")
	ep := r.json(t)["serviceendpointid"].(string)
	r = a.do("GET", "sdkmessages?$select=sdkmessageid&$filter=name%20eq%20'"+message+"'", nil)
	msg := r.json(t)["value"].([]any)[0].(map[string]any)["sdkmessageid"].(string)
	r = a.do("GET", "sdkmessagefilters?$select=sdkmessagefilterid&$filter=_sdkmessageid_value%20eq%20"+msg+"%20and%20primaryobjecttypecode%20eq%20'"+entity+"'", nil)
	flt := r.json(t)["value"].([]any)[0].(map[string]any)["sdkmessagefilterid"].(string)
	expect(t, "step", a.do("POST", "sdkmessageprocessingsteps", map[string]any{"name": "s", "mode": mode, "stage": stage,
		"eventhandler_serviceendpoint@odata.bind": "/serviceendpoints(" + ep + ")", "sdkmessageid@odata.bind": "/sdkmessages(" + msg + ")",
		"sdkmessagefilterid@odata.bind": "/sdkmessagefilters(" + flt + ")"}), 204)
}

func BenchmarkSeed50k(b *testing.B) {
	for b.Loop() {
		s := dataversesim.New(dataversesim.Options{})
		if _, err := s.Seed(dataversesim.SeedOptions{Users: 20, Accounts: 5000, Contacts: 30000, Leads: 10000, Opportunities: 5000}); err != nil {
			b.Fatal(err)
		}
	}
}

func TestJSONStringsRoundTrip(t *testing.T) {
	a := newAPI(t, dataversesim.Options{})
	for _, s := range []string{"plain", `quote " backslash \ slash /`, "new\nline\ttab\r\x01", "<tag> & ünïcødé 😀", "bad \xff utf8", "\u2028\u2029"} {
		id, err := a.sim.Create("account", map[string]any{"name": s})
		if err != nil {
			t.Fatal(err)
		}
		got := a.do("GET", "accounts("+id+")?$select=name", nil).json(t)["name"]
		want := strings.ToValidUTF8(s, "\ufffd")
		if got != want {
			t.Errorf("name %q came back as %q", want, got)
		}
	}
}

func TestListenAndServe(t *testing.T) {
	if err := dataversesim.ListenAndServe(context.Background(), "127.0.0.1:0", dataversesim.Options{Delivery: "sometimes"}, nil); err == nil {
		t.Error("bad delivery mode accepted")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- dataversesim.ListenAndServe(ctx, "127.0.0.1:0", dataversesim.Options{Seed: dataversesim.SeedOptions{Accounts: 3}}, nil)
	}()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ListenAndServe after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ListenAndServe did not return after cancel")
	}
}

func TestSyncStepFailureFailsTheWrite(t *testing.T) {
	var mu sync.Mutex
	code := 500
	var bodies []map[string]any
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m map[string]any
		json.NewDecoder(r.Body).Decode(&m)
		mu.Lock()
		bodies = append(bodies, m)
		c := code
		mu.Unlock()
		w.WriteHeader(c)
	}))
	defer rcv.Close()
	a := newAPI(t, dataversesim.Options{})
	registerStepMode(t, a, rcv.URL, "Create", "account", 0, 20)
	before := a.sim.Count("account")
	r := a.do("POST", "accounts", map[string]any{"name": "Rejected"})
	expect(t, "create with a failing sync step", r, 400)
	if a.sim.Count("account") != before {
		t.Error("the failed write was not rolled back")
	}
	if _, err := a.sim.Create("account", map[string]any{"name": "Rejected too"}); err == nil {
		t.Error("Go Create succeeded although the sync step failed")
	}
	mu.Lock()
	code = 200
	mu.Unlock()
	expect(t, "create with a passing sync step", a.do("POST", "accounts", map[string]any{"name": "Accepted"}), 204)
	// Delivered before the response: no WaitIdle needed.
	mu.Lock()
	defer mu.Unlock()
	if len(bodies) != 3 || a.sim.Count("account") != before+1 {
		t.Fatalf("%d sync calls, %d accounts", len(bodies), a.sim.Count("account")-before)
	}
	m := bodies[2]
	if m["Mode"] != 0.0 || m["IsInTransaction"] != true || m["RequestId"] == nil {
		t.Errorf("sync context: Mode %v IsInTransaction %v RequestId %v", m["Mode"], m["IsInTransaction"], m["RequestId"])
	}
	if post, _ := m["PostEntityImages"].([]any); len(post) != 0 {
		t.Errorf("sync step got images %v", post)
	}
}

func TestTokenEndpoint(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC))
	sim := dataversesim.New(dataversesim.Options{Clock: clk, TenantID: "t1", ClientID: "app", ClientSecret: "sec", TokenLifetime: time.Hour})
	srv := httptest.NewServer(sim)
	defer srv.Close()
	token := func(form url.Values) (int, map[string]any) {
		res, err := http.PostForm(srv.URL+"/t1/oauth2/v2.0/token", form)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var m map[string]any
		json.NewDecoder(res.Body).Decode(&m)
		return res.StatusCode, m
	}
	good := url.Values{"grant_type": {"client_credentials"}, "client_id": {"app"}, "client_secret": {"sec"}, "scope": {srv.URL + "/.default"}}
	bad := url.Values{"grant_type": {"client_credentials"}, "client_id": {"app"}, "client_secret": {"nope"}, "scope": {srv.URL + "/.default"}}
	noDefault := url.Values{"grant_type": {"client_credentials"}, "client_id": {"app"}, "client_secret": {"sec"}, "scope": {srv.URL}}
	if st, m := token(bad); st != 401 || m["error"] != "invalid_client" {
		t.Errorf("bad secret: %d %v", st, m)
	}
	if st, m := token(noDefault); st != 400 || m["error"] != "invalid_scope" {
		t.Errorf("scope without /.default: %d %v", st, m)
	}
	st, m := token(good)
	if st != 200 || m["token_type"] != "Bearer" || m["expires_in"] != 3600.0 {
		t.Fatalf("token: %d %v", st, m)
	}
	tok := m["access_token"].(string)
	get := func(tok string) int {
		req, _ := http.NewRequest("GET", srv.URL+"/api/data/v9.2/WhoAmI", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if s := get(tok); s != 200 {
		t.Errorf("fresh token: %d", s)
	}
	if s := get("made-up"); s != 401 {
		t.Errorf("unknown token: %d, want 401 once an app is configured", s)
	}
	clk.Advance(time.Hour)
	if s := get(tok); s != 401 {
		t.Errorf("expired token: %d, want 401", s)
	}
	// A token for another environment is refused.
	other := url.Values{"grant_type": {"client_credentials"}, "client_id": {"app"}, "client_secret": {"sec"}, "scope": {"https://other.crm.dynamics.com/.default"}}
	_, m = token(other)
	if s := get(m["access_token"].(string)); s != 401 {
		t.Errorf("token for another resource: %d, want 401", s)
	}
}

func TestExecutionTimeLimit(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC))
	a := newAPI(t, dataversesim.Options{Clock: clk, Window: 100 * time.Second, ExecutionTimePerWindow: 3 * time.Second,
		ExecutionTimePerRequest: time.Second})
	for i := 0; i < 3; i++ {
		expect(t, "within execution time", a.do("GET", "contacts", nil), 200)
		clk.Advance(10 * time.Second)
	}
	r := a.do("GET", "contacts", nil)
	expect(t, "over execution time", r, 429)
	// The first request's second leaves the window at +100 s; it is now +30 s.
	if r.header.Get("Retry-After") != "70" || !strings.Contains(string(r.body), "0x80072321") {
		t.Errorf("Retry-After %q body %s", r.header.Get("Retry-After"), r.body)
	}
	clk.Advance(70 * time.Second)
	expect(t, "after Retry-After", a.do("GET", "contacts", nil), 200)
}

// UpperCaseGUIDs writes the body's GUIDs in upper case (the record id and
// every lookup); without it they are lower case.
func TestUpperCaseGUIDs(t *testing.T) {
	for _, upper := range []bool{false, true} {
		var mu sync.Mutex
		var bodies []string
		rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			mu.Lock()
			bodies = append(bodies, string(b))
			mu.Unlock()
		}))
		a := newAPI(t, dataversesim.Options{UpperCaseGUIDs: upper})
		registerStep(t, a, rcv.URL, "Create", "account")
		id, err := a.sim.Create("account", map[string]any{"name": "Contoso"})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := a.sim.WaitIdle(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
		rcv.Close()
		if len(bodies) != 1 {
			t.Fatalf("upper %v: %d deliveries", upper, len(bodies))
		}
		want, other := strings.ToLower(id), strings.ToUpper(id)
		if upper {
			want, other = other, want
		}
		if !strings.Contains(bodies[0], `"PrimaryEntityId":"`+want+`"`) || strings.Contains(bodies[0], other) {
			t.Errorf("upper %v: body has the id as %q? %s", upper, want, bodies[0][:min(len(bodies[0]), 400)])
		}
	}
}
