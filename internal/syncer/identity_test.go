package syncer_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/dataverse"
	"github.com/msisync/msisync/internal/dataverse/dataversesim"
	"github.com/msisync/msisync/internal/dataverse/remotecontext"
	"github.com/msisync/msisync/internal/doctor"
	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/marketo"
	"github.com/msisync/msisync/internal/marketo/marketosim"
	"github.com/msisync/msisync/internal/marketo/marketotype"
	"github.com/msisync/msisync/internal/queue"
	"github.com/msisync/msisync/internal/syncer"
)

// identity runs a Dataverse simulator whose registered webhook steps post to
// a capture server: every body is a real RemoteExecutionContext (Target
// lookups without names, upper-case GUIDs where Dataverse sends them),
// parsed as the receiver parses it and queued for the syncer.
type identity struct {
	*stack
	dv       *dataversesim.Server
	dc       *dataverse.Client
	mu       sync.Mutex
	captured []capturedCall
}

type capturedCall struct {
	body   []byte
	header http.Header
}

// identityModes are the lead strategies against the simulator's two answers
// to lookupField=externalPersonId.
var identityModes = []struct {
	name     string
	strategy string
	lookup   bool // marketosim accepts lookupField=externalPersonId
}{
	{"split/sim-without-lookup", syncer.LeadSplit, false},
	{"split/sim-with-lookup", syncer.LeadSplit, true},
	{"auto/sim-without-lookup", syncer.LeadAuto, false},
	{"lookup/sim-with-lookup", syncer.LeadLookup, true},
}

