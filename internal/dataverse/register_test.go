package dataverse_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/dataverse"
	"github.com/msisync/msisync/internal/dataverse/dataversesim"
)

// receiver records webhook calls and answers with the statuses queued in
// codes (200 when empty).
type receiver struct {
	mu    sync.Mutex
	calls []call
	codes []int
	srv   *httptest.Server
}

type call struct {
	header http.Header
	query  string
	body   []byte
	ctx    map[string]any
}

func newReceiver(t *testing.T, codes ...int) *receiver {
	r := &receiver{codes: codes}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Errorf("webhook body is not JSON: %v", err)
		}
		r.mu.Lock()
		r.calls = append(r.calls, call{header: req.Header.Clone(), query: req.URL.RawQuery, body: b, ctx: m})
		code := 200
		if len(r.codes) > 0 {
			code, r.codes = r.codes[0], r.codes[1:]
		}
		r.mu.Unlock()
		w.WriteHeader(code)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) take() []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.calls
	r.calls = nil
	return c
}

func wait(t *testing.T, sim *dataversesim.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sim.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
}

func counts(sim *dataversesim.Server) [3]int {
	return [3]int{sim.Count("serviceendpoint"), sim.Count("sdkmessageprocessingstep"), sim.Count("sdkmessageprocessingstepimage")}
}

