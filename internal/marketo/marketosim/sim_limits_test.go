package marketosim

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestIdentity_SameTokenWithDecreasingExpiresInThenNewToken(t *testing.T) {
	h := start(t, Options{TokenTTL: time.Hour})
	st, first := h.identity(testID, testSecret)
	if st != 200 || first["expires_in"].(interface{ String() string }).String() != "3600" || first["token_type"] != "bearer" {
		t.Fatalf("first identity: %d %v", st, first)
	}
	if !regexp.MustCompile(`^[0-9a-f-]{36}:[a-z]+$`).MatchString(first["access_token"].(string)) {
		t.Fatalf("token %q is not <uuid>:<suffix>", first["access_token"])
	}
	h.clk.Advance(7 * time.Second)
	_, second := h.identity(testID, testSecret)
	if second["access_token"] != first["access_token"] || second["expires_in"].(interface{ String() string }).String() != "3593" {
		t.Fatalf("second identity: want same token with 3593 left, got %v", second)
	}
	h.clk.Advance(3593*time.Second - 500*time.Millisecond)
	_, last := h.identity(testID, testSecret)
	if last["access_token"] != first["access_token"] || last["expires_in"].(interface{ String() string }).String() != "0" {
		t.Fatalf("last second: want same token with expires_in 0, got %v", last)
	}
	h.clk.Advance(time.Second)
	_, renewed := h.identity(testID, testSecret)
	if renewed["access_token"] == first["access_token"] {
		t.Fatal("identity after expiry returned the expired token")
	}
	// POST works as GET does.
	q := url.Values{"grant_type": {"client_credentials"}, "client_id": {testID}, "client_secret": {testSecret}}
	res, err := http.Post(h.srv.URL+"/identity/oauth/token?"+q.Encode(), "", nil)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("POST identity: %v %v", res, err)
	}
	res.Body.Close()
}

func TestIdentity_BadCredentialsGive401(t *testing.T) {
	h := start(t, Options{})
	for _, c := range [][2]string{{testID, "wrong"}, {"nobody", testSecret}} {
		st, body := h.identity(c[0], c[1])
		if st != http.StatusUnauthorized || body["error"] != "invalid_client" {
			t.Fatalf("identity %v: want 401 invalid_client, got %d %v", c, st, body)
		}
	}
	h2 := start(t, Options{IdentityErrorBody: `{"error":"unauthorized"}`})
	if st, body := h2.identity("x", "y"); st != 401 || body["error"] != "unauthorized" {
		t.Fatalf("configured 401 body: %d %v", st, body)
	}
}

func TestIdentity_NotCountedTowardRateOrQuota(t *testing.T) {
	h := start(t, Options{CallsPerWindow: 1, DailyQuota: 1})
	for i := 0; i < 5; i++ {
		h.identity(testID, testSecret)
	}
	if r := h.get("/rest/v1/leads/describe2.json"); !r.Success {
		t.Fatalf("first REST call after 5 identity calls: %s", r.Raw)
	}
	if st := h.sim.Stats(); st.CountedCalls != 1 || st.IdentityCalls != 6 {
		t.Fatalf("stats: %+v", st)
	}
}

