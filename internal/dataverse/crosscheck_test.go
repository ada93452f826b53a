package dataverse_test

import (
	"context"
	"testing"

	"github.com/msisync/msisync/internal/dataverse"
	"github.com/msisync/msisync/internal/dataverse/dataversesim"
	"github.com/msisync/msisync/internal/dataverse/remotecontext"
	"github.com/msisync/msisync/internal/event"
)

// TestSimulatorPayloadsParse checks that the receiver's parser reads every
// kind of delivery the simulator makes, so the two agree on the format.
func TestSimulatorPayloadsParse(t *testing.T) {
	e := newEnv(t, dataversesim.Options{TruncateOver: 20000})
	rcv := newReceiver(t)
	ctx := context.Background()
	if _, err := e.client.Register(ctx, dataverse.RegisterOptions{Salt: testSalt, URL: rcv.srv.URL + "/w", Key: "k"}); err != nil {
		t.Fatal(err)
	}
	acc, _ := e.sim.Create("account", map[string]any{"name": "Contoso", "revenue": dataversesim.Money(10.5)})
	con, _ := e.sim.Create("contact", map[string]any{"firstname": "Ada", "lastname": "L", "parentcustomerid": dataversesim.Ref{LogicalName: "account", ID: acc}})
	_ = e.client.Update(ctx, "contact", con, map[string]any{"emailaddress1": "ada@example.com"})
	lead, _ := e.sim.Create("lead", map[string]any{"lastname": "Lead", "companyname": "Fabrikam"})
	_, _, opp, err := e.sim.QualifyLead(lead)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = e.sim.Connect(opp, con, "Stakeholder")
	_ = e.sim.SetState("opportunity", opp, 1, 3)
	big, _ := e.sim.Create("account", map[string]any{"name": "Big", "description": string(make([]byte, 30000))})
	_ = e.sim.Update("account", acc, map[string]any{"name": "Contoso Big"})
	_ = e.sim.Delete("contact", con)
	wait(t, e.sim)
	calls := rcv.take()
	if len(calls) < 12 {
		t.Fatalf("only %d deliveries", len(calls))
	}
	seen := map[string]bool{}
	for _, c := range calls {
		ev, err := remotecontext.Parse(c.body, remotecontext.HeadersFrom(c.header))
		if err != nil {
			t.Fatalf("parse %s %s: %v", c.header.Get("x-ms-dynamics-entity-name"), c.header.Get("x-ms-dynamics-request-name"), err)
		}
		if ev.Entity != c.header.Get("x-ms-dynamics-entity-name") || ev.RecordID != c.ctx["PrimaryEntityId"] || ev.OrgID != e.sim.OrgID() {
			t.Errorf("event %s/%s org %s, want headers' entity and %v", ev.Entity, ev.RecordID, ev.OrgID, c.ctx["PrimaryEntityId"])
		}
		seen[ev.Entity+" "+ev.Message] = true
		switch {
		case ev.Entity == event.EntityContact && ev.Message == event.MessageCreate && ev.RecordID == con:
			if r, ok := ev.Attributes["parentcustomerid"].Reference(); !ok || r.ID != acc {
				t.Errorf("contact Create parentcustomerid = %+v", ev.Attributes["parentcustomerid"])
			}
		case ev.Entity == event.EntityContact && ev.Message == event.MessageUpdate:
			if ev.UserID != e.sim.AppUserID() {
				t.Errorf("Web API update: UserID %s, want app user %s", ev.UserID, e.sim.AppUserID())
			}
		case ev.Entity == event.EntityAccount && ev.Message == event.MessageUpdate:
			if _, hasName := ev.Attributes["name"]; hasName && ev.Truncated {
				t.Error("name update should fit")
			}
		case ev.Entity == event.EntityContact && ev.Message == event.MessageDelete:
			if len(ev.PreImages) == 0 {
				t.Error("Delete event without pre image")
			}
		}
		if ev.RecordID == big && ev.Truncated && len(ev.Attributes) == 0 {
			seen["truncated"] = true
		}
		if ev.Entity == event.EntityAccount && ev.Message == event.MessageCreate && ev.ParentMessage == event.MessageQualifyLead {
			seen["account Create from QualifyLead"] = true
		}
	}
	for _, k := range []string{"account Create", "contact Create", "contact Update", "lead Create", "opportunity Create", "connection Create",
		"contact Delete", "account Create from QualifyLead", "truncated"} {
		if !seen[k] {
			t.Errorf("no parsed %s event (seen %v)", k, seen)
		}
	}
}
