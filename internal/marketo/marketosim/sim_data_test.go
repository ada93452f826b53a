package marketosim

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestBatchCaps_InputOver300Rejected(t *testing.T) {
	h := start(t, Options{})
	var recs []map[string]any
	for i := 0; i < 301; i++ {
		recs = append(recs, rec("email", "x"+itoa(i)+"@example.com"))
	}
	for _, obj := range []string{"leads", "companies"} {
		r := h.post("/rest/v1/"+obj+".json", in(recs...))
		if r.Success || r.code() != "1003" {
			t.Fatalf("%s with 301 inputs: %s", obj, r.Raw)
		}
	}
	h2 := start(t, Options{InputCapCode: "1001"})
	if r := h2.post("/rest/v1/leads.json", in(recs...)); r.code() != "1001" {
		t.Fatalf("configured cap code: %s", r.Raw)
	}
}

func TestBatchCaps_FilterValuesOver300Rejected(t *testing.T) {
	h := start(t, Options{})
	var vals []string
	for i := 0; i < 301; i++ {
		vals = append(vals, itoa(i))
	}
	form := "filterType=id&filterValues=" + strings.Join(vals, ",")
	if r := h.do("POST", "/rest/v1/leads.json?_method=GET", "application/x-www-form-urlencoded", form); r.code() != "1003" {
		t.Fatalf("301 filterValues: %s", r.Raw)
	}
}

func TestBatchCaps_LeadQueryMatchingOver1000Gives1003(t *testing.T) {
	h := start(t, Options{CustomFields: map[string][]Field{"leads": {{Name: "region", Type: "string", Searchable: true}}}})
	h.seedMSI(0)
	var recs []map[string]any
	for i := 0; i < 1001; i++ {
		recs = append(recs, rec("email", "r"+itoa(i)+"@example.com", "region", "emea"))
	}
	for lo := 0; lo < len(recs); lo += 300 {
		h.sync("leads", in(recs[lo:min(lo+300, len(recs))]...))
	}
	r := h.get("/rest/v1/leads.json?filterType=region&filterValues=emea")
	if r.code() != "1003" || !strings.Contains(r.Errors[0].Message, "Too many results") {
		t.Fatalf("1001 matches: %s", r.Raw)
	}
}

func TestPaging_BatchSizeMoreResultNextPageToken(t *testing.T) {
	h := start(t, Options{})
	h.seedMSI(5)
	vals := "PER-0,PER-1,PER-2,PER-3,PER-4"
	var got []string
	tok := ""
	for page := 0; page < 10; page++ {
		p := "/rest/v1/leads.json?filterType=externalPersonId&batchSize=2&fields=email&filterValues=" + vals
		if tok != "" {
			p += "&nextPageToken=" + tok
		}
		r := h.get(p)
		for _, x := range r.Result {
			got = append(got, x["email"].(string))
		}
		if !r.MoreResult {
			if r.NextPageToken != "" {
				t.Fatalf("last page has a nextPageToken: %s", r.Raw)
			}
			break
		}
		tok = r.NextPageToken
	}
	if len(got) != 5 || got[0] != "p0@example.com" || got[4] != "p4@example.com" {
		t.Fatalf("paged results %v", got)
	}
	if r := h.get("/rest/v1/leads.json?filterType=id&filterValues=1&batchSize=301"); r.code() != "1003" {
		t.Fatalf("batchSize 301: %s", r.Raw)
	}
}

func TestPerRecordResults_InInputOrderWithReasons(t *testing.T) {
	h := start(t, Options{})
	h.seedMSI(1)
	res := h.sync("leads", map[string]any{"action": "updateOnly", "input": []map[string]any{
		rec("email", "p0@example.com", "firstName", "Ann"),
		rec("email", "nobody@example.com", "firstName", "Bob"),
		rec("email", "p0x@example.com", "bogus", 1),
	}})
	wantStatus(t, res[0], "updated", "")
	wantStatus(t, res[1], "skipped", "1004")
	wantStatus(t, res[2], "skipped", "1006")
	if msg := res[2]["reasons"].([]any)[0].(map[string]any)["message"]; msg != "Field 'bogus' not found" {
		t.Fatalf("1006 message %q", msg)
	}
}