func TestTokenUse_UnknownGives601ExpiredGives602QueryParamIgnored(t *testing.T) {
	h := start(t, Options{TokenTTL: 10 * time.Second})
	tok := h.token()
	h.tok = "not-a-token"
	if r := h.get("/rest/v1/leads/describe2.json"); r.Status != 200 || r.Success || r.code() != "601" {
		t.Fatalf("unknown token: %d %s", r.Status, r.Raw)
	}
	h.tok = tok
	h.clk.Advance(11 * time.Second)
	if r := h.get("/rest/v1/leads/describe2.json"); r.Status != 200 || r.code() != "602" {
		t.Fatalf("expired token: %s", r.Raw)
	}
	// access_token in the query string is not accepted by default …
	h.tok = ""
	tok = h.token()
	res, err := http.Get(h.srv.URL + "/rest/v1/leads/describe2.json?access_token=" + tok)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if st := h.sim.Stats(); st.QueryTokenCalls != 1 || st.Responses["601"] != 2 {
		t.Fatalf("query token not counted or not rejected: %+v", st)
	}
	// … and is with AcceptQueryToken.
	h2 := start(t, Options{AcceptQueryToken: true})
	res, _ = http.Get(h2.srv.URL + "/rest/v1/leads/describe2.json?access_token=" + h2.token())
	res.Body.Close()
	if st := h2.sim.Stats(); st.Responses["ok"] != 2 { // identity + describe
		t.Fatalf("AcceptQueryToken: %+v", st.Responses)
	}
}

func TestExpireTokens_Gives602AndANewToken(t *testing.T) {
	h := start(t, Options{})
	old := h.token()
	h.sim.ExpireTokens()
	if r := h.get("/rest/v1/leads/describe2.json"); r.code() != "602" {
		t.Fatalf("after ExpireTokens: %s", r.Raw)
	}
	h.tok = ""
	if h.token() == old {
		t.Fatal("identity reissued the expired token")
	}
}

func TestRateWindow_606WhenCallsInRollingWindowExceedLimit(t *testing.T) {
	h := start(t, Options{CallsPerWindow: 3, Window: 20 * time.Second})
	for i := 0; i < 3; i++ {
		if r := h.get("/rest/v1/leads/describe2.json"); !r.Success {
			t.Fatalf("call %d: %s", i, r.Raw)
		}
		h.clk.Advance(5 * time.Second)
	}
	// t=15 s: three calls at 0, 5, 10 are in the window.
	r := h.get("/rest/v1/leads/describe2.json")
	if r.code() != "606" || !strings.Contains(r.Errors[0].Message, "'3'") {
		t.Fatalf("4th call: %s", r.Raw)
	}
	h.clk.Advance(5 * time.Second) // t=20 s: the call at 0 left the window
	if r := h.get("/rest/v1/leads/describe2.json"); !r.Success {
		t.Fatalf("after the window rolled: %s", r.Raw)
	}
	if st := h.sim.Stats(); st.Throttled606 != 1 {
		t.Fatalf("Throttled606 = %d", st.Throttled606)
	}
}

func TestConcurrency_615OnCallBeyondLimit(t *testing.T) {
	h := start(t, Options{MaxConcurrent: 2})
	h.token()
	release := h.sim.Hold()
	var wg sync.WaitGroup
	results := make([]*resp, 2)
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			results[i] = h.get("/rest/v1/leads/describe2.json")
		}(i)
	}
	waitFor(t, func() bool { return h.sim.InFlight() == 2 })
	third := h.get("/rest/v1/leads/describe2.json")
	release()
	wg.Wait()
	if third.code() != "615" {
		t.Fatalf("third concurrent call: %s", third.Raw)
	}
	for i, r := range results {
		if !r.Success {
			t.Fatalf("held call %d: %s", i, r.Raw)
		}
	}
	if st := h.sim.Stats(); st.Throttled615 != 1 || st.MaxConcurrency != 3 {
		t.Fatalf("stats: 615=%d max=%d", st.Throttled615, st.MaxConcurrency)
	}
}

