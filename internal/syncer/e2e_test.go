package syncer_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/dataverse"
	"github.com/msisync/msisync/internal/dataverse/dataversesim"
	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/marketo"
	"github.com/msisync/msisync/internal/marketo/marketosim"
	"github.com/msisync/msisync/internal/queue"
	"github.com/msisync/msisync/internal/queue/sqlitequeue"
	"github.com/msisync/msisync/internal/store/sqlitestore"
	"github.com/msisync/msisync/internal/syncer"
)

type stack struct {
	t   *testing.T
	sim *marketosim.Server
	q   *sqlitequeue.Queue
	st  *sqlitestore.Store
	mk  *marketo.Client
	s   *syncer.Syncer
}

func newStack(t *testing.T, simOpts marketosim.Options, mod func(*syncer.Config)) *stack {
	t.Helper()
	ctx := context.Background()
	simOpts.ClientID, simOpts.ClientSecret = "id", "secret"
	sim := marketosim.New(simOpts)
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	q, err := sqlitequeue.Open(ctx, filepath.Join(dir, "queue.db"), sqlitequeue.Options{LockDuration: 30 * time.Second, PollInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	st, err := sqlitestore.Open(ctx, filepath.Join(dir, "store.db"), sqlitestore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	mk, err := marketo.New(marketo.Config{BaseURL: srv.URL, ClientID: "id", ClientSecret: "secret", CallsPerWindow: 100, MaxConcurrent: 10,
		InitialBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	cfg := syncer.Config{Queue: q, Store: st, Marketo: mk, IdleWait: 20 * time.Millisecond, RequeueBase: 10 * time.Millisecond, RequeueMax: 50 * time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	s, err := syncer.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &stack{t: t, sim: sim, q: q, st: st, mk: mk, s: s}
}

func (k *stack) send(evs ...*event.Event) {
	k.t.Helper()
	var msgs []queue.Message
	for i, ev := range evs {
		if ev.Version == 0 {
			ev.Version = int64(1000 + i)
		}
		syncer.CheckTargetNames(k.t, ev, "")
		ev.ID = ev.DeriveID()
		b, err := event.Encode(ev)
		if err != nil {
			k.t.Fatal(err)
		}
		msgs = append(msgs, queue.Message{ID: ev.ID, Body: b})
	}
	if err := k.q.Send(context.Background(), msgs...); err != nil {
		k.t.Fatal(err)
	}
}

// drain runs batches until three receives in a row come back empty.
func (k *stack) drain() syncer.Stats {
	k.t.Helper()
	var total syncer.Stats
	idle := 0
	for i := 0; i < 500 && idle < 3; i++ {
		st, err := k.s.ProcessBatch(context.Background())
		if err != nil {
			k.t.Fatal(err)
		}
		if st.Received == 0 {
			idle++
			continue
		}
		idle = 0
		total.Received += st.Received
		total.Completed += st.Completed
		total.Requeued += st.Requeued
		total.DeadLettered += st.DeadLettered
	}
	return total
}

func guid(kind byte, n int) string {
	return fmt.Sprintf("%c%07x-1111-4222-8333-%012x", "abcdef"[kind%6], n, n)
}

func mkEvent(entity, id string, attrs event.Attributes) *event.Event {
	return &event.Event{Schema: 1, Source: event.SourceWebhook, Entity: entity, RecordID: id, Message: event.MessageCreate,
		Attributes: attrs, OccurredAt: time.Now().UTC()}
}

func TestE2EGraphPostedInReverseOrderIsLinked(t *testing.T) {
	k := newStack(t, marketosim.Options{}, nil)
	user, acc, con, opp, conn := guid(0, 1), guid(1, 1), guid(2, 1), guid(3, 1), guid(4, 1)
	own := event.Reference(event.EntitySystemUser, strings.ToUpper(user), "")
	evs := []*event.Event{
		syncer.WebhookShape(mkEvent(event.EntityConnection, conn, event.Attributes{"record1id": event.Reference(event.EntityOpportunity, opp, ""),
			"record2id": event.Reference(event.EntityContact, con, ""), "record2roleid": event.Reference("connectionrole", strings.ToUpper(guid(5, 1)), "Decision Maker")})),
		mkEvent(event.EntityOpportunity, opp, event.Attributes{"name": event.String("Deal"), "ownerid": own, "estimatedvalue": event.Money("5000"),
			"parentaccountid": event.Reference(event.EntityAccount, acc, ""), "statecode": event.Option(1)}),
		mkEvent(event.EntityContact, con, event.Attributes{"emailaddress1": event.String("joe@example.com"), "lastname": event.String("Doe"), "ownerid": own,
			"parentcustomerid": event.Reference(event.EntityAccount, acc, "")}),
		mkEvent(event.EntityAccount, acc, event.Attributes{"name": event.String("Acme"), "ownerid": own}),
		mkEvent(event.EntitySystemUser, user, event.Attributes{"internalemailaddress": event.String("ann@example.com")}),
	}
	k.send(evs...)
	st := k.drain()
	if st.Completed != 5 || st.DeadLettered != 0 {
		t.Fatalf("stats %+v", st)
	}
	d := k.sim.Dump()
	if len(d.SalesPersons) != 1 || d.SalesPersons[0]["email"] != "ann@example.com" {
		t.Fatalf("sales persons %v", d.SalesPersons)
	}
	if len(d.Companies) != 1 || d.Companies[0]["externalSalesPersonId"] != user || d.Companies[0]["externalCompanyId"] != acc {
		t.Fatalf("companies %v", d.Companies)
	}
	if len(d.Leads) != 1 || d.Leads[0]["externalPersonId"] != con || d.Leads[0]["externalCompanyId"] != acc || d.Leads[0]["externalSalesPersonId"] != user {
		t.Fatalf("leads %v", d.Leads)
	}
	if len(d.Opportunities) != 1 || d.Opportunities[0]["externalCompanyId"] != acc || d.Opportunities[0]["externalSalesPersonId"] != user ||
		fmt.Sprint(d.Opportunities[0]["isWon"]) != "true" {
		t.Fatalf("opportunities %v", d.Opportunities)
	}
	if len(d.Roles) != 1 || fmt.Sprint(d.Roles[0]["leadId"]) != fmt.Sprint(d.Leads[0]["id"]) || d.Roles[0]["role"] != "Decision Maker" || d.Roles[0]["externalOpportunityId"] != opp {
		t.Fatalf("roles %v (lead %v)", d.Roles, d.Leads[0]["id"])
	}
}

func Test600ContactCreatesInAHandfulOfCalls(t *testing.T) {
	k := newStack(t, marketosim.Options{}, nil)
	user, acc := guid(0, 1), guid(1, 1)
	own := event.Reference(event.EntitySystemUser, user, "")
	k.send(mkEvent(event.EntitySystemUser, user, event.Attributes{"internalemailaddress": event.String("ann@example.com")}),
		mkEvent(event.EntityAccount, acc, event.Attributes{"name": event.String("Acme"), "ownerid": own}))
	k.drain()
	before := k.sim.Stats()
	var evs []*event.Event
	for i := 0; i < 600; i++ {
		evs = append(evs, mkEvent(event.EntityContact, guid(2, i), event.Attributes{"emailaddress1": event.String(fmt.Sprintf("p%d@example.com", i)),
			"ownerid": own, "parentcustomerid": event.Reference(event.EntityAccount, acc, "")}))
	}
	k.send(evs...)
	k.drain()
	after := k.sim.Stats()
	if n := len(k.sim.Dump().Leads); n != 600 {
		t.Fatalf("%d leads in Marketo", n)
	}
	calls := 0
	for ep, n := range after.Requests {
		if ep != "identity" {
			calls += n - before.Requests[ep]
		}
	}
	// Per 300 contacts: an email query and a createDuplicate; once per
	// installation, the probe (1011) and, for the contacts of its batch
	// (marked as being created before the probe), externalPersonId queries.
	if calls > 7 {
		t.Fatalf("%d Marketo calls for 600 contacts: %v", calls, after.Requests)
	}
	t.Logf("600 contacts in %d calls: %v", calls, after.Requests)
}

func TestE2EUpdateOfUnknownContactIsRereadWithItsDependencies(t *testing.T) {
	dv := dataversesim.New(dataversesim.Options{Token: "tok", Logger: slog.New(slog.DiscardHandler)})
	dsrv := httptest.NewServer(dv)
	t.Cleanup(dsrv.Close)
	dc, err := dataverse.New(dataverse.Config{URL: dsrv.URL, Token: "tok", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	acc, err := dv.Create("account", map[string]any{"name": "Acme"})
	if err != nil {
		t.Fatal(err)
	}
	con, err := dv.Create("contact", map[string]any{"lastname": "Doe", "emailaddress1": "joe@example.com", "jobtitle": "CTO",
		"parentcustomerid": dataversesim.Ref{LogicalName: "account", ID: acc}})
	if err != nil {
		t.Fatal(err)
	}
	k := newStack(t, marketosim.Options{}, func(c *syncer.Config) { c.Dataverse = dc; c.IsNotFound = dataverse.IsNotFound })
	// Only the changed column, for a contact Marketo has never seen, whose
	// account and owner are not there either.
	up := mkEvent(event.EntityContact, con, event.Attributes{"jobtitle": event.String("CTO")})
	up.Message = event.MessageUpdate
	k.send(up)
	st := k.drain()
	if st.Completed != 1 {
		t.Fatalf("stats %+v", st)
	}
	d := k.sim.Dump()
	user := event.NormalizeID(dv.UserID())
	if len(d.SalesPersons) != 1 || d.SalesPersons[0]["externalSalesPersonId"] != user {
		t.Fatalf("sales persons %v (owner %s)", d.SalesPersons, user)
	}
	if len(d.Companies) != 1 || d.Companies[0]["externalCompanyId"] != acc || d.Companies[0]["company"] != "Acme" {
		t.Fatalf("companies %v", d.Companies)
	}
	if len(d.Leads) != 1 || d.Leads[0]["externalPersonId"] != con || d.Leads[0]["externalCompanyId"] != acc ||
		d.Leads[0]["email"] != "joe@example.com" || d.Leads[0]["title"] != "CTO" || d.Leads[0]["externalSalesPersonId"] != user {
		t.Fatalf("leads %v", d.Leads)
	}
}

// With Dataverse configured, the syncer reads each connection role's
// category from Dataverse: a Sales Team role (1001) on an opportunity→contact
// connection does not become a Marketo role. A Stakeholder role does, and
// goes away when its connection is deactivated.
func TestE2EStakeholderRolesFromDataverseAndDeactivation(t *testing.T) {
	dv := dataversesim.New(dataversesim.Options{Token: "tok", Logger: slog.New(slog.DiscardHandler)})
	dsrv := httptest.NewServer(dv)
	t.Cleanup(dsrv.Close)
	dc, err := dataverse.New(dataverse.Config{URL: dsrv.URL, Token: "tok", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	champion, err := dv.Create("connectionrole", map[string]any{"name": "Sponsor", "category": dataversesim.OptionValue(1000)})
	if err != nil {
		t.Fatal(err)
	}
	sales, err := dv.Create("connectionrole", map[string]any{"name": "Deal Desk", "category": dataversesim.OptionValue(1001)})
	if err != nil {
		t.Fatal(err)
	}
	k := newStack(t, marketosim.Options{}, func(c *syncer.Config) { c.Dataverse = dc; c.IsNotFound = dataverse.IsNotFound })
	user, acc, con, opp := guid(0, 1), guid(1, 1), guid(2, 1), guid(3, 1)
	own := event.Reference(event.EntitySystemUser, user, "")
	conn := func(id, roleID, role string) *event.Event {
		return syncer.WebhookShape(mkEvent(event.EntityConnection, id, event.Attributes{"record1id": event.Reference(event.EntityOpportunity, opp, ""),
			"record2id": event.Reference(event.EntityContact, con, ""), "record2roleid": event.Reference("connectionrole", roleID, role)}))
	}
	stake, desk := guid(4, 1), guid(4, 2)
	k.send(
		mkEvent(event.EntitySystemUser, user, event.Attributes{"internalemailaddress": event.String("ann@example.com")}),
		mkEvent(event.EntityAccount, acc, event.Attributes{"name": event.String("Acme"), "ownerid": own}),
		mkEvent(event.EntityContact, con, event.Attributes{"emailaddress1": event.String("joe@example.com"), "ownerid": own,
			"parentcustomerid": event.Reference(event.EntityAccount, acc, "")}),
		mkEvent(event.EntityOpportunity, opp, event.Attributes{"name": event.String("Deal"), "ownerid": own,
			"parentaccountid": event.Reference(event.EntityAccount, acc, "")}),
		conn(stake, champion, "Sponsor"), conn(desk, sales, "Deal Desk"),
	)
	if st := k.drain(); st.Completed != 6 || st.DeadLettered != 0 {
		t.Fatalf("stats %+v", st)
	}
	if d := k.sim.Dump(); len(d.Roles) != 1 || d.Roles[0]["role"] != "Sponsor" || d.Roles[0]["externalOpportunityId"] != opp {
		t.Fatalf("roles %v, want only the Sponsor", d.Roles)
	}
	off := mkEvent(event.EntityConnection, stake, event.Attributes{"statecode": event.Option(1), "statuscode": event.Option(2)})
	off.Message, off.Version = event.MessageUpdate, 2000
	k.send(off)
	if st := k.drain(); st.Completed != 1 {
		t.Fatalf("stats %+v", st)
	}
	if d := k.sim.Dump(); len(d.Roles) != 0 {
		t.Fatalf("roles %v after deactivation", d.Roles)
	}
}
