package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// Demo record ids of api/examples/demo-*.json.
const (
	demoUser    = "5e300000-0000-4000-8000-000000000001"
	demoAccount = "3f200000-0000-4000-8000-000000000002"
	demoContact = "9a100000-0000-4000-8000-000000000003"
)

// Journey (issue 2 and 6): a newcomer runs `msisync serve` with no settings,
// posts the demo events in reverse dependency order and sees them linked in
// the Marketo sandbox; a real Dataverse payload is accepted; bad keys and
// bad ids are refused; health, readiness and metrics answer.
func TestJourneyZeroConfigServe(t *testing.T) {
	dataDir, base := cleanEnv(t)
	svc := startServe(t, base, "serve")

	key := webhookKey(t, dataDir) // generated on first start, saved in the data folder
	// … and shown once, with the URL to register.
	if notice := svc.stderr.String(); !strings.Contains(notice, key) || !strings.Contains(notice, "/webhooks/dataverse") {
		t.Errorf("first start did not print the generated key and the webhook URL:\n%s", notice)
	}

	// Reverse dependency order: contact, then account, then user.
	for _, name := range []string{"demo-3-contact.json", "demo-2-account.json", "demo-1-user.json"} {
		code, _, body := post(t, base+"/webhooks/events?code="+key, readExample(t, name))
		if code != http.StatusAccepted {
			t.Fatalf("POST /webhooks/events %s: status %d, want 202; body %s", name, code, body)
		}
	}

	eventually(t, "sales person, company and lead linked in the sandbox", func() (bool, string) {
		st := sandboxState(t, base)
		sp := find(st.SalesPersons, "externalSalesPersonId", demoUser)
		co := find(st.Companies, "externalCompanyId", demoAccount)
		ld := find(st.Leads, "externalPersonId", demoContact)
		ok := sp != nil && co != nil && ld != nil &&
			strings.EqualFold(str(co, "externalSalesPersonId"), demoUser) &&
			strings.EqualFold(str(ld, "externalCompanyId"), demoAccount) &&
			strings.EqualFold(str(ld, "externalSalesPersonId"), demoUser)
		return ok, st.String()
	})
	st := sandboxState(t, base)
	if sp := find(st.SalesPersons, "externalSalesPersonId", demoUser); str(sp, "email") != "grace.hopper@contoso.example" {
		t.Errorf("sales person email = %q, want grace.hopper@contoso.example (from internalemailaddress)", str(sp, "email"))
	}
	if ld := find(st.Leads, "externalPersonId", demoContact); str(ld, "email") != "ada.lovelace@contoso.example" {
		t.Errorf("lead email = %q, want ada.lovelace@contoso.example", str(ld, "email"))
	}
	if co := find(st.Companies, "externalCompanyId", demoAccount); str(co, "company") != "Contoso Ltd" {
		t.Errorf("company name = %q, want Contoso Ltd", str(co, "company"))
	}
	if n := len(st.Leads); n != 1 {
		t.Errorf("sandbox has %d leads, want 1 (no duplicates from requeues)", n)
	}

	// Restart: same key, not printed again; the sandbox kept its records.
	svc.stop(t)
	svc = startServe(t, base, "serve")
	if k := webhookKey(t, dataDir); k != key {
		t.Errorf("restart changed the webhook key")
	}
	if notice := svc.stderr.String(); strings.Contains(notice, key) {
		t.Errorf("restart printed the key again:\n%s", notice)
	}
	if st := sandboxState(t, base); find(st.Leads, "externalPersonId", demoContact) == nil || len(st.Companies) != 1 || len(st.SalesPersons) != 1 {
		t.Errorf("sandbox lost its records across a restart:\n%s", st)
	}

	// A real Dataverse RemoteExecutionContext, WebhookKey auth.
	dv := readExample(t, "dataverse-update-contact.json")
	if code, _, body := post(t, base+"/webhooks/dataverse?code="+key, dv); code != http.StatusAccepted {
		t.Fatalf("POST /webhooks/dataverse: status %d, want 202; body %s", code, body)
	}
	// The same key in the HttpHeader mode's header.
	if code, _, body := post(t, base+"/webhooks/dataverse", dv, "x-msisync-key", key); code != http.StatusAccepted {
		t.Errorf("POST /webhooks/dataverse with x-msisync-key: status %d, want 202; body %s", code, body)
	}
	// A wrong key: 401 without saying which part was wrong.
	code, _, body := post(t, base+"/webhooks/dataverse?code=not-the-key-0123456789", dv)
	if code != http.StatusUnauthorized {
		t.Errorf("wrong key: status %d, want 401; body %s", code, body)
	}
	if strings.Contains(body, key) {
		t.Errorf("401 body leaks the key: %s", body)
	}
	// A bad GUID: 422 problem+json naming the field.
	bad := strings.ReplaceAll(string(dv), `"PrimaryEntityId":"c0ffee00-1234-4567-89ab-cdef01234567"`, `"PrimaryEntityId":"not-a-guid"`)
	if bad == string(dv) {
		t.Fatal("example payload changed: PrimaryEntityId not found")
	}
	code, hdr, body := post(t, base+"/webhooks/dataverse?code="+key, []byte(bad))
	if code != http.StatusUnprocessableEntity {
		t.Errorf("bad GUID: status %d, want 422; body %s", code, body)
	}
	if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") {
		t.Errorf("bad GUID: Content-Type %q, want application/problem+json", ct)
	}
	var problem map[string]any
	if err := json.Unmarshal([]byte(body), &problem); err != nil {
		t.Errorf("bad GUID: body is not JSON: %v\n%s", err, body)
	} else if problem["status"] != float64(422) || !strings.Contains(body, "PrimaryEntityId") {
		t.Errorf("bad GUID: problem %s does not name PrimaryEntityId with status 422", body)
	}

	if code, body := get(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: %d %s", code, body)
	}
	if code, body := get(t, base+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz: %d %s", code, body)
	}
	code, metrics := get(t, base+"/metrics")
	if code != http.StatusOK || !strings.Contains(metrics, "msisync_receiver_requests_total") {
		t.Errorf("/metrics: status %d, msisync_receiver_requests_total present: %v", code, strings.Contains(metrics, "msisync_receiver_requests_total"))
	}
	// The embedded queue reports its depth; the dead-letter series is there
	// even when nothing is dead.
	if !strings.Contains(metrics, `msisync_queue_messages{state="dead"}`) {
		t.Errorf("/metrics has no msisync_queue_messages{state=\"dead\"} series")
	}
	// The refused requests are counted by status.
	for _, want := range []string{`code="401"`, `code="422"`, `code="202"`} {
		if !strings.Contains(metrics, "msisync_receiver_requests_total{code="+strings.TrimPrefix(want, "code=")) {
			t.Errorf("/metrics has no receiver series with %s", want)
		}
	}
}