// waitFor polls a condition the test cannot get a signal for (calls parked
// inside the HTTP server), bounded so a bug fails instead of hanging.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestDailyQuota_607UntilMidnightChicago(t *testing.T) {
	h := start(t, Options{DailyQuota: 2})
	chicago, _ := time.LoadLocation("America/Chicago")
	h.clk.Set(time.Date(2026, 3, 10, 23, 58, 0, 0, chicago))
	h.token()
	// Codes documented as free do not use quota.
	h.sim.FailNext("604", "611")
	h.get("/rest/v1/leads/describe2.json")
	h.get("/rest/v1/leads/describe2.json")
	for i := 0; i < 2; i++ {
		if r := h.get("/rest/v1/leads/describe2.json"); !r.Success {
			t.Fatalf("call %d within quota: %s", i, r.Raw)
		}
	}
	if r := h.get("/rest/v1/leads/describe2.json"); r.code() != "607" {
		t.Fatalf("over quota: %s", r.Raw)
	}
	h.clk.Set(time.Date(2026, 3, 10, 23, 59, 59, 0, chicago))
	if r := h.get("/rest/v1/leads/describe2.json"); r.code() != "607" {
		t.Fatalf("still before midnight Chicago: %s", r.Raw)
	}
	h.clk.Set(time.Date(2026, 3, 11, 0, 0, 1, 0, chicago)) // 06:00 UTC
	if r := h.get("/rest/v1/leads/describe2.json"); !r.Success {
		t.Fatalf("after midnight Chicago: %s", r.Raw)
	}
}

func TestHTTP_413BodyOver1MB(t *testing.T) {
	h := start(t, Options{})
	big := `{"input":[{"email":"` + strings.Repeat("a", 1<<20) + `"}]}`
	if r := h.post("/rest/v1/leads.json", big); r.Status != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d", r.Status)
	}
}

func TestHTTP_414URIOver8KB(t *testing.T) {
	h := start(t, Options{})
	vals := strings.Repeat("x", 9000)
	if r := h.get("/rest/v1/leads.json?filterType=email&filterValues=" + vals); r.Status != http.StatusRequestURITooLong {
		t.Fatalf("status %d", r.Status)
	}
}

func TestMethodOverride_PostWithFormBodyActsAsGet(t *testing.T) {
	h := start(t, Options{})
	h.seedMSI(2)
	form := url.Values{"filterType": {"externalPersonId"}, "filterValues": {"PER-0,PER-1"}, "fields": {"email"}}
	r := h.do("POST", "/rest/v1/leads.json?_method=GET", "application/x-www-form-urlencoded", form.Encode())
	if !r.Success || len(r.Result) != 2 || r.Result[0]["email"] != "p0@example.com" {
		t.Fatalf("POST _method=GET: %s", r.Raw)
	}
	if h.sim.Stats().Requests["GET /rest/v1/leads.json"] != 1 {
		t.Fatalf("not counted as a GET: %v", h.sim.Stats().Requests)
	}
}

func TestRequestErrors_605MethodContentType612BadJSON609UnknownPath610(t *testing.T) {
	h := start(t, Options{})
	cases := []struct {
		name, method, path, ctype string
		body                      any
		want                      string
	}{
		{"GET on delete", "GET", "/rest/v1/leads/delete.json", "", nil, "605"},
		{"PUT on sync", "PUT", "/rest/v1/leads.json", "application/json", `{}`, "605"},
		{"text body", "POST", "/rest/v1/leads.json", "text/plain", `{"input":[]}`, "612"},
		{"bad JSON", "POST", "/rest/v1/companies.json", "application/json", `{"input":[`, "609"},
		{"unknown path", "GET", "/rest/v1/widgets.json", "", nil, "610"},
	}
	for _, c := range cases {
		r := h.do(c.method, c.path, c.ctype, c.body)
		if r.Status != 200 || r.Success || r.code() != c.want {
			t.Errorf("%s: want HTTP 200 code %s, got %d %s", c.name, c.want, r.Status, r.Raw)
		}
	}
}

