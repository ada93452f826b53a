package marketo

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/marketo/marketosim"
	"github.com/msisync/msisync/internal/marketo/marketotype"
)

// Bodies follow the documented formats (reference §1 and the Adobe
// examples, made valid JSON).
func TestEnvelope_DocumentedShapesRoundTrip(t *testing.T) {
	srv := cannedServer(t, map[string]string{
		// Sync Leads: no seq; the skipped lead has no id.
		"POST /rest/v1/leads.json": `{"requestId":"0000#000000000000","success":true,"result":[
			{"id":1001,"status":"created"},
			{"status":"skipped","reasons":[{"code":"1004","message":"Lead not found"}]}]}`,
		// Sync Opportunities: seq and marketoGUID.
		"POST /rest/v1/opportunities.json": `{"requestId":"e42b#14272d07d78","success":true,"result":[
			{"seq":0,"status":"updated","marketoGUID":"dff23271-f996-47d7-984f-f2676861b5fb"}]}`,
		// Delete Leads.
		"POST /rest/v1/leads/delete.json": `{"requestId":"a#b","success":true,"result":[{"id":1001,"status":"deleted"}]}`,
		// A response-level error with a warning; codes are strings.
		"GET /rest/v1/companies.json": `{"requestId":"c#d","success":false,"warnings":["deprecated"],"errors":[{"code":"1003","message":"Too many results match the filter"}]}`,
		// Describe Sales Persons.
		"GET /rest/v1/salespersons/describe.json": `{"requestId":"5c0a#16d6e3fb1a4","success":true,"result":[{"name":"Sales Person","displayName":"Sales Person","createdAt":"2019-04-09T21:09:33Z","updatedAt":"2019-04-09T21:09:33Z","idField":"id","dedupeFields":["externalSalesPersonId"],"searchableFields":[["email"],["id"],["externalSalesPersonId"]],"fields":[{"name":"externalSalesPersonId","displayName":"External Sales Person Id","dataType":"string","length":255,"updateable":false,"crmManaged":false},{"name":"email","displayName":"Email","dataType":"email","length":255,"updateable":true,"crmManaged":false}]}]}`,
	})
	c := cannedClient(t, srv.URL)
	ctx := context.Background()
	res, err := c.Sync(ctx, marketotype.Leads, marketotype.SyncRequest{Input: []marketotype.Record{{"email": "a@x.com"}, {"email": "b@x.com"}}})
	if err != nil || res[0].ID != 1001 || res[0].Status != "created" || res[1].ID != 0 ||
		res[1].Reasons[0] != (marketotype.Reason{Code: "1004", Message: "Lead not found"}) || res[1].Seq != 1 {
		t.Fatalf("sync leads: %+v %v", res, err)
	}
	res, err = c.Sync(ctx, marketotype.Opportunities, marketotype.SyncRequest{Input: []marketotype.Record{{"externalOpportunityId": "o"}}})
	if err != nil || res[0].MarketoGUID != "dff23271-f996-47d7-984f-f2676861b5fb" || res[0].Class() != marketotype.ClassNone {
		t.Fatalf("sync opportunities: %+v %v", res, err)
	}
	res, err = c.Delete(ctx, marketotype.Leads, "", []marketotype.Record{{"id": 1001}})
	if err != nil || res[0].Status != "deleted" || res[0].ID != 1001 {
		t.Fatalf("delete: %+v %v", res, err)
	}
	_, err = c.Query(ctx, marketotype.Companies, "externalCompanyId", []string{"x"}, nil)
	var me *marketotype.Error
	if !errors.As(err, &me) || me.Code != "1003" || me.Message != "Too many results match the filter" || me.Class() != marketotype.ClassPermanent {
		t.Fatalf("error envelope: %v", err)
	}
	d, err := c.Describe(ctx, marketotype.SalesPersons)
	if err != nil || d.IDField != "id" || d.DedupeFields[0] != "externalSalesPersonId" || !d.Searchable("email") {
		t.Fatalf("describe: %+v %v", d, err)
	}
	if f, _ := d.Field("externalSalesPersonId"); f.Updateable || f.Length != 255 {
		t.Fatalf("field: %+v", f)
	}
}

