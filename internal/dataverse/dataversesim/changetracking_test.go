package dataversesim_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/dataverse/dataversesim"
)

// trackAll reads a table with change tracking page by page (2 rows a page),
// calling between(page) after each page, and returns the ids read and the
// delta link of the last page.
func trackAll(t *testing.T, a *api, path string, between func(page int)) ([]string, string) {
	t.Helper()
	var ids []string
	next := path
	for page := 1; ; page++ {
		r := a.do("GET", next, nil, "Prefer", "odata.track-changes,odata.maxpagesize=2")
		expect(t, "track page", r, 200)
		m := r.json(t)
		for _, v := range m["value"].([]any) {
			ids = append(ids, v.(map[string]any)["accountid"].(string))
		}
		if between != nil {
			between(page)
		}
		nl, _ := m["@odata.nextLink"].(string)
		if nl == "" {
			dl, _ := m["@odata.deltaLink"].(string)
			return ids, dl
		}
		if _, ok := m["@odata.deltaLink"]; ok {
			t.Fatal("deltaLink before the last page")
		}
		next = strings.TrimPrefix(nl, a.srv.URL+"/api/data/v9.2/")
	}
}

func deltaPath(a *api, link string) string {
	return strings.TrimPrefix(link, a.srv.URL+"/api/data/v9.2/")
}

func TestDeltaTokenShapeAndRowsChangedWhileReading(t *testing.T) {
	a := newAPI(t, dataversesim.Options{})
	for i := 0; i < 5; i++ {
		a.sim.Create("account", map[string]any{"name": fmt.Sprint("a", i)})
	}
	// The first page is read, then a row on it changes before the last page:
	// the delta link must still return that change.
	var changed string
	_, link := trackAll(t, a, "accounts?$select=name", func(page int) {
		if page == 1 {
			r := a.do("GET", "accounts?$select=accountid&$top=1", nil)
			changed = r.json(t)["value"].([]any)[0].(map[string]any)["accountid"].(string)
			if err := a.sim.Update("account", changed, map[string]any{"name": "renamed while reading"}); err != nil {
				t.Fatal(err)
			}
		}
	})
	if link == "" {
		t.Fatal("no delta link on the last page")
	}
	if !strings.Contains(link, "%21") { // "!" between version and issue time, as Dataverse's tokens
		t.Errorf("delta link %s: token not shaped <version>!<time>", link)
	}
	r := a.do("GET", deltaPath(a, link), nil, "Prefer", "odata.track-changes")
	expect(t, "delta", r, 200)
	var got []string
	for _, v := range r.json(t)["value"].([]any) {
		got = append(got, v.(map[string]any)["accountid"].(string))
	}
	if len(got) != 1 || got[0] != changed {
		t.Errorf("delta after a change during the initial read = %v, want [%s]", got, changed)
	}
}

func TestDeltaTokenExpires(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC))
	a := newAPI(t, dataversesim.Options{Clock: clk})
	a.sim.Create("account", map[string]any{"name": "x"})
	_, link := trackAll(t, a, "accounts?$select=name", nil)
	clk.Advance(dataversesim.DefaultChangeTrackingExpiry - time.Minute)
	expect(t, "delta within the retention", a.do("GET", deltaPath(a, link), nil, "Prefer", "odata.track-changes"), 200)
	clk.Advance(2 * time.Minute)
	r := a.do("GET", deltaPath(a, link), nil, "Prefer", "odata.track-changes")
	expect(t, "expired delta", r, 400)
	e := r.json(t)["error"].(map[string]any)
	if e["code"] != "0x80044352" || !strings.Contains(e["message"].(string), "Version stamp associated with the client has expired") {
		t.Errorf("expired token error = %v, want ExpiredVersionStamp 0x80044352", e)
	}
	a.sim.SetChangeTrackingExpiry(-1)
	expect(t, "delta with expiry off", a.do("GET", deltaPath(a, link), nil, "Prefer", "odata.track-changes"), 200)
	expect(t, "garbage token", a.do("GET", "accounts?$deltatoken=12", nil, "Prefer", "odata.track-changes"), 400)
}

func TestChangeTrackingSwitch(t *testing.T) {
	a := newAPI(t, dataversesim.Options{})
	a.sim.Create("lead", map[string]any{"lastname": "x"})
	def := a.do("GET", "EntityDefinitions(LogicalName='lead')?$select=LogicalName,ChangeTrackingEnabled", nil)
	expect(t, "definition", def, 200)
	if def.json(t)["ChangeTrackingEnabled"] != true {
		t.Errorf("lead ChangeTrackingEnabled = %v, want true by default", def.json(t)["ChangeTrackingEnabled"])
	}
	r := a.do("GET", "leads?$select=lastname", nil, "Prefer", "odata.track-changes")
	link, _ := r.json(t)["@odata.deltaLink"].(string)
	a.sim.SetChangeTracking("lead", false)
	if def := a.do("GET", "EntityDefinitions(LogicalName='lead')", nil); def.json(t)["ChangeTrackingEnabled"] != false {
		t.Error("ChangeTrackingEnabled still true after the switch")
	}
	r = a.do("GET", "leads?$select=lastname", nil, "Prefer", "odata.track-changes")
	expect(t, "untracked read", r, 200)
	if _, ok := r.json(t)["@odata.deltaLink"]; ok || strings.Contains(r.header.Get("Preference-Applied"), "track-changes") {
		t.Error("a table without change tracking answered with a delta link")
	}
	expect(t, "delta on an untracked table", a.do("GET", deltaPath(a, link), nil), 400)
	expect(t, "unknown table definition", a.do("GET", "EntityDefinitions(LogicalName='nosuch')", nil), 404)
}

