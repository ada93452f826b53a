package syncer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/marketo/marketotype"
	"github.com/msisync/msisync/internal/queue"
	"github.com/msisync/msisync/internal/store"
	"github.com/prometheus/client_golang/prometheus"
)

func gid(prefix string, n int) string {
	return fmt.Sprintf("%08x-0000-4000-8000-%012d", 0xa0000000+len(prefix)*0x1000000+n, n)
}

var (
	userID    = gid("u", 1)
	accountID = gid("acc", 1)
	contactID = gid("con", 1)
	leadID    = gid("lead", 1)
	oppID     = gid("oppo", 1)
	connID    = gid("conne", 1)
	appUser   = gid("appusr", 9)
)

type env struct {
	t   *testing.T
	clk *clock.Fake
	q   *fakeQueue
	st  *fakeStore
	mk  *fakeMarketo
	dv  *fakeDataverse
	s   *Syncer
	seq int
	// namedTargets, when set, says why the test sends Target lookups with
	// names (CheckTargetNames fails the test otherwise).
	namedTargets string
}

func newEnv(t *testing.T, mod func(*Config)) *env {
	t.Helper()
	e := &env{t: t, clk: clock.NewFake(time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)), st: newFakeStore(), mk: newFakeMarketo()}
	e.q = newFakeQueue(e.clk)
	cfg := Config{Queue: e.q, Store: e.st, Marketo: e.mk, Clock: e.clk, MaxAttempts: 3, AppUserID: appUser,
		IsNotFound: func(err error) bool { return errors.Is(err, errFakeNotFound) }}
	if mod != nil {
		mod(&cfg)
	}
	if dv, ok := cfg.Dataverse.(*fakeDataverse); ok {
		e.dv = dv
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.s = s
	return e
}

func (e *env) send(evs ...*event.Event) {
	e.t.Helper()
	for _, ev := range evs {
		e.seq++
		if ev.Version == 0 && ev.Message != event.MessageDelete {
			ev.Version = int64(e.seq)
		}
		CheckTargetNames(e.t, ev, e.namedTargets)
		ev.ID = ev.DeriveID()
		b, err := event.Encode(ev)
		if err != nil {
			e.t.Fatal(err)
		}
		if err := e.q.Send(context.Background(), queue.Message{ID: ev.ID, Body: b}); err != nil {
			e.t.Fatal(err)
		}
	}
}

// drain processes batches, moving the clock past scheduled re-sends, until
// the queue is empty (bounded).
func (e *env) drain() Stats {
	e.t.Helper()
	var total Stats
	for i := 0; i < 100 && e.q.pending() > 0; i++ {
		st, err := e.s.ProcessBatch(context.Background())
		if err != nil {
			e.t.Fatal(err)
		}
		total.Add(st)
		if st.Received == 0 {
			e.clk.Advance(10 * time.Minute)
		}
	}
	if n := e.q.pending(); n > 0 {
		e.t.Fatalf("%d messages still pending", n)
	}
	return total
}

func ev(entity, id, msg string, attrs event.Attributes) *event.Event {
	return &event.Event{Schema: 1, Source: event.SourceWebhook, Entity: entity, RecordID: id, Message: msg, Attributes: attrs,
		OccurredAt: time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC)}
}

func owner(id string) event.Value { return event.Reference(event.EntitySystemUser, id, "") }

func userEv(id, email string) *event.Event {
	return ev(event.EntitySystemUser, id, event.MessageCreate, event.Attributes{"internalemailaddress": event.String(email), "firstname": event.String("Ann")})
}
func accountEv(id, own string) *event.Event {
	return ev(event.EntityAccount, id, event.MessageCreate, event.Attributes{"name": event.String("Acme " + id[:4]), "ownerid": owner(own)})
}
func contactEv(id, acc, own, email string) *event.Event {
	a := event.Attributes{"emailaddress1": event.String(email), "lastname": event.String("Doe"), "ownerid": owner(own)}
	if acc != "" {
		a["parentcustomerid"] = event.Reference(event.EntityAccount, acc, "")
	}
	return ev(event.EntityContact, id, event.MessageCreate, a)
}
func oppEv(id, acc, own string) *event.Event {
	return ev(event.EntityOpportunity, id, event.MessageCreate, event.Attributes{"name": event.String("Deal"), "ownerid": owner(own),
		"parentaccountid": event.Reference(event.EntityAccount, acc, ""), "statecode": event.Option(0)})
}
func connEv(id, opp, contact, role string) *event.Event {
	return WebhookShape(ev(event.EntityConnection, id, event.MessageCreate, event.Attributes{
		"record1id":     event.Reference(event.EntityOpportunity, opp, ""),
		"record2id":     event.Reference(event.EntityContact, contact, ""),
		"record2roleid": event.Reference("connectionrole", gid("role", len(role)), role)}))
}