func TestRegisterIsIdempotent(t *testing.T) {
	e := newEnv(t, dataversesim.Options{})
	ctx := context.Background()
	opts := dataverse.RegisterOptions{Salt: testSalt, URL: "https://msisync.example.com/webhooks/dataverse", Key: "k1"}

	dry := opts
	dry.DryRun = true
	plan, err := e.client.Register(ctx, dry)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Changes() == 0 || counts(e.sim) != [3]int{0, 0, 0} {
		t.Fatalf("dry run: %d changes, rows %v; want a plan and nothing written", plan.Changes(), counts(e.sim))
	}

	plan, err = e.client.Register(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	steps := dataverse.DefaultSteps()
	images := 0
	for _, s := range steps {
		if len(s.PreImageAttributes) > 0 && s.Message != "Create" && s.Message != "QualifyLead" {
			images++
		}
		if len(s.PostImageAttributes) > 0 && s.Message != "Delete" && s.Message != "QualifyLead" {
			images++
		}
	}
	want := [3]int{1, len(steps), images}
	if got := counts(e.sim); got != want {
		t.Fatalf("after register: rows %v, want %v", got, want)
	}
	if plan.Changes() != 1+len(steps)+images {
		t.Errorf("first plan has %d changes, want %d:\n%s", plan.Changes(), 1+len(steps)+images, plan)
	}
	// Every step is async post-operation with auto-delete, named as documented.
	for _, id := range e.sim.IDs("sdkmessageprocessingstep") {
		row, _ := e.sim.Get("sdkmessageprocessingstep", id)
		if row["mode"] != dataversesim.OptionValue(1) || row["stage"] != dataversesim.OptionValue(40) || row["asyncautodelete"] != true {
			t.Errorf("step %v: mode %v stage %v autodelete %v", row["name"], row["mode"], row["stage"], row["asyncautodelete"])
		}
		if !strings.HasPrefix(row["name"].(string), "msisync: ") {
			t.Errorf("step name %q", row["name"])
		}
		if row["name"] == "msisync: Update of contact" {
			fa := row["filteringattributes"].(string)
			if !strings.Contains(fa, "emailaddress1") || strings.Contains(fa, "msi_") || strings.Contains(fa, "modifiedon") {
				t.Errorf("contact Update filtering attributes %q", fa)
			}
		}
	}

	plan, err = e.client.Register(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Changes() != 0 || counts(e.sim) != want {
		t.Fatalf("second run: %d changes, rows %v; want none:\n%s", plan.Changes(), counts(e.sim), plan)
	}

	// A new key updates only the endpoint; fewer steps delete the rest.
	opts.Key = "k2"
	opts.Steps = steps[:3]
	plan, err = e.client.Register(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	var ops []string
	for _, a := range plan.Actions {
		if a.Op == dataverse.OpUpdate || a.Op == dataverse.OpCreate {
			ops = append(ops, a.Op+" "+a.Table)
		}
	}
	if len(ops) != 1 || ops[0] != "update serviceendpoint" {
		t.Errorf("changed key: writes %v, want only the endpoint update", ops)
	}
	if got := e.sim.Count("sdkmessageprocessingstep"); got != 3 {
		t.Errorf("steps after shrinking = %d, want 3", got)
	}

	plan, err = e.client.Unregister(ctx, "", false)
	if err != nil {
		t.Fatal(err)
	}
	if counts(e.sim) != [3]int{0, 0, 0} || plan.Changes() == 0 {
		t.Errorf("after unregister: rows %v, plan %d changes", counts(e.sim), plan.Changes())
	}
	plan, err = e.client.Unregister(ctx, "", false)
	if err != nil || plan.Changes() != 0 {
		t.Errorf("second unregister: %v, %d changes", err, plan.Changes())
	}
}

func TestRegisterRejectsBadOptions(t *testing.T) {
	e := newEnv(t, dataversesim.Options{})
	for _, o := range []dataverse.RegisterOptions{
		{Salt: testSalt, URL: "", Key: "k"},
		{Salt: testSalt, URL: "https://h.example.com/x", Key: ""},
		{Salt: testSalt, URL: "https://h.example.com/x", Key: "k", AuthType: "Basic"},
		{Salt: testSalt, URL: "https://h.example.com/x", Key: "k", AuthType: dataverse.AuthHTTPHeader, Header: "bad header"},
		{Salt: testSalt, URL: "https://h.example.com/x", Key: "k\n", AuthType: dataverse.AuthHTTPHeader},
		{Salt: testSalt, URL: "https://h.example.com/x?code=1", Key: "k"},
		{Salt: testSalt, URL: "https://h.example.com/x", Key: "k", Steps: []dataverse.StepSpec{{Entity: "contact", Message: "Frobnicate"}}},
		{Salt: []byte("short"), URL: "https://h.example.com/x", Key: "k"},
	} {
		if _, err := e.client.Register(context.Background(), o); err == nil {
			t.Errorf("Register(%+v) accepted bad options", o)
		}
	}
	if counts(e.sim) != [3]int{0, 0, 0} {
		t.Errorf("bad options wrote rows: %v", counts(e.sim))
	}
	// Real environments take webhooks on ports 80 and 443 only.
	real, err := dataverse.New(dataverse.Config{URL: "https://org.crm.dynamics.com", Token: "t"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := real.Register(context.Background(), dataverse.RegisterOptions{Salt: testSalt, URL: "https://h.example.com:8443/x", Key: "k"}); err == nil || !strings.Contains(err.Error(), "80 and 443") {
		t.Errorf("port 8443 on a real environment: %v", err)
	}
}

func TestStatusShowsFailedDelivery(t *testing.T) {
	e := newEnv(t, dataversesim.Options{})
	rcv := newReceiver(t, 500)
	ctx := context.Background()
	if _, err := e.client.Register(ctx, dataverse.RegisterOptions{Salt: testSalt, URL: rcv.srv.URL + "/webhooks/dataverse", Key: "secret-key",
		Steps: []dataverse.StepSpec{{Entity: "contact", Message: "Create", PostImageAttributes: []string{"fullname"}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.sim.Create("contact", map[string]any{"firstname": "F", "lastname": "L"}); err != nil {
		t.Fatal(err)
	}
	wait(t, e.sim)
	st, err := e.client.Status(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if st.Endpoint == nil || st.Endpoint.AuthType != 4 || len(st.Steps) != 1 || st.Steps[0].Entity != "contact" || st.Steps[0].Message != "Create" {
		t.Fatalf("status = %+v", st)
	}
	if len(st.Failures) != 1 || st.Failures[0].StepName != "msisync: Create of contact" || !strings.Contains(st.Failures[0].Message, "500") {
		t.Fatalf("failures = %+v, want one for the contact Create step mentioning 500", st.Failures)
	}
	if strings.Contains(st.Failures[0].Message, "secret-key") {
		t.Error("failure message leaks the webhook key")
	}
	if out := st.String(); !strings.Contains(out, "msisync: Create of contact") || !strings.Contains(out, "failed system jobs (1") || !strings.Contains(out, "auth WebhookKey") {
		t.Errorf("Status.String():\n%s", out)
	}
	if _, err := e.client.Unregister(ctx, "", false); err != nil {
		t.Fatal(err)
	}
	if st, err := e.client.Status(ctx, ""); err != nil || st.Endpoint != nil || !strings.Contains(st.String(), "no webhook") {
		t.Errorf("status after unregister: %v %+v", err, st)
	}
	if len(rcv.take()) != 1 {
		t.Error("a 500 must not be retried")
	}
}

func TestWebhookRetriesOnceOn503(t *testing.T) {
	e := newEnv(t, dataversesim.Options{})
	rcv := newReceiver(t, 503, 503, 503, 200)
	ctx := context.Background()
	if _, err := e.client.Register(ctx, dataverse.RegisterOptions{Salt: testSalt, URL: rcv.srv.URL + "/hook", Key: "k",
		Steps: []dataverse.StepSpec{{Entity: "account", Message: "Create"}}}); err != nil {
		t.Fatal(err)
	}
	e.sim.Create("account", map[string]any{"name": "A"}) // 503, 503 → failed
	wait(t, e.sim)
	e.sim.Create("account", map[string]any{"name": "B"}) // 503, 200 → delivered
	wait(t, e.sim)
	st := e.sim.Stats()
	if st.Attempts != 4 || st.Delivered != 1 || st.Failed != 1 {
		t.Errorf("stats %+v, want 4 attempts, 1 delivered, 1 failed", st)
	}
}

var dateRe = regexp.MustCompile(`^/Date\(\d+([+-]\d{4})?\)/$`)

func kv(t *testing.T, v any) map[string]any {
	t.Helper()
	arr, ok := v.([]any)
	if !ok {
		t.Fatalf("%v is not a key/value array", v)
	}
	out := map[string]any{}
	for _, e := range arr {
		m := e.(map[string]any)
		if _, ok := m["key"]; !ok {
			t.Fatalf("entry %v has no key", m)
		}
		out[m["key"].(string)] = m["value"]
	}
	return out
}

func TestWebhookPayloadFormat(t *testing.T) {
	e := newEnv(t, dataversesim.Options{})
	rcv := newReceiver(t)
	ctx := context.Background()
	if _, err := e.client.Register(ctx, dataverse.RegisterOptions{Salt: testSalt, URL: rcv.srv.URL + "/webhooks/dataverse", Key: "hdr-secret",
		AuthType: dataverse.AuthHTTPHeader, Header: "x-msisync-key"}); err != nil {
		t.Fatal(err)
	}
	acc, _ := e.sim.Create("account", map[string]any{"name": "Contoso"})
	con, err := e.sim.Create("contact", map[string]any{"firstname": "Ada", "lastname": "Lovelace", "emailaddress1": "ada@example.com",
		"address1_line1": "1 Main St\nSuite 2", "parentcustomerid": dataversesim.Ref{LogicalName: "account", ID: acc}})
	if err != nil {
		t.Fatal(err)
	}
	wait(t, e.sim)
	calls := rcv.take()
	if len(calls) != 2 {
		t.Fatalf("%d calls for two creates", len(calls))
	}
	c := calls[1]
	for h, want := range map[string]string{"x-ms-dynamics-entity-name": "contact", "x-ms-dynamics-request-name": "Create",
		"x-ms-dynamics-organization": "msisyncsim.crm.dynamics.com", "x-msisync-key": "hdr-secret", "Content-Type": "application/json"} {
		if got := c.header.Get(h); got != want {
			t.Errorf("header %s = %q, want %q", h, got, want)
		}
	}
	if c.header.Get("x-ms-correlation-request-id") == "" || c.header.Get("x-ms-dynamics-msg-size-exceeded") != "" {
		t.Errorf("correlation/size headers: %v", c.header)
	}
	if !bytes.Contains(c.body, []byte(`\/Date(`)) || !bytes.Contains(c.body, []byte(`http:\/\/schemas.microsoft.com\/xrm\/2011\/Contracts`)) {
		t.Error("body does not escape '/' as WCF does")
	}
	if !bytes.Contains(c.body, []byte(`1 Main St\u000aSuite 2`)) {
		t.Error("body does not escape newlines as \\u000a as WCF does")
	}
	m := c.ctx
	if m["MessageName"] != "Create" || m["PrimaryEntityName"] != "contact" || m["PrimaryEntityId"] != con ||
		m["Mode"] != 1.0 || m["Stage"] != 40.0 || m["UserId"] != e.sim.UserID() || m["OrganizationId"] != e.sim.OrgID() || m["RequestId"] != nil {
		t.Errorf("context fields: %v", m)
	}
	if !dateRe.MatchString(m["OperationCreatedOn"].(string)) {
		t.Errorf("OperationCreatedOn %q", m["OperationCreatedOn"])
	}
	if own := m["OwningExtension"].(map[string]any); own["LogicalName"] != "sdkmessageprocessingstep" || own["Name"] != "msisync: Create of contact" {
		t.Errorf("OwningExtension %v", own)
	}
	if p := m["ParentContext"].(map[string]any); p["Stage"] != 30.0 || p["OperationId"] != m["OperationId"] {
		t.Errorf("ParentContext stage %v op %v", p["Stage"], p["OperationId"])
	}
	target := kv(t, m["InputParameters"])["Target"].(map[string]any)
	if target["__type"] != "Entity:http://schemas.microsoft.com/xrm/2011/Contracts" || target["LogicalName"] != "contact" {
		t.Errorf("Target type %v", target["__type"])
	}
	attrs := kv(t, target["Attributes"])
	pc := attrs["parentcustomerid"].(map[string]any)
	if pc["__type"] != "EntityReference:http://schemas.microsoft.com/xrm/2011/Contracts" || pc["Id"] != acc || pc["LogicalName"] != "account" || pc["Name"] != nil {
		t.Errorf("parentcustomerid %v", pc)
	}
	if sc := attrs["statecode"].(map[string]any); sc["__type"] != "OptionSetValue:http://schemas.microsoft.com/xrm/2011/Contracts" || sc["Value"] != 0.0 {
		t.Errorf("statecode %v", sc)
	}
	if !dateRe.MatchString(attrs["createdon"].(string)) || attrs["ownerid"] == nil {
		t.Errorf("Create target lacks defaults: createdon %v ownerid %v", attrs["createdon"], attrs["ownerid"])
	}
	if out := kv(t, m["OutputParameters"]); out["id"] != con {
		t.Errorf("OutputParameters %v", out)
	}
	if pre := kv(t, m["PreEntityImages"]); len(pre) != 0 {
		t.Errorf("Create has pre images %v", pre)
	}
	post := kv(t, m["PostEntityImages"])
	img := post["PostImage"].(map[string]any)
	if _, typed := img["__type"]; typed {
		t.Error("image entities carry no __type")
	}
	iattrs := kv(t, img["Attributes"])
	if _, ok := iattrs["createdon"]; ok {
		t.Error("post image has a column that is not listed")
	}
	if ipc := iattrs["parentcustomerid"].(map[string]any); ipc["Name"] != "Contoso" {
		t.Errorf("image reference name %v", ipc["Name"])
	}
	if f := kv(t, img["FormattedValues"]); f["statecode"] != "Active" {
		t.Errorf("image FormattedValues %v", f)
	}
	apn := kv(t, post["AsynchronousStepPrimaryName"].(map[string]any)["Attributes"])
	if apn["fullname"] != "Ada Lovelace" || apn["contactid"] != con || len(apn) != 2 {
		t.Errorf("AsynchronousStepPrimaryName %v", apn)
	}

	// Update: only the sent columns plus system ones; unfiltered columns do not fire.
	if err := e.sim.Update("contact", con, map[string]any{"description": "not a mapped column"}); err != nil {
		t.Fatal(err)
	}
	if err := e.client.Update(ctx, "contact", con, map[string]any{"jobtitle": "Countess"}); err != nil {
		t.Fatal(err)
	}
	wait(t, e.sim)
	calls = rcv.take()
	if len(calls) != 1 {
		t.Fatalf("%d calls for one filtered update", len(calls))
	}
	m = calls[0].ctx
	tattrs := kv(t, kv(t, m["InputParameters"])["Target"].(map[string]any)["Attributes"])
	for k := range tattrs {
		switch k {
		case "jobtitle", "modifiedon", "modifiedby", "modifiedonbehalfby", "contactid":
		default:
			t.Errorf("Update target carries unchanged column %s", k)
		}
	}
	if tattrs["jobtitle"] != "Countess" || tattrs["modifiedonbehalfby"] != nil {
		t.Errorf("Update target %v", tattrs)
	}
	if m["UserId"] != e.sim.AppUserID() || m["InitiatingUserId"] != e.sim.AppUserID() {
		t.Errorf("Web API change: UserId %v, want the app user %s", m["UserId"], e.sim.AppUserID())
	}

	// Delete: Target is a reference, pre image present, post images absent.
	if err := e.sim.Delete("contact", con); err != nil {
		t.Fatal(err)
	}
	wait(t, e.sim)
	calls = rcv.take()
	if len(calls) != 1 {
		t.Fatalf("%d calls for a delete", len(calls))
	}
	m = calls[0].ctx
	dt := kv(t, m["InputParameters"])["Target"].(map[string]any)
	if dt["__type"] != "EntityReference:http://schemas.microsoft.com/xrm/2011/Contracts" || dt["Id"] != con {
		t.Errorf("Delete target %v", dt)
	}
	if post := kv(t, m["PostEntityImages"]); len(post) != 0 {
		t.Errorf("Delete has post images %v", post)
	}
	pre := kv(t, kv(t, m["PreEntityImages"])["PreImage"].(map[string]any)["Attributes"])
	if pre["emailaddress1"] != "ada@example.com" {
		t.Errorf("Delete pre image %v", pre)
	}
}

func TestWebhookKeyAndTruncation(t *testing.T) {
	e := newEnv(t, dataversesim.Options{TruncateOver: 12000})
	rcv := newReceiver(t)
	ctx := context.Background()
	if _, err := e.client.Register(ctx, dataverse.RegisterOptions{Salt: testSalt, URL: rcv.srv.URL + "/webhooks/dataverse", Key: "a b&c",
		Steps: []dataverse.StepSpec{{Entity: "account", Message: "Create", PostImageAttributes: []string{"name"}}}}); err != nil {
		t.Fatal(err)
	}
	e.sim.Create("account", map[string]any{"name": "Small"})
	e.sim.Create("account", map[string]any{"name": "Big", "description": strings.Repeat("x", 20000)})
	wait(t, e.sim)
	calls := rcv.take()
	if len(calls) != 2 {
		t.Fatalf("%d calls", len(calls))
	}
	for i, c := range calls {
		if c.query != "code=a+b%26c" {
			t.Errorf("call %d query %q, want the key as ?code=", i, c.query)
		}
	}
	if calls[0].header.Get("x-ms-dynamics-msg-size-exceeded") != "" || calls[0].ctx["InputParameters"] == nil {
		t.Error("small payload was truncated")
	}
	big := calls[1]
	if big.header.Get("x-ms-dynamics-msg-size-exceeded") == "" {
		t.Error("big payload lacks x-ms-dynamics-msg-size-exceeded")
	}
	for _, k := range []string{"InputParameters", "ParentContext", "PreEntityImages", "PostEntityImages"} {
		if _, ok := big.ctx[k]; ok {
			t.Errorf("truncated payload still has %s", k)
		}
	}
	if big.ctx["PrimaryEntityName"] != "account" || big.ctx["PrimaryEntityId"] == nil || len(big.body) > 12000 {
		t.Errorf("truncated payload: entity %v id %v size %d", big.ctx["PrimaryEntityName"], big.ctx["PrimaryEntityId"], len(big.body))
	}
}

func TestConnectionsStoreTwoRowsAndDeliverPerOption(t *testing.T) {
	for _, twice := range []bool{false, true} {
		e := newEnv(t, dataversesim.Options{DeliverConnectionTwice: twice})
		rcv := newReceiver(t)
		if _, err := e.client.Register(context.Background(), dataverse.RegisterOptions{Salt: testSalt, URL: rcv.srv.URL + "/h", Key: "k",
			Steps: []dataverse.StepSpec{{Entity: "connection", Message: "Create", PostImageAttributes: []string{"record1id", "record2id", "ismaster"}}}}); err != nil {
			t.Fatal(err)
		}
		acc, _ := e.sim.Create("account", map[string]any{"name": "A"})
		con, _ := e.sim.Create("contact", map[string]any{"lastname": "C"})
		opp, _ := e.sim.Create("opportunity", map[string]any{"name": "O", "customerid": dataversesim.Ref{LogicalName: "account", ID: acc}})
		id, err := e.sim.Connect(opp, con, "Champion")
		if err != nil {
			t.Fatal(err)
		}
		wait(t, e.sim)
		if n := e.sim.Count("connection"); n != 2 {
			t.Fatalf("connection rows = %d, want 2", n)
		}
		row, _ := e.sim.Get("connection", id)
		rel := row["relatedconnectionid"].(dataversesim.Ref)
		other, _ := e.sim.Get("connection", rel.ID)
		if row["ismaster"] != true || other["ismaster"] != false || other["relatedconnectionid"].(dataversesim.Ref).ID != id ||
			other["record1id"].(dataversesim.Ref).ID != con {
			t.Errorf("rows: %v / %v", row, other)
		}
		want := 1
		if twice {
			want = 2
		}
		if n := len(rcv.take()); n != want {
			t.Errorf("twice=%v: %d webhook calls, want %d", twice, n, want)
		}
	}
}

// testSalt is the installation salt of the key fingerprint in tests.
var testSalt = []byte("test-install-salt-0123456789")

// The endpoint's description keeps an HMAC of the key under the
// installation's salt: the same key gives unrelated fingerprints in two
// installations, none is the key's plain hash, and re-registering with the
// same salt and key changes nothing while a new key is noticed.
func TestKeyFingerprintIsAnHMACUnderTheInstallSalt(t *testing.T) {
	ctx := context.Background()
	desc := func(salt []byte, key string) string {
		t.Helper()
		e := newEnv(t, dataversesim.Options{})
		if _, err := e.client.Register(ctx, dataverse.RegisterOptions{Salt: salt, URL: "https://h.example.com/x", Key: key}); err != nil {
			t.Fatal(err)
		}
		row, _ := e.sim.Get("serviceendpoint", e.sim.IDs("serviceendpoint")[0])
		return fmt.Sprint(row["description"])
	}
	a, b := desc(testSalt, "k1"), desc([]byte("another-install-salt-xyz"), "k1")
	if a == b {
		t.Fatalf("two installations with one key share the fingerprint %q", a)
	}
	plain := sha256.Sum256([]byte("msisync\x004\x00\x00k1"))
	for _, d := range []string{a, b} {
		if strings.Contains(d, hex.EncodeToString(plain[:6])) || strings.Contains(d, "k1") {
			t.Fatalf("description %q carries the key or its unsalted hash", d)
		}
	}

	e := newEnv(t, dataversesim.Options{})
	opts := dataverse.RegisterOptions{Salt: testSalt, URL: "https://h.example.com/x", Key: "k1"}
	if _, err := e.client.Register(ctx, opts); err != nil {
		t.Fatal(err)
	}
	plan, err := e.client.Register(ctx, opts)
	if err != nil || plan.Changes() != 0 {
		t.Fatalf("same salt and key: %d changes (%v), want none:\n%s", plan.Changes(), err, plan)
	}
	opts.Key = "k2"
	if plan, err = e.client.Register(ctx, opts); err != nil || !strings.Contains(plan.String(), "key changed") {
		t.Fatalf("new key: %v, plan:\n%s", err, plan)
	}
}