func TestSeq_OnObjectsNotOnLeads_NoIDOnSkippedLead(t *testing.T) {
	h := start(t, Options{})
	res := h.sync("salespersons", in(rec("externalSalesPersonId", "a"), rec("externalSalesPersonId", "b")))
	for i, r := range res {
		if n, _ := r["seq"].(json.Number).Int64(); int(n) != i || r["id"] == nil {
			t.Fatalf("sales person result %d: %v", i, r)
		}
	}
	lr := h.sync("leads", in(rec("email", "a@example.com"), rec("email", "b@example.com", "nope", 1)))
	for _, r := range lr {
		if _, has := r["seq"]; has {
			t.Fatalf("lead result has seq: %v", r)
		}
	}
	if lr[0]["id"] == nil {
		t.Fatalf("created lead without id: %v", lr[0])
	}
	if _, has := lr[1]["id"]; has {
		t.Fatalf("skipped lead has id: %v", lr[1])
	}
}

func TestDedupeKeys_PerObjectAndIdField(t *testing.T) {
	h := start(t, Options{})
	h.seedMSI(1)
	// Sales person and company by dedupe field: second sync updates.
	if r := h.sync("salespersons", in(rec("externalSalesPersonId", "sp-1", "firstName", "Z"))); r[0]["status"] != "updated" {
		t.Fatalf("sales person re-sync: %v", r)
	}
	comp := h.sync("companies", in(rec("externalCompanyId", "acc-1", "industry", "Tools")))
	wantStatus(t, comp[0], "updated", "")
	// Company by idField.
	id := comp[0]["id"]
	r := h.sync("companies", map[string]any{"dedupeBy": "idField", "input": []map[string]any{rec("id", id, "industry", "Anvils")}})
	wantStatus(t, r[0], "updated", "")
	// Opportunity: marketoGUID of 36 chars; updateOnly by marketoGUID.
	op := h.sync("opportunities", in(rec("externalOpportunityId", "opp-1", "name", "Deal", "externalCompanyId", "acc-1", "externalSalesPersonId", "sp-1")))
	guid, _ := op[0]["marketoGUID"].(string)
	if len(guid) != 36 {
		t.Fatalf("opportunity marketoGUID %q", guid)
	}
	r = h.sync("opportunities", map[string]any{"action": "updateOnly", "dedupeBy": "idField",
		"input": []map[string]any{rec("marketoGUID", guid, "stage", "Won")}})
	wantStatus(t, r[0], "updated", "")
	// Role: compound key; a different role is a new record.
	leadID := h.get("/rest/v1/leads.json?filterType=externalPersonId&filterValues=PER-0").Result[0]["id"]
	r = h.sync("opportunities/roles", in(rec("externalOpportunityId", "opp-1", "leadId", leadID, "role", "Buyer")))
	wantStatus(t, r[0], "created", "")
	r = h.sync("opportunities/roles", in(rec("externalOpportunityId", "opp-1", "leadId", leadID, "role", "Buyer", "isPrimary", true),
		rec("externalOpportunityId", "opp-1", "leadId", leadID, "role", "Champion")))
	wantStatus(t, r[0], "updated", "")
	wantStatus(t, r[1], "created", "")
	if n := len(h.sim.Dump().Roles); n != 2 {
		t.Fatalf("roles: %d", n)
	}
	// Leads: lookupField default email, id allowed with updateOnly.
	r = h.sync("leads", map[string]any{"action": "updateOnly", "lookupField": "id", "input": []map[string]any{rec("id", leadID, "title", "CTO")}})
	wantStatus(t, r[0], "updated", "")
}