func graph() []*event.Event {
	return []*event.Event{
		userEv(userID, "ann@example.com"), accountEv(accountID, userID), contactEv(contactID, accountID, userID, "joe@example.com"),
		oppEv(oppID, accountID, userID), connEv(connID, oppID, contactID, "Decision Maker"),
	}
}

func TestGraphInReverseOrderIsLinked(t *testing.T) {
	e := newEnv(t, nil)
	g := graph()
	for i := len(g) - 1; i >= 0; i-- {
		e.send(g[i])
	}
	st := e.drain()
	if st.Completed != 5 || st.Requeued != 0 || st.DeadLettered != 0 {
		t.Fatalf("stats %+v", st)
	}
	if c := e.mk.companies[accountID]; c == nil || c["externalSalesPersonId"] != userID {
		t.Fatalf("company = %v", c)
	}
	lid, l := e.mk.leadByExt(contactID)
	if l == nil || l["externalCompanyId"] != accountID || l["externalSalesPersonId"] != userID || l["email"] != "joe@example.com" {
		t.Fatalf("lead = %v", l)
	}
	if o := e.mk.opps[oppID]; o == nil || o["externalCompanyId"] != accountID || o["externalSalesPersonId"] != userID {
		t.Fatalf("opportunity = %v", o)
	}
	if r := e.mk.roles[fmt.Sprintf("%s|%d|Decision Maker", oppID, lid)]; r == nil {
		t.Fatalf("role missing: %v", e.mk.roles)
	}
	// One sync call per object type, in MSI order.
	var order []string
	for _, c := range e.mk.calls {
		if strings.Contains(c, " sync ") {
			order = append(order, strings.Fields(c)[0])
		}
	}
	if got := strings.Join(order, ","); got != "salespersons,companies,leads,leads,opportunities,opportunities/roles" {
		// auto strategy probes lookupField first (1011 on this fake), then splits.
		t.Fatalf("sync order = %s", got)
	}
	if c, _ := e.st.GetConnections(context.Background(), []string{connID}); c[connID].Role != "Decision Maker" {
		t.Fatalf("connection not stored: %v", c)
	}
	links, _ := e.st.GetLinks(context.Background(), store.KindPerson, []string{contactID})
	if links[contactID].Entity != event.EntityContact || links[contactID].Email != "joe@example.com" || links[contactID].MarketoID != fmt.Sprint(lid) {
		t.Fatalf("person link = %+v", links[contactID])
	}
}

func TestDependencyArrivingLaterIsWaitedFor(t *testing.T) {
	e := newEnv(t, nil)
	e.send(contactEv(contactID, accountID, userID, "joe@example.com"))
	st, err := e.s.ProcessBatch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Requeued != 1 || len(e.mk.leads) != 0 {
		t.Fatalf("stats %+v leads %v", st, e.mk.leads)
	}
	last := e.q.sent[len(e.q.sent)-1]
	if last.Properties[queue.PropAttempt] != "1" || !last.ScheduledAt.Equal(e.clk.Now().Add(2*time.Second)) {
		t.Fatalf("requeued %+v", last)
	}
	e.send(userEv(userID, "ann@example.com"), accountEv(accountID, userID))
	e.drain()
	if _, l := e.mk.leadByExt(contactID); l == nil || l["externalCompanyId"] != accountID {
		t.Fatalf("lead = %v", l)
	}
	if len(e.q.deadLetters()) != 0 {
		t.Fatalf("dead letters %v", e.q.deadLetters())
	}
}

func TestMissingDependencyIsDeadLetteredWithItsName(t *testing.T) {
	e := newEnv(t, nil)
	e.send(userEv(userID, "ann@example.com"), contactEv(contactID, accountID, userID, "joe@example.com"))
	e.drain()
	dl := e.q.deadLetters()
	if len(dl) != 1 {
		t.Fatalf("dead letters %v", dl)
	}
	want := "missing dependency: account " + accountID + " (company of contact " + contactID + ")"
	if dl[0].Reason != ReasonMissingDependency || dl[0].Description != want {
		t.Fatalf("dead letter %q / %q, want %q", dl[0].Reason, dl[0].Description, want)
	}
	if dl[0].Properties[queue.PropAttempt] != "3" {
		t.Fatalf("attempts %v", dl[0].Properties)
	}
}

func TestTransientFailureOnLastAttemptKeepsTheRealReason(t *testing.T) {
	e := newEnv(t, nil)
	e.send(userEv(userID, "ann@example.com"))
	e.drain()
	e.send(contactEv(contactID, accountID, userID, "joe@example.com"))
	for i := 0; i < 3; i++ { // attempts 0..2: the account is missing
		if _, err := e.s.ProcessBatch(context.Background()); err != nil {
			t.Fatal(err)
		}
		e.clk.Advance(time.Minute)
	}
	// Last attempt: the lookup itself fails transiently.
	e.mk.failQuery = &marketotype.Error{Op: "query companies", Code: "604", Message: "Request timed out"}
	e.drain()
	dl := e.q.deadLetters()
	want := "missing dependency: account " + accountID + " (company of contact " + contactID + ")"
	if len(dl) != 1 || dl[0].Reason != ReasonMissingDependency || dl[0].Description != want {
		t.Fatalf("dead letters %+v", dl)
	}
}

