package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/dataverse/dataversesim"
	"github.com/msisync/msisync/internal/store/sqlitestore"
)

// queueIdle reports whether serve's queue has nothing active, scheduled or
// locked (its /metrics gauges).
func queueIdle(t *testing.T, base string) (bool, string) {
	_, body := get(t, base+"/metrics")
	var open []string
	for _, state := range []string{"active", "scheduled", "locked"} {
		re := regexp.MustCompile(`msisync_queue_messages\{state="` + state + `"\} (\S+)`)
		m := re.FindStringSubmatch(body)
		if m == nil {
			return false, "no msisync_queue_messages{state=" + state + "} yet"
		}
		if v, _ := strconv.ParseFloat(m[1], 64); v > 0 {
			open = append(open, state+"="+m[1])
		}
	}
	return len(open) == 0, strings.Join(open, " ")
}

var reconcileTotals = regexp.MustCompile(`reconcile: (\d+) requests, (\d+) changes webhooks missed, (\d+) events enqueued`)

func reconcileOnce(t *testing.T) (requests, found, enqueued int, out string) {
	t.Helper()
	out = mustRun(t, "reconcile", "--once")
	m := reconcileTotals.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("reconcile --once printed no totals:\n%s", out)
	}
	requests, _ = strconv.Atoi(m[1])
	found, _ = strconv.Atoi(m[2])
	enqueued, _ = strconv.Atoi(m[3])
	return requests, found, enqueued, out
}

