package syncer

import (
	"maps"
	"slices"
	"strings"

	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/store"
)

// stages is MSI's mandated write order.
var stages = []string{store.KindSalesPerson, store.KindCompany, store.KindPerson, store.KindOpportunity, store.KindRole}

// plan is what a batch writes and in which order, computed from its
// records alone (newPlan does no I/O): every record by stage, in MSI's
// order and key order; what each needs in Marketo before it (its deps);
// which connections retire their role; which records are deleted. The
// later stages read it: resolve looks the deps up, the writers write
// plan.live records that plan.upserts, the role writer retires
// plan.retiring and the deleter deletes plan.deletes.
type plan struct {
	defaultSalesPerson string
	conns              map[*rec]*connState // the role writer's connection records
	stages             map[string][]*rec   // kind → records in key order
	deps               map[*rec][]dep
}

// newPlan plans recs. conns is what the role writer made of the connection
// records (their connection, whether they retire); defaultSalesPerson owns
// team-owned records.
func newPlan(recs map[string]*rec, conns map[*rec]*connState, defaultSalesPerson string) *plan {
	p := &plan{defaultSalesPerson: defaultSalesPerson, conns: conns, stages: map[string][]*rec{}, deps: map[*rec][]dep{}}
	for _, k := range slices.Sorted(maps.Keys(recs)) {
		p.add(recs[k])
	}
	return p
}

// add plans r: a record of the batch, or a dependency resolve read from
// Dataverse (written before the records that need it).
func (p *plan) add(r *rec) {
	rs := p.stages[r.kind]
	i, _ := slices.BinarySearchFunc(rs, r.key, func(x *rec, key string) int { return strings.Compare(x.key, key) })
	p.stages[r.kind] = slices.Insert(rs, i, r)
	p.deps[r] = depsOf(r, p.conns[r], p.defaultSalesPerson)
}

// live returns the records of a stage neither failed nor written yet, in
// key order.
func (p *plan) live(kind string) []*rec {
	var out []*rec
	for _, r := range p.stages[kind] {
		if r.fail == nil && !r.written {
			out = append(out, r)
		}
	}
	return out
}

// upserts reports whether r is written to Marketo: not deleted, and not a
// connection whose role retires.
func (p *plan) upserts(r *rec) bool {
	c := p.conns[r]
	return !r.deleted && (c == nil || c.retire == 0)
}

// retiring returns, in key order, the connection records whose Marketo
// role is removed without a delete in Dataverse (deactivated, or no longer
// a stakeholder role).
func (p *plan) retiring() []*rec {
	var out []*rec
	for _, r := range p.stages[store.KindRole] {
		if c := p.conns[r]; c != nil && c.retire != 0 {
			out = append(out, r)
		}
	}
	return out
}

// deletes returns the deleted records (and merged-away ones) by entity, in
// key order.
func (p *plan) deletes() map[string][]*rec {
	out := map[string][]*rec{}
	for _, kind := range stages {
		for _, r := range p.stages[kind] {
			if r.deleted {
				out[r.entity] = append(out[r.entity], r)
			}
		}
	}
	return out
}

// depsOf lists what a record needs in Marketo before it can be written:
// its owner (a sales person), its company, a role's opportunity and contact.
func depsOf(r *rec, conn *connState, defaultSalesPerson string) []dep {
	var out []dep
	owner := func() {
		ref, ok := refOf(r.attrs, "ownerid")
		if !ok {
			return
		}
		id := ref.ID
		if ref.LogicalName != event.EntitySystemUser {
			id = defaultSalesPerson // team-owned
		}
		if id != "" {
			out = append(out, dep{store.KindSalesPerson, event.EntitySystemUser, id, "owner of " + r.name()})
		}
	}
	company := func(cols ...string) {
		for _, c := range cols {
			if ref, ok := refOf(r.attrs, c); ok && ref.LogicalName == event.EntityAccount {
				out = append(out, dep{store.KindCompany, event.EntityAccount, ref.ID, "company of " + r.name()})
				return
			}
		}
	}
	switch r.entity {
	case event.EntityAccount:
		owner()
	case event.EntityContact:
		owner()
		company("parentcustomerid")
	case event.EntityLead:
		owner()
		company("parentaccountid")
	case event.EntityOpportunity:
		owner()
		company("parentaccountid", "customerid")
	case event.EntityConnection:
		if c := conn; c != nil && c.conn != nil && c.retire == 0 {
			out = append(out,
				dep{store.KindOpportunity, event.EntityOpportunity, c.conn.OpportunityID, "opportunity of connection " + r.id},
				dep{store.KindPerson, event.EntityContact, c.conn.PersonID, "contact of connection " + r.id})
		}
	}
	return out
}