func TestDataverseReadsMissingDependencyAndSyncsItFirst(t *testing.T) {
	dv := &fakeDataverse{records: map[string]event.Attributes{
		"account/" + accountID: {"name": event.String("Acme"), "ownerid": owner(userID)},
		"systemuser/" + userID: {"internalemailaddress": event.String("ann@example.com")},
	}}
	e := newEnv(t, func(c *Config) { c.Dataverse = dv })
	e.send(contactEv(contactID, accountID, userID, "joe@example.com"))
	st, err := e.s.ProcessBatch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Completed != 1 || st.Requeued != 0 {
		t.Fatalf("stats %+v", st)
	}
	if e.mk.salesPersons[userID]["email"] != "ann@example.com" || e.mk.companies[accountID]["company"] != "Acme" {
		t.Fatalf("dependencies not synced: %v %v", e.mk.salesPersons, e.mk.companies)
	}
	if _, l := e.mk.leadByExt(contactID); l == nil {
		t.Fatal("contact not synced")
	}
}

func TestCoalesceMergesInVersionOrderAndDropsStale(t *testing.T) {
	e := newEnv(t, nil)
	e.send(userEv(userID, "ann@example.com"))
	e.drain()
	c := contactEv(contactID, "", userID, "joe@example.com")
	c.Version = 10
	u2 := ev(event.EntityContact, contactID, event.MessageUpdate, event.Attributes{"jobtitle": event.String("CTO"), "lastname": event.String("Roe")})
	u2.Version = 30
	u1 := ev(event.EntityContact, contactID, event.MessageUpdate, event.Attributes{"lastname": event.String("Old")})
	u1.Version = 20
	e.send(u2, c, u1) // out of order
	before := e.mk.callCount("leads sync")
	e.drain()
	if n := e.mk.callCount("leads sync") - before; n > 2 {
		t.Fatalf("%d lead sync calls for one record", n)
	}
	_, l := e.mk.leadByExt(contactID)
	if l["lastName"] != "Roe" || l["title"] != "CTO" || l["email"] != "joe@example.com" {
		t.Fatalf("lead = %v", l)
	}
	// A late, older update is stale: no write.
	old := ev(event.EntityContact, contactID, event.MessageUpdate, event.Attributes{"lastname": event.String("Stale")})
	old.Version = 25
	e.send(old)
	calls := len(e.mk.calls)
	st := e.drain()
	if st.Skipped != 1 || len(e.mk.calls) != calls {
		t.Fatalf("stale update written: %+v calls %v", st, e.mk.calls[calls:])
	}
}

func TestOlderPartialUpdateArrivingLateStillAppliesItsColumns(t *testing.T) {
	e := newEnv(t, nil)
	e.send(userEv(userID, "ann@example.com"))
	c := contactEv(contactID, "", userID, "joe@example.com")
	c.Version = 10
	e.send(c)
	e.drain()
	newer := ev(event.EntityContact, contactID, event.MessageUpdate, event.Attributes{"jobtitle": event.String("CTO")})
	newer.Version = 30
	e.send(newer)
	e.drain()
	older := ev(event.EntityContact, contactID, event.MessageUpdate, event.Attributes{"lastname": event.String("Roe"), "jobtitle": event.String("Intern")})
	older.Version = 20
	e.send(older)
	e.drain()
	_, l := e.mk.leadByExt(contactID)
	if l["lastName"] != "Roe" || l["title"] != "CTO" {
		t.Fatalf("lead = %v: want lastName from the late update and title from the newer one", l)
	}
}

func TestLoopPreventionSkipsOwnChangesAndWriteBackColumns(t *testing.T) {
	e := newEnv(t, nil)
	own := userEv(userID, "x@example.com")
	own.InitiatingUserID = strings.ToUpper(appUser)
	wb := ev(event.EntityContact, contactID, event.MessageUpdate, event.Attributes{"msi_priority": event.Number("3"), "modifiedon": event.Time(time.Now())})
	e.send(own, wb)
	st := e.drain()
	if st.Skipped != 2 || len(e.mk.calls) != 0 {
		t.Fatalf("stats %+v calls %v", st, e.mk.calls)
	}
}