func TestEnvelope_NumericCodeAndMissingErrorsTolerated(t *testing.T) {
	srv := cannedServer(t, map[string]string{
		"GET /rest/v1/companies/describe.json":     `{"requestId":"1#1","success":false,"errors":[{"code":603,"message":"Access denied"}]}`,
		"GET /rest/v1/opportunities/describe.json": `{"requestId":"1#1","success":false}`,
	})
	c := cannedClient(t, srv.URL)
	_, err := c.Describe(context.Background(), marketotype.Companies)
	var me *marketotype.Error
	if !errors.As(err, &me) || me.Code != "603" || me.Class() != marketotype.ClassConfig {
		t.Fatalf("numeric code: %v", err)
	}
	_, err = c.Describe(context.Background(), marketotype.Opportunities)
	if !errors.As(err, &me) || me.Class() != marketotype.ClassTransient {
		t.Fatalf("success:false without errors: %v", err)
	}
}

// TestNewUser_FlakyMarketoConverges plays the scenario: tokens that
// expire every few seconds and random 606, 604, 611 and 602 answers; the
// whole MSI object graph still lands, and no request carries the token in
// the query string (checked by the env on cleanup).
func TestNewUser_FlakyMarketoConverges(t *testing.T) {
	e := newEnv(t, marketosim.Options{TokenTTL: 3 * time.Second, Seed: 42})
	for _, code := range []string{"606", "604", "611", "602"} {
		e.sim.SetFault(code, 0.1)
	}
	e.sim.FailNext("606", "604", "611", "602") // at least one of each, in a row
	c := e.client(func(cfg *Config) { cfg.MaxRetries = 12 })
	ctx := context.Background()
	must := func(res []marketotype.Result, err error) []marketotype.Result {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range res {
			if r.Status != "created" && r.Status != "updated" {
				t.Fatalf("record %d: %+v", i, r)
			}
		}
		return res
	}
	must(c.Sync(ctx, marketotype.SalesPersons, marketotype.SyncRequest{Input: []marketotype.Record{{"externalSalesPersonId": "u1", "email": "o@example.com"}}}))
	var companies []marketotype.Record
	for i := 0; i < 40; i++ {
		companies = append(companies, marketotype.Record{"externalCompanyId": "acc-" + itoa3(i), "externalSalesPersonId": "u1"})
	}
	must(c.Sync(ctx, marketotype.Companies, marketotype.SyncRequest{Input: companies}))
	in := leads(1200, "flaky")
	for i, r := range in {
		r["externalPersonId"] = "per-" + itoa3(i%1000) + "-" + itoa3(i/1000)
		r["externalCompanyId"] = "acc-" + itoa3(i%40)
		r["externalSalesPersonId"] = "u1"
	}
	for lo := 0; lo < len(in); lo += 300 {
		e.clk.Advance(2 * time.Second) // time passes between batches: tokens lapse
		res := must(c.Sync(ctx, marketotype.Leads, marketotype.SyncRequest{Input: in[lo : lo+300]}))
		e.checkLeadResultsSubset(in[lo:lo+300], res)
	}
	var keys []string
	for _, r := range in {
		keys = append(keys, r["externalPersonId"].(string))
	}
	got, err := c.Query(ctx, marketotype.Leads, "externalPersonId", keys, []string{"externalPersonId", "externalCompanyId"})
	if err != nil || len(got) != len(in) {
		t.Fatalf("read back %d of %d: %v", len(got), len(in), err)
	}
	st := e.sim.Stats()
	for _, code := range []string{"606", "604", "611", "602"} {
		if st.Responses[code] == 0 {
			t.Fatalf("fault %s never fired: %v", code, st.Responses)
		}
	}
	if len(e.sim.Dump().Leads) != 1200 || !strings.Contains(e.sim.Dump().Leads[0]["externalCompanyId"].(string), "acc-") {
		t.Fatalf("leads in Marketo: %d", len(e.sim.Dump().Leads))
	}
}

func (e *env) checkLeadResultsSubset(in []marketotype.Record, res []marketotype.Result) {
	e.t.Helper()
	byID := e.emailsByID()
	for i, r := range res {
		if byID[r.ID] != in[i]["email"] {
			e.t.Fatalf("result %d: id %d is %q, want %q", i, r.ID, byID[r.ID], in[i]["email"])
		}
	}
}

func BenchmarkSyncLeads300(b *testing.B) {
	sim := marketosim.New(marketosim.Options{ClientID: testID, ClientSecret: testSecret, CallsPerWindow: 100})
	c, err := New(Config{BaseURL: "http://sim.invalid", ClientID: testID, ClientSecret: testSecret,
		CallsPerWindow: 100, MaxConcurrent: 10, HTTPClient: handlerClient(sim), Window: time.Nanosecond})
	if err != nil {
		b.Fatal(err)
	}
	in := leads(300, "bench")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Sync(context.Background(), marketotype.Leads, marketotype.SyncRequest{Input: in}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(300*b.N)/b.Elapsed().Seconds(), "records/s")
}