func TestActions_CreateOnlyUpdateOnlyCreateOrUpdateCreateDuplicate(t *testing.T) {
	h := start(t, Options{})
	h.seedMSI(1)
	act := func(obj, action string, recs ...map[string]any) map[string]any {
		return h.sync(obj, map[string]any{"action": action, "input": recs})[0]
	}
	wantStatus(t, act("leads", "createOnly", rec("email", "p0@example.com")), "skipped", "1005")
	wantStatus(t, act("leads", "updateOnly", rec("email", "new@example.com")), "skipped", "1004")
	wantStatus(t, act("leads", "createOrUpdate", rec("email", "new@example.com")), "created", "")
	wantStatus(t, act("leads", "createOrUpdate", rec("email", "NEW@example.com", "title", "x")), "updated", "")
	wantStatus(t, act("leads", "createDuplicate", rec("email", "new@example.com")), "created", "")
	wantStatus(t, act("companies", "createOnly", rec("externalCompanyId", "acc-1")), "skipped", "1017")
	wantStatus(t, act("companies", "updateOnly", rec("externalCompanyId", "acc-9")), "skipped", "1013")
	wantStatus(t, act("companies", "createOrUpdate", rec("externalCompanyId", "acc-9")), "created", "")
	if r := h.post("/rest/v1/companies.json", map[string]any{"action": "createOnly", "dedupeBy": "idField",
		"input": []map[string]any{rec("id", 1)}}); r.Success || r.code() != "1003" {
		t.Fatalf("idField with createOnly: %s", r.Raw)
	}
	if r := h.post("/rest/v1/leads.json", map[string]any{"lookupField": "id",
		"input": []map[string]any{rec("id", 1)}}); r.Success || r.code() != "1003" {
		t.Fatalf("lookupField id with createOrUpdate: %s", r.Raw)
	}
}

func TestLeadLookup_ExternalPersonIdSwitchAndUnsupportedFields(t *testing.T) {
	off := start(t, Options{})
	off.seedMSI(0)
	body := map[string]any{"lookupField": "externalPersonId", "input": []map[string]any{rec("externalPersonId", "g-1", "email", "a@example.com")}}
	if r := off.post("/rest/v1/leads.json", body); r.Success || r.code() != "1011" || r.Errors[0].Message != "Field 'externalPersonId' not supported" {
		t.Fatalf("lookupField externalPersonId when unsupported: %s", r.Raw)
	}
	if r := off.post("/rest/v1/leads.json", map[string]any{"lookupField": "title", "input": []map[string]any{rec("title", "x")}}); r.code() != "1011" {
		t.Fatalf("lookupField title: %s", r.Raw)
	}
	if r := off.get("/rest/v1/leads.json?filterType=title&filterValues=x"); r.code() != "1011" {
		t.Fatalf("filterType title: %s", r.Raw)
	}
	on := start(t, Options{LookupExternalPersonID: true, CaseInsensitiveIDs: true})
	on.seedMSI(0)
	r := on.sync("leads", body)
	wantStatus(t, r[0], "created", "")
	body["input"] = []map[string]any{rec("externalPersonId", "G-1", "title", "CEO")}
	r = on.sync("leads", body)
	wantStatus(t, r[0], "updated", "")
	if q := on.get("/rest/v1/leads.json?filterType=externalPersonId&filterValues=G-1&fields=title"); len(q.Result) != 1 || q.Result[0]["title"] != "CEO" {
		t.Fatalf("case-insensitive filter: %s", q.Raw)
	}
	// Lookup field missing from a record.
	r = on.sync("leads", map[string]any{"lookupField": "externalPersonId", "input": []map[string]any{rec("email", "b@example.com")}})
	wantStatus(t, r[0], "skipped", "1003")
	// Case-sensitive by default.
	cs := start(t, Options{})
	cs.seedMSI(1)
	if q := cs.get("/rest/v1/leads.json?filterType=externalPersonId&filterValues=per-0"); len(q.Result) != 0 {
		t.Fatalf("case-sensitive filter matched: %s", q.Raw)
	}
}

