package main

import (
	"bufio"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

var metricName = regexp.MustCompile(`\bmsisync_[a-z0-9_]+\b`)

// familyOf maps a series name to its metric family (histogram parts).
func familyOf(name string, families map[string]bool) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && families[base] {
			return base
		}
	}
	return name
}

// The Grafana dashboard and the Prometheus alert rules parse, and every
// metric they query is one a running msisync exports: serve on the two
// simulators, after syncing events and one MSI write-back cycle.
func TestDeploymentsDashboardAndAlertsUseRealMetrics(t *testing.T) {
	used := map[string][]string{} // metric → where
	var rules struct {
		Groups []struct {
			Name  string
			Rules []struct {
				Alert, Expr, For string
				Labels           map[string]string
				Annotations      map[string]string
			}
		}
	}
	b, err := os.ReadFile(filepath.Join("..", "..", "deployments", "prometheus", "msisync-alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&rules); err != nil {
		t.Fatalf("msisync-alerts.yaml: %v", err)
	}
	var alerts []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || r.Expr == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("alert rule %+v: want alert, expr, labels.severity and annotations.summary", r)
			}
			alerts = append(alerts, r.Alert)
			for _, m := range metricName.FindAllString(r.Expr, -1) {
				used[m] = append(used[m], "alert "+r.Alert)
			}
		}
	}
	for _, want := range []string{"MsisyncDeadLettersGrowing", "MsisyncMarketoThrottled", "MsisyncMarketoDailyBudgetHigh", "MsisyncSyncLagHigh",
		"MsisyncWebhookErrors", "MsisyncMSIWriteBackFailing", "MsisyncReconcileFailing", "MsisyncReconcileFoundLostWebhooks"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("alert %s is missing (have %v)", want, alerts)
		}
	}

	var dash struct {
		Title  string
		UID    string
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	b, err = os.ReadFile(filepath.Join("..", "..", "deployments", "grafana", "msisync-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("msisync-dashboard.json: %v", err)
	}
	if dash.UID == "" || len(dash.Panels) < 8 {
		t.Fatalf("dashboard %q (uid %q) has %d panels", dash.Title, dash.UID, len(dash.Panels))
	}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			for _, m := range metricName.FindAllString(tg.Expr, -1) {
				used[m] = append(used[m], "panel "+p.Title)
			}
		}
	}

	// What a running msisync exports.
	_, base := cleanEnv(t)
	sims := startSimulators(t)
	t.Setenv("MSISYNC_ADMIN_TOKEN", "deployments-test-admin-token")
	t.Setenv("MSISYNC_WEBHOOK_KEY", "deployments-test-webhook-key")
	// startSimulators turns reconcile off for the journeys; here its loop must
	// run so that its metric families are exported.
	t.Setenv("MSISYNC_RECONCILE_INTERVAL", "1h")
	startServe(t, base, "serve")
	for _, f := range []string{"demo-1-user.json", "demo-2-account.json", "demo-3-contact.json"} {
		if code, _, body := post(t, base+"/webhooks/events", readExample(t, f), "x-msisync-key", "deployments-test-webhook-key"); code != http.StatusAccepted {
			t.Fatalf("POST %s: %d %s", f, code, body)
		}
	}
	eventually(t, "demo events synced", func() (bool, string) {
		st := sims.marketo()
		return len(st.Leads) == 1, st.String()
	})
	families := map[string]bool{}
	eventually(t, "every metric family present", func() (bool, string) {
		code, body := get(t, base+"/metrics")
		if code != http.StatusOK {
			return false, body
		}
		families = map[string]bool{}
		sc := bufio.NewScanner(strings.NewReader(body))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) >= 3 && f[0] == "#" && f[1] == "TYPE" {
				families[f[2]] = true
			}
		}
		var missing []string
		for m, where := range used {
			if !families[familyOf(m, families)] {
				missing = append(missing, m+" (used by "+strings.Join(where, ", ")+")")
			}
		}
		slices.Sort(missing)
		return len(missing) == 0, "not in /metrics:\n  " + strings.Join(missing, "\n  ")
	})
}
