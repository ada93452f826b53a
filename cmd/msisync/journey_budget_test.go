package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// Journey (issue 9): the day's Marketo calls are visible in the admin API,
// the metrics and `msisync budget`, and survive a restart (they live in the
// store, not in the process).
func TestJourneyBudgetVisibleAndKeptAcrossRestart(t *testing.T) {
	dataDir, base := cleanEnv(t)
	t.Setenv("MSISYNC_MSI_INTERVAL", "0")
	const adminToken = "journey-admin-token-budget-0123456789"
	t.Setenv("MSISYNC_ADMIN_TOKEN", adminToken)
	svc := startServe(t, base, "serve")
	key := webhookKey(t, dataDir)
	const contact = "9a100000-0000-4000-8000-0000000000b9"
	if code, _, body := post(t, base+"/webhooks/events?code="+key, envelopeJSON(t, "contact", contact,
		map[string]any{"firstname": "Ada", "lastname": "Lovelace", "emailaddress1": "ada@budget.example"})); code != http.StatusAccepted {
		t.Fatalf("post: %d %s", code, body)
	}
	eventually(t, "the contact in the sandbox", func() (bool, string) {
		st := sandboxState(t, base)
		return find(st.Leads, "email", "ada@budget.example") != nil, st.String()
	})

	if code, _ := get(t, base+"/admin/v1/budget"); code != http.StatusUnauthorized {
		t.Fatalf("GET /admin/v1/budget without the token: %d, want 401", code)
	}
	req, _ := http.NewRequest(http.MethodGet, base+"/admin/v1/budget", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var live struct {
		Shared    bool           `json:"shared"`
		Quota     int            `json:"quota"`
		Used      int            `json:"used"`
		Reserved  int            `json:"reserved"`
		Remaining int            `json:"remaining"`
		ByPurpose map[string]int `json:"byPurpose"`
		ResetAt   string         `json:"resetAt"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&live); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /admin/v1/budget: %d %v", resp.StatusCode, err)
	}
	resp.Body.Close()
	if !live.Shared || live.Quota != 50000 || live.Used < 1 || live.ByPurpose["sync"] < 1 || live.Remaining != live.Quota-live.Used || live.ResetAt == "" {
		t.Fatalf("budget = %+v; want shared, quota 50000, at least one sync write counted", live)
	}
	if code, body := get(t, base+"/metrics"); code != http.StatusOK || !strings.Contains(body, `msisync_marketo_budget_calls_today{purpose="sync"}`) ||
		!strings.Contains(body, "msisync_marketo_budget_remaining") {
		t.Fatalf("metrics lack the budget series (%d)", code)
	}
	// What Marketo (the sandbox) counted: permits still held by a live
	// grant are charged in advance, so the live figure may be higher.
	_, statsBody := get(t, base+"/sandbox/marketo/stats")
	var simStats struct{ CountedCalls int }
	if err := json.Unmarshal([]byte(statsBody), &simStats); err != nil || simStats.CountedCalls < 1 {
		t.Fatalf("sandbox stats: %v %s", err, statsBody)
	}
	if live.Used < simStats.CountedCalls || live.Used-live.Reserved > simStats.CountedCalls {
		t.Fatalf("budget used %d (%d reserved), Marketo counted %d: want used-reserved ≤ counted ≤ used", live.Used, live.Reserved, simStats.CountedCalls)
	}
	svc.stop(t)

	// After the process is gone the day's count is still there.
	var after struct {
		Used      int            `json:"used"`
		ByPurpose map[string]int `json:"byPurpose"`
	}
	out := mustRun(t, "budget", "--json")
	if err := json.Unmarshal([]byte(out), &after); err != nil {
		t.Fatalf("budget --json: %v\n%s", err, out)
	}
	// Once the grants are returned the day holds exactly the calls made.
	if after.Used != simStats.CountedCalls || after.ByPurpose["sync"] < 1 {
		t.Fatalf("after the restart: %+v, want the %d calls Marketo counted", after, simStats.CountedCalls)
	}
	text := mustRun(t, "budget")
	for _, want := range []string{"shared by every process", "quota:", "sync", "window:"} {
		if !strings.Contains(text, want) {
			t.Errorf("msisync budget lacks %q:\n%s", want, text)
		}
	}
}

// Flag errors of the new commands name the flag and the allowed values.
func TestBudgetAndMSIFlagErrors(t *testing.T) {
	cleanEnv(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"msi", "sync", "--full"}, "--full needs --once"},
		{[]string{"bench", "msi", "--persons", "0"}, "--persons must be at least 1"},
		{[]string{"bench", "msi", "--change-per-hour", "2"}, "--change-per-hour must be a fraction"},
		{[]string{"sim", "marketo", "--interesting-moment-type-id", "40"}, "must be 41 or 46"},
	} {
		r := run(t, tc.args...)
		if r.exitCode() != 2 || r.err == nil || !strings.Contains(r.err.Error(), tc.want) {
			t.Errorf("msisync %s: exit %d, %v; want exit 2 naming %q", strings.Join(tc.args, " "), r.exitCode(), r.err, tc.want)
		}
	}
}
