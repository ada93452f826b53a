package marketo

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/marketo/marketosim"
	"github.com/msisync/msisync/internal/marketo/marketotype"
)

func TestNew_RejectsBadConfigNamingTheField(t *testing.T) {
	good := Config{BaseURL: "https://123-ABC-456.mktorest.com", ClientID: "id", ClientSecret: "s"}
	cases := map[string]func(*Config){
		"BaseURL":        func(c *Config) { c.BaseURL = "" },
		"BaseURL ":       func(c *Config) { c.BaseURL = "ftp://x" },
		"ClientID":       func(c *Config) { c.ClientID = "" },
		"ClientSecret":   func(c *Config) { c.ClientSecret = "" },
		"CallsPerWindow": func(c *Config) { c.CallsPerWindow = 101 },
		"MaxConcurrent":  func(c *Config) { c.MaxConcurrent = 11 },
		"DailyQuota":     func(c *Config) { c.DailyQuota = -1 },
		"MaxBackoff":     func(c *Config) { c.InitialBackoff, c.MaxBackoff = time.Minute, time.Second },
	}
	for field, mod := range cases {
		cfg := good
		mod(&cfg)
		_, err := New(cfg)
		if err == nil || !strings.Contains(err.Error(), strings.TrimSpace(field)) {
			t.Errorf("%s: error %v does not name the field", field, err)
		}
	}
	if _, err := New(good); err != nil {
		t.Fatal(err)
	}
}

func TestSync_AllObjectsInDependencyOrder(t *testing.T) {
	e := newEnv(t, marketosim.Options{})
	c := e.client(nil)
	ctx := context.Background()
	sp, err := c.Sync(ctx, marketotype.SalesPersons, marketotype.SyncRequest{Input: []marketotype.Record{{"externalSalesPersonId": "u1", "email": "o@example.com"}}})
	if err != nil || sp[0].Status != "created" || sp[0].ID == 0 {
		t.Fatalf("sales person: %+v %v", sp, err)
	}
	co, err := c.Sync(ctx, marketotype.Companies, marketotype.SyncRequest{Input: []marketotype.Record{{"externalCompanyId": "a1", "externalSalesPersonId": "u1", "company": "Acme"}}})
	if err != nil || co[0].Status != "created" {
		t.Fatalf("company: %+v %v", co, err)
	}
	in := []marketotype.Record{{"email": "p@example.com", "externalPersonId": "c1", "externalCompanyId": "a1", "externalSalesPersonId": "u1"}}
	ld, err := c.Sync(ctx, marketotype.Leads, marketotype.SyncRequest{Input: in})
	if err != nil {
		t.Fatal(err)
	}
	e.checkLeadResults(in, ld)
	op, err := c.Sync(ctx, marketotype.Opportunities, marketotype.SyncRequest{Input: []marketotype.Record{{"externalOpportunityId": "o1", "name": "Deal",
		"externalCompanyId": "a1", "externalSalesPersonId": "u1"}}})
	if err != nil || len(op[0].MarketoGUID) != 36 {
		t.Fatalf("opportunity: %+v %v", op, err)
	}
	ro, err := c.Sync(ctx, marketotype.Roles, marketotype.SyncRequest{Input: []marketotype.Record{{"externalOpportunityId": "o1", "leadId": ld[0].ID, "role": "Buyer"}}})
	if err != nil || ro[0].Status != "created" {
		t.Fatalf("role: %+v %v", ro, err)
	}
	found, err := c.QueryRoles(ctx, []marketotype.Record{{"externalOpportunityId": "o1", "leadId": ld[0].ID, "role": "Buyer"}}, []string{"role"})
	if err != nil || len(found) != 1 || found[0]["marketoGUID"] != ro[0].MarketoGUID {
		t.Fatalf("QueryRoles: %v %v", found, err)
	}
	// A role for a missing lead is a dependency failure the caller requeues.
	ro, err = c.Sync(ctx, marketotype.Roles, marketotype.SyncRequest{Input: []marketotype.Record{{"externalOpportunityId": "o1", "leadId": 1, "role": "Buyer"}}})
	if err != nil || ro[0].Class() != marketotype.ClassDependency || ro[0].Err() == nil {
		t.Fatalf("role for missing lead: %+v %v", ro, err)
	}
	op, _ = c.Sync(ctx, marketotype.Opportunities, marketotype.SyncRequest{Input: []marketotype.Record{{"externalOpportunityId": "o2", "name": "x", "externalSalesPersonId": "ghost"}}})
	if op[0].Class() != marketotype.ClassDependency || op[0].Reasons[0].Code != "718" {
		t.Fatalf("opportunity with unknown sales person: %+v", op)
	}
}

