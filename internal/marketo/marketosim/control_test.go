package marketosim

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestControl_SetMSIOverHTTP(t *testing.T) {
	h := start(t, Options{})
	h.seedMSI(2)
	ctl := httptest.NewServer(h.sim.Control())
	t.Cleanup(ctl.Close)

	post := func(body string) *http.Response {
		resp, err := http.Post(ctl.URL+"/msi", "application/json", bytes.NewBufferString(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if r := post(`{"externalPersonId":"PER-1","fields":{"priority":4}}`); r.StatusCode != 200 {
		t.Fatalf("set MSI: %d", r.StatusCode)
	}
	got := h.get("/rest/v1/leads.json?filterType=externalPersonId&filterValues=PER-1&fields=priority")
	if len(got.Result) != 1 || jsonNum(got.Result[0]["priority"]) != 4 {
		t.Fatalf("priority after control call: %s", got.Raw)
	}
	if r := post(`{"externalPersonId":"nobody","fields":{"priority":1}}`); r.StatusCode != 404 {
		t.Errorf("unknown person: %d, want 404", r.StatusCode)
	}
	if r := post(`{"externalPersonId":"PER-1"}`); r.StatusCode != 422 {
		t.Errorf("no fields: %d, want 422", r.StatusCode)
	}
	if r := post(`{"externalPersonId":"PER-1","fields":{"priority":1},"typo":1}`); r.StatusCode != 400 {
		t.Errorf("unknown member: %d, want 400", r.StatusCode)
	}

	resp, err := http.Post(ctl.URL+"/msi/tick?leads=2", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	var tick struct{ Changed []int64 }
	_ = json.NewDecoder(resp.Body).Decode(&tick)
	resp.Body.Close()
	if len(tick.Changed) == 0 {
		t.Errorf("tick changed no lead")
	}
}

func jsonNum(v any) float64 {
	switch x := v.(type) {
	case float64:
		return x
	case json.Number:
		f, _ := x.Float64()
		return f
	}
	return -1
}
