package marketosim

import (
	"encoding/json"
	"net/url"
	"testing"
	"time"
)

func seedLeads(t *testing.T, h *harness, n int) {
	t.Helper()
	var in []map[string]any
	for i := 0; i < n; i++ {
		in = append(in, map[string]any{"email": "p" + string(rune('a'+i)) + "@example.com"})
	}
	if r := h.post("/rest/v1/leads.json", map[string]any{"action": "createOnly", "input": in}); !r.Success {
		t.Fatalf("seed: %s", r.Raw)
	}
}

func typeID(t *testing.T, h *harness, name string) int {
	t.Helper()
	r := h.get("/rest/v1/activities/types.json")
	if !r.Success {
		t.Fatalf("types: %s", r.Raw)
	}
	for _, ty := range r.Result {
		if ty["name"] == name {
			if _, ok := ty["primaryAttribute"].(map[string]any); !ok {
				t.Errorf("type %s has no primaryAttribute: %v", name, ty)
			}
			return int(num(ty["id"]))
		}
	}
	t.Fatalf("no activity type %q in %s", name, r.Raw)
	return 0
}

func TestActivitiesFeedInterestingMomentAndChangeScore(t *testing.T) {
	for _, imID := range []int{0, 41} { // default 46; 41 as the switch allows
		h := start(t, Options{InterestingMomentTypeID: imID})
		seedLeads(t, h, 5)
		tok := h.get("/rest/v1/activities/pagingtoken.json?sinceDatetime=" + url.QueryEscape(h.clk.Now().Format(time.RFC3339))).NextPageToken
		changed := h.sim.TickMSI(3)
		im, cs := typeID(t, h, "Interesting Moment"), typeID(t, h, "Change Score")
		if want := map[int]int{0: 46, 41: 41}[imID]; im != want {
			t.Errorf("Interesting Moment type id = %d, want %d", im, want)
		}
		r := h.get("/rest/v1/activities.json?nextPageToken=" + url.QueryEscape(tok) + "&activityTypeIds=" +
			url.QueryEscape(itoa(im)+","+itoa(cs)))
		if !r.Success || r.NextPageToken == "" || len(r.Result) != 6 {
			t.Fatalf("activities: %s", r.Raw)
		}
		leads := map[int64]bool{}
		for _, a := range r.Result {
			for _, k := range []string{"id", "marketoGUID", "leadId", "activityDate", "activityTypeId", "primaryAttributeValue", "attributes"} {
				if _, ok := a[k]; !ok {
					t.Errorf("activity lacks %s: %v", k, a)
				}
			}
			if _, err := time.Parse("2006-01-02T15:04:05Z", a["activityDate"].(string)); err != nil {
				t.Errorf("activityDate %v: %v", a["activityDate"], err)
			}
			leads[num(a["leadId"])] = true
		}
		for _, id := range changed {
			if !leads[id] {
				t.Errorf("changed lead %d has no activity", id)
			}
		}
		// From the returned token on there is nothing new.
		r2 := h.get("/rest/v1/activities.json?nextPageToken=" + url.QueryEscape(r.NextPageToken) + "&activityTypeIds=" + itoa(im))
		if !r2.Success || len(r2.Result) != 0 || r2.MoreResult {
			t.Fatalf("caught-up page: %s", r2.Raw)
		}
		if r := h.get("/rest/v1/activities.json?nextPageToken=" + url.QueryEscape(tok)); r.code() != "1003" {
			t.Errorf("without activityTypeIds: %s, want 1003", r.Raw)
		}
	}
}

func TestUrgencyDecaysWithoutActivity(t *testing.T) {
	h := start(t, Options{})
	seedLeads(t, h, 4)
	h.sim.TickMSI(4)
	before := map[int64]int64{}
	for _, r := range h.sim.tables[objLeads].all() {
		before[r.id] = r.fields["relativeUrgency"].(int64)
	}
	n := len(h.sim.activities)
	h.clk.Advance(24 * time.Hour)
	if got := h.sim.DecayMSI(); got == 0 {
		t.Fatal("no lead decayed after a half-life")
	}
	for _, r := range h.sim.tables[objLeads].all() {
		want := (before[r.id]*10 + 10) / 20 // half, rounded
		if got := r.fields["relativeUrgency"].(int64); got < want-1 || got > want+1 {
			t.Errorf("lead %d urgency %d after a half-life, want about %d (from %d)", r.id, got, want, before[r.id])
		}
	}
	if len(h.sim.activities) != n {
		t.Errorf("decay logged %d activities, want none (MSIChangeActivities off)", len(h.sim.activities)-n)
	}
}

func num(v any) int64 {
	switch x := v.(type) {
	case float64:
		return int64(x)
	case json.Number:
		n, _ := x.Int64()
		return n
	}
	return -1
}
