package syncer_test

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/dataverse"
	"github.com/msisync/msisync/internal/dataverse/dataversesim"
	"github.com/msisync/msisync/internal/dataverse/remotecontext"
	"github.com/msisync/msisync/internal/marketo/marketosim"
	"github.com/msisync/msisync/internal/queue"
	"github.com/msisync/msisync/internal/receiver"
	"github.com/msisync/msisync/internal/syncer"
	"github.com/msisync/msisync/internal/syncer/mapping"
	"github.com/prometheus/client_golang/prometheus"
)

// dvStack is a stack fed the way production is: records written in the
// Dataverse simulator, whose registered webhook steps post real
// RemoteExecutionContext bodies (Target lookups without names, named
// images) to the HTTP receiver, which enqueues them for the syncer.
type dvStack struct {
	*stack
	dv *dataversesim.Server
}

// newDVStack registers steps (nil: msisync's default steps, with post
// images) and gives the worker Dataverse access when withDV is set.
func newDVStack(t *testing.T, withDV bool, steps []dataverse.StepSpec) *dvStack {
	t.Helper()
	// The runs with Dataverse access also get upper-case GUIDs in the
	// bodies (case must not matter anywhere).
	dv := dataversesim.New(dataversesim.Options{Token: "tok", Logger: slog.New(slog.DiscardHandler), UpperCaseGUIDs: withDV})
	dsrv := httptest.NewServer(dv)
	t.Cleanup(dsrv.Close)
	dc, err := dataverse.New(dataverse.Config{URL: dsrv.URL, Token: "tok", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	k := newStack(t, marketosim.Options{}, func(c *syncer.Config) {
		c.MaxAttempts = 2
		c.ParseNative = remotecontext.ParseServiceBus
		if withDV {
			c.Dataverse, c.IsNotFound = dc, dataverse.IsNotFound
		}
	})
	recv, err := receiver.New(receiver.Config{Keys: []string{"real-shape-key"}, Queue: k.q, Logger: slog.New(slog.DiscardHandler), Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	rsrv := httptest.NewServer(recv)
	t.Cleanup(rsrv.Close)
	if steps == nil {
		m := mapping.Default()
		steps = dataverse.StepsFor(m.Columns, m.WriteBack())
	}
	if _, err := dc.Register(context.Background(), dataverse.RegisterOptions{Salt: []byte("test-install-salt-for-syncer"), URL: rsrv.URL + receiver.RouteDataverse, Key: "real-shape-key", Steps: steps}); err != nil {
		t.Fatal(err)
	}
	return &dvStack{stack: k, dv: dv}
}

// settle waits for the simulator's webhooks, then runs the worker until the
// queue holds nothing (scheduled requeues included).
func (k *dvStack) settle() {
	k.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := k.dv.WaitIdle(ctx); err != nil {
		k.t.Fatal(err)
	}
	if f := k.dv.Stats().Failed; f != 0 {
		k.t.Fatalf("%d webhook deliveries failed", f)
	}
	for ctx.Err() == nil {
		if _, err := k.s.ProcessBatch(ctx); err != nil {
			k.t.Fatal(err)
		}
		n, err := k.q.Counts(ctx)
		if err != nil {
			k.t.Fatal(err)
		}
		if n.Active+n.Scheduled+n.Locked == 0 {
			return
		}
	}
	k.t.Fatal("queue not drained in time")
}

// graph creates a user, an account, a contact and an opportunity in
// Dataverse (owner, parent account set by id, as a caller binds them).
func (k *dvStack) graph() (opp, contact string) {
	k.t.Helper()
	user, err := k.dv.Create("systemuser", map[string]any{"firstname": "Ann", "lastname": "Seller", "internalemailaddress": "ann@contoso.example"})
	if err != nil {
		k.t.Fatal(err)
	}
	own := dataversesim.Ref{LogicalName: "systemuser", ID: user}
	acc, err := k.dv.Create("account", map[string]any{"name": "Contoso", "ownerid": own})
	if err != nil {
		k.t.Fatal(err)
	}
	contact, err = k.dv.Create("contact", map[string]any{"lastname": "Doe", "emailaddress1": "joe@contoso.example", "ownerid": own,
		"parentcustomerid": dataversesim.Ref{LogicalName: "account", ID: acc}})
	if err != nil {
		k.t.Fatal(err)
	}
	opp, err = k.dv.Create("opportunity", map[string]any{"name": "Big deal", "ownerid": own, "parentaccountid": dataversesim.Ref{LogicalName: "account", ID: acc}})
	if err != nil {
		k.t.Fatal(err)
	}
	return opp, contact
}

func (k *dvStack) roles() []string {
	var out []string
	for _, r := range k.sim.Dump().Roles {
		s, _ := r["role"].(string)
		out = append(out, s)
	}
	return out
}

func (k *dvStack) roleID(name string) string {
	for _, id := range k.dv.IDs("connectionrole") {
		if row, _ := k.dv.Get("connectionrole", id); row["name"] == name {
			return id
		}
	}
	k.t.Fatalf("no connectionrole %q", name)
	return ""
}

// The story: a stakeholder connection made in Dynamics reaches
// Marketo with the role's name, not its GUID, and so does a role change,
// whether or not the worker can read Dataverse. The webhook Target carries
// record2roleid without a name; the name comes from the post image.
func TestRealWebhookConnectionRoleArrivesByName(t *testing.T) {
	for _, withDV := range []bool{false, true} {
		name := "without Dataverse access"
		if withDV {
			name = "with Dataverse access"
		}
		t.Run(name, func(t *testing.T) {
			k := newDVStack(t, withDV, nil)
			opp, contact := k.graph()
			k.settle()
			_, err := k.dv.Connect(opp, contact, "Decision Maker")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := k.dv.Connect(opp, contact, "Champion"); err != nil { // creates the second role
				t.Fatal(err)
			}
			k.settle()
			if got := strings.Join(k.roles(), ","); got != "Champion,Decision Maker" && got != "Decision Maker,Champion" {
				t.Fatalf("Marketo roles %q, want Decision Maker and Champion", got)
			}
		})
	}
}

func TestRealWebhookRoleChangeArrivesByName(t *testing.T) {
	for _, withDV := range []bool{false, true} {
		t.Run(map[bool]string{false: "without Dataverse access", true: "with Dataverse access"}[withDV], func(t *testing.T) {
			k := newDVStack(t, withDV, nil)
			opp, contact := k.graph()
			buyer, err := k.dv.Create("connectionrole", map[string]any{"name": "Economic Buyer", "category": dataversesim.OptionValue(1000)})
			if err != nil {
				t.Fatal(err)
			}
			conn, err := k.dv.Connect(opp, contact, "Decision Maker")
			if err != nil {
				t.Fatal(err)
			}
			k.settle()
			if got := k.roles(); len(got) != 1 || got[0] != "Decision Maker" {
				t.Fatalf("Marketo roles %q, want [Decision Maker]", got)
			}
			if err := k.dv.Update("connection", conn, map[string]any{"record2roleid": dataversesim.Ref{LogicalName: "connectionrole", ID: buyer}}); err != nil {
				t.Fatal(err)
			}
			k.settle()
			if got := k.roles(); len(got) != 1 || got[0] != "Economic Buyer" {
				t.Fatalf("Marketo roles after the role change %q, want [Economic Buyer]", got)
			}
			if dead, err := k.q.ListDead(context.Background(), queue.Filter{}); err != nil || len(dead) != 0 {
				t.Fatalf("dead letters %v (%v), want none", dead, err)
			}
		})
	}
}

// Steps registered without images (a hand-made registration): the webhook
// names no role. With Dataverse access the worker reads connectionrole.name;
// without it the connection waits, then dead-letters with a reason naming
// the lookup and both fixes. Marketo never receives the GUID.
func TestRealWebhookWithoutImagesNamesRoleFromDataverseOrDeadLetters(t *testing.T) {
	m := mapping.Default()
	var bare []dataverse.StepSpec
	for _, s := range dataverse.StepsFor(m.Columns, m.WriteBack()) {
		s.PostImageAttributes, s.PreImageAttributes = nil, nil
		bare = append(bare, s)
	}
	t.Run("with Dataverse access", func(t *testing.T) {
		k := newDVStack(t, true, bare)
		opp, contact := k.graph()
		if _, err := k.dv.Connect(opp, contact, "Decision Maker"); err != nil {
			t.Fatal(err)
		}
		k.settle()
		if got := k.roles(); len(got) != 1 || got[0] != "Decision Maker" {
			t.Fatalf("Marketo roles %q, want [Decision Maker]", got)
		}
	})
	t.Run("without Dataverse access", func(t *testing.T) {
		k := newDVStack(t, false, bare)
		opp, contact := k.graph()
		conn, err := k.dv.Connect(opp, contact, "Decision Maker")
		if err != nil {
			t.Fatal(err)
		}
		k.settle()
		if got := k.roles(); len(got) != 0 {
			t.Fatalf("Marketo roles %q, want none (no name known)", got)
		}
		dead, err := k.q.ListDead(context.Background(), queue.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		var found bool
		for _, d := range dead {
			if strings.Contains(d.Description, conn) {
				found = true
				for _, want := range []string{"record2roleid", "post image", "MSISYNC_DATAVERSE_URL", "connectionrole.name"} {
					if !strings.Contains(d.Description, want) {
						t.Errorf("dead letter description %q does not mention %q", d.Description, want)
					}
				}
				if d.Reason != syncer.ReasonMissingData {
					t.Errorf("dead letter reason %q, want %q", d.Reason, syncer.ReasonMissingData)
				}
			}
		}
		if !found {
			t.Fatalf("no dead letter names connection %s: %+v", conn, dead)
		}
	})
}