// oracleDiff compares Marketo with what the Dataverse simulator holds, link
// by link, and returns the differences.
func oracleDiff(dv *dataversesim.Server, st marketoState, deletedAccounts, deletedOpps []string) []string {
	var diff []string
	ref := func(row map[string]any, col string) string {
		r, _ := row[col].(dataversesim.Ref)
		return r.ID
	}
	text := func(row map[string]any, col string) string { s, _ := row[col].(string); return s }
	owners := map[string]bool{}
	for _, id := range dv.IDs("account") {
		row, _ := dv.Get("account", id)
		owners[ref(row, "ownerid")] = true
		co := find(st.Companies, "externalCompanyId", id)
		if co == nil {
			diff = append(diff, "company "+id+" missing")
		} else if !strings.EqualFold(str(co, "externalSalesPersonId"), ref(row, "ownerid")) || str(co, "company") != text(row, "name") {
			diff = append(diff, fmt.Sprintf("company %s = (%s, %s), want (%s, %s)", id, str(co, "externalSalesPersonId"), str(co, "company"), ref(row, "ownerid"), text(row, "name")))
		}
	}
	for _, id := range deletedAccounts {
		if find(st.Companies, "externalCompanyId", id) != nil {
			diff = append(diff, "deleted account "+id+" still a company")
		}
	}
	for _, entity := range []string{"contact", "lead"} {
		for _, id := range dv.IDs(entity) {
			row, _ := dv.Get(entity, id)
			owners[ref(row, "ownerid")] = true
			company := ref(row, "parentcustomerid")
			if entity == "lead" {
				company = ref(row, "parentaccountid")
			}
			ld := find(st.Leads, "externalPersonId", id)
			if ld == nil {
				diff = append(diff, entity+" "+id+" missing")
				continue
			}
			if !strings.EqualFold(str(ld, "externalSalesPersonId"), ref(row, "ownerid")) || !strings.EqualFold(str(ld, "externalCompanyId"), company) ||
				str(ld, "email") != text(row, "emailaddress1") || str(ld, "title") != text(row, "jobtitle") {
				diff = append(diff, fmt.Sprintf("%s %s = (sp %s, co %s, %s, %s), want (%s, %s, %s, %s)", entity, id, str(ld, "externalSalesPersonId"),
					str(ld, "externalCompanyId"), str(ld, "email"), str(ld, "title"), ref(row, "ownerid"), company, text(row, "emailaddress1"), text(row, "jobtitle")))
			}
		}
	}
	for _, id := range dv.IDs("opportunity") {
		row, _ := dv.Get("opportunity", id)
		owners[ref(row, "ownerid")] = true
		op := find(st.Opportunities, "externalOpportunityId", id)
		if op == nil {
			diff = append(diff, "opportunity "+id+" missing")
		} else if !strings.EqualFold(str(op, "externalSalesPersonId"), ref(row, "ownerid")) || !strings.EqualFold(str(op, "externalCompanyId"), ref(row, "parentaccountid")) {
			diff = append(diff, fmt.Sprintf("opportunity %s = (sp %s, co %s), want (%s, %s)", id, str(op, "externalSalesPersonId"), str(op, "externalCompanyId"), ref(row, "ownerid"), ref(row, "parentaccountid")))
		}
	}
	for _, id := range deletedOpps {
		if find(st.Opportunities, "externalOpportunityId", id) != nil {
			diff = append(diff, "deleted opportunity "+id+" still in Marketo")
		}
	}
	for owner := range owners {
		row, _ := dv.Get("systemuser", owner)
		sp := find(st.SalesPersons, "externalSalesPersonId", owner)
		if sp == nil || str(sp, "email") != text(row, "internalemailaddress") {
			diff = append(diff, fmt.Sprintf("sales person %s = %v, want email %s", owner, sp, text(row, "internalemailaddress")))
		}
	}
	// Roles: one per opportunity → contact stakeholder connection.
	anyStr := func(rec map[string]any, field string) string {
		if v, ok := rec[field]; ok && v != nil {
			return fmt.Sprint(v)
		}
		return ""
	}
	leadOf := map[string]string{}
	for _, l := range st.Leads {
		leadOf[anyStr(l, "id")] = strings.ToLower(str(l, "externalPersonId"))
	}
	want, got := map[string]bool{}, map[string]bool{}
	for _, id := range dv.IDs("connection") {
		row, _ := dv.Get("connection", id)
		r1, _ := row["record1id"].(dataversesim.Ref)
		r2, _ := row["record2id"].(dataversesim.Ref)
		if r1.LogicalName != "opportunity" || r2.LogicalName != "contact" {
			continue
		}
		role, _ := dv.Get("connectionrole", ref(row, "record2roleid"))
		want[r1.ID+"|"+r2.ID+"|"+text(role, "name")] = true
	}
	for _, r := range st.Roles {
		role := str(r, "role")
		// A webhook's Target lookups carry no names, so a role written from
		// one may be named by the connection role's id (the syncer's lookup
		// names from images are issue 10's): accept either here.
		if cr, ok := dv.Get("connectionrole", role); ok {
			role = text(cr, "name")
		}
		got[strings.ToLower(str(r, "externalOpportunityId"))+"|"+leadOf[anyStr(r, "leadId")]+"|"+role] = true
	}
	for k := range want {
		if !got[k] {
			diff = append(diff, "role "+k+" missing")
		}
	}
	for k := range got {
		if !want[k] {
			diff = append(diff, "extra role "+k)
		}
	}
	return diff
}