func TestIgnoredConnections(t *testing.T) {
	e := newEnv(t, nil)
	recip := WebhookShape(ev(event.EntityConnection, gid("x", 2), event.MessageCreate, event.Attributes{
		"record1id": event.Reference(event.EntityContact, contactID, ""), "record2id": event.Reference(event.EntityOpportunity, oppID, ""),
		"record2roleid": event.Reference("connectionrole", gid("r", 1), "Champion")}))
	acct := WebhookShape(ev(event.EntityConnection, gid("x", 3), event.MessageCreate, event.Attributes{
		"record1id": event.Reference(event.EntityAccount, accountID, ""), "record2id": event.Reference(event.EntityContact, contactID, ""),
		"record2roleid": event.Reference("connectionrole", gid("r", 1), "Partner")}))
	e.send(recip, acct)
	st := e.drain()
	if st.Skipped != 2 || len(e.mk.calls) != 0 || len(e.q.deadLetters()) != 0 {
		t.Fatalf("stats %+v calls %v", st, e.mk.calls)
	}
}

func TestLeadStrategyDetectedOnceAndRemembered(t *testing.T) {
	for _, supported := range []bool{true, false} {
		t.Run(fmt.Sprint(supported), func(t *testing.T) {
			e := newEnv(t, nil)
			e.mk.lookupSupported = supported
			e.send(userEv(userID, "a@example.com"), contactEv(contactID, "", userID, "joe@example.com"))
			e.drain()
			if v := e.st.meta[metaLookupField]; v != fmt.Sprint(supported) {
				t.Fatalf("meta = %q", v)
			}
			e.send(contactEv(gid("con", 2), "", userID, "kim@example.com"))
			n := len(e.mk.calls)
			e.drain()
			want := "leads sync createDuplicate/"
			if supported {
				want = "leads sync createOrUpdate/externalPersonId"
			}
			if got := e.mk.calls[len(e.mk.calls)-1]; got != want {
				t.Fatalf("second batch used %s, want %s (calls %v)", got, want, e.mk.calls[n:])
			}
			if id, _ := e.mk.leadByExt(gid("con", 2)); id == 0 {
				t.Fatal("second contact not written")
			}
		})
	}
}

func TestSplitWithoutEmailDeadLetters(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.LeadStrategy = LeadSplit })
	e.send(userEv(userID, "a@example.com"), contactEv(contactID, "", userID, ""))
	e.drain()
	dl := e.q.deadLetters()
	if len(dl) != 1 || dl[0].Reason != ReasonMissingData || !strings.Contains(dl[0].Description, "has no email") {
		t.Fatalf("dead letters %+v", dl)
	}
}

func TestUpdateOfUnknownRecordWaitsOrRereads(t *testing.T) {
	t.Run("no dataverse", func(t *testing.T) {
		e := newEnv(t, nil)
		e.send(ev(event.EntityContact, contactID, event.MessageUpdate, event.Attributes{"jobtitle": event.String("CTO")}))
		e.drain()
		dl := e.q.deadLetters()
		if len(dl) != 1 || dl[0].Reason != ReasonMissingData || !strings.Contains(dl[0].Description, "carries only jobtitle") ||
			!strings.Contains(dl[0].Description, "post image") || !strings.Contains(dl[0].Description, "MSISYNC_DATAVERSE_URL") {
			t.Fatalf("dead letters %+v", dl)
		}
	})
	t.Run("dataverse", func(t *testing.T) {
		dv := &fakeDataverse{records: map[string]event.Attributes{
			"contact/" + contactID: {"jobtitle": event.String("CTO"), "emailaddress1": event.String("joe@example.com"), "ownerid": owner(userID)},
			"systemuser/" + userID: {"internalemailaddress": event.String("ann@example.com")},
		}}
		e := newEnv(t, func(c *Config) { c.Dataverse = dv })
		tr := ev(event.EntityContact, contactID, event.MessageUpdate, event.Attributes{"jobtitle": event.String("CTO")})
		e.send(tr)
		e.drain()
		if _, l := e.mk.leadByExt(contactID); l == nil || l["title"] != "CTO" || l["externalSalesPersonId"] != userID {
			t.Fatalf("lead = %v", l)
		}
	})
}

func TestTruncatedEventIsReread(t *testing.T) {
	dv := &fakeDataverse{records: map[string]event.Attributes{
		"systemuser/" + userID: {"internalemailaddress": event.String("new@example.com")},
	}}
	e := newEnv(t, func(c *Config) { c.Dataverse = dv })
	e.send(userEv(userID, "old@example.com"))
	e.drain()
	tr := userEv(userID, "ignored").Reduced()
	tr.Message = event.MessageUpdate
	e.send(tr)
	e.drain()
	if got := e.mk.salesPersons[userID]["email"]; got != "new@example.com" {
		t.Fatalf("email = %v, reads %v", got, dv.reads)
	}
}

func TestRoleChangeDeletesOldRole(t *testing.T) {
	e := newEnv(t, nil)
	e.send(graph()...)
	e.drain()
	lid, _ := e.mk.leadByExt(contactID)
	up := WebhookShape(ev(event.EntityConnection, connID, event.MessageUpdate, event.Attributes{"record2roleid": event.Reference("connectionrole", gid("role", 1), "Champion")}))
	e.send(up)
	e.drain()
	if len(e.mk.roles) != 1 || e.mk.roles[fmt.Sprintf("%s|%d|Champion", oppID, lid)] == nil {
		t.Fatalf("roles = %v", e.mk.roles)
	}
}