func newIdentity(t *testing.T, strategy string, lookup bool, policy string) *identity {
	t.Helper()
	quiet := slog.New(slog.DiscardHandler)
	id := &identity{dv: dataversesim.New(dataversesim.Options{Token: "tok", Logger: quiet})}
	dsrv := httptest.NewServer(id.dv)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		id.mu.Lock()
		id.captured = append(id.captured, capturedCall{body: b, header: r.Header.Clone()})
		id.mu.Unlock()
	}))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = id.dv.WaitIdle(ctx)
		hook.Close()
		dsrv.Close()
	})
	dc, err := dataverse.New(dataverse.Config{URL: dsrv.URL, Token: "tok", Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dc.Register(context.Background(), dataverse.RegisterOptions{Salt: []byte("test-install-salt-for-syncer"), URL: hook.URL + "/webhooks/dataverse", Key: "k"}); err != nil {
		t.Fatal(err)
	}
	id.dc = dc
	id.stack = newStack(t, marketosim.Options{LookupExternalPersonID: lookup}, func(c *syncer.Config) {
		c.Dataverse, c.IsNotFound = dc, dataverse.IsNotFound
		c.LeadStrategy, c.DeletePolicy = strategy, policy
	})
	return id
}

// flush waits for the simulator's webhooks, queues them and drains the queue.
func (id *identity) flush() syncer.Stats {
	id.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := id.dv.WaitIdle(ctx); err != nil {
		id.t.Fatal(err)
	}
	id.mu.Lock()
	calls := id.captured
	id.captured = nil
	id.mu.Unlock()
	var msgs []queue.Message
	for _, c := range calls {
		ev, err := remotecontext.Parse(c.body, remotecontext.HeadersFrom(c.header))
		if err != nil {
			id.t.Fatalf("parse %s %s: %v", c.header.Get("x-ms-dynamics-entity-name"), c.header.Get("x-ms-dynamics-request-name"), err)
		}
		b, err := event.Encode(ev)
		if err != nil {
			id.t.Fatal(err)
		}
		msgs = append(msgs, queue.Message{ID: ev.ID, Body: b})
	}
	if len(msgs) > 0 {
		if err := id.q.Send(context.Background(), msgs...); err != nil {
			id.t.Fatal(err)
		}
	}
	st := id.drain()
	if st.DeadLettered != 0 {
		id.t.Fatalf("dead letters after %d events: %+v", len(msgs), st)
	}
	return st
}

func (id *identity) create(entity string, attrs map[string]any) string {
	id.t.Helper()
	rid, err := id.dv.Create(entity, attrs)
	if err != nil {
		id.t.Fatal(err)
	}
	return rid
}

func (id *identity) update(entity, rid string, attrs map[string]any) {
	id.t.Helper()
	if err := id.dv.Update(entity, rid, attrs); err != nil {
		id.t.Fatal(err)
	}
}

// persons maps each Marketo person id to its externalPersonId (lower case).
func (id *identity) persons() map[string]string {
	out := map[string]string{}
	for _, l := range id.sim.Dump().Leads {
		ext, _ := l["externalPersonId"].(string)
		out[fmt.Sprint(l["id"])] = strings.ToLower(ext)
	}
	return out
}

// leadCalls counts Marketo calls on the leads endpoint: reads and writes.
func (id *identity) leadCalls() (reads, writes int) {
	st := id.sim.Stats()
	return st.Requests["GET /rest/v1/leads.json"], st.Requests["POST /rest/v1/leads.json"]
}

// expectOnePerLive asserts one Marketo person per live record, linked to
// it, and no person linked to anything else (unlinked persons aside); it
// returns record → person.
func (id *identity) expectOnePerLive(live ...string) map[string]string {
	id.t.Helper()
	byRec := map[string]string{}
	for mid, ext := range id.persons() {
		if ext == "" {
			continue // an unlinked person (a form fill, a merged-away record's kept person)
		}
		if !slices.Contains(live, ext) {
			id.t.Fatalf("person %s linked to %q, not a live record (live %v, persons %v)", mid, ext, live, id.persons())
		}
		if prev, dup := byRec[ext]; dup {
			id.t.Fatalf("record %s has persons %s and %s", ext, prev, mid)
		}
		byRec[ext] = mid
	}
	if len(byRec) != len(live) {
		id.t.Fatalf("persons %v, want one per live record %v", id.persons(), live)
	}
	return byRec
}

// repeat updates every live record three times and checks that each round
// costs the same lead writes and that no person changes hands.
func (id *identity) repeat(want map[string]string, entities map[string]string) (writesPerRound int) {
	id.t.Helper()
	for round := 1; round <= 3; round++ {
		calls0 := id.sim.Stats().Requests
		_, w0 := id.leadCalls()
		for _, rid := range slices.Sorted(func(yield func(string) bool) {
			for k := range entities {
				if !yield(k) {
					return
				}
			}
		}) {
			id.update(entities[rid], rid, map[string]any{"jobtitle": fmt.Sprintf("Title %d", round)})
		}
		id.flush()
		_, w1 := id.leadCalls()
		if round == 1 {
			writesPerRound = w1 - w0
			id.logCalls(fmt.Sprintf("repeat round (%d records updated)", len(entities)), calls0)
		} else if w1-w0 != writesPerRound {
			id.t.Fatalf("round %d cost %d lead writes, round 1 cost %d", round, w1-w0, writesPerRound)
		}
		got := id.expectOnePerLive(slices.Collect(func(yield func(string) bool) {
			for k := range want {
				if !yield(k) {
					return
				}
			}
		})...)
		for rec, mid := range want {
			if got[rec] != mid {
				id.t.Fatalf("round %d: record %s moved from person %s to %s", round, rec, mid, got[rec])
			}
		}
	}
	if writesPerRound != 1 {
		id.t.Fatalf("a round of updates of known persons cost %d lead writes, want 1", writesPerRound)
	}
	return writesPerRound
}

// logCalls logs the Marketo calls made since before (identity calls aside).
func (id *identity) logCalls(what string, before map[string]int) {
	id.t.Logf("%s: Marketo calls %v", what, diffCounts(before, id.sim.Stats().Requests))
}

func TestIdentityLeadThenContactWithOneEmail(t *testing.T) {
	for _, m := range identityModes {
		t.Run(m.name, func(t *testing.T) {
			id := newIdentity(t, m.strategy, m.lookup, syncer.DeleteKeep)
			lead := id.create("lead", map[string]any{"lastname": "Doe", "emailaddress1": "joe@example.com", "companyname": "Acme"})
			id.flush()
			before := id.sim.Stats().Requests
			con := id.create("contact", map[string]any{"lastname": "Doe", "emailaddress1": "Joe@Example.com"})
			id.flush()
			id.logCalls("contact after lead", before)
			want := id.expectOnePerLive(lead, con)
			id.repeat(want, map[string]string{lead: "lead", con: "contact"})
		})
	}
}

func TestIdentityContactThenLeadWithOneEmail(t *testing.T) {
	for _, m := range identityModes {
		t.Run(m.name, func(t *testing.T) {
			id := newIdentity(t, m.strategy, m.lookup, syncer.DeleteKeep)
			con := id.create("contact", map[string]any{"lastname": "Doe", "emailaddress1": "joe@example.com"})
			id.flush()
			before := id.sim.Stats().Requests
			lead := id.create("lead", map[string]any{"lastname": "Doe", "emailaddress1": "joe@example.com", "companyname": "Acme"})
			id.flush()
			id.logCalls("lead after contact", before)
			want := id.expectOnePerLive(lead, con)
			id.repeat(want, map[string]string{lead: "lead", con: "contact"})
		})
	}
}

// formFill puts a person in Marketo the way a form fill does: by email,
// without an externalPersonId.
func formFill(t *testing.T, mk *marketo.Client, email string) string {
	t.Helper()
	res, err := mk.Sync(context.Background(), marketotype.Leads, marketotype.SyncRequest{Action: "createOrUpdate", LookupField: "email",
		Input: []marketotype.Record{{"email": email, "firstName": "Form"}}})
	if err != nil || len(res) != 1 || res[0].Status != "created" {
		t.Fatalf("form fill: %v %+v", err, res)
	}
	return fmt.Sprint(res[0].ID)
}

func TestIdentityFormFillThenContactIsLinkedNotDuplicated(t *testing.T) {
	for _, m := range identityModes {
		t.Run(m.name, func(t *testing.T) {
			id := newIdentity(t, m.strategy, m.lookup, syncer.DeleteKeep)
			// The owner and a first contact: auto has detected its mode.
			first := id.create("contact", map[string]any{"lastname": "First", "emailaddress1": "first@example.com"})
			id.flush()
			fill := formFill(t, id.mk, "kim@example.com")
			before := id.sim.Stats().Requests
			con := id.create("contact", map[string]any{"lastname": "Kim", "emailaddress1": "kim@example.com"})
			id.flush()
			id.logCalls("contact onto a form fill", before)
			if got := id.persons()[fill]; got != con {
				t.Fatalf("form fill %s linked to %q, want contact %s (persons %v)", fill, got, con, id.persons())
			}
			if n := len(id.persons()); n != 2 {
				t.Fatalf("%d persons, want the first contact's and the form fill: %v", n, id.persons())
			}
			want := id.expectOnePerLive(first, con)
			id.repeat(want, map[string]string{first: "contact", con: "contact"})
		})
	}
}

func TestIdentityEmailChangeOntoAnotherPersonsAddress(t *testing.T) {
	for _, m := range identityModes {
		t.Run(m.name, func(t *testing.T) {
			id := newIdentity(t, m.strategy, m.lookup, syncer.DeleteKeep)
			a := id.create("contact", map[string]any{"lastname": "A", "emailaddress1": "a@example.com"})
			b := id.create("contact", map[string]any{"lastname": "B", "emailaddress1": "b@example.com"})
			id.flush()
			want := id.expectOnePerLive(a, b)
			before := id.sim.Stats().Requests
			id.update("contact", a, map[string]any{"emailaddress1": "b@example.com"})
			id.flush()
			id.logCalls("email change onto another person's address", before)
			got := id.expectOnePerLive(a, b)
			if got[a] != want[a] || got[b] != want[b] {
				t.Fatalf("persons moved: before %v after %v", want, got)
			}
			for _, l := range id.sim.Dump().Leads {
				if l["email"] != "b@example.com" {
					t.Fatalf("lead %v: both persons should hold b@example.com", l)
				}
			}
			// A third record with the shared address gets its own person.
			c := id.create("contact", map[string]any{"lastname": "C", "emailaddress1": "b@example.com"})
			id.flush()
			want = id.expectOnePerLive(a, b, c)
			id.repeat(want, map[string]string{a: "contact", b: "contact", c: "contact"})
		})
	}
}

// A contact made by qualifying a lead takes over the lead's person through
// originatingleadid; another contact with the same email does not.
func TestIdentityQualifiedLeadHandsItsPersonToItsContactOnly(t *testing.T) {
	for _, m := range identityModes {
		t.Run(m.name, func(t *testing.T) {
			id := newIdentity(t, m.strategy, m.lookup, syncer.DeleteKeep)
			lead := id.create("lead", map[string]any{"lastname": "Doe", "emailaddress1": "joe@example.com", "companyname": "Acme"})
			id.flush()
			person := id.expectOnePerLive(lead)[lead]
			other := id.create("contact", map[string]any{"lastname": "Doe", "emailaddress1": "joe@example.com"})
			id.flush()
			_, con, _, err := id.dv.QualifyLead(lead)
			if err != nil {
				t.Fatal(err)
			}
			before := id.sim.Stats().Requests
			id.flush()
			id.logCalls("qualification", before)
			got := id.expectOnePerLive(con, other)
			if got[con] != person {
				t.Fatalf("qualified contact has person %s, want the lead's %s", got[con], person)
			}
			id.repeat(got, map[string]string{con: "contact", other: "contact"})
		})
	}
}

func TestIdentityContactMerge(t *testing.T) {
	for _, policy := range []string{syncer.DeleteKeep, syncer.DeleteDelete} {
		for _, m := range identityModes {
			t.Run(policy+"/"+m.name, func(t *testing.T) {
				id := newIdentity(t, m.strategy, m.lookup, policy)
				acc := id.create("account", map[string]any{"name": "Acme"})
				a := id.create("contact", map[string]any{"lastname": "Doe", "emailaddress1": "joe@example.com",
					"parentcustomerid": dataversesim.Ref{LogicalName: "account", ID: acc}})
				b := id.create("contact", map[string]any{"lastname": "Doe", "emailaddress1": "j.doe@example.com"})
				// A contact whose parent is the subordinate moves to the master.
				kid := id.create("contact", map[string]any{"lastname": "Kid", "emailaddress1": "kid@example.com",
					"parentcustomerid": dataversesim.Ref{LogicalName: "contact", ID: b}})
				// The subordinate is a stakeholder of an opportunity: the
				// role moves to the master's person.
				opp := id.create("opportunity", map[string]any{"name": "Deal", "parentaccountid": dataversesim.Ref{LogicalName: "account", ID: acc}})
				if _, err := id.dv.Connect(opp, b, "Champion"); err != nil {
					t.Fatal(err)
				}
				id.flush()
				before := id.expectOnePerLive(a, b, kid)
				if roles := id.sim.Dump().Roles; len(roles) != 1 || fmt.Sprint(roles[0]["leadId"]) != before[b] {
					t.Fatalf("roles %v, want one on %s", roles, before[b])
				}
				calls0 := id.sim.Stats().Requests
				if err := id.dv.Merge("contact", a, b, map[string]any{"jobtitle": "CTO"}); err != nil {
					t.Fatal(err)
				}
				id.flush()
				id.logCalls("contact merge ("+policy+")", calls0)
				got := id.expectOnePerLive(a, kid)
				if got[a] != before[a] || got[kid] != before[kid] {
					t.Fatalf("persons moved: before %v after %v", before, got)
				}
				leads := map[string]map[string]any{}
				for _, l := range id.sim.Dump().Leads {
					leads[fmt.Sprint(l["id"])] = l
				}
				if leads[got[a]]["title"] != "CTO" {
					t.Fatalf("master's person %v: want the merged title", leads[got[a]])
				}
				if roles := id.sim.Dump().Roles; len(roles) != 1 || fmt.Sprint(roles[0]["leadId"]) != got[a] || roles[0]["role"] != "Champion" {
					t.Fatalf("roles %v, want the Champion role on the master's person %s", roles, got[a])
				}
				sub, kept := leads[before[b]]
				switch {
				case policy == syncer.DeleteDelete && kept:
					t.Fatalf("subordinate's person %v kept with delete policy", sub)
				case policy == syncer.DeleteKeep && !kept:
					t.Fatalf("subordinate's person %s gone with keep policy", before[b])
				case policy == syncer.DeleteKeep && sub["externalPersonId"] != nil:
					t.Fatalf("subordinate's kept person still linked: %v", sub)
				}
				id.repeat(got, map[string]string{a: "contact", kid: "contact"})
			})
		}
	}
}

func TestIdentityAccountMerge(t *testing.T) {
	for _, m := range identityModes {
		t.Run(m.name, func(t *testing.T) {
			id := newIdentity(t, m.strategy, m.lookup, syncer.DeleteKeep)
			x := id.create("account", map[string]any{"name": "Acme"})
			y := id.create("account", map[string]any{"name": "Acme Inc"})
			con := id.create("contact", map[string]any{"lastname": "Doe", "emailaddress1": "joe@example.com",
				"parentcustomerid": dataversesim.Ref{LogicalName: "account", ID: y}})
			lead := id.create("lead", map[string]any{"lastname": "Roe", "emailaddress1": "roe@example.com",
				"parentaccountid": dataversesim.Ref{LogicalName: "account", ID: y}})
			id.flush()
			before := id.expectOnePerLive(con, lead)
			calls0 := id.sim.Stats().Requests
			if err := id.dv.Merge("account", x, y, map[string]any{"websiteurl": "https://acme.example.com"}); err != nil {
				t.Fatal(err)
			}
			id.flush()
			id.logCalls("account merge", calls0)
			d := id.sim.Dump()
			if len(d.Companies) != 1 || d.Companies[0]["externalCompanyId"] != x {
				t.Fatalf("companies %v, want only the master %s", d.Companies, x)
			}
			got := id.expectOnePerLive(con, lead)
			if got[con] != before[con] || got[lead] != before[lead] {
				t.Fatalf("persons moved: before %v after %v", before, got)
			}
			for _, l := range d.Leads {
				if l["externalCompanyId"] != x {
					t.Fatalf("person %v not moved to the master company %s", l, x)
				}
			}
			id.repeat(got, map[string]string{con: "contact", lead: "lead"})
		})
	}
}

func diffCounts(a, b map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range b {
		if v != a[k] && k != "identity" {
			out[k] = v - a[k]
		}
	}
	return out
}

// The doctor, against the simulators: a merge the worker has not applied
// yet leaves the subordinate's person carrying its id (fail), fixed once the
// merge is synced; a lead and a contact sharing an email are reported.
func TestIdentityDoctorSeesMergesAndSharedEmails(t *testing.T) {
	id := newIdentity(t, syncer.LeadSplit, false, syncer.DeleteKeep)
	doc := &doctor.Doctor{Marketo: id.mk, Dataverse: id.dc, Store: id.st}
	a := id.create("contact", map[string]any{"lastname": "Doe", "emailaddress1": "joe@example.com"})
	b := id.create("contact", map[string]any{"lastname": "Doe", "emailaddress1": "joe@example.com"})
	id.flush()
	check := func(rid, name string, want doctor.Status) {
		t.Helper()
		r, err := doc.Diagnose(context.Background(), "contact", rid)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range r.Checks {
			if c.Name == name {
				if c.Status != want {
					t.Fatalf("%s = %s, want %s:\n%s", name, c.Status, want, r)
				}
				return
			}
		}
		t.Fatalf("no %s check:\n%s", name, r)
	}
	check(a, "shared email", doctor.Warn)
	if err := id.dv.Merge("contact", a, b, nil); err != nil {
		t.Fatal(err)
	}
	if err := id.dv.WaitIdle(context.Background()); err != nil {
		t.Fatal(err)
	}
	check(b, "record state", doctor.Fail)
	id.flush()
	check(b, "record state", doctor.OK)
	check(a, "shared email", doctor.Info) // b's kept person, now unlinked
}

func TestIdentityLeadMerge(t *testing.T) {
	for _, m := range identityModes {
		t.Run(m.name, func(t *testing.T) {
			id := newIdentity(t, m.strategy, m.lookup, syncer.DeleteDelete)
			a := id.create("lead", map[string]any{"lastname": "Doe", "emailaddress1": "joe@example.com", "companyname": "Acme"})
			b := id.create("lead", map[string]any{"lastname": "Doe", "emailaddress1": "joe@example.com", "companyname": "Acme"})
			id.flush()
			before := id.expectOnePerLive(a, b)
			calls0 := id.sim.Stats().Requests
			if err := id.dv.Merge("lead", a, b, map[string]any{"jobtitle": "VP"}); err != nil {
				t.Fatal(err)
			}
			id.flush()
			id.logCalls("lead merge (delete)", calls0)
			got := id.expectOnePerLive(a)
			if got[a] != before[a] || len(id.persons()) != 1 {
				t.Fatalf("persons %v, before %v", id.persons(), before)
			}
			id.repeat(got, map[string]string{a: "lead"})
		})
	}
}