// Journey (issue 11): Dataverse loses 20 % of its webhook deliveries over a
// generated history (creates, updates, deletes, owner changes, connections);
// one `msisync reconcile --once` brings Marketo to the oracle, link by link,
// and a second cycle after the sync enqueues nothing.
func TestJourneyReconcileHealsLostWebhooks(t *testing.T) {
	dataDir, base := cleanEnv(t)
	sims := startSimulators(t)
	// The Dataverse side runs on a clock that moves one second per change:
	// modifiedon has whole seconds, and the syncer mixes them with the
	// millisecond OperationCreatedOn of Assign events (see the report), so
	// two changes of one record within a second can be ordered wrongly by
	// the syncer itself, webhooks or not.
	clk := clock.NewFake(time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC))
	sims.dv = dataversesim.New(dataversesim.Options{Token: dvToken, Clock: clk})
	dvSrv := httptest.NewServer(sims.dv)
	t.Cleanup(dvSrv.Close)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), pollTimeout)
		defer cancel()
		_ = sims.dv.WaitIdle(ctx)
	})
	t.Setenv("MSISYNC_DATAVERSE_URL", dvSrv.URL)
	t.Setenv("MSISYNC_DATAVERSE_APP_USER_ID", sims.dv.AppUserID())
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		st, err := sqlitestore.Open(context.Background(), filepath.Join(dataDir, "store.db"), sqlitestore.Options{})
		if err != nil {
			t.Log(err)
			return
		}
		defer st.Close()
		for _, id := range sims.dv.IDs("account") {
			row, _ := sims.dv.Get("account", id)
			v, _ := st.GetVersions(context.Background(), []string{"account/" + id, "account/" + id + "@rv", "account/" + id + "#ownerid"})
			t.Logf("account %s: Dataverse mo=%v rv=%v owner=%v; store %v", id, row["modifiedon"], row["versionnumber"], row["ownerid"], v)
		}
	})
	dv := sims.dv
	t.Setenv("MSISYNC_MSI_INTERVAL", "0")
	startServe(t, base, "serve")
	mustRun(t, "dataverse", "register", "--url", base+"/webhooks/dataverse")

	// The first cycle only takes the tokens.
	if _, found, enq, out := reconcileOnce(t); found != 0 || enq != 0 || !strings.Contains(out, "baseline") {
		t.Fatalf("first reconcile: found %d, enqueued %d; want a baseline that enqueues nothing:\n%s", found, enq, out)
	}

	// MSISYNC_RECONCILE_JOURNEY_SEED picks another history and other drops.
	seed, _ := strconv.ParseUint(os.Getenv("MSISYNC_RECONCILE_JOURNEY_SEED"), 10, 64)
	if seed == 0 {
		seed = 11
	}
	if err := dv.SetWebhookFaults(dataversesim.WebhookFaults{Drop: 0.2, Seed: int64(seed)}); err != nil {
		t.Fatal(err)
	}
	rnd := rand.New(rand.NewPCG(seed, 0))
	must := func(id string, err error) string {
		t.Helper()
		clk.Advance(time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	owner := func(id string) dataversesim.Ref { return dataversesim.Ref{LogicalName: "systemuser", ID: id} }
	account := func(id string) dataversesim.Ref { return dataversesim.Ref{LogicalName: "account", ID: id} }
	var users, accounts, contacts, opps, deletedAccounts, deletedOpps []string
	for i := range 4 {
		users = append(users, must(dv.Create("systemuser", map[string]any{"firstname": "Rep", "lastname": fmt.Sprint(i),
			"internalemailaddress": fmt.Sprintf("rep%d@contoso.example", i), "domainname": fmt.Sprintf("rep%d@contoso.example", i)})))
	}
	pick := func(ids []string) string { return ids[rnd.IntN(len(ids))] }
	for i := range 12 {
		accounts = append(accounts, must(dv.Create("account", map[string]any{"name": fmt.Sprint("Account ", i), "ownerid": owner(pick(users))})))
	}
	for i := range 30 {
		contacts = append(contacts, must(dv.Create("contact", map[string]any{"firstname": "C", "lastname": fmt.Sprint("Contact ", i),
			"emailaddress1": fmt.Sprintf("c%d@example.com", i), "parentcustomerid": account(pick(accounts)), "ownerid": owner(pick(users))})))
	}
	for i := range 6 {
		must(dv.Create("lead", map[string]any{"lastname": fmt.Sprint("Lead ", i), "emailaddress1": fmt.Sprintf("l%d@example.com", i),
			"companyname": "Prospect", "ownerid": owner(pick(users))}))
	}
	for i := range 8 {
		a := account(pick(accounts))
		opps = append(opps, must(dv.Create("opportunity", map[string]any{"name": fmt.Sprint("Deal ", i), "parentaccountid": a, "customerid": a,
			"ownerid": owner(pick(users))})))
	}
	var conns []string
	for i := range 10 {
		conns = append(conns, must(dv.Connect(opps[i%6], pick(contacts), []string{"Decision Maker", "Influencer"}[i%2])))
	}
	for i := range 20 { // updates
		c := pick(contacts)
		clk.Advance(time.Second)
		if err := dv.Update("contact", c, map[string]any{"jobtitle": fmt.Sprint("Title ", i), "emailaddress1": fmt.Sprintf("moved%d@example.com", i)}); err != nil {
			t.Fatal(err)
		}
	}
	for range 6 { // owner changes
		clk.Advance(time.Second)
		if err := dv.Assign("account", pick(accounts), pick(users)); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Second)
		if err := dv.Assign("contact", pick(contacts), pick(users)); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range conns[:3] { // deletes: connections, an opportunity without any, accounts without children
		clk.Advance(time.Second)
		if err := dv.Delete("connection", c); err != nil {
			t.Fatal(err)
		}
	}
	clk.Advance(time.Second)
	if err := dv.Delete("opportunity", opps[7]); err != nil {
		t.Fatal(err)
	}
	deletedOpps = append(deletedOpps, opps[7])
	for i := range 3 {
		id := must(dv.Create("account", map[string]any{"name": fmt.Sprint("Short-lived ", i), "ownerid": owner(pick(users))}))
		clk.Advance(time.Second)
		if err := dv.Update("account", id, map[string]any{"name": fmt.Sprint("Short-lived renamed ", i)}); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Second)
		if err := dv.Delete("account", id); err != nil {
			t.Fatal(err)
		}
		deletedAccounts = append(deletedAccounts, id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), pollTimeout)
	defer cancel()
	if err := dv.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	dropped, _ := dv.WebhookFaultCounts()
	if dropped == 0 {
		t.Fatal("the simulator dropped no webhook")
	}
	eventually(t, "the delivered webhooks synced", func() (bool, string) { return queueIdle(t, base) })
	before := oracleDiff(dv, sims.marketo(), deletedAccounts, deletedOpps)
	t.Logf("%d webhook deliveries dropped; before reconcile Marketo differs from Dataverse in %d links", dropped, len(before))
	if len(before) == 0 {
		t.Fatal("Marketo already equals the oracle: the dropped webhooks changed nothing, the test proves nothing")
	}

	requests, found, enqueued, out := reconcileOnce(t)
	t.Logf("reconcile --once:\n%s", out)
	if found == 0 || enqueued < found {
		t.Errorf("reconcile found %d changes and enqueued %d; want the lost ones", found, enqueued)
	}
	if requests != 6 {
		t.Errorf("reconcile made %d Dataverse requests, want one per table (6)", requests)
	}
	eventually(t, "Marketo equals the oracle after one reconcile", func() (bool, string) {
		if idle, why := queueIdle(t, base); !idle {
			return false, why
		}
		d := oracleDiff(dv, sims.marketo(), deletedAccounts, deletedOpps)
		return len(d) == 0, strings.Join(d, "\n")
	})

	// A repeated cycle after the sync enqueues nothing.
	if _, found, enq, out := reconcileOnce(t); found != 0 || enq != 0 {
		t.Errorf("second reconcile: found %d, enqueued %d; want 0:\n%s", found, enq, out)
	}
	st := mustRun(t, "dataverse", "status")
	if !strings.Contains(st, "Last reconcile:") || !strings.Contains(st, "0 events enqueued") {
		t.Errorf("dataverse status does not show the last reconcile:\n%s", st)
	}
}

// Flag errors name the flag and exit with status 2; a bad setting is named.
func TestReconcileUsageErrors(t *testing.T) {
	cleanEnv(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"reconcile", "--once", "--entities", "contact,invoice"}, `--entities: "invoice"`},
		{[]string{"reconcile", "--once"}, "MSISYNC_DATAVERSE_URL"},
	} {
		r := run(t, tc.args...)
		if r.exitCode() != 2 || !strings.Contains(r.err.Error(), tc.want) {
			t.Errorf("msisync %s: exit %d, %v; want status 2 naming %s", strings.Join(tc.args, " "), r.exitCode(), r.err, tc.want)
		}
	}
	t.Setenv("MSISYNC_RECONCILE_INTERVAL", "30s")
	if r := run(t, "reconcile", "--once"); r.exitCode() == 0 || !strings.Contains(r.err.Error(), "MSISYNC_RECONCILE_INTERVAL") {
		t.Errorf("MSISYNC_RECONCILE_INTERVAL=30s: exit %d, %v; want a settings error naming it", r.exitCode(), r.err)
	}
}
