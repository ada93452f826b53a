package dataverse_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/dataverse"
	"github.com/msisync/msisync/internal/dataverse/dataversesim"
	"github.com/msisync/msisync/internal/event"
)

const token = "test-token"

type env struct {
	sim    *dataversesim.Server
	srv    *httptest.Server
	client *dataverse.Client
	clk    *clock.Fake
	mu     sync.Mutex
	sleeps []time.Duration
}

func newEnv(t *testing.T, o dataversesim.Options) *env {
	t.Helper()
	e := &env{clk: clock.NewFake(time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC))}
	if o.Clock == nil {
		o.Clock = e.clk
	}
	o.Token = token
	e.sim = dataversesim.New(o)
	e.srv = httptest.NewServer(e.sim)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = e.sim.WaitIdle(ctx)
		e.srv.Close()
	})
	c, err := dataverse.New(dataverse.Config{URL: e.srv.URL, Token: token, Clock: e.clk,
		Sleep: func(ctx context.Context, d time.Duration) error {
			e.mu.Lock()
			e.sleeps = append(e.sleeps, d)
			e.mu.Unlock()
			e.clk.Advance(d)
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	e.client = c
	return e
}

func TestEntitySet(t *testing.T) {
	for in, want := range map[string]string{"systemuser": "systemusers", "opportunity": "opportunities", "account": "accounts",
		"connection": "connections", "transactioncurrency": "transactioncurrencies", "new_policy": "new_policies",
		"new_box": "new_boxes", "new_key": "new_keys", "sdkmessageprocessingstepimage": "sdkmessageprocessingstepimages"} {
		if got := dataverse.EntitySet(in); got != want {
			t.Errorf("EntitySet(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestReadConvertsLookupsNumbersAndFormattedValues(t *testing.T) {
	e := newEnv(t, dataversesim.Options{})
	acc, err := e.sim.Create("account", map[string]any{"name": "Contoso Ltd", "numberofemployees": 250, "revenue": dataversesim.Money(1234.5)})
	if err != nil {
		t.Fatal(err)
	}
	con, err := e.sim.Create("contact", map[string]any{"firstname": "Ada", "lastname": "Lovelace", "emailaddress1": "ada@example.com",
		"parentcustomerid": dataversesim.Ref{LogicalName: "account", ID: acc}, "donotemail": true})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	attrs, fmts, err := e.client.ReadFormatted(ctx, "contact", con, []string{"fullname", "emailaddress1", "parentcustomerid", "ownerid", "statecode", "donotemail", "modifiedon", "jobtitle"})
	if err != nil {
		t.Fatal(err)
	}
	ref, ok := attrs["parentcustomerid"].Reference()
	if !ok || ref.LogicalName != "account" || ref.ID != acc || ref.Name != "Contoso Ltd" {
		t.Errorf("parentcustomerid = %+v, want account %s named Contoso Ltd", attrs["parentcustomerid"], acc)
	}
	if owner, ok := attrs["ownerid"].Reference(); !ok || owner.LogicalName != "systemuser" || owner.ID != e.sim.UserID() {
		t.Errorf("ownerid = %+v, want systemuser %s", attrs["ownerid"], e.sim.UserID())
	}
	if got := attrs["fullname"].Text(); got != "Ada Lovelace" {
		t.Errorf("fullname = %q", got)
	}
	if n, ok := attrs["statecode"].Int(); !ok || n != 0 || attrs["statecode"].Kind != event.KindNumber {
		t.Errorf("statecode = %+v, want number 0", attrs["statecode"])
	}
	if fmts["statecode"] != "Active" {
		t.Errorf("formatted statecode = %q, want Active", fmts["statecode"])
	}
	if !attrs["donotemail"].Bool || attrs["donotemail"].Kind != event.KindBool {
		t.Errorf("donotemail = %+v", attrs["donotemail"])
	}
	if !attrs["jobtitle"].IsNull() {
		t.Errorf("jobtitle = %+v, want null", attrs["jobtitle"])
	}
	if tm, ok := attrs["modifiedon"].TimeValue(); !ok || !tm.Equal(e.clk.Now()) {
		t.Errorf("modifiedon = %+v, want %v", attrs["modifiedon"], e.clk.Now())
	}
	a2, err := e.client.Read(ctx, "account", acc, []string{"name", "numberofemployees", "revenue"})
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := a2["numberofemployees"].Int(); n != 250 {
		t.Errorf("numberofemployees = %+v", a2["numberofemployees"])
	}
	if f, _ := a2["revenue"].Float(); f != 1234.5 {
		t.Errorf("revenue = %+v", a2["revenue"])
	}
	_, err = e.client.Read(ctx, "contact", "00000000-0000-0000-0000-000000000001", []string{"fullname"})
	if !errors.Is(err, dataverse.ErrNotFound) || !dataverse.IsNotFound(err) {
		t.Errorf("missing row: err = %v, want ErrNotFound", err)
	}
}

func TestListPageFollowsNextLinkAndFilters(t *testing.T) {
	e := newEnv(t, dataversesim.Options{})
	if _, err := e.sim.Seed(dataversesim.SeedOptions{Accounts: 10, Contacts: 120}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	seen := map[string]bool{}
	pages := 0
	next := ""
	for {
		p, err := e.client.ListPage(ctx, "contact", dataverse.ListOptions{Select: []string{"contactid", "fullname", "parentcustomerid", "modifiedon"}, PageSize: 50}, next)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, r := range p.Rows {
			id := r["contactid"].Text()
			if seen[id] {
				t.Fatalf("row %s returned twice", id)
			}
			seen[id] = true
			if _, ok := r["parentcustomerid"].Reference(); !ok {
				t.Fatalf("row %s: parentcustomerid %+v is not a reference", id, r["parentcustomerid"])
			}
		}
		if p.NextLink == "" {
			break
		}
		next = p.NextLink
	}
	if pages != 3 || len(seen) != 120 {
		t.Errorf("pages=%d rows=%d, want 3 pages of 120 rows", pages, len(seen))
	}
	// modifiedon filter selects exactly the rows newer than the cut-off.
	cut := e.clk.Now().Add(-180 * 24 * time.Hour)
	want := 0
	for _, id := range e.sim.IDs("contact") {
		row, _ := e.sim.Get("contact", id)
		if row["modifiedon"].(time.Time).After(cut) {
			want++
		}
	}
	p, err := e.client.ListPage(ctx, "contact", dataverse.ListOptions{Select: []string{"contactid"},
		Filter: "modifiedon gt " + cut.Format(time.RFC3339) + " and statecode eq 0", OrderBy: "modifiedon asc"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Rows) != want || want == 0 || want == 120 {
		t.Errorf("filtered rows = %d, want %d (of 120)", len(p.Rows), want)
	}
	n, err := e.client.Count(ctx, "contact", "")
	if err != nil || n != 120 {
		t.Errorf("Count = %d, %v; want 120", n, err)
	}
	n, err = e.client.Count(ctx, "contact", "modifiedon gt "+cut.Format(time.RFC3339))
	if err != nil || n != want {
		t.Errorf("Count filtered = %d, %v; want %d", n, err, want)
	}
}

func TestUpdateNeverCreates(t *testing.T) {
	e := newEnv(t, dataversesim.Options{})
	ctx := context.Background()
	con, _ := e.sim.Create("contact", map[string]any{"firstname": "Ada", "lastname": "L"})
	if err := e.client.Update(ctx, "contact", con, map[string]any{"jobtitle": "CTO", "telephone1": nil}); err != nil {
		t.Fatal(err)
	}
	row, _ := e.sim.Get("contact", con)
	if row["jobtitle"] != "CTO" {
		t.Errorf("jobtitle = %v", row["jobtitle"])
	}
	if um, ok := row["modifiedby"].(dataversesim.Ref); !ok || um.ID != e.sim.AppUserID() {
		t.Errorf("modifiedby = %v, want the app user %s", row["modifiedby"], e.sim.AppUserID())
	}
	missing := "11111111-2222-3333-4444-555555555555"
	err := e.client.Update(ctx, "contact", missing, map[string]any{"jobtitle": "CTO"})
	if !errors.Is(err, dataverse.ErrNotFound) {
		t.Errorf("update of a missing row: %v, want ErrNotFound", err)
	}
	if _, ok := e.sim.Get("contact", missing); ok {
		t.Error("Update created a row")
	}
}

func TestUpdateBatchResultsInOrder(t *testing.T) {
	e := newEnv(t, dataversesim.Options{})
	res, err := e.sim.Seed(dataversesim.SeedOptions{Contacts: 1500, Leads: 5})
	if err != nil {
		t.Fatal(err)
	}
	var ops []dataverse.BatchOp
	for i, id := range res.IDs["contact"] {
		ops = append(ops, dataverse.BatchOp{LogicalName: "contact", ID: id, Fields: map[string]any{"jobtitle": "T" + string(rune('a'+i%26))}})
	}
	missing := "11111111-2222-3333-4444-555555555555"
	ops = append(ops[:700], append([]dataverse.BatchOp{{LogicalName: "contact", ID: missing, Fields: map[string]any{"jobtitle": "x"}}}, ops[700:]...)...)
	ops = append(ops, dataverse.BatchOp{LogicalName: "lead", ID: res.IDs["lead"][0], Fields: map[string]any{"statuscode": 99}})
	ops = append(ops, dataverse.BatchOp{LogicalName: "lead", ID: "not-a-guid", Fields: map[string]any{"subject": "x"}})
	before := e.sim.Stats().Requests
	results, err := e.client.UpdateBatch(context.Background(), ops)
	if err != nil {
		t.Fatal(err)
	}
	if got := e.sim.Stats().Requests - before; got != 2 {
		t.Errorf("$batch requests = %d, want 2 (1503 ops in chunks of 1000)", got)
	}
	if len(results) != len(ops) {
		t.Fatalf("%d results for %d ops", len(results), len(ops))
	}
	for i, r := range results {
		switch {
		case i == 700:
			if !errors.Is(r.Err, dataverse.ErrNotFound) || r.Status != 404 {
				t.Errorf("op %d (missing row): %+v, want 404 ErrNotFound", i, r)
			}
		case i == len(ops)-1:
			if r.Err == nil || r.Status != 0 || !strings.Contains(r.Err.Error(), "not-a-guid") {
				t.Errorf("op %d (bad id): %+v, want a local error", i, r)
			}
		case i == len(ops)-2:
			if r.Err == nil || r.Status != 400 {
				t.Errorf("op %d (bad statuscode): %+v, want 400", i, r)
			}
		default:
			if r.Err != nil || r.Status != 204 {
				t.Fatalf("op %d: %+v, want 204", i, r)
			}
		}
	}
	row, _ := e.sim.Get("contact", ops[1499].ID)
	if row["jobtitle"] != ops[1499].Fields["jobtitle"] {
		t.Errorf("last op not applied: %v", row["jobtitle"])
	}
	if _, ok := e.sim.Get("contact", missing); ok {
		t.Error("batch PATCH with If-Match: * created a row")
	}
}

func TestThrottleStormConverges(t *testing.T) {
	e := newEnv(t, dataversesim.Options{RequestsPerWindow: 5, Window: 20 * time.Second})
	con, _ := e.sim.Create("contact", map[string]any{"firstname": "A", "lastname": "B"})
	ctx := context.Background()
	for i := 0; i < 23; i++ {
		if _, err := e.client.Read(ctx, "contact", con, []string{"fullname"}); err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
	}
	st := e.sim.Stats()
	if st.Throttled == 0 || st.Requests != 23 {
		t.Fatalf("stats = %+v, want 23 served and some throttled", st)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if int64(len(e.sleeps)) != st.Throttled {
		t.Errorf("client slept %d times for %d 429s", len(e.sleeps), st.Throttled)
	}
	var total time.Duration
	for _, d := range e.sleeps {
		if d <= 0 || d > 20*time.Second {
			t.Errorf("slept %v, want a Retry-After within the window", d)
		}
		total += d
	}
	// 23 requests at 5 per 20 s need at least 4 full windows of waiting.
	if total < 80*time.Second {
		t.Errorf("total wait %v, want ≥ 80s", total)
	}
}

func TestThrottleGivesUpAfterMaxRetries(t *testing.T) {
	e := newEnv(t, dataversesim.Options{RequestsPerWindow: 1, Window: time.Hour})
	c, err := dataverse.New(dataverse.Config{URL: e.srv.URL, Token: token, MaxRetries: 2,
		Sleep: func(ctx context.Context, d time.Duration) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	con, _ := e.sim.Create("contact", map[string]any{"firstname": "A"})
	if _, err := c.Read(context.Background(), "contact", con, nil); err != nil {
		t.Fatal(err)
	}
	_, err = c.Read(context.Background(), "contact", con, nil)
	if !errors.Is(err, dataverse.ErrThrottled) {
		t.Errorf("err = %v, want ErrThrottled after the retries", err)
	}
	if got := e.sim.Stats().Throttled; got != 3 {
		t.Errorf("throttled %d times, want 3 (1 try + 2 retries)", got)
	}
}

func TestUnauthorizedNamesSettingsNotSecret(t *testing.T) {
	e := newEnv(t, dataversesim.Options{})
	c, err := dataverse.New(dataverse.Config{URL: e.srv.URL, Token: "wrong-secret-value"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Read(context.Background(), "contact", "11111111-2222-3333-4444-555555555555", nil)
	if !errors.Is(err, dataverse.ErrUnauthorized) {
		t.Fatalf("err = %v, want ErrUnauthorized", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, "MSISYNC_DATAVERSE_TOKEN") || strings.Contains(msg, "wrong-secret-value") {
		t.Errorf("401 error %q should name the setting and not the token", msg)
	}
}

func TestNewValidatesConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  dataverse.Config
		want []string // every one must appear in the error: the settings at fault
	}{
		{dataverse.Config{}, []string{"MSISYNC_DATAVERSE_URL", "required"}},
		{dataverse.Config{URL: "org.crm.dynamics.com", Token: "x"}, []string{"MSISYNC_DATAVERSE_URL", `"org.crm.dynamics.com"`}},
		{dataverse.Config{URL: "https://o.crm.dynamics.com", ClientSecret: "s3cret-value"}, []string{"AZURE_TENANT_ID", "AZURE_CLIENT_ID"}},
	} {
		_, err := dataverse.New(tc.cfg)
		if err == nil {
			t.Errorf("New(%+v) accepted a bad config", tc.cfg)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("New(%+v) = %q, want it to name %s", tc.cfg, err, w)
			}
		}
		if strings.Contains(err.Error(), "s3cret-value") {
			t.Errorf("New error %q carries the client secret", err)
		}
	}
}

func TestClientCredentialsAgainstSimulatedEntraID(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC))
	sim := dataversesim.New(dataversesim.Options{Clock: clk, TenantID: "tenant-1", ClientID: "app-1", ClientSecret: "s3cret"})
	srv := httptest.NewTLSServer(sim)
	defer srv.Close()
	newClient := func(secret string) *dataverse.Client {
		c, err := dataverse.New(dataverse.Config{URL: srv.URL, TenantID: "tenant-1", ClientID: "app-1", ClientSecret: secret,
			AuthorityHost: srv.URL + "/", HTTPClient: srv.Client(), MaxRetries: 1})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	id, _ := sim.Create("contact", map[string]any{"lastname": "Token"})
	attrs, err := newClient("s3cret").Read(context.Background(), "contact", id, []string{"lastname"})
	if err != nil {
		t.Fatal(err)
	}
	if attrs["lastname"].Text() != "Token" {
		t.Errorf("read %v", attrs)
	}
	_, err = newClient("wrong-secret").Read(context.Background(), "contact", id, []string{"lastname"})
	if err == nil || !strings.Contains(err.Error(), "app-1") || strings.Contains(err.Error(), "wrong-secret") {
		t.Errorf("bad secret: %v; want an error naming the app and not the secret", err)
	}
}

func TestChangeTracking(t *testing.T) {
	e := newEnv(t, dataversesim.Options{})
	res, err := e.sim.Seed(dataversesim.SeedOptions{Accounts: 12})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	opts := dataverse.ListOptions{Select: []string{"accountid", "name"}, PageSize: 5, TrackChanges: true}
	var delta string
	n := 0
	for next := ""; ; {
		p, err := e.client.ListPage(ctx, "account", opts, next)
		if err != nil {
			t.Fatal(err)
		}
		n += len(p.Rows)
		if p.NextLink == "" {
			delta = p.DeltaLink
			break
		}
		if p.DeltaLink != "" {
			t.Error("deltaLink before the last page")
		}
		next = p.NextLink
	}
	if n != 12 || delta == "" {
		t.Fatalf("initial sync: %d rows, deltaLink %q", n, delta)
	}
	ids := res.IDs["account"]
	if err := e.client.Update(ctx, "account", ids[3], map[string]any{"name": "Renamed"}); err != nil {
		t.Fatal(err)
	}
	if err := e.sim.Delete("account", ids[5]); err != nil {
		t.Fatal(err)
	}
	added, _ := e.sim.Create("account", map[string]any{"name": "New"})
	p, err := e.client.ListPage(ctx, "account", opts, delta)
	if err != nil {
		t.Fatal(err)
	}
	changed := map[string]string{}
	for _, r := range p.Rows {
		changed[r["accountid"].Text()] = r["name"].Text()
	}
	if len(changed) != 2 || changed[ids[3]] != "Renamed" || changed[added] != "New" {
		t.Errorf("changed rows %v, want the renamed and the new account", changed)
	}
	if len(p.Deleted) != 1 || p.Deleted[0] != ids[5] {
		t.Errorf("deleted %v, want [%s]", p.Deleted, ids[5])
	}
	p2, err := e.client.ListPage(ctx, "account", opts, p.DeltaLink)
	if err != nil || len(p2.Rows)+len(p2.Deleted) != 0 {
		t.Errorf("second delta: %v, %d rows %d deleted; want nothing new", err, len(p2.Rows), len(p2.Deleted))
	}
	if _, err := e.client.ListPage(ctx, "account", dataverse.ListOptions{TrackChanges: true, Filter: "statecode eq 0"}, ""); err == nil {
		t.Error("change tracking with a filter accepted")
	}
}

func TestCustomColumnsReadBeforeWritten(t *testing.T) {
	e := newEnv(t, dataversesim.Options{})
	con, _ := e.sim.Create("contact", map[string]any{"lastname": "L"})
	ctx := context.Background()
	attrs, err := e.client.Read(ctx, "contact", con, []string{"msi_priority", "lastname"})
	if err != nil {
		t.Fatal(err)
	}
	if !attrs["msi_priority"].IsNull() {
		t.Errorf("unwritten custom column = %+v, want null", attrs["msi_priority"])
	}
	if err := e.client.Update(ctx, "contact", con, map[string]any{"msi_priority": 4}); err != nil {
		t.Fatal(err)
	}
	attrs, _ = e.client.Read(ctx, "contact", con, []string{"msi_priority"})
	if n, _ := attrs["msi_priority"].Int(); n != 4 {
		t.Errorf("msi_priority = %+v, want 4", attrs["msi_priority"])
	}
	if _, err := e.client.Read(ctx, "contact", con, []string{"nosuchcolumn"}); err == nil {
		t.Error("unknown column without a prefix accepted")
	}
}