func TestLeadLookup_MultipleMatchesGive1007(t *testing.T) {
	h := start(t, Options{})
	for i := 0; i < 2; i++ {
		h.sync("leads", map[string]any{"action": "createDuplicate", "input": []map[string]any{rec("email", "dup@example.com")}})
	}
	r := h.sync("leads", in(rec("email", "dup@example.com", "title", "x")))
	wantStatus(t, r[0], "skipped", "1007")
}

func TestFieldValidation_UnknownFieldBadValuesAndLengths(t *testing.T) {
	h := start(t, Options{CustomFields: map[string][]Field{"leads": {{Name: "segment", Type: "string", Length: 10}}}})
	h.seedMSI(1)
	long := func(n int) string { return strings.Repeat("x", n) }
	cases := []struct {
		obj  string
		rec  map[string]any
		want string
	}{
		{"leads", rec("email", "a@example.com", "nickname", "x"), "1006"},
		{"leads", rec("email", "a@example.com", "unsubscribed", "maybe"), "1003"},
		{"leads", rec("email", "jö@example.com"), "1003"},
		{"leads", rec("email", long(250)+"@x.com"), "1003"},
		{"leads", rec("email", "a@example.com", "segment", long(11)), "1003"},
		{"companies", rec("externalCompanyId", long(101)), "1003"},
		{"opportunities", rec("externalOpportunityId", long(51), "name", "n"), "1003"},
		{"opportunities", rec("externalOpportunityId", "o1", "name", "n", "description", long(2001)), "1003"},
		{"opportunities", rec("externalOpportunityId", "o2", "name", nil), "1003"},
		{"opportunities", rec("externalOpportunityId", "o3"), "1003"},
		{"opportunities/roles", rec("externalOpportunityId", "o1", "leadId", 1001, "role", long(51)), "1003"},
	}
	for _, c := range cases {
		r := h.sync(c.obj, in(c.rec))
		if r[0]["status"] != "skipped" || reasonCode(r[0]) != c.want {
			t.Errorf("%s %v: want skipped %s, got %v", c.obj, c.rec, c.want, r[0])
		}
	}
	// Valid custom field and boolean string pass.
	r := h.sync("leads", in(rec("email", "a@example.com", "segment", "smb", "unsubscribed", "true")))
	wantStatus(t, r[0], "created", "")
}

func TestReferentialRules_SalesPersonCompanyOpportunityLeadRole(t *testing.T) {
	h := start(t, Options{})
	r := h.sync("opportunities", in(rec("externalOpportunityId", "o1", "name", "n", "externalSalesPersonId", "ghost")))
	wantStatus(t, r[0], "skipped", "718")
	r = h.sync("companies", in(rec("externalCompanyId", "c1", "externalSalesPersonId", "ghost")))
	wantStatus(t, r[0], "skipped", "718")
	r = h.sync("leads", in(rec("email", "a@example.com", "externalCompanyId", "c1")))
	wantStatus(t, r[0], "skipped", "1013")
	r = h.sync("leads", in(rec("email", "a@example.com", "externalSalesPersonId", "ghost")))
	wantStatus(t, r[0], "skipped", "1013")
	r = h.sync("opportunities/roles", in(rec("externalOpportunityId", "o1", "leadId", 999999, "role", "Buyer")))
	wantStatus(t, r[0], "skipped", "1013")
	// In dependency order everything lands.
	h.seedMSI(1)
	lead := h.get("/rest/v1/leads.json?filterType=externalPersonId&filterValues=PER-0").Result[0]["id"]
	wantStatus(t, h.sync("opportunities", in(rec("externalOpportunityId", "o1", "name", "n", "externalSalesPersonId", "sp-1")))[0], "created", "")
	r = h.sync("opportunities/roles", in(rec("externalOpportunityId", "o1", "leadId", 999999, "role", "Buyer"),
		rec("externalOpportunityId", "o1", "leadId", lead, "role", "Buyer")))
	wantStatus(t, r[0], "skipped", "1013")
	wantStatus(t, r[1], "created", "")
	// 718 as a request-level error when configured.
	h2 := start(t, Options{SalesPerson718RequestLevel: true})
	if resp := h2.post("/rest/v1/opportunities.json", in(rec("externalOpportunityId", "o1", "name", "n", "externalSalesPersonId", "ghost"))); resp.code() != "718" {
		t.Fatalf("request-level 718: %s", resp.Raw)
	}
}

