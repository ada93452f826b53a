package main

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/dataverse/dataversesim"
	"github.com/msisync/msisync/internal/marketo/marketosim"
	"github.com/msisync/msisync/internal/msi"
)

const dvToken = "journey-dataverse-token"

// simulators are the two simulators a user would start with
// `msisync sim marketo` and `msisync sim dataverse`, and the settings that
// point msisync at them.
type simulators struct {
	mk *marketosim.Server
	dv *dataversesim.Server
}

func startSimulators(t *testing.T) *simulators {
	t.Helper()
	mk := marketosim.New(marketosim.Options{ClientID: "journey", ClientSecret: "journey-secret"})
	mkSrv := httptest.NewServer(mk)
	t.Cleanup(mkSrv.Close)
	dv := dataversesim.New(dataversesim.Options{Token: dvToken})
	dvSrv := httptest.NewServer(dv)
	t.Cleanup(dvSrv.Close)
	t.Cleanup(func() {
		// Webhook deliveries in flight must not outlive the test.
		ctx, cancel := context.WithTimeout(context.Background(), pollTimeout)
		defer cancel()
		_ = dv.WaitIdle(ctx)
	})
	t.Setenv("MSISYNC_MARKETO_URL", mkSrv.URL)
	t.Setenv("MSISYNC_MARKETO_CLIENT_ID", "journey")
	t.Setenv("MSISYNC_MARKETO_CLIENT_SECRET", "journey-secret")
	t.Setenv("MSISYNC_DATAVERSE_URL", dvSrv.URL)
	t.Setenv("MSISYNC_DATAVERSE_TOKEN", dvToken)
	// Changes msisync itself makes in Dataverse (MSI write-back) are not
	// synced back (loop prevention).
	t.Setenv("MSISYNC_DATAVERSE_APP_USER_ID", dv.AppUserID())
	// Journeys run reconcile by hand (msisync reconcile --once) when they
	// want it, so serve's loop does not add Dataverse requests they count.
	t.Setenv("MSISYNC_RECONCILE_INTERVAL", "0")
	return &simulators{mk: mk, dv: dv}
}

func (s *simulators) marketo() marketoState {
	st := s.mk.Dump()
	return marketoState{SalesPersons: st.SalesPersons, Companies: st.Companies, Leads: st.Leads, Opportunities: st.Opportunities, Roles: st.Roles}
}

// rowsWhere counts the simulator's rows of an entity whose column contains text.
func rowsWhere(dv *dataversesim.Server, entity, column, text string) int {
	n := 0
	for _, id := range dv.IDs(entity) {
		row, _ := dv.Get(entity, id)
		if v, _ := row[column].(string); strings.Contains(v, text) {
			n++
		}
	}
	return n
}

var reportField = regexp.MustCompile(`(\w+)=(\d+)`)

// msiReport parses `msi sync --once` output ("persons=1 marketoCalls=1 …").
func msiReport(t *testing.T, out string) map[string]int {
	t.Helper()
	m := map[string]int{}
	for _, f := range reportField.FindAllStringSubmatch(out, -1) {
		n, _ := strconv.Atoi(f[2])
		m[f[1]] = n
	}
	if _, ok := m["written"]; !ok {
		t.Fatalf("msi sync --once printed no report: %q", out)
	}
	return m
}