func TestSync_SplitsOver300RecordsAndMapsResultsToInputs(t *testing.T) {
	e := newEnv(t, marketosim.Options{})
	c := e.client(nil)
	in := leads(650, "split")
	in[10]["bogus"] = 1 // one skipped record in the first call
	res, err := c.Sync(context.Background(), marketotype.Leads, marketotype.SyncRequest{Input: in})
	if err != nil {
		t.Fatal(err)
	}
	if res[10].Status != "skipped" || res[10].Class() != marketotype.ClassPermanent || res[10].ID != 0 {
		t.Fatalf("skipped record: %+v", res[10])
	}
	delete(in[10], "bogus")
	res[10] = marketotype.Result{Seq: 10, Status: "created", ID: e.sim.Dump().Leads[0]["id"].(int64)} // not sent; patch for the check below
	byID := e.emailsByID()
	for i, r := range res {
		if i != 10 && byID[r.ID] != in[i]["email"] {
			t.Fatalf("result %d maps to %q, want %q", i, byID[r.ID], in[i]["email"])
		}
	}
	if st := c.Stats(); st.Calls["sync leads"] != 3 || st.RecordsPerCall[marketotype.Leads].Records != 650 {
		t.Fatalf("stats: %+v", st)
	}
}

func TestSync_SplitsOver1MB(t *testing.T) {
	e := newEnv(t, marketosim.Options{CustomFields: map[string][]marketosim.Field{
		"leads": {{Name: "notes", Type: "text"}}}})
	c := e.client(nil)
	in := leads(300, "big")
	for _, r := range in {
		r["notes"] = strings.Repeat("n", 5000) // 300 × 5 KB = 1.5 MB
	}
	res, err := c.Sync(context.Background(), marketotype.Leads, marketotype.SyncRequest{Input: in})
	if err != nil {
		t.Fatal(err)
	}
	e.checkLeadResults(in, res)
	st := e.sim.Stats()
	if st.Responses["HTTP 413"] != 0 || st.Requests["POST /rest/v1/leads.json"] != 2 {
		t.Fatalf("want 2 calls and no 413: %+v", st)
	}
	// A single record over 1 MB is skipped locally, not sent.
	huge := []marketotype.Record{{"email": "h@example.com", "notes": strings.Repeat("n", 1<<20)}}
	res, err = c.Sync(context.Background(), marketotype.Leads, marketotype.SyncRequest{Input: huge})
	if err != nil || res[0].Status != "skipped" || res[0].Reasons[0].Code != "413" {
		t.Fatalf("huge record: %+v %v", res, err)
	}
}

func TestSync_ObjectResultsMappedBySeqNotPosition(t *testing.T) {
	// A server that answers in reverse order, with seq.
	srv := cannedServer(t, map[string]string{
		"POST /rest/v1/companies.json": `{"requestId":"a1#b2","success":true,"result":[
			{"seq":1,"status":"skipped","reasons":[{"code":"1006","message":"Field 'x' not found"}]},
			{"seq":0,"status":"updated","id":7}]}`,
	})
	c := cannedClient(t, srv.URL)
	res, err := c.Sync(context.Background(), marketotype.Companies, marketotype.SyncRequest{Input: []marketotype.Record{{"externalCompanyId": "a"}, {"externalCompanyId": "b", "x": 1}}})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].ID != 7 || res[0].Status != "updated" || res[1].Reasons[0].Code != "1006" || res[1].Seq != 1 {
		t.Fatalf("results: %+v", res)
	}
}

