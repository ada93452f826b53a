package dataverse_test

import (
	"context"
	"strings"
	"testing"

	"github.com/msisync/msisync/internal/dataverse"
	"github.com/msisync/msisync/internal/dataverse/dataversesim"
	"github.com/msisync/msisync/internal/dataverse/remotecontext"
	"github.com/msisync/msisync/internal/event"
)

// A merge as the simulator emits it, parsed as the receiver parses it: the
// Merge message on the master (Target a reference, SubordinateId,
// UpdateContent), the children's Updates and the subordinate's
// deactivation, all with the Merge parent context.
func TestMergeWebhooksParse(t *testing.T) {
	e := newEnv(t, dataversesim.Options{})
	rcv := newReceiver(t)
	ctx := context.Background()
	if _, err := e.client.Register(ctx, dataverse.RegisterOptions{Salt: testSalt, URL: rcv.srv.URL + "/w", Key: "k"}); err != nil {
		t.Fatal(err)
	}
	x, _ := e.sim.Create("account", map[string]any{"name": "Acme"})
	y, _ := e.sim.Create("account", map[string]any{"name": "Acme Inc"})
	con, _ := e.sim.Create("contact", map[string]any{"lastname": "Doe", "parentcustomerid": dataversesim.Ref{LogicalName: "account", ID: y}})
	wait(t, e.sim)
	rcv.take()
	if err := e.sim.Merge("account", x, y, map[string]any{"websiteurl": "https://acme.example.com"}); err != nil {
		t.Fatal(err)
	}
	if err := e.sim.Merge("account", x, y, nil); err == nil || !strings.Contains(err.Error(), "not active") {
		t.Fatalf("merging an inactive subordinate again: %v", err)
	}
	wait(t, e.sim)
	seen := map[string]*event.Event{}
	for _, c := range rcv.take() {
		ev, err := remotecontext.Parse(c.body, remotecontext.HeadersFrom(c.header))
		if err != nil {
			t.Fatalf("parse %s: %v", c.body, err)
		}
		seen[ev.Entity+" "+ev.Message+" "+ev.RecordID] = ev
		if ev.Message == event.MessageMerge {
			in := c.ctx["InputParameters"].([]any)
			var keys []string
			for _, p := range in {
				keys = append(keys, p.(map[string]any)["key"].(string))
			}
			if strings.Join(keys, ",") != "Target,SubordinateId,UpdateContent,PerformParentingChecks" {
				t.Errorf("Merge InputParameters %v", keys)
			}
			target := in[0].(map[string]any)["value"].(map[string]any)
			if !strings.HasPrefix(target["__type"].(string), "EntityReference:") || target["Name"] != nil {
				t.Errorf("Merge Target %v: want an EntityReference without a name", target)
			}
		}
	}
	m := seen["account Merge "+x]
	if m == nil || m.SubordinateID != y || m.Attributes["websiteurl"].Text() != "https://acme.example.com" {
		t.Fatalf("Merge event %+v (seen %v)", m, keysOf(seen))
	}
	kid := seen["contact Update "+con]
	if r, ok := kid.Attributes["parentcustomerid"].Reference(); kid == nil || !ok || r.ID != x || kid.ParentMessage != event.MessageMerge {
		t.Fatalf("child Update %+v", kid)
	}
	sub := seen["account Update "+y]
	if sub == nil || !sub.Attributes["merged"].Bool || sub.ParentMessage != event.MessageMerge {
		t.Fatalf("subordinate Update %+v", sub)
	}
	if st, _ := sub.Attributes["statecode"].Int(); st != 1 {
		t.Fatalf("subordinate statecode %v", sub.Attributes["statecode"])
	}
	if r, ok := sub.Attributes["masterid"].Reference(); !ok || r.ID != x {
		t.Fatalf("subordinate masterid %v", sub.Attributes["masterid"])
	}
	if _, err := e.sim.Create("opportunity", map[string]any{"name": "n"}); err != nil {
		t.Fatal(err)
	}
	if err := e.sim.Merge("opportunity", x, y, nil); err == nil {
		t.Fatal("merged opportunities")
	}
	if err := e.sim.Merge("contact", con, strings.ToUpper(con), nil); err == nil || !strings.Contains(err.Error(), "into itself") {
		t.Fatalf("merge into itself: %v", err)
	}
	wait(t, e.sim) // the opportunity's Create reaches the receiver before it closes
}

func keysOf(m map[string]*event.Event) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
