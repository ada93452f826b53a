package marketosim

import (
	"fmt"
	"sort"
	"testing"
)

// What msisync's person identity relies on: several persons may share an
// email (createDuplicate); a query by email returns all of them with their
// externalPersonId; an email upsert then meets 1007; updateOnly by id links
// a person and changes its email even onto a shared address.
func TestLeadIdentity_SharedEmailsQueryAndUpdateByID(t *testing.T) {
	h := start(t, Options{})
	h.seedMSI(0)
	fill := h.sync("leads", in(rec("email", "joe@example.com", "firstName", "Form")))
	wantStatus(t, fill[0], "created", "")
	dup := h.sync("leads", map[string]any{"action": "createDuplicate",
		"input": []map[string]any{rec("email", "joe@example.com", "externalPersonId", "con-1")}})
	wantStatus(t, dup[0], "created", "")
	if fill[0]["id"] == dup[0]["id"] {
		t.Fatalf("createDuplicate reused person %v", dup[0]["id"])
	}
	q := h.get("/rest/v1/leads.json?filterType=email&filterValues=JOE@example.com,nobody@example.com&fields=id,email,externalPersonId")
	if !q.Success || len(q.Result) != 2 {
		t.Fatalf("query by email: %s", q.Raw)
	}
	var exts []string
	for _, r := range q.Result {
		exts = append(exts, fmt.Sprint(r["externalPersonId"]))
	}
	sort.Strings(exts)
	if exts[0] != "<nil>" || exts[1] != "con-1" {
		t.Fatalf("externalPersonIds %v: want the form fill unlinked (null) and con-1", exts)
	}
	wantStatus(t, h.sync("leads", in(rec("email", "joe@example.com", "title", "x")))[0], "skipped", "1007")
	// Link the form fill by id.
	r := h.sync("leads", map[string]any{"action": "updateOnly", "lookupField": "id",
		"input": []map[string]any{rec("id", fill[0]["id"], "externalPersonId", "lead-1", "title", "VP")}})
	wantStatus(t, r[0], "updated", "")
	// Move con-1's person onto an address another person holds.
	h.sync("leads", in(rec("email", "kim@example.com", "externalPersonId", "con-2")))
	r = h.sync("leads", map[string]any{"action": "updateOnly", "lookupField": "id",
		"input": []map[string]any{rec("id", dup[0]["id"], "email", "kim@example.com")}})
	wantStatus(t, r[0], "updated", "")
	q = h.get("/rest/v1/leads.json?filterType=email&filterValues=kim@example.com&fields=id,externalPersonId")
	if len(q.Result) != 2 {
		t.Fatalf("kim@ after the email change: %s", q.Raw)
	}
	q = h.get("/rest/v1/leads.json?filterType=externalPersonId&filterValues=lead-1&fields=id,title")
	if len(q.Result) != 1 || fmt.Sprint(q.Result[0]["id"]) != fmt.Sprint(fill[0]["id"]) || q.Result[0]["title"] != "VP" {
		t.Fatalf("linked form fill: %s", q.Raw)
	}
	// updateOnly by an id Marketo does not have.
	wantStatus(t, h.sync("leads", map[string]any{"action": "updateOnly", "lookupField": "id",
		"input": []map[string]any{rec("id", 999999)}})[0], "skipped", "1004")
}
