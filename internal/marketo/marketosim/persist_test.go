package marketosim

import (
	"errors"
	"reflect"
	"sync"
	"testing"
)

// memPersist is a Persist hook that keeps the last version of every record,
// as the sandbox's SQLite table does.
type memPersist struct {
	mu    sync.Mutex
	rows  map[string]map[string]any // object/key → fields
	order []string
	fail  error
	calls int
}

func (p *memPersist) persist(cs []Change) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	if p.fail != nil {
		return p.fail
	}
	for _, c := range cs {
		k := c.Object + "/" + c.Key
		if c.Fields == nil {
			delete(p.rows, k)
			continue
		}
		if _, ok := p.rows[k]; !ok {
			p.order = append(p.order, k)
		}
		p.rows[k] = c.Fields
	}
	return nil
}

func (p *memPersist) state() State {
	p.mu.Lock()
	defer p.mu.Unlock()
	var st State
	for _, k := range p.order {
		if f, ok := p.rows[k]; ok {
			obj := k[:len(k)-len(k[lastSlash(k)+1:])-1]
			st.Add(obj, f)
		}
	}
	return st
}

func lastSlash(s string) int {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '/' {
			return i
		}
	}
	return -1
}

// Issue 14: what a call changed reaches Persist before the call answers, so
// a sandbox killed right after a response still has the records.
func TestPersistSeesEveryChangeBeforeTheResponse(t *testing.T) {
	p := &memPersist{rows: map[string]map[string]any{}}
	h := start(t, Options{Persist: p.persist})
	h.seedMSI(3)
	h.sync("opportunities", in(rec("externalOpportunityId", "opp-1", "name", "Deal", "externalCompanyId", "acc-1", "externalSalesPersonId", "sp-1")))
	h.sync("leads", in(rec("externalPersonId", "PER-1", "email", "changed@example.com")))
	h.sim.SetMSI("PER-2", map[string]any{"priority": 42})
	// Deleted records leave the persisted set too.
	r := h.post("/rest/v1/opportunities/delete.json", map[string]any{"deleteBy": "dedupeFields", "input": []map[string]any{{"externalOpportunityId": "opp-1"}}})
	if !r.Success {
		t.Fatalf("delete opportunity: %s", r.Raw)
	}
	if !reflect.DeepEqual(normalise(t, p.state()), normalise(t, h.sim.Dump())) {
		t.Fatalf("persisted records differ from the simulator's:\npersisted %v\nsimulator %v", p.state(), h.sim.Dump())
	}
	// A simulator restored from them answers as before.
	h2 := start(t, Options{Persist: (&memPersist{rows: map[string]map[string]any{}}).persist})
	if err := h2.sim.Restore(p.state()); err != nil {
		t.Fatal(err)
	}
	if got := h2.get("/rest/v1/leads.json?filterType=email&filterValues=changed@example.com&fields=email"); len(got.Result) != 1 || got.Result[0]["email"] != "changed@example.com" {
		t.Fatalf("restored lead: %s", got.Raw)
	}
}

func TestPersistFailureFailsTheCallAndKeepsTheChangesPending(t *testing.T) {
	p := &memPersist{rows: map[string]map[string]any{}}
	h := start(t, Options{Persist: p.persist})
	p.fail = errors.New("disk full")
	r := h.post("/rest/v1/salespersons.json", in(rec("externalSalesPersonId", "sp-1", "email", "owner@example.com")))
	if r.Status != 500 {
		t.Fatalf("call whose changes were not persisted: HTTP %d %s, want 500 (the client retries)", r.Status, r.Raw)
	}
	p.fail = nil
	h.sync("companies", in(rec("externalCompanyId", "acc-1", "externalSalesPersonId", "sp-1", "company", "Acme")))
	if len(p.state().SalesPersons) != 1 || len(p.state().Companies) != 1 {
		t.Fatalf("after the store recovered: %+v, want the sales person of the failed call persisted too", p.state())
	}
}
