package dataverse_test

import (
	"context"
	"sort"
	"sync"
	"testing"

	"github.com/msisync/msisync/internal/dataverse"
	"github.com/msisync/msisync/internal/dataverse/dataversesim"
)

// summary is "<entity> <message> parent=<parent message>" per call.
func summarize(t *testing.T, calls []call) []string {
	var out []string
	for _, c := range calls {
		parent := ""
		if p, ok := c.ctx["ParentContext"].(map[string]any); ok {
			parent = p["MessageName"].(string)
		}
		out = append(out, c.ctx["PrimaryEntityName"].(string)+" "+c.ctx["MessageName"].(string)+" parent="+parent)
	}
	sort.Strings(out)
	return out
}

func TestStateOwnerAndQualifyMessages(t *testing.T) {
	e := newEnv(t, dataversesim.Options{})
	rcv := newReceiver(t)
	ctx := context.Background()
	if _, err := e.client.Register(ctx, dataverse.RegisterOptions{Salt: testSalt, URL: rcv.srv.URL + "/w", Key: "k"}); err != nil {
		t.Fatal(err)
	}
	lead, err := e.sim.Create("lead", map[string]any{"firstname": "Lea", "lastname": "D", "companyname": "Fabrikam", "emailaddress1": "lea@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	wait(t, e.sim)
	rcv.take()

	acc, con, opp, err := e.sim.QualifyLead(lead)
	if err != nil {
		t.Fatal(err)
	}
	wait(t, e.sim)
	calls := rcv.take()
	got := summarize(t, calls)
	want := []string{"account Create parent=QualifyLead", "contact Create parent=QualifyLead", "lead QualifyLead parent=QualifyLead",
		"lead Update parent=QualifyLead", "opportunity Create parent=QualifyLead"}
	if len(got) != len(want) {
		t.Fatalf("QualifyLead calls %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("call %d = %q, want %q", i, got[i], want[i])
		}
	}
	for _, c := range calls {
		if c.ctx["PrimaryEntityName"] == "contact" {
			tattrs := kv(t, kv(t, c.ctx["InputParameters"])["Target"].(map[string]any)["Attributes"])
			if tattrs["originatingleadid"].(map[string]any)["Id"] != lead || tattrs["parentcustomerid"].(map[string]any)["Id"] != acc {
				t.Errorf("qualified contact target %v", tattrs)
			}
		}
		if c.ctx["MessageName"] == "QualifyLead" {
			out := kv(t, c.ctx["OutputParameters"])["CreatedEntities"].([]any)
			if len(out) != 3 || out[1].(map[string]any)["Id"] != con || out[2].(map[string]any)["Id"] != opp {
				t.Errorf("CreatedEntities %v", out)
			}
		}
	}
	if row, _ := e.sim.Get("lead", lead); row["statecode"] != dataversesim.OptionValue(1) || row["statuscode"] != dataversesim.OptionValue(3) {
		t.Errorf("lead state %v/%v, want 1/3", row["statecode"], row["statuscode"])
	}

	// SetState: an Update whose parent is SetState (with EntityMoniker), plus the SetState step.
	if err := e.sim.SetState("opportunity", opp, 1, 3); err != nil {
		t.Fatal(err)
	}
	wait(t, e.sim)
	calls = rcv.take()
	if got := summarize(t, calls); len(got) != 2 || got[0] != "opportunity SetState parent=SetState" || got[1] != "opportunity Update parent=SetState" {
		t.Fatalf("SetState calls %v", got)
	}
	for _, c := range calls {
		in := kv(t, c.ctx["ParentContext"].(map[string]any)["InputParameters"])
		if in["EntityMoniker"].(map[string]any)["Id"] != opp || in["State"].(map[string]any)["Value"] != 1.0 || in["Status"].(map[string]any)["Value"] != 3.0 {
			t.Errorf("SetState parent input %v", in)
		}
	}
	if err := e.sim.SetState("opportunity", opp, 2, 3); err == nil {
		t.Error("SetState accepted status 3 for state 2")
	}

	// Assign: the Assign step plus the ownerid Update.
	u, _ := e.sim.Create("systemuser", map[string]any{"firstname": "New", "lastname": "Owner", "internalemailaddress": "no@example.com"})
	wait(t, e.sim)
	rcv.take()
	if err := e.sim.Assign("contact", con, u); err != nil {
		t.Fatal(err)
	}
	wait(t, e.sim)
	calls = rcv.take()
	if got := summarize(t, calls); len(got) != 2 || got[0] != "contact Assign parent=Assign" || got[1] != "contact Update parent=Assign" {
		t.Fatalf("Assign calls %v", got)
	}
	for _, c := range calls {
		if c.ctx["MessageName"] == "Assign" {
			if a := kv(t, c.ctx["InputParameters"])["Assignee"].(map[string]any); a["Id"] != u || a["LogicalName"] != "systemuser" {
				t.Errorf("Assignee %v", a)
			}
		}
	}
}

func TestSplitStateUpdatesFireTwice(t *testing.T) {
	e := newEnv(t, dataversesim.Options{SplitStateUpdates: true})
	rcv := newReceiver(t)
	ctx := context.Background()
	if _, err := e.client.Register(ctx, dataverse.RegisterOptions{Salt: testSalt, URL: rcv.srv.URL + "/w", Key: "k"}); err != nil {
		t.Fatal(err)
	}
	acc, _ := e.sim.Create("account", map[string]any{"name": "A"})
	wait(t, e.sim)
	rcv.take()
	if err := e.client.Update(ctx, "account", acc, map[string]any{"name": "B", "statecode": 1}); err != nil {
		t.Fatal(err)
	}
	wait(t, e.sim)
	calls := rcv.take()
	if len(calls) != 2 {
		t.Fatalf("%d Update calls, want 2", len(calls))
	}
	first := kv(t, kv(t, calls[0].ctx["InputParameters"])["Target"].(map[string]any)["Attributes"])
	second := kv(t, kv(t, calls[1].ctx["InputParameters"])["Target"].(map[string]any)["Attributes"])
	if _, ok := first["statecode"]; ok || first["name"] != "B" || first["accountid"] != acc {
		t.Errorf("first Update %v, want name without state", first)
	}
	if _, ok := second["name"]; ok || second["statecode"] == nil || calls[1].ctx["ParentContext"].(map[string]any)["MessageName"] != "SetState" {
		t.Errorf("second Update %v, want the state with a SetState parent", second)
	}
}

func TestConcurrentWritesDeliverEveryChange(t *testing.T) {
	e := newEnv(t, dataversesim.Options{})
	rcv := newReceiver(t)
	ctx := context.Background()
	if _, err := e.client.Register(ctx, dataverse.RegisterOptions{Salt: testSalt, URL: rcv.srv.URL + "/w", Key: "k",
		Steps: []dataverse.StepSpec{{Entity: "contact", Message: "Update", FilteringAttributes: []string{"jobtitle"}}}}); err != nil {
		t.Fatal(err)
	}
	res, err := e.sim.Seed(dataversesim.SeedOptions{Contacts: 40})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i, id := range res.IDs["contact"] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%2 == 0 {
				errs <- e.client.Update(ctx, "contact", id, map[string]any{"jobtitle": "api"})
			} else {
				errs <- e.sim.Update("contact", id, map[string]any{"jobtitle": "user"})
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	wait(t, e.sim)
	got := map[string]bool{}
	for _, c := range rcv.take() {
		got[c.ctx["PrimaryEntityId"].(string)] = true
	}
	if len(got) != 40 {
		t.Errorf("webhooks for %d of 40 updated contacts", len(got))
	}
}
