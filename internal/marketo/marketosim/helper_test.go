package marketosim

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/clock"
)

const (
	testID     = "client-id"
	testSecret = "client-secret"
)

type harness struct {
	t   *testing.T
	sim *Server
	srv *httptest.Server
	clk *clock.Fake
	tok string
}

// start runs a simulator with a fake clock set to a fixed noon UTC.
func start(t *testing.T, opts Options) *harness {
	t.Helper()
	clk := clock.NewFake(time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC))
	opts.ClientID, opts.ClientSecret = testID, testSecret
	if opts.Clock == nil {
		opts.Clock = clk
	}
	sim := New(opts)
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	return &harness{t: t, sim: sim, srv: srv, clk: clk}
}

type resp struct {
	Status        int
	Header        http.Header
	Raw           []byte
	RequestID     string           `json:"requestId"`
	Success       bool             `json:"success"`
	Errors        []apiError       `json:"errors"`
	Result        []map[string]any `json:"result"`
	MoreResult    bool             `json:"moreResult"`
	NextPageToken string           `json:"nextPageToken"`
}

func (r *resp) code() string {
	if len(r.Errors) == 0 {
		return ""
	}
	return r.Errors[0].Code
}

func (h *harness) identity(id, secret string) (int, map[string]any) {
	h.t.Helper()
	q := url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {secret}}
	res, err := http.Get(h.srv.URL + "/identity/oauth/token?" + q.Encode())
	if err != nil {
		h.t.Fatal(err)
	}
	defer res.Body.Close()
	var m map[string]any
	dec := json.NewDecoder(res.Body)
	dec.UseNumber()
	_ = dec.Decode(&m)
	return res.StatusCode, m
}

func (h *harness) token() string {
	h.t.Helper()
	if h.tok == "" {
		st, m := h.identity(testID, testSecret)
		if st != 200 {
			h.t.Fatalf("identity: HTTP %d", st)
		}
		h.tok = m["access_token"].(string)
	}
	return h.tok
}

// do sends a request with the bearer token; body is JSON-encoded unless it
// is a string or []byte.
func (h *harness) do(method, path string, ctype string, body any) *resp {
	h.t.Helper()
	var rdr io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rdr = strings.NewReader(b)
	case []byte:
		rdr = bytes.NewReader(b)
	default:
		bs, err := json.Marshal(b)
		if err != nil {
			h.t.Fatal(err)
		}
		rdr = bytes.NewReader(bs)
	}
	req, err := http.NewRequest(method, h.srv.URL+path, rdr)
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+h.token())
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	r := &resp{Status: res.StatusCode, Header: res.Header, Raw: raw}
	if res.StatusCode == 200 {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if err := dec.Decode(r); err != nil {
			h.t.Fatalf("%s %s: bad JSON %q: %v", method, path, raw, err)
		}
	}
	return r
}

func (h *harness) get(path string) *resp { return h.do("GET", path, "", nil) }

func (h *harness) post(path string, body any) *resp {
	return h.do("POST", path, "application/json", body)
}

// sync posts a sync body and fails the test on a request-level error.
func (h *harness) sync(obj string, body map[string]any) []map[string]any {
	h.t.Helper()
	r := h.post("/rest/v1/"+obj+".json", body)
	if !r.Success {
		h.t.Fatalf("sync %s: %s %s", obj, r.code(), r.Raw)
	}
	return r.Result
}

func in(recs ...map[string]any) map[string]any { return map[string]any{"input": recs} }

func rec(kv ...any) map[string]any {
	m := map[string]any{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	return m
}

func reasonCode(r map[string]any) string {
	rs, _ := r["reasons"].([]any)
	if len(rs) == 0 {
		return ""
	}
	return rs[0].(map[string]any)["code"].(string)
}

func wantStatus(t *testing.T, r map[string]any, status, code string) {
	t.Helper()
	if r["status"] != status || reasonCode(r) != code {
		t.Fatalf("result %v: want status %s code %q", r, status, code)
	}
}

// seedMSI creates a sales person, a company and n leads linked to them.
func (h *harness) seedMSI(n int) {
	h.t.Helper()
	h.sync("salespersons", in(rec("externalSalesPersonId", "sp-1", "email", "owner@example.com")))
	h.sync("companies", in(rec("externalCompanyId", "acc-1", "externalSalesPersonId", "sp-1", "company", "Acme")))
	var leads []map[string]any
	for i := 0; i < n; i++ {
		leads = append(leads, rec("email", "p"+itoa(i)+"@example.com", "externalPersonId", "PER-"+itoa(i),
			"externalCompanyId", "acc-1", "externalSalesPersonId", "sp-1"))
	}
	for lo := 0; lo < len(leads); lo += 300 {
		hi := min(lo+300, len(leads))
		h.sync("leads", in(leads[lo:hi]...))
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
