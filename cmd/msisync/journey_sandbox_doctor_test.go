package main

import (
	"net/http"
	"strings"
	"testing"
)

// Journey (zero config): while `msisync serve` syncs into the built-in
// sandbox, the newcomer asks `msisync doctor contact ID` about a contact the
// sandbox state shows as synced and linked.
func TestJourneySandboxDoctorWhileServing(t *testing.T) {
	dataDir, base := cleanEnv(t)
	startServe(t, base, "serve")
	key := webhookKey(t, dataDir)
	for _, name := range []string{"demo-1-user.json", "demo-2-account.json", "demo-3-contact.json"} {
		if code, _, body := post(t, base+"/webhooks/events?code="+key, readExample(t, name)); code != http.StatusAccepted {
			t.Fatalf("POST %s: %d %s", name, code, body)
		}
	}
	eventually(t, "the contact linked in the sandbox", func() (bool, string) {
		st := sandboxState(t, base)
		return strings.EqualFold(str(find(st.Leads, "externalPersonId", demoContact), "externalCompanyId"), demoAccount), st.String()
	})
	r := run(t, "doctor", "contact", demoContact)
	if r.exitCode() != 0 || strings.Contains(r.stdout, "[fail") {
		t.Errorf("doctor contact %s while serve runs: err %v\n%s", demoContact, r.err, r.stdout)
	}
}