func TestCompanyLink_LeadInheritsCompanyFields_1021_NoUnlink(t *testing.T) {
	h := start(t, Options{})
	h.seedMSI(1)
	h.sync("companies", in(rec("externalCompanyId", "acc-2", "company", "Globex", "industry", "Energy")))
	q := h.get("/rest/v1/leads.json?filterType=externalPersonId&filterValues=PER-0&fields=company,externalCompanyId")
	if q.Result[0]["company"] != "Acme" {
		t.Fatalf("lead does not inherit company name: %s", q.Raw)
	}
	r := h.sync("leads", in(rec("email", "p0@example.com", "company", "Other Inc")))
	wantStatus(t, r[0], "skipped", "1021")
	// Unlinked lead may set its own company field.
	wantStatus(t, h.sync("leads", in(rec("email", "solo@example.com", "company", "Solo Ltd")))[0], "created", "")
	// Null does not unlink; another company relinks.
	wantStatus(t, h.sync("leads", in(rec("email", "p0@example.com", "externalCompanyId", nil)))[0], "updated", "")
	q = h.get("/rest/v1/leads.json?filterType=email&filterValues=p0@example.com&fields=externalCompanyId,company,industry")
	if q.Result[0]["externalCompanyId"] != "acc-1" {
		t.Fatalf("null unlinked the lead: %s", q.Raw)
	}
	wantStatus(t, h.sync("leads", in(rec("email", "p0@example.com", "externalCompanyId", "acc-2")))[0], "updated", "")
	q = h.get("/rest/v1/leads.json?filterType=email&filterValues=p0@example.com&fields=company,industry")
	if q.Result[0]["company"] != "Globex" || q.Result[0]["industry"] != "Energy" {
		t.Fatalf("relinked lead: %s", q.Raw)
	}
}

func TestDelete_SalesPersonInUseGives1022(t *testing.T) {
	h := start(t, Options{})
	h.seedMSI(1)
	h.sync("salespersons", in(rec("externalSalesPersonId", "sp-free")))
	r := h.post("/rest/v1/salespersons/delete.json", map[string]any{"deleteBy": "dedupeFields",
		"input": []map[string]any{rec("externalSalesPersonId", "sp-1"), rec("externalSalesPersonId", "sp-free"), rec("externalSalesPersonId", "sp-none")}})
	wantStatus(t, r.Result[0], "skipped", "1022")
	wantStatus(t, r.Result[1], "deleted", "")
	wantStatus(t, r.Result[2], "skipped", "1013")
}

func TestDuplicateKeyInInput_1036(t *testing.T) {
	h := start(t, Options{})
	r := h.sync("companies", in(rec("externalCompanyId", "c1"), rec("externalCompanyId", "c1", "industry", "x")))
	wantStatus(t, r[0], "created", "")
	wantStatus(t, r[1], "skipped", "1036")
	lr := h.sync("leads", in(rec("email", "a@example.com"), rec("email", "A@example.com")))
	wantStatus(t, lr[1], "skipped", "1036")
}