func TestOpportunityDeleteRemovesRolesThenOpportunity(t *testing.T) {
	e := newEnv(t, nil)
	e.send(graph()...)
	e.drain()
	e.send(ev(event.EntityOpportunity, oppID, event.MessageDelete, nil))
	e.drain()
	if len(e.mk.roles) != 0 || e.mk.opps[oppID] != nil {
		t.Fatalf("roles %v opps %v", e.mk.roles, e.mk.opps)
	}
	var order []string
	for _, c := range e.mk.calls {
		if strings.Contains(c, "delete") {
			order = append(order, strings.Fields(c)[0])
		}
	}
	if strings.Join(order, ",") != "opportunities/roles,opportunities" {
		t.Fatalf("delete order %v", order)
	}
	// A late update of the deleted opportunity is stale.
	e.send(ev(event.EntityOpportunity, oppID, event.MessageUpdate, event.Attributes{"name": event.String("zombie")}))
	st := e.drain()
	if st.Skipped != 1 || e.mk.opps[oppID] != nil {
		t.Fatalf("zombie written: %+v", st)
	}
}

func TestConnectionDeleteUsesStoredConnection(t *testing.T) {
	e := newEnv(t, nil)
	e.send(graph()...)
	e.drain()
	e.send(ev(event.EntityConnection, connID, event.MessageDelete, nil))
	e.drain()
	if len(e.mk.roles) != 0 {
		t.Fatalf("roles %v", e.mk.roles)
	}
	if c, _ := e.st.GetConnections(context.Background(), []string{connID}); len(c) != 0 {
		t.Fatalf("connection kept: %v", c)
	}
}

func TestPersonDeletePolicy(t *testing.T) {
	for _, policy := range []string{DeleteKeep, DeleteDelete} {
		t.Run(policy, func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.DeletePolicy = policy })
			e.send(userEv(userID, "a@example.com"), contactEv(contactID, "", userID, "joe@example.com"))
			e.drain()
			e.send(ev(event.EntityContact, contactID, event.MessageDelete, nil))
			st := e.drain()
			_, l := e.mk.leadByExt(contactID)
			if (l != nil) != (policy == DeleteKeep) {
				t.Fatalf("lead after delete = %v", l)
			}
			if policy == DeleteKeep && st.KeptPersons != 1 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func TestLeadQualificationMovesThePerson(t *testing.T) {
	e := newEnv(t, nil)
	e.send(userEv(userID, "a@example.com"),
		ev(event.EntityLead, leadID, event.MessageCreate, event.Attributes{"emailaddress1": event.String("joe@example.com"), "ownerid": owner(userID), "companyname": event.String("Acme")}))
	e.drain()
	mid, _ := e.mk.leadByExt(leadID)
	c := contactEv(contactID, "", userID, "joe@example.com")
	c.Attributes["originatingleadid"] = event.Reference(event.EntityLead, leadID, "")
	c.ParentMessage = event.MessageQualifyLead
	e.send(c)
	e.drain()
	cid, _ := e.mk.leadByExt(contactID)
	if cid != mid || len(e.mk.leads) != 1 {
		t.Fatalf("contact on lead %d, lead was %d; leads %v", cid, mid, e.mk.leads)
	}
	// A later update of the qualified lead does not pull the person back.
	up := ev(event.EntityLead, leadID, event.MessageUpdate, event.Attributes{"statecode": event.Option(1), "ownerid": owner(userID)})
	e.send(up)
	e.drain()
	if id, _ := e.mk.leadByExt(leadID); id != 0 {
		t.Fatalf("lead GUID back in Marketo on %d", id)
	}
	links, _ := e.st.GetLinks(context.Background(), store.KindPerson, []string{leadID, contactID})
	if _, ok := links[leadID]; ok || links[contactID].MarketoID != fmt.Sprint(mid) {
		t.Fatalf("links %v", links)
	}
}

func TestCompanyFieldsOfALinkedPersonAreLeftOutOn1021(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.LeadStrategy = LeadSplit })
	e.send(userEv(userID, "a@example.com"), accountEv(accountID, userID))
	e.drain()
	// A form fill in Marketo, already linked to a company there: the lead
	// with its email takes it over by id, and Marketo owns its company fields.
	e.mk.leads[7] = marketotype.Record{"email": "joe@example.com", "externalCompanyId": accountID}
	e.send(ev(event.EntityLead, leadID, event.MessageCreate, event.Attributes{"emailaddress1": event.String("joe@example.com"),
		"ownerid": owner(userID), "companyname": event.String("Other Inc"), "jobtitle": event.String("VP")}))
	calls := e.mk.callCount("leads sync")
	e.drain()
	if dl := e.q.deadLetters(); len(dl) != 0 {
		t.Fatalf("dead letters %+v", dl)
	}
	id, l := e.mk.leadByExt(leadID)
	if id != 7 || l["title"] != "VP" || l["company"] != nil {
		t.Fatalf("lead %d = %v", id, l)
	}
	if n := e.mk.callCount("leads sync") - calls; n != 2 {
		t.Fatalf("%d lead sync calls, want the write and one retry without company fields", n)
	}
}

