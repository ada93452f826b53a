package main

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/msisync/msisync/internal/dataverse/dataversesim"
	"github.com/msisync/msisync/internal/msi"
)

// Journey (issue 5 with the zero-config Marketo sandbox): Dataverse is the
// simulator, Marketo the sandbox inside `msisync serve`. MSI values set in
// the sandbox (its control endpoint) reach the Dataverse contact with
// `msisync msi sync --once`, which must use the running serve's sandbox.
func TestJourneySandboxMSIWriteBack(t *testing.T) {
	_, base := cleanEnv(t)
	dv := dataversesim.New(dataversesim.Options{Token: dvToken})
	dvSrv := httptest.NewServer(dv)
	t.Cleanup(dvSrv.Close)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), pollTimeout)
		defer cancel()
		_ = dv.WaitIdle(ctx)
	})
	t.Setenv("MSISYNC_DATAVERSE_URL", dvSrv.URL)
	t.Setenv("MSISYNC_DATAVERSE_TOKEN", dvToken)
	t.Setenv("MSISYNC_DATAVERSE_APP_USER_ID", dv.AppUserID())
	t.Setenv("MSISYNC_MSI_INTERVAL", "0")
	startServe(t, base, "serve")
	mustRun(t, "dataverse", "register", "--url", base+"/webhooks/dataverse")

	user, err := dv.Create("systemuser", map[string]any{"firstname": "Grace", "lastname": "Hopper", "internalemailaddress": "grace@contoso.example"})
	if err != nil {
		t.Fatal(err)
	}
	contact, err := dv.Create("contact", map[string]any{"lastname": "Lovelace", "emailaddress1": "ada@contoso.example",
		"ownerid": dataversesim.Ref{LogicalName: "systemuser", ID: user}})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the contact in the sandbox", func() (bool, string) {
		st := sandboxState(t, base)
		return strings.EqualFold(str(find(st.Leads, "externalPersonId", contact), "externalSalesPersonId"), user), st.String()
	})

	body, _ := json.Marshal(map[string]any{"externalPersonId": contact, "fields": map[string]any{"priority": 91, "relativeUrgency": 12}})
	if code, _, resp := post(t, base+"/sandbox/marketo/msi", body); code != 200 {
		t.Fatalf("POST /sandbox/marketo/msi: %d %s", code, resp)
	}
	rep := msiReport(t, mustRun(t, "msi", "sync", "--once"))
	if rep["written"] != 1 || rep["notInMarketo"] != 0 {
		t.Errorf("msi sync --once against the running sandbox: %v, want written=1 notInMarketo=0", rep)
	}
	row, _ := dv.Get("contact", contact)
	if plain(row[msi.ColumnPriority]) != "91" || plain(row[msi.ColumnUrgency]) != "12" {
		t.Errorf("Dataverse contact MSI columns: priority %v, urgency %v; want 91 and 12", row[msi.ColumnPriority], row[msi.ColumnUrgency])
	}
	if rep := msiReport(t, mustRun(t, "msi", "sync", "--once")); rep["written"] != 0 {
		t.Errorf("second msi sync --once wrote %d persons, want 0", rep["written"])
	}
}