func TestCRMEnabled_ObjectWritesGive1018(t *testing.T) {
	h := start(t, Options{CRMEnabled: true})
	for _, obj := range []string{"salespersons", "companies", "opportunities", "opportunities/roles"} {
		r := h.sync(obj, in(rec("externalSalesPersonId", "x", "externalCompanyId", "x", "externalOpportunityId", "x", "leadId", 1, "role", "r", "name", "n")))
		wantStatus(t, r[0], "skipped", "1018")
	}
	r := h.post("/rest/v1/companies/delete.json", in(rec("externalCompanyId", "x")))
	wantStatus(t, r.Result[0], "skipped", "1018")
	// Leads still work.
	wantStatus(t, h.sync("leads", in(rec("email", "a@example.com")))[0], "created", "")
}

func TestMSIFields_ReadOnlyComputedAndSwitchableScoreName(t *testing.T) {
	h := start(t, Options{ScoreField: "relativeScoring", Seed: 7})
	h.seedMSI(3)
	r := h.sync("leads", in(rec("email", "p0@example.com", "priority", 99, "relativeScoring", 5)))
	wantStatus(t, r[0], "updated", "")
	fields := "&fields=priority,relativeScoring,msiLastInterestingMomentType,msiLastInterestingMomentDate"
	q := h.get("/rest/v1/leads.json?filterType=externalPersonId&filterValues=PER-0" + fields)
	if _, has := q.Result[0]["priority"]; has {
		t.Fatalf("client write to priority was stored: %s", q.Raw)
	}
	if r := h.get("/rest/v1/leads.json?filterType=id&filterValues=1&fields=relativeScore"); r.code() != "1006" {
		t.Fatalf("relativeScore should not exist when ScoreField=relativeScoring: %s", r.Raw)
	}
	changed := h.sim.TickMSI(2)
	if len(changed) != 2 {
		t.Fatalf("TickMSI changed %v", changed)
	}
	q = h.get("/rest/v1/leads.json?filterType=id&filterValues=" + itoa(int(changed[0])) + "," + itoa(int(changed[1])) + fields)
	for _, l := range q.Result {
		if l["msiLastInterestingMomentType"] == nil || l["relativeScoring"] == nil || l["msiLastInterestingMomentDate"] != "2026-03-10T12:00:00Z" {
			t.Fatalf("TickMSI did not set MSI fields: %s", q.Raw)
		}
	}
	h.sim.SetMSI("per-2", map[string]any{"priority": int64(42), "score": int64(77)})
	q = h.get("/rest/v1/leads.json?filterType=externalPersonId&filterValues=PER-2" + fields)
	if q.Result[0]["priority"].(json.Number).String() != "42" || q.Result[0]["relativeScoring"].(json.Number).String() != "77" {
		t.Fatalf("SetMSI: %s", q.Raw)
	}
	rej := start(t, Options{MSIWrites: "reject"})
	wantStatus(t, rej.sync("leads", in(rec("email", "a@example.com", "relativeUrgency", 3)))[0], "skipped", "1006")
}

func TestNullSemantics_EmptyAndNullStoreNull(t *testing.T) {
	h := start(t, Options{})
	h.sync("leads", in(rec("email", "a@example.com", "title", "CTO", "phone", "1")))
	h.sync("leads", in(rec("email", "a@example.com", "title", "", "phone", nil)))
	q := h.get("/rest/v1/leads.json?filterType=email&filterValues=a@example.com&fields=title,phone")
	if _, has := q.Result[0]["title"]; has {
		t.Fatalf("empty string not stored as null: %s", q.Raw)
	}
	if _, has := q.Result[0]["phone"]; has {
		t.Fatalf("null not stored as null: %s", q.Raw)
	}
	e := start(t, Options{ExplicitNulls: true})
	e.sync("leads", in(rec("email", "a@example.com")))
	q = e.get("/rest/v1/leads.json?filterType=email&filterValues=a@example.com&fields=title")
	if v, has := q.Result[0]["title"]; !has || v != nil {
		t.Fatalf("ExplicitNulls: %s", q.Raw)
	}
	// Default field set.
	q = e.get("/rest/v1/leads.json?filterType=email&filterValues=a@example.com")
	for _, f := range []string{"id", "email", "createdAt", "updatedAt"} {
		if _, has := q.Result[0][f]; !has {
			t.Fatalf("default fields lack %s: %s", f, q.Raw)
		}
	}
}