// Journey (issue 3 and 6, scale-out on one machine): `msisync receiver` and
// `msisync worker` started separately on one data folder share the
// embedded queue; what the receiver takes, the worker syncs.
func TestJourneyReceiverAndWorkerShareTheDataFolder(t *testing.T) {
	dataDir, receiverBase := cleanEnv(t)
	startServe(t, receiverBase, "receiver")
	key := webhookKey(t, dataDir)

	workerAddr := freeAddr(t)
	t.Setenv("MSISYNC_ADDR", workerAddr) // read by the worker only: the receiver already started
	workerBase := "http://" + workerAddr
	startServe(t, workerBase, "worker")

	// The worker takes no webhooks; the receiver does.
	if code, _, _ := post(t, workerBase+"/webhooks/events?code="+key, readExample(t, "demo-1-user.json")); code == http.StatusAccepted {
		t.Errorf("the worker accepted a webhook")
	}
	for _, name := range []string{"demo-3-contact.json", "demo-2-account.json", "demo-1-user.json"} {
		if code, _, body := post(t, receiverBase+"/webhooks/events?code="+key, readExample(t, name)); code != http.StatusAccepted {
			t.Fatalf("POST %s to the receiver: %d %s", name, code, body)
		}
	}
	// The sandbox lives in the worker, the process that writes to Marketo.
	eventually(t, "the worker synced what the receiver took", func() (bool, string) {
		st := sandboxState(t, workerBase)
		ld := find(st.Leads, "externalPersonId", demoContact)
		return strings.EqualFold(str(ld, "externalCompanyId"), demoAccount) && strings.EqualFold(str(ld, "externalSalesPersonId"), demoUser), st.String()
	})
	for _, base := range []string{receiverBase, workerBase} {
		if code, body := get(t, base+"/readyz"); code != http.StatusOK {
			t.Errorf("%s/readyz: %d %s", base, code, body)
		}
	}
}