// Journey (issue 5 "Done means"), on the two simulators: register the
// webhook, create records in Dataverse, see them linked in Marketo through
// the webhooks, change MSI scores in Marketo, run `msisync msi sync --once`
// and see the new values on the Dataverse contact; a second run writes
// nothing.
func TestJourneyDataverse(t *testing.T) {
	_, base := cleanEnv(t)
	sims := startSimulators(t)
	dv := sims.dv
	// The write-back loop inside serve stays off: this journey runs the
	// cycle by hand.
	t.Setenv("MSISYNC_MSI_INTERVAL", "0")
	startServe(t, base, "serve")

	// Register twice: the second run changes nothing and duplicates nothing.
	url := base + "/webhooks/dataverse"
	first := mustRun(t, "dataverse", "register", "--url", url)
	if !strings.Contains(first, "create") || !strings.Contains(first, "sdkmessageprocessingstep") {
		t.Fatalf("first register created no steps:\n%s", first)
	}
	steps, endpoints := dv.Count("sdkmessageprocessingstep"), rowsWhere(dv, "serviceendpoint", "url", url)
	images := dv.Count("sdkmessageprocessingstepimage")
	if endpoints != 1 {
		t.Fatalf("%d service endpoints with url %s after register, want 1", endpoints, url)
	}
	ours := rowsWhere(dv, "sdkmessageprocessingstep", "name", "msisync: ")
	if ours == 0 {
		t.Fatalf("register created no msisync steps:\n%s", first)
	}
	second := mustRun(t, "dataverse", "register", "--url", url)
	for _, line := range strings.Split(strings.TrimSpace(second), "\n") {
		if !strings.HasPrefix(line, "keep") {
			t.Errorf("second register is not a no-op: %q", line)
		}
	}
	if n := dv.Count("sdkmessageprocessingstep"); n != steps {
		t.Errorf("steps: %d after the second register, %d after the first", n, steps)
	}
	if n := dv.Count("sdkmessageprocessingstepimage"); n != images {
		t.Errorf("step images: %d after the second register, %d after the first", n, images)
	}
	if n := rowsWhere(dv, "serviceendpoint", "url", url); n != 1 {
		t.Errorf("%d service endpoints after the second register, want 1", n)
	}
	if st := mustRun(t, "dataverse", "status"); !strings.Contains(st, url) && !strings.Contains(st, "msisync") {
		t.Errorf("dataverse status does not show the endpoint:\n%s", st)
	}

	// A user works in Dynamics: the webhooks carry the changes to msisync.
	user, err := dv.Create("systemuser", map[string]any{"firstname": "Grace", "lastname": "Hopper",
		"internalemailaddress": "grace@contoso.example", "domainname": "grace@contoso.example"})
	if err != nil {
		t.Fatal(err)
	}
	account, err := dv.Create("account", map[string]any{"name": "Contoso Ltd", "ownerid": dataversesim.Ref{LogicalName: "systemuser", ID: user}})
	if err != nil {
		t.Fatal(err)
	}
	contact, err := dv.Create("contact", map[string]any{"firstname": "Ada", "lastname": "Lovelace", "emailaddress1": "ada@contoso.example",
		"parentcustomerid": dataversesim.Ref{LogicalName: "account", ID: account}, "ownerid": dataversesim.Ref{LogicalName: "systemuser", ID: user}})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "user, account and contact linked in Marketo", func() (bool, string) {
		st := sims.marketo()
		sp := find(st.SalesPersons, "externalSalesPersonId", user)
		co := find(st.Companies, "externalCompanyId", account)
		ld := find(st.Leads, "externalPersonId", contact)
		ok := sp != nil && strings.EqualFold(str(co, "externalSalesPersonId"), user) &&
			strings.EqualFold(str(ld, "externalCompanyId"), account) && strings.EqualFold(str(ld, "externalSalesPersonId"), user)
		return ok, summary("dataverse %+v\n%s", dv.Stats(), st)
	})
	if ld := find(sims.marketo().Leads, "externalPersonId", contact); str(ld, "email") != "ada@contoso.example" {
		t.Errorf("lead email %q, want ada@contoso.example", str(ld, "email"))
	}
	if f := dv.Stats().Failed; f != 0 {
		t.Errorf("%d webhook deliveries failed (system jobs with status 31)", f)
	}

	// Issue 10: a stakeholder connection reaches Marketo with the role's
	// name (the webhook's Target names it by id only), and so does a role change.
	opp, err := dv.Create("opportunity", map[string]any{"name": "Analytical Engine", "ownerid": dataversesim.Ref{LogicalName: "systemuser", ID: user},
		"parentaccountid": dataversesim.Ref{LogicalName: "account", ID: account}})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := dv.Connect(opp, contact, "Decision Maker")
	if err != nil {
		t.Fatal(err)
	}
	roleIs := func(want string) func() (bool, string) {
		return func() (bool, string) {
			st := sims.marketo()
			ok := len(st.Roles) == 1 && str(st.Roles[0], "role") == want && strings.EqualFold(str(st.Roles[0], "externalOpportunityId"), opp)
			return ok, summary("want one role %q\n%s", want, st)
		}
	}
	eventually(t, "the connection's role in Marketo by name", roleIs("Decision Maker"))
	buyer, err := dv.Create("connectionrole", map[string]any{"name": "Economic Buyer", "category": dataversesim.OptionValue(1000)})
	if err != nil {
		t.Fatal(err)
	}
	if err := dv.Update("connection", conn, map[string]any{"record2roleid": dataversesim.Ref{LogicalName: "connectionrole", ID: buyer}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the changed role in Marketo by name", roleIs("Economic Buyer"))

	// The doctor agrees the contact is linked; a record never synced is not.
	out := mustRun(t, "doctor", "contact", contact)
	if !strings.Contains(out, contact) || strings.Contains(out, "[fail") {
		t.Errorf("doctor contact %s: want a report without failing checks:\n%s", contact, out)
	}
	unknown := "9a100000-0000-4000-8000-00000000dead"
	r := run(t, "doctor", "contact", unknown)
	if r.exitCode() != 3 || !strings.Contains(r.stdout, "[fail") {
		t.Errorf("doctor contact %s (never synced): err %v, want exit status 3 and a failing check:\n%s", unknown, r.err, r.stdout)
	}

	// MSI scores move in Marketo.
	lim := time.Date(2026, 11, 28, 9, 30, 0, 0, time.UTC)
	sims.mk.SetMSI(contact, map[string]any{"priority": int64(87), "relativeUrgency": int64(42), "score": int64(65),
		"msiLastInterestingMomentType": "Web", "msiLastInterestingMomentDesc": "Visited the pricing page",
		"msiLastInterestingMomentSource": "Web", "msiLastInterestingMomentDate": lim})

	out = mustRun(t, "msi", "sync", "--once")
	t.Logf("msi sync --once (first): %s", out)
	rep := msiReport(t, out)
	if rep["written"] != 1 || rep["failed"] != 0 || rep["marketoCalls"] != 1 {
		t.Errorf("first msi sync: %v, want written=1 failed=0 marketoCalls=1", rep)
	}
	row, ok := dv.Get("contact", contact)
	if !ok {
		t.Fatal("contact gone from Dataverse")
	}
	for col, want := range map[string]string{
		msi.ColumnPriority: "87", msi.ColumnUrgency: "42", msi.ColumnScore: "65",
		msi.ColumnLIMType: "Web", msi.ColumnLIMDesc: "Visited the pricing page", msi.ColumnLIMSource: "Web",
	} {
		if got := plain(row[col]); got != want {
			t.Errorf("Dataverse contact %s = %q, want %q", col, got, want)
		}
	}
	if got := row[msi.ColumnLIMDate]; !sameInstant(got, lim) {
		t.Errorf("Dataverse contact %s = %v, want %s", msi.ColumnLIMDate, got, lim)
	}
	version := row["versionnumber"]

	// Nothing changed since: the second run writes nothing.
	before := dv.Stats().Requests
	rep = msiReport(t, mustRun(t, "msi", "sync", "--once"))
	if rep["written"] != 0 || rep["changed"] != 0 || rep["dataverseRequests"] != 0 {
		t.Errorf("second msi sync: %v, want written=0 changed=0 dataverseRequests=0", rep)
	}
	if n := dv.Stats().Requests - before; n != 0 {
		t.Errorf("second msi sync made %d Dataverse requests, want 0", n)
	}
	if row, _ := dv.Get("contact", contact); row["versionnumber"] != version {
		t.Errorf("contact version moved from %v to %v on a run that should write nothing", version, row["versionnumber"])
	}

	// The MSI write did not echo back into Marketo as a contact change
	// (filtering attributes exclude the MSI columns; loop prevention).
	if f := dv.Stats().Failed; f != 0 {
		t.Errorf("%d webhook deliveries failed", f)
	}

	// Unregister removes what register created, and only that.
	mustRun(t, "dataverse", "unregister")
	if n := rowsWhere(dv, "serviceendpoint", "url", url); n != 0 {
		t.Errorf("%d service endpoints left after unregister", n)
	}
	if n := rowsWhere(dv, "sdkmessageprocessingstep", "name", "msisync: "); n != 0 {
		t.Errorf("%d msisync steps left after unregister", n)
	}
	if n := dv.Count("sdkmessageprocessingstep"); n != steps-ours {
		t.Errorf("unregister left %d steps, want the %d that were not ours", n, steps-ours)
	}
	delivered := dv.Stats().Delivered
	if err := dv.Update("contact", contact, map[string]any{"jobtitle": "Countess"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), pollTimeout)
	defer cancel()
	if err := dv.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	if n := dv.Stats().Delivered - delivered; n != 0 {
		t.Errorf("%d webhooks delivered after unregister", n)
	}
}

// plain renders a simulator value as text for comparison (numbers without
// a fractional part as integers).
func plain(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case json.Number:
		return x.String()
	default:
		b, _ := json.Marshal(x)
		return strings.Trim(string(b), `"`)
	}
}

func sameInstant(v any, want time.Time) bool {
	switch x := v.(type) {
	case time.Time:
		return x.Equal(want)
	case string:
		t, err := time.Parse(time.RFC3339, x)
		return err == nil && t.Equal(want)
	}
	return false
}