// webhookCounter is a webhook receiver counting deliveries per record.
func webhookCounter(t *testing.T) (*httptest.Server, func() map[string]int) {
	var mu sync.Mutex
	got := map[string]int{}
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m map[string]any
		json.NewDecoder(r.Body).Decode(&m)
		mu.Lock()
		got[m["PrimaryEntityId"].(string)]++
		mu.Unlock()
	}))
	t.Cleanup(rcv.Close)
	return rcv, func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		out := map[string]int{}
		for k, v := range got {
			out[k] = v
		}
		return out
	}
}

func TestWebhookFaults(t *testing.T) {
	rcv, got := webhookCounter(t)
	a := newAPI(t, dataversesim.Options{})
	registerStep(t, a, rcv.URL, "Create", "account")
	if err := a.sim.SetWebhookFaults(dataversesim.WebhookFaults{Drop: 0.2, Fail: 0.1, Seed: 7}); err != nil {
		t.Fatal(err)
	}
	const n = 400
	for i := 0; i < n; i++ {
		a.sim.Create("account", map[string]any{"name": fmt.Sprint(i)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := a.sim.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	dropped, failed := a.sim.WebhookFaultCounts()
	delivered := len(got())
	if dropped+failed+int64(delivered) != n {
		t.Errorf("dropped %d + failed %d + delivered %d != %d changes", dropped, failed, delivered, n)
	}
	// 400 draws at p=0.2 and p=0.1: far outside these bounds is a broken switch.
	if dropped < 50 || dropped > 110 || failed < 20 || failed > 65 {
		t.Errorf("dropped %d, failed %d of %d; want about 80 and 40", dropped, failed, n)
	}
	r := a.do("GET", "asyncoperations?$select=statuscode,message&$filter=statuscode%20eq%2031", nil)
	jobs := r.json(t)["value"].([]any)
	if int64(len(jobs)) != failed {
		t.Errorf("%d failed system jobs, want %d (one per failed delivery)", len(jobs), failed)
	}
	if err := a.sim.SetWebhookFaults(dataversesim.WebhookFaults{Drop: 0.8, Fail: 0.3}); err == nil {
		t.Error("fractions adding up to more than 1 accepted")
	}
}

func TestDisabledStepFiresNothing(t *testing.T) {
	rcv, got := webhookCounter(t)
	a := newAPI(t, dataversesim.Options{})
	registerStep(t, a, rcv.URL, "Create", "account")
	if n := a.sim.SetStepsEnabled("", false); n != 1 {
		t.Fatalf("disabled %d steps, want 1", n)
	}
	off, _ := a.sim.Create("account", map[string]any{"name": "while disabled"})
	a.sim.SetStepsEnabled("", true)
	on, _ := a.sim.Create("account", map[string]any{"name": "enabled again"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.sim.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	g := got()
	if g[off] != 0 || g[on] != 1 {
		t.Errorf("deliveries: disabled-time create %d, after re-enable %d; want 0 and 1", g[off], g[on])
	}
	r := a.do("GET", "sdkmessageprocessingsteps?$select=statecode", nil)
	if sc := r.json(t)["value"].([]any)[0].(map[string]any)["statecode"]; sc != float64(0) {
		t.Errorf("statecode after re-enable = %v", sc)
	}
}

func TestSwitchesFromOptions(t *testing.T) {
	rcv, got := webhookCounter(t)
	a := newAPI(t, dataversesim.Options{Untracked: []string{"lead"}, WebhookFaults: dataversesim.WebhookFaults{Drop: 1}})
	if def := a.do("GET", "EntityDefinitions(LogicalName='lead')", nil); def.json(t)["ChangeTrackingEnabled"] != false {
		t.Error("Options.Untracked did not turn change tracking off")
	}
	registerStep(t, a, rcv.URL, "Create", "account")
	a.sim.Create("account", map[string]any{"name": "lost"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.sim.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	if dropped, _ := a.sim.WebhookFaultCounts(); dropped != 1 || len(got()) != 0 {
		t.Errorf("Options.WebhookFaults Drop 1: dropped %d, delivered %d", dropped, len(got()))
	}
}