func TestFaultInjection_FailNextSetFaultLatencyAndDrops(t *testing.T) {
	h := start(t, Options{})
	h.token()
	h.sim.FailNext("502", "604", "608", "611", "713", "5xx")
	want := []string{"HTTP 502", "604", "608", "611", "713", "HTTP 500"}
	for _, w := range want {
		r := h.get("/rest/v1/leads/describe2.json")
		got := r.code()
		if r.Status != 200 {
			got = "HTTP " + itoa(r.Status)
		}
		if got != w {
			t.Fatalf("want %s, got %s", w, got)
		}
	}
	if r := h.get("/rest/v1/leads/describe2.json"); !r.Success {
		t.Fatalf("after the sequence: %s", r.Raw)
	}
	h.sim.SetFault("611", 1)
	if r := h.get("/rest/v1/leads/describe2.json"); r.code() != "611" {
		t.Fatalf("SetFault: %s", r.Raw)
	}
	h.sim.SetFault("611", 0)
	h.sim.DropConnections(1)
	req, _ := http.NewRequest("GET", h.srv.URL+"/rest/v1/leads/describe2.json", nil)
	req.Header.Set("Authorization", "Bearer "+h.token())
	if res, err := http.DefaultClient.Do(req); err == nil {
		res.Body.Close()
		t.Fatal("dropped connection returned a response")
	}
	h.sim.DropConnections(0)
	h.sim.SetLatency(time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ = http.NewRequestWithContext(ctx, "GET", h.srv.URL+"/rest/v1/leads/describe2.json", nil)
	req.Header.Set("Authorization", "Bearer "+h.token())
	if res, err := http.DefaultClient.Do(req); err == nil {
		res.Body.Close()
		t.Fatal("call under an hour of latency answered within 50 ms")
	}
	if st := h.sim.Stats(); st.Dropped < 1 { // net/http may retry an idempotent GET once
		t.Fatalf("Dropped = %d", st.Dropped)
	}
}

func TestEnvelope_RequestIDContentTypeStringCodes(t *testing.T) {
	h := start(t, Options{})
	r := h.post("/rest/v1/widgets.json", `{}`)
	if ct := r.Header.Get("Content-Type"); ct != "application/json;charset=UTF-8" {
		t.Fatalf("Content-Type %q", ct)
	}
	if !regexp.MustCompile(`^[0-9a-f]+#[0-9a-f]+$`).MatchString(r.RequestID) {
		t.Fatalf("requestId %q", r.RequestID)
	}
	if !strings.Contains(string(r.Raw), `"code":"610"`) || !strings.Contains(string(r.Raw), `"success":false`) {
		t.Fatalf("error code not a string: %s", r.Raw)
	}
}

func TestFaultInjection_TimeoutsAndLostResponses(t *testing.T) {
	h := start(t, Options{ServerTimeout: 10 * time.Millisecond})
	h.sim.FailNext("timeout")
	if r := h.post("/rest/v1/leads.json", in(rec("email", "t@example.com"))); r.code() != "604" {
		t.Fatalf("timeout: %s", r.Raw)
	}
	if n := len(h.sim.Dump().Leads); n != 0 {
		t.Fatalf("timeout before processing wrote %d leads", n)
	}
	h.sim.FailNext("timeout-after")
	if r := h.post("/rest/v1/leads.json", in(rec("email", "t@example.com"))); r.code() != "604" {
		t.Fatalf("timeout-after: %s", r.Raw)
	}
	if n := len(h.sim.Dump().Leads); n != 1 {
		t.Fatalf("timeout after processing: %d leads, want 1", n)
	}
	h.sim.FailNext("drop-after")
	req, _ := http.NewRequest("POST", h.srv.URL+"/rest/v1/leads.json", strings.NewReader(`{"input":[{"email":"d@example.com"}]}`))
	req.Header.Set("Authorization", "Bearer "+h.token())
	req.Header.Set("Content-Type", "application/json")
	if res, err := http.DefaultClient.Do(req); err == nil {
		res.Body.Close()
		t.Fatal("drop-after returned a response")
	}
	if n := len(h.sim.Dump().Leads); n != 2 {
		t.Fatalf("drop-after: %d leads, want 2 (processed, response lost)", n)
	}
}