func TestQueries_NoMatchAliasesAndCompoundRoleKeys(t *testing.T) {
	h := start(t, Options{})
	h.seedMSI(1)
	if q := h.get("/rest/v1/leads.json?filterType=email&filterValues=none@example.com"); !q.Success || len(q.Result) != 0 || !strings.Contains(string(q.Raw), `"result":[]`) {
		t.Fatalf("no match: %s", q.Raw)
	}
	if q := h.get("/rest/v1/companies.json?filterType=dedupeFields&filterValues=acc-1"); len(q.Result) != 1 {
		t.Fatalf("dedupeFields alias: %s", q.Raw)
	}
	id := h.get("/rest/v1/companies.json?filterType=externalCompanyId&filterValues=acc-1").Result[0]["id"].(json.Number).String()
	if q := h.get("/rest/v1/companies.json?filterType=idField&filterValues=" + id); len(q.Result) != 1 {
		t.Fatalf("idField alias: %s", q.Raw)
	}
	lead := h.get("/rest/v1/leads.json?filterType=externalPersonId&filterValues=PER-0").Result[0]["id"]
	h.sync("opportunities", in(rec("externalOpportunityId", "o1", "name", "n")))
	h.sync("opportunities/roles", in(rec("externalOpportunityId", "o1", "leadId", lead, "role", "Buyer")))
	q := h.post("/rest/v1/opportunities/roles.json?_method=GET", map[string]any{"filterType": "dedupeFields",
		"fields": []string{"role", "isPrimary"}, "input": []map[string]any{
			rec("externalOpportunityId", "o1", "leadId", lead, "role", "Buyer"),
			rec("externalOpportunityId", "o1", "leadId", lead, "role", "Other")}})
	if !q.Success || len(q.Result) != 1 || q.Result[0]["role"] != "Buyer" || q.Result[0]["marketoGUID"] == nil {
		t.Fatalf("compound role query: %s", q.Raw)
	}
	if q := h.get("/rest/v1/opportunities/roles.json?filterType=externalOpportunityId&filterValues=o1"); len(q.Result) != 1 {
		t.Fatalf("role by externalOpportunityId: %s", q.Raw)
	}
}

func TestDelete_LeadsByIDObjectsByDedupeFieldsOrIdField(t *testing.T) {
	h := start(t, Options{})
	h.seedMSI(2)
	leads := h.sim.Dump().Leads
	r := h.post("/rest/v1/leads/delete.json", in(rec("id", leads[0]["id"]), rec("id", 424242)))
	wantStatus(t, r.Result[0], "deleted", "")
	wantStatus(t, r.Result[1], "skipped", "1013")
	if _, has := r.Result[0]["seq"]; has {
		t.Fatalf("lead delete result has seq: %s", r.Raw)
	}
	h.sync("companies", in(rec("externalCompanyId", "c2"), rec("externalCompanyId", "c3")))
	c3 := h.get("/rest/v1/companies.json?filterType=externalCompanyId&filterValues=c3").Result[0]["id"]
	r = h.post("/rest/v1/companies/delete.json", in(rec("externalCompanyId", "c2")))
	wantStatus(t, r.Result[0], "deleted", "")
	r = h.post("/rest/v1/companies/delete.json", map[string]any{"deleteBy": "idField", "input": []map[string]any{rec("id", c3)}})
	wantStatus(t, r.Result[0], "deleted", "")
	if n := len(h.sim.Dump().Companies); n != 1 {
		t.Fatalf("companies left: %d", n)
	}
}

