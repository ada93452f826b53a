package marketosim

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestRestore_RoundTripsThroughJSONAndContinuesIDs(t *testing.T) {
	h := start(t, Options{})
	h.seedMSI(3)
	h.sync("opportunities", in(rec("externalOpportunityId", "opp-1", "name", "Deal", "externalCompanyId", "acc-1", "externalSalesPersonId", "sp-1")))
	before := h.sim.Dump()
	b, err := json.Marshal(before)
	if err != nil {
		t.Fatal(err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}

	h2 := start(t, Options{})
	if err := h2.sim.Restore(st); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	after := h2.sim.Dump()
	if !reflect.DeepEqual(normalise(t, before), normalise(t, after)) {
		t.Fatalf("state changed across Restore:\nbefore %v\nafter  %v", before, after)
	}
	// Lookups work on restored records, and a new lead gets a fresh id.
	r := h2.get("/rest/v1/leads.json?filterType=externalPersonId&filterValues=PER-1&fields=id,externalPersonId")
	if len(r.Result) != 1 {
		t.Fatalf("query restored lead: %s", r.Raw)
	}
	res := h2.sync("leads", in(rec("email", "new@example.com", "externalPersonId", "PER-NEW")))
	var maxID float64
	for _, l := range before.Leads {
		if id := toFloat(l["id"]); id > maxID {
			maxID = id
		}
	}
	if res[0]["status"] != "created" || toFloat(res[0]["id"]) <= maxID {
		t.Fatalf("new lead after restore: %v (max restored id %v)", res[0], maxID)
	}
}

func TestRestore_RejectsRecordsWithoutIDs(t *testing.T) {
	h := start(t, Options{})
	if err := h.sim.Restore(State{Leads: []map[string]any{{"email": "x@example.com"}}}); err == nil {
		t.Fatal("a lead without an id was restored")
	}
}

func normalise(t *testing.T, s State) map[string]any {
	t.Helper()
	b, _ := json.Marshal(s)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func toFloat(v any) float64 {
	switch x := v.(type) {
	case float64:
		return x
	case int64:
		return float64(x)
	case json.Number:
		f, _ := x.Float64()
		return f
	}
	return 0
}
