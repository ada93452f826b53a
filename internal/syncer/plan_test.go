package syncer

import (
	"reflect"
	"testing"

	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/store"
)

// The plan of a handful of records, as decode and prepare leave them (no
// store, no Marketo): write order, dependencies, retiring roles, deletes.
func TestPlanOrdersRecordsAndTheirDependencies(t *testing.T) {
	const (
		user    = "5f1b3b2e-0c4e-4d0a-9b1e-2a3c4d5e6f70"
		account = "0a1b2c3d-1111-4e5f-8a9b-0c1d2e3f4a5b"
		parent  = "0a1b2c3d-2222-4e5f-8a9b-0c1d2e3f4a5b" // not in the batch
		contact = "9a1e7c55-3333-4b6d-8e2f-1a2b3c4d5e6f"
		lead    = "9a1e7c55-4444-4b6d-8e2f-1a2b3c4d5e6f"
		opp     = "c0ffee00-5555-4a1b-9c2d-3e4f5a6b7c8d"
		conn    = "d1d1d1d1-6666-4a1b-9c2d-3e4f5a6b7c8d"
		gone    = "d1d1d1d1-7777-4a1b-9c2d-3e4f5a6b7c8d"
		team    = "7e7e7e7e-8888-4a1b-9c2d-3e4f5a6b7c8d"
		dflt    = "5f1b3b2e-9999-4d0a-9b1e-2a3c4d5e6f70"
	)
	upper := func(id string) string { // Dataverse sends GUIDs upper-case in places
		b := []byte(id)
		for i, c := range b {
			if c >= 'a' && c <= 'f' {
				b[i] = c - 'a' + 'A'
			}
		}
		return string(b)
	}
	mk := func(entity, id string, attrs event.Attributes) *rec {
		return &rec{entity: entity, id: id, key: entity + "/" + id, kind: kindOf(entity), attrs: attrs}
	}
	// Target lookups carry no name (bound by id).
	recs := map[string]*rec{}
	for _, r := range []*rec{
		mk(event.EntityConnection, conn, event.Attributes{}),
		mk(event.EntityConnection, gone, event.Attributes{}),
		mk(event.EntityOpportunity, opp, event.Attributes{
			"ownerid":    event.Reference(event.EntitySystemUser, user, ""),
			"customerid": event.Reference(event.EntityAccount, upper(parent), ""),
		}),
		mk(event.EntityContact, contact, event.Attributes{
			"ownerid":          event.Reference("team", team, ""),
			"parentcustomerid": event.Reference(event.EntityAccount, upper(account), ""),
		}),
		mk(event.EntityAccount, account, event.Attributes{"ownerid": event.Reference(event.EntitySystemUser, upper(user), "")}),
		mk(event.EntitySystemUser, user, event.Attributes{"internalemailaddress": event.String("ann@example.com")}),
		mk(event.EntityLead, lead, event.Attributes{}),
	} {
		recs[r.key] = r
	}
	recs["lead/"+lead].deleted = true
	conns := map[*rec]*connState{
		recs["connection/"+conn]: {conn: &store.Connection{ID: conn, OpportunityID: opp, PersonID: contact, Role: "Champion"}},
		recs["connection/"+gone]: {conn: &store.Connection{ID: gone, OpportunityID: opp, PersonID: contact, Role: "Champion"}, retire: retireDeactivate},
	}

	p := newPlan(recs, conns, dflt)

	var order []string
	for _, kind := range stages {
		for _, r := range p.live(kind) {
			if p.upserts(r) {
				order = append(order, r.key)
			}
		}
	}
	want := []string{"systemuser/" + user, "account/" + account, "contact/" + contact, "opportunity/" + opp, "connection/" + conn}
	if !reflect.DeepEqual(order, want) {
		t.Errorf("write order\n got %v\nwant %v", order, want)
	}
	deps := map[string][]dep{
		"systemuser/" + user: nil,
		"account/" + account: {{store.KindSalesPerson, event.EntitySystemUser, user, "owner of account " + account}},
		"contact/" + contact: {
			{store.KindSalesPerson, event.EntitySystemUser, dflt, "owner of contact " + contact}, // team-owned
			{store.KindCompany, event.EntityAccount, account, "company of contact " + contact},
		},
		"opportunity/" + opp: {
			{store.KindSalesPerson, event.EntitySystemUser, user, "owner of opportunity " + opp},
			{store.KindCompany, event.EntityAccount, parent, "company of opportunity " + opp},
		},
		"connection/" + conn: {
			{store.KindOpportunity, event.EntityOpportunity, opp, "opportunity of connection " + conn},
			{store.KindPerson, event.EntityContact, contact, "contact of connection " + conn},
		},
		"connection/" + gone: nil, // retiring: its role is deleted, nothing written
		"lead/" + lead:       nil,
	}
	for key, want := range deps {
		if got := p.deps[recs[key]]; !reflect.DeepEqual(got, want) {
			t.Errorf("deps of %s\n got %v\nwant %v", key, got, want)
		}
	}
	if got := p.retiring(); len(got) != 1 || got[0].key != "connection/"+gone {
		t.Errorf("retiring = %v, want only connection/%s", keysOf(got), gone)
	}
	if got := p.deletes(); len(got) != 1 || len(got[event.EntityLead]) != 1 || got[event.EntityLead][0].key != "lead/"+lead {
		t.Errorf("deletes = %v, want only lead/%s", got, lead)
	}

	// A dependency read during resolve joins its stage in key order, with
	// its own dependencies; failed and written records leave live.
	read := mk(event.EntityAccount, parent, event.Attributes{"ownerid": event.Reference(event.EntitySystemUser, user, "")})
	p.add(read)
	if got := keysOf(p.live(store.KindCompany)); !reflect.DeepEqual(got, []string{"account/" + account, "account/" + parent}) {
		t.Errorf("companies after add = %v", got)
	}
	if got := p.deps[read]; len(got) != 1 || got[0].id != user {
		t.Errorf("deps of the read account = %v, want its owner", got)
	}
	recs["account/"+account].written = true
	recs["systemuser/"+user].fail = &failure{act: actRequeue}
	if got := keysOf(p.live(store.KindCompany)); !reflect.DeepEqual(got, []string{"account/" + parent}) {
		t.Errorf("companies live after one is written = %v", got)
	}
	if got := p.live(store.KindSalesPerson); len(got) != 0 {
		t.Errorf("sales persons live after failing = %v", keysOf(got))
	}
}

func keysOf(rs []*rec) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.key)
	}
	return out
}