func TestRace_ConcurrentUpsertsOnOneKeyCreateDuplicates(t *testing.T) {
	h := start(t, Options{RaceDuplicates: true})
	h.token()
	var arrived sync.WaitGroup
	arrived.Add(2)
	h.sim.SetRaceGate(func() { arrived.Done(); arrived.Wait() })
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.sync("leads", in(rec("email", "same@example.com")))
		}()
	}
	wg.Wait()
	if n := len(h.sim.Dump().Leads); n != 2 {
		t.Fatalf("want 2 duplicate leads, got %d", n)
	}
}

func TestDescribe_ObjectsAndLeadSearchableFields(t *testing.T) {
	h := start(t, Options{})
	d := h.get("/rest/v1/opportunities/roles/describe.json")
	if d.Result[0]["idField"] != "marketoGUID" || len(d.Result[0]["dedupeFields"].([]any)) != 3 {
		t.Fatalf("roles describe: %s", d.Raw)
	}
	d2 := h.get("/rest/v1/leads/describe2.json")
	if !strings.Contains(string(d2.Raw), `["externalPersonId"]`) || !strings.Contains(string(d2.Raw), `"relativeScore"`) {
		t.Fatalf("describe2: %s", d2.Raw)
	}
	v1 := h.get("/rest/v1/leads/describe.json")
	if !strings.Contains(string(v1.Raw), `"rest":{"name":"externalPersonId","readOnly":false}`) {
		t.Fatalf("describe v1: %s", v1.Raw)
	}
}

func TestDump_ReturnsEveryRecordWithKeys(t *testing.T) {
	h := start(t, Options{})
	h.seedMSI(2)
	d := h.sim.Dump()
	if len(d.SalesPersons) != 1 || len(d.Companies) != 1 || len(d.Leads) != 2 {
		t.Fatalf("dump sizes: %d %d %d", len(d.SalesPersons), len(d.Companies), len(d.Leads))
	}
	if d.Leads[1]["externalPersonId"] != "PER-1" || d.Leads[1]["id"] == nil || d.Companies[0]["externalSalesPersonId"] != "sp-1" {
		t.Fatalf("dump content: %v", d)
	}
	h.sim.Reset()
	if len(h.sim.Dump().Leads) != 0 {
		t.Fatal("Reset kept leads")
	}
}

func TestLeadChanges_PagingTokenAlwaysReturnedFieldsRequired(t *testing.T) {
	h := start(t, Options{MSIChangeActivities: true})
	h.seedMSI(2) // two New Lead activities at 12:00
	tok := h.get("/rest/v1/activities/pagingtoken.json?sinceDatetime=2026-03-10T11:00:00Z").NextPageToken
	if tok == "" {
		t.Fatal("no paging token")
	}
	h.clk.Advance(time.Minute)
	h.sync("leads", in(rec("email", "p0@example.com", "title", "CTO")))
	h.sim.SetMSI("PER-1", map[string]any{"priority": int64(9)})
	if r := h.get("/rest/v1/activities/leadchanges.json?nextPageToken=" + tok); r.code() != "701" {
		t.Fatalf("without fields: %s", r.Raw)
	}
	r := h.get("/rest/v1/activities/leadchanges.json?fields=title,priority&nextPageToken=" + tok)
	if !r.Success || len(r.Result) != 4 || r.NextPageToken == "" || r.MoreResult {
		t.Fatalf("lead changes: %s", r.Raw)
	}
	if r.Result[2]["activityTypeId"].(json.Number).String() != "13" || !strings.Contains(string(r.Raw), `"name":"title","newValue":"CTO"`) ||
		!strings.HasSuffix(r.Result[2]["activityDate"].(string), "+0000") {
		t.Fatalf("data value change: %v", r.Result[2])
	}
	// Caught up: an empty page still carries a token.
	r = h.get("/rest/v1/activities/leadchanges.json?fields=title&nextPageToken=" + r.NextPageToken)
	if len(r.Result) != 0 || r.NextPageToken == "" {
		t.Fatalf("caught up: %s", r.Raw)
	}
}