func TestQuery_SplitsValuesPagesAndUsesPostOver8KB(t *testing.T) {
	e := newEnv(t, marketosim.Options{})
	c := e.client(nil)
	ctx := context.Background()
	in := leads(650, "q")
	var guids []string
	for i, r := range in {
		g := strings.Repeat("0", 24) + "-" + strings.Repeat("a", 5) + string(rune('a'+i%26)) + strings.Repeat("b", 4) + itoa3(i)
		r["externalPersonId"] = g
		guids = append(guids, g)
	}
	if _, err := c.Sync(ctx, marketotype.Leads, marketotype.SyncRequest{Input: in}); err != nil {
		t.Fatal(err)
	}
	got, err := c.Query(ctx, marketotype.Leads, "externalPersonId", guids, []string{"email", "externalPersonId"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 650 || String(got[649], "email") != "q649@example.com" {
		t.Fatalf("got %d records, last %v", len(got), got[len(got)-1])
	}
	if id, ok := Int64(got[0], "id"); !ok || id == 0 {
		t.Fatalf("id of first record: %v", got[0])
	}
	var posts, gets int
	for _, r := range e.rec.requests() {
		if r.Path == "/rest/v1/leads.json" && strings.Contains(r.RawQuery, "_method=GET") && r.Method == http.MethodPost {
			posts++
		}
		if r.Path == "/rest/v1/leads.json" && r.Method == http.MethodGet {
			gets++
		}
		if r.URILen > 8*1024 {
			t.Fatalf("URI of %d bytes sent", r.URILen)
		}
	}
	if posts != 2 || gets != 1 || e.sim.Stats().Responses["HTTP 414"] != 0 {
		t.Fatalf("want 2 POST _method=GET queries of 300 GUIDs and a GET of 50, got %d posts %d gets", posts, gets)
	}
	// Short queries stay GETs; no match is an empty result.
	none, err := c.Query(ctx, marketotype.Leads, "email", []string{"nobody@example.com"}, nil)
	if err != nil || len(none) != 0 {
		t.Fatalf("no match: %v %v", none, err)
	}
}

func itoa3(i int) string {
	return string(rune('0'+i/100)) + string(rune('0'+i/10%10)) + string(rune('0'+i%10))
}

func TestQuery_FollowsNextPageToken(t *testing.T) {
	srv := cannedServer(t, map[string]string{
		"GET /rest/v1/opportunities.json":      `{"requestId":"1#2","success":true,"moreResult":true,"nextPageToken":"GIYDAOBNGEYS2MBW","result":[{"seq":0,"marketoGUID":"g1","externalOpportunityId":"o1"}]}`,
		"GET /rest/v1/opportunities.json#page": `{"requestId":"1#3","success":true,"result":[{"seq":0,"marketoGUID":"g2","externalOpportunityId":"o2"}]}`,
	})
	c := cannedClient(t, srv.URL)
	got, err := c.Query(context.Background(), marketotype.Opportunities, "externalOpportunityId", []string{"o1", "o2"}, nil)
	if err != nil || len(got) != 2 || got[1]["marketoGUID"] != "g2" {
		t.Fatalf("paged query: %v %v", got, err)
	}
}

// TestQueryRoles_FollowsNextPageToken: roles are queried with the keys in a
// JSON body, and each further page resends them with the token.
func TestQueryRoles_FollowsNextPageToken(t *testing.T) {
	var tokens []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/identity/oauth/token" {
			io.WriteString(w, `{"access_token":"t","token_type":"bearer","expires_in":3599}`)
			return
		}
		var body struct {
			Input         []map[string]any `json:"input"`
			NextPageToken string           `json:"nextPageToken"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || len(body.Input) != 1 {
			t.Errorf("page %d: body %+v, %v; want the one key on every page", len(tokens), body, err)
		}
		tokens = append(tokens, body.NextPageToken)
		switch body.NextPageToken {
		case "":
			io.WriteString(w, `{"requestId":"r1","success":true,"nextPageToken":"P2","result":[{"seq":0,"marketoGUID":"r1"}]}`)
		case "P2":
			io.WriteString(w, `{"requestId":"r2","success":true,"result":[{"seq":0,"marketoGUID":"r2"}]}`)
		default:
			t.Errorf("unexpected token %q", body.NextPageToken)
		}
	}))
	t.Cleanup(srv.Close)
	c := cannedClient(t, srv.URL)
	got, err := c.QueryRoles(context.Background(), []marketotype.Record{{"externalOpportunityId": "o1", "leadId": 7, "role": "Buyer"}}, nil)
	if err != nil || len(got) != 2 || got[0]["marketoGUID"] != "r1" || got[1]["marketoGUID"] != "r2" {
		t.Fatalf("paged roles query: %v %v", got, err)
	}
	if len(tokens) != 2 || tokens[0] != "" || tokens[1] != "P2" {
		t.Errorf("tokens sent %q, want [\"\" \"P2\"]", tokens)
	}
}

func TestDeleteAndDescribe(t *testing.T) {
	e := newEnv(t, marketosim.Options{})
	c := e.client(nil)
	ctx := context.Background()
	res, _ := c.Sync(ctx, marketotype.Leads, marketotype.SyncRequest{Input: leads(2, "d")})
	del, err := c.Delete(ctx, marketotype.Leads, "", []marketotype.Record{{"id": res[1].ID}, {"id": 99999}})
	if err != nil || del[0].Status != "deleted" || del[0].ID != res[1].ID || del[1].Reasons[0].Code != "1013" {
		t.Fatalf("delete leads: %+v %v", del, err)
	}
	c.Sync(ctx, marketotype.Companies, marketotype.SyncRequest{Input: []marketotype.Record{{"externalCompanyId": "x"}}})
	del, err = c.Delete(ctx, marketotype.Companies, "dedupeFields", []marketotype.Record{{"externalCompanyId": "x"}})
	if err != nil || del[0].Status != "deleted" {
		t.Fatalf("delete company: %+v %v", del, err)
	}
	d, err := c.Describe(ctx, marketotype.Roles)
	if err != nil || d.IDField != "marketoGUID" || len(d.DedupeFields) != 3 {
		t.Fatalf("describe roles: %+v %v", d, err)
	}
	ld, err := c.Describe(ctx, marketotype.Leads)
	if err != nil || !ld.Searchable("externalPersonId") {
		t.Fatalf("describe leads: %+v %v", ld, err)
	}
	if f, ok := ld.Field("externalCompanyId"); !ok || f.Length != 100 {
		t.Fatalf("externalCompanyId field: %+v", f)
	}
}

func TestCheckInstance_ReportsMissingFields(t *testing.T) {
	msi := []string{"msiLastInterestingMomentType", "msiLastInterestingMomentDate", "priority", "relativeUrgency", "relativeScore"}
	e := newEnv(t, marketosim.Options{})
	if err := e.client(nil).CheckInstance(context.Background(), msi); err != nil {
		t.Fatalf("complete instance: %v", err)
	}
	e2 := newEnv(t, marketosim.Options{ScoreField: "relativeScoring"})
	err := e2.client(nil).CheckInstance(context.Background(), append(msi, "noSuchField"))
	var ie *InstanceError
	if !errors.As(err, &ie) || len(ie.Missing) != 2 || ie.Missing[0] != "relativeScore" || marketotype.ClassOfError(err) != marketotype.ClassConfig {
		t.Fatalf("want relativeScore and noSuchField missing, got %v", err)
	}
	if !strings.Contains(err.Error(), "relativeScore, noSuchField") {
		t.Fatalf("message: %v", err)
	}
	// An instance without MSI Non-Native (canned describe2 without externalPersonId).
	srv := cannedServer(t, map[string]string{"GET /rest/v1/leads/describe2.json": `{"requestId":"1#1","success":true,"result":[{"name":"API Lead","searchableFields":[["email"]],"fields":[{"name":"email","dataType":"email","length":255,"updateable":true}]}]}`})
	err = cannedClient(t, srv.URL).CheckInstance(context.Background(), nil)
	if !errors.As(err, &ie) || ie.Missing[0] != "externalPersonId" {
		t.Fatalf("no MSI non-native: %v", err)
	}
}

func TestLookupExternalPersonIdUnsupported_Returns1011Config(t *testing.T) {
	e := newEnv(t, marketosim.Options{})
	c := e.client(nil)
	_, err := c.Sync(context.Background(), marketotype.Leads, marketotype.SyncRequest{LookupField: "externalPersonId",
		Input: []marketotype.Record{{"externalPersonId": "g", "email": "a@example.com"}}})
	var me *marketotype.Error
	if !errors.As(err, &me) || me.Code != "1011" || me.Class() != marketotype.ClassConfig || !strings.Contains(err.Error(), "sync leads") {
		t.Fatalf("want 1011 config error, got %v", err)
	}
	e2 := newEnv(t, marketosim.Options{LookupExternalPersonID: true})
	res, err := e2.client(nil).Sync(context.Background(), marketotype.Leads, marketotype.SyncRequest{LookupField: "externalPersonId",
		Input: []marketotype.Record{{"externalPersonId": "g", "email": "a@example.com"}}})
	if err != nil || res[0].Status != "created" {
		t.Fatalf("supported: %+v %v", res, err)
	}
}

func TestConcurrentClientCallsShareOneToken(t *testing.T) {
	e := newEnv(t, marketosim.Options{})
	c := e.client(nil)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Describe(context.Background(), marketotype.Companies); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := e.sim.Stats().IdentityCalls; n != 1 {
		t.Fatalf("identity calls: %d", n)
	}
}

func TestLeadChanges_FromPagingTokenFollowsPages(t *testing.T) {
	e := newEnv(t, marketosim.Options{MSIChangeActivities: true})
	c := e.client(nil)
	ctx := context.Background()
	tok, err := c.PagingToken(ctx, e.clk.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Sync(ctx, marketotype.Leads, marketotype.SyncRequest{Input: leads(1200, "lc")}); err != nil {
		t.Fatal(err)
	}
	ids := e.sim.TickMSI(5)
	acts, next, err := c.LeadChanges(ctx, tok, []string{"relativeScore"})
	if err != nil {
		t.Fatal(err)
	}
	// 1200 New Lead activities (the simulator scans 1000 per call, so this
	// takes a second page) and 5 score changes.
	if len(acts) != 1205 || next == tok || acts[1200].ActivityTypeID != 13 || acts[1200].Fields[0].Name != "relativeScore" {
		t.Fatalf("got %d activities, last %+v", len(acts), acts[len(acts)-1])
	}
	if acts[1200].LeadID != ids[0] || acts[0].ActivityDate.IsZero() || acts[0].Attributes["Source"] != "API" {
		t.Fatalf("activity: %+v", acts[1200])
	}
	more, _, err := c.LeadChanges(ctx, next, []string{"relativeScore"})
	if err != nil || len(more) != 0 {
		t.Fatalf("caught up: %d %v", len(more), err)
	}
}