func TestMarketoRejectionIsDeadLetteredWithCode(t *testing.T) {
	e := newEnv(t, nil)
	e.mk.skipCode[accountID] = "1003"
	e.send(userEv(userID, "a@example.com"), accountEv(accountID, userID))
	e.drain()
	dl := e.q.deadLetters()
	if len(dl) != 1 || dl[0].Reason != ReasonRejected || !strings.Contains(dl[0].Description, "marketo 1003: rejected (companies account "+accountID+")") {
		t.Fatalf("dead letters %+v", dl)
	}
}

func TestTransientAndQuotaErrors(t *testing.T) {
	t.Run("transient requeues with attempt", func(t *testing.T) {
		e := newEnv(t, nil)
		e.mk.failNext = []error{&marketotype.Error{Op: "sync salespersons", Code: "604", Message: "Request timed out"}}
		e.send(userEv(userID, "a@example.com"))
		st, _ := e.s.ProcessBatch(context.Background())
		if st.Requeued != 1 || e.q.sent[len(e.q.sent)-1].Properties[queue.PropAttempt] != "1" {
			t.Fatalf("stats %+v", st)
		}
		e.drain()
		if e.mk.salesPersons[userID] == nil {
			t.Fatal("not written after retry")
		}
	})
	t.Run("quota pauses without counting", func(t *testing.T) {
		e := newEnv(t, nil)
		e.mk.failNext = []error{fmt.Errorf("sync: %w", marketotype.ErrQuotaExhausted)}
		e.send(userEv(userID, "a@example.com"), accountEv(accountID, userID))
		st, _ := e.s.ProcessBatch(context.Background())
		if st.Rescheduled != 2 || st.Requeued != 0 || len(e.mk.calls) != 1 {
			t.Fatalf("stats %+v calls %v", st, e.mk.calls)
		}
		last := e.q.sent[len(e.q.sent)-1]
		if last.Properties[queue.PropAttempt] != "0" || !last.ScheduledAt.Equal(e.clk.Now().Add(5*time.Minute)) {
			t.Fatalf("rescheduled %+v", last)
		}
	})
}

func TestLockedRecordsAreRescheduled(t *testing.T) {
	e := newEnv(t, nil)
	if _, err := e.st.LockRecords(context.Background(), "other", []string{"systemuser/" + userID}, time.Minute); err != nil {
		t.Fatal(err)
	}
	e.send(userEv(userID, "a@example.com"))
	st, _ := e.s.ProcessBatch(context.Background())
	if st.Rescheduled != 1 || len(e.mk.calls) != 0 {
		t.Fatalf("stats %+v calls %v", st, e.mk.calls)
	}
}

func Test600ContactsInAHandfulOfCalls(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.LeadStrategy = LeadSplit })
	e.send(userEv(userID, "a@example.com"), accountEv(accountID, userID))
	e.drain()
	for i := 0; i < 600; i++ {
		e.send(contactEv(gid("c", i), accountID, userID, fmt.Sprintf("p%d@example.com", i)))
	}
	calls := len(e.mk.calls)
	e.drain()
	if n := len(e.mk.leads); n != 600 {
		t.Fatalf("%d leads", n)
	}
	// Per batch of 300 new contacts: one query by email, one createDuplicate
	// (contacts new in Dataverse skip the query by externalPersonId).
	if n := len(e.mk.calls) - calls; n > 4 {
		t.Fatalf("%d Marketo calls for 600 contacts: %v", n, e.mk.calls[calls:])
	}
}

func TestNilDataverseClientMeansNotConfigured(t *testing.T) {
	var dv *fakeDataverse
	e := newEnv(t, func(c *Config) { c.Dataverse = dv })
	e.send(ev(event.EntityContact, contactID, event.MessageUpdate, event.Attributes{"jobtitle": event.String("CTO")}))
	e.drain() // would panic reading through a nil client
	if dl := e.q.deadLetters(); len(dl) != 1 || dl[0].Reason != ReasonMissingData {
		t.Fatalf("dead letters %+v", dl)
	}
}

func TestNewValidates(t *testing.T) {
	q, st, mk := newFakeQueue(clock.System{}), newFakeStore(), newFakeMarketo()
	for name, c := range map[string]Config{
		"BatchSize":    {Queue: q, Store: st, Marketo: mk, BatchSize: 301},
		"LeadStrategy": {Queue: q, Store: st, Marketo: mk, LeadStrategy: "guess"},
		"DeletePolicy": {Queue: q, Store: st, Marketo: mk, DeletePolicy: "purge"},
		"AppUserID":    {Queue: q, Store: st, Marketo: mk, AppUserID: "bob"},
		"Queue":        {Store: st, Marketo: mk},
	} {
		if _, err := New(c); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

func TestNativeServiceBusMessagesUseParseNative(t *testing.T) {
	var got []string
	e := newEnv(t, func(c *Config) {
		c.ParseNative = func(body []byte, props map[string]string) (*event.Event, error) {
			got = append(got, props["http://schemas.microsoft.com/xrm/2011/Claims/EntityLogicalName"])
			if string(body) != "<native>" {
				return nil, errors.New("not native")
			}
			return userEv(strings.ToUpper(userID), "native@example.com"), nil
		}
	})
	err := e.q.Send(context.Background(), queue.Message{ID: "n1", Body: []byte("<native>"),
		Properties: map[string]string{"http://schemas.microsoft.com/xrm/2011/Claims/EntityLogicalName": "systemuser"}})
	if err != nil {
		t.Fatal(err)
	}
	e.drain()
	if len(got) != 1 || got[0] != "systemuser" || e.mk.salesPersons[userID]["email"] != "native@example.com" {
		t.Fatalf("parsed %v, sales persons %v", got, e.mk.salesPersons)
	}
}

func TestUndecodableMessageIsDeadLettered(t *testing.T) {
	e := newEnv(t, nil)
	if err := e.q.Send(context.Background(), queue.Message{ID: "bad", Body: []byte(`{"schema":1,"entity":"contact","recordId":"nope","message":"Create"}`)}); err != nil {
		t.Fatal(err)
	}
	e.drain()
	dl := e.q.deadLetters()
	if len(dl) != 1 || dl[0].Reason != ReasonUndecodable || !strings.Contains(dl[0].Description, `recordId "nope" is not a GUID`) {
		t.Fatalf("dead letters %+v", dl)
	}
}

// fakeTimers stands in for time.After: each wait is handed to the test,
// which fires it (after moving the fake clock). Waits of hold (the record
// lock renewal of the default RecordLockTTL) are never handed out nor fired,
// so tests of the other waits see only theirs.
type fakeTimers struct {
	waits chan fakeWait
	hold  time.Duration
}

type fakeWait struct {
	d    time.Duration
	fire chan time.Time
}

func newFakeTimers() *fakeTimers {
	return &fakeTimers{waits: make(chan fakeWait, 64), hold: 15 * time.Second / 3}
}

func (f *fakeTimers) After(d time.Duration) <-chan time.Time {
	if d == f.hold {
		return nil
	}
	w := fakeWait{d: d, fire: make(chan time.Time, 1)}
	f.waits <- w
	return w.fire
}

// next returns the next wait asked for (the timeout only guards a hang).
func (f *fakeTimers) next(t *testing.T) fakeWait {
	t.Helper()
	select {
	case w := <-f.waits:
		return w
	case <-time.After(10 * time.Second):
		t.Fatal("no wait was asked for")
		return fakeWait{}
	}
}

// hookQueue wraps fakeQueue: onReceive sees every receive (numbered from
// 1) with its wait, and DeadLetter fails with deadLetterErr when set.
type hookQueue struct {
	*fakeQueue
	n             int
	onReceive     func(n int, wait time.Duration)
	deadLetterErr error
}

func (q *hookQueue) Receive(ctx context.Context, max int, wait time.Duration) ([]*queue.Delivery, error) {
	q.n++
	if q.onReceive != nil {
		q.onReceive(q.n, wait)
	}
	return q.fakeQueue.Receive(ctx, max, wait)
}

func (q *hookQueue) DeadLetter(ctx context.Context, d *queue.Delivery, reason, desc string) error {
	if q.deadLetterErr != nil {
		return q.deadLetterErr
	}
	return q.fakeQueue.DeadLetter(ctx, d, reason, desc)
}

// logCounter is a slog handler counting records by message.
type logCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (h *logCounter) Enabled(context.Context, slog.Level) bool { return true }
func (h *logCounter) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.n == nil {
		h.n = map[string]int{}
	}
	h.n[r.Message]++
	return nil
}
func (h *logCounter) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logCounter) WithGroup(string) slog.Handler      { return h }
func (h *logCounter) count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n[msg]
}

func TestLocksAreRenewedWhileMarketoIsSlow(t *testing.T) {
	timers := newFakeTimers()
	e := newEnv(t, func(c *Config) { c.After = timers.After })
	e.q.lock = time.Minute
	inSync, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	e.mk.beforeSync = func() {
		// Hold the Marketo call while the test moves time on.
		once.Do(func() { close(inSync); <-release })
	}
	e.send(userEv(userID, "a@example.com"))
	start := e.clk.Now()
	type result struct {
		st  Stats
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := e.s.ProcessBatch(context.Background())
		done <- result{st, err}
	}()
	select {
	case <-inSync:
	case <-time.After(10 * time.Second):
		t.Fatal("Marketo was not called")
	}
	// Each renewal is due at half the lock time left: 30 s of a fresh
	// 1-minute lock. Three rounds take the clock 30 s past the first lock.
	w := timers.next(t)
	for i := 1; i <= 3; i++ {
		if w.d != 30*time.Second {
			t.Fatalf("round %d: renewal due in %v, want 30s", i, w.d)
		}
		e.clk.Advance(w.d)
		w.fire <- e.clk.Now()
		w = timers.next(t) // asked for once this round's renewals are done
		if n := e.q.renewCount(); n != i {
			t.Fatalf("round %d: %d renewals", i, n)
		}
	}
	if now := e.clk.Now(); !now.After(start.Add(time.Minute)) {
		t.Fatalf("clock %v is not past the first lock", now.Sub(start))
	}
	// Without the renewals the lock would have expired and the message be
	// delivered again.
	if ds, err := e.q.Receive(context.Background(), 10, 0); err != nil || len(ds) != 0 {
		t.Fatalf("message redelivered while in flight: %d, %v", len(ds), err)
	}
	close(release)
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.st.Completed != 1 || e.q.pending() != 0 || e.q.renewCount() != 3 {
		t.Fatalf("stats %+v, pending %d, renewals %d", r.st, e.q.pending(), e.q.renewCount())
	}
}

func TestBatchFillWaitEndsByTheClock(t *testing.T) {
	var waits []time.Duration
	e := newEnv(t, func(c *Config) {
		c.BatchWait = 5 * time.Second
		c.ReceiveMax = 10
	})
	hq := &hookQueue{fakeQueue: e.q}
	hq.onReceive = func(n int, wait time.Duration) {
		waits = append(waits, wait)
		switch n {
		case 2: // a message comes 3 s into the fill wait
			e.send(userEv(gid("u", 2), "b@example.com"))
			e.clk.Advance(3 * time.Second)
		case 3: // another at its end
			e.send(userEv(gid("u", 3), "c@example.com"))
			e.clk.Advance(2 * time.Second)
		}
	}
	e.s.cfg.Queue = hq
	e.send(userEv(userID, "a@example.com"))
	st, err := e.s.ProcessBatch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// First receive: IdleWait; then what is left of BatchWait by the clock,
	// and none once it is used up.
	want := []time.Duration{time.Second, 5 * time.Second, 2 * time.Second}
	if !slices.Equal(waits, want) || st.Received != 3 || st.Completed != 3 {
		t.Fatalf("receive waits %v (want %v), stats %+v", waits, want, st)
	}
}

func TestFailedBatchIsLoggedOnceAndRetriedAfterTheInjectedWait(t *testing.T) {
	timers := newFakeTimers()
	logs := &logCounter{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	receives := make(chan int, 16)
	e := newEnv(t, func(c *Config) {
		c.After = timers.After
		c.Logger = slog.New(logs)
	})
	hq := &hookQueue{fakeQueue: e.q, deadLetterErr: errors.New("dead-letter queue down")}
	hq.onReceive = func(n int, _ time.Duration) {
		receives <- n
		if n == 3 {
			<-ctx.Done() // park the loop here
		}
	}
	e.s.cfg.Queue = hq
	// An undecodable message whose dead-lettering fails fails the batch.
	if err := e.q.Send(ctx, queue.Message{ID: "bad", Body: []byte("{")}); err != nil {
		t.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() { ran <- e.s.Run(ctx) }()
	w := timers.next(t)
	for w.d == 30*time.Second { // the batch's lock renewal (1-minute lock), left unfired
		w = timers.next(t)
	}
	if w.d != 200*time.Millisecond || len(receives) != 1 {
		t.Fatalf("retry wait %v after %d receives", w.d, len(receives))
	}
	w.fire <- e.clk.Now()
	// The third receive comes after the loop has waited for the failed
	// batch to be wrapped up.
	for n := range receives {
		if n == 3 {
			break
		}
	}
	if n := logs.count("syncer: batch failed"); n != 1 {
		t.Errorf("batch failure logged %d times", n)
	}
	cancel()
	if err := <-ran; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
}

func TestMetricsCountOutcomesAcrossSyncersOnOneRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, func(c *Config) { c.Registerer = reg })
	if _, err := New(Config{Queue: e.q, Store: e.st, Marketo: e.mk, Registerer: reg}); err != nil {
		t.Fatalf("second syncer on one registry: %v", err)
	}
	e.send(userEv(userID, "a@example.com"), contactEv(contactID, accountID, userID, "joe@example.com"))
	e.drain()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "msisync_syncer_messages_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	// The contact's account never comes: requeued 3 times, then dead-lettered.
	if got["completed"] != 1 || got["requeued"] != 3 || got["deadlettered"] != 1 {
		t.Fatalf("messages_total = %v", got)
	}
}
