package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/store"
)

// seedApply writes the state every Apply test starts from: a person link,
// a role link and its connection, two versions and a meta value.
func seedApply(t *testing.T, s store.Store) {
	t.Helper()
	ctx := ctxT(t)
	mustPutLinks(t, s,
		store.Link{Kind: store.KindPerson, ExternalID: "p-old", MarketoID: "1", Entity: "contact", Email: "old@example.com", UpdatedAt: Start},
		store.Link{Kind: store.KindRole, ExternalID: "c-1", MarketoID: "r1", Entity: "connection", UpdatedAt: Start})
	if err := s.PutConnections(ctx, []store.Connection{{ID: "c-1", OpportunityID: "o-1", PersonID: "p-old", Role: "Decision Maker", UpdatedAt: Start}}); err != nil {
		t.Fatalf("PutConnections: %v", err)
	}
	if err := s.PutVersions(ctx, map[string]int64{"contact/p-old": 10, "opportunity/o-1": 5}); err != nil {
		t.Fatalf("PutVersions: %v", err)
	}
	if err := s.PutMeta(ctx, "seed", "1"); err != nil {
		t.Fatalf("PutMeta: %v", err)
	}
}

// batchChanges is what one batch might save: a new link, a link put and then
// deleted (net: deleted), a stale link deleted, a connection retired, a new
// connection, versions up and down, and meta.
func batchChanges() *store.Changes {
	var c store.Changes
	c.PutLinks(store.Link{Kind: store.KindPerson, ExternalID: "p-new", MarketoID: "2", Entity: "lead", Email: "new@example.com", UpdatedAt: Start})
	c.PutLinks(store.Link{Kind: store.KindPerson, ExternalID: "p-moved", MarketoID: "3", Entity: "lead", UpdatedAt: Start})
	c.DeleteLinks(store.KindPerson, "p-moved", "p-old")
	c.DeleteLinks(store.KindRole, "c-1")
	c.DeleteConnections("c-1")
	c.PutConnections(store.Connection{ID: "c-2", OpportunityID: "o-1", PersonID: "p-new", Role: "Influencer", UpdatedAt: Start})
	// contact/p-old goes down: ignored. The batch itself asks for 12 then 11.
	c.PutVersions(map[string]int64{"contact/p-old": 7, "opportunity/o-1": 12, "lead/p-new": 3})
	c.PutVersions(map[string]int64{"opportunity/o-1": 11})
	c.PutMeta("qualified/p-moved", "p-new")
	return &c
}

// snapshot reads everything the Apply tests touch.
func snapshot(t *testing.T, s store.Store) string {
	t.Helper()
	ctx := ctxT(t)
	persons := mustGetLinks(t, s, store.KindPerson, "p-old", "p-new", "p-moved")
	roles := mustGetLinks(t, s, store.KindRole, "c-1")
	conns, err := s.GetConnections(ctx, []string{"c-1", "c-2"})
	if err != nil {
		t.Fatalf("GetConnections: %v", err)
	}
	versions, err := s.GetVersions(ctx, []string{"contact/p-old", "opportunity/o-1", "lead/p-new"})
	if err != nil {
		t.Fatalf("GetVersions: %v", err)
	}
	meta, _, err := s.GetMeta(ctx, "qualified/p-moved")
	if err != nil {
		t.Fatalf("GetMeta: %v", err)
	}
	out := ""
	for _, id := range []string{"p-old", "p-new", "p-moved"} {
		if l, ok := persons[id]; ok {
			out += fmt.Sprintf("person %s=%s %s; ", id, l.MarketoID, l.Email)
		}
	}
	if _, ok := roles["c-1"]; ok {
		out += "role c-1; "
	}
	for _, id := range []string{"c-1", "c-2"} {
		if c, ok := conns[id]; ok {
			out += fmt.Sprintf("conn %s=%s/%s/%s; ", id, c.OpportunityID, c.PersonID, c.Role)
		}
	}
	out += fmt.Sprintf("versions %v; meta %q", versions, meta)
	return out
}

func testApply(t *testing.T, s store.Store, _ *clock.Fake) {
	seedApply(t, s)
	if err := s.Apply(ctxT(t), batchChanges()); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	got := snapshot(t, s)
	want := `person p-new=2 new@example.com; conn c-2=o-1/p-new/Influencer; versions map[contact/p-old:10 lead/p-new:3 opportunity/o-1:12]; meta "p-new"`
	if got != want {
		t.Errorf("after Apply:\n got %s\nwant %s", got, want)
	}
	// Nil and empty changes are no-ops.
	if err := s.Apply(ctxT(t), nil); err != nil {
		t.Errorf("Apply(nil): %v", err)
	}
	if err := s.Apply(ctxT(t), &store.Changes{}); err != nil {
		t.Errorf("Apply(empty): %v", err)
	}
	if again := snapshot(t, s); again != got {
		t.Errorf("empty Apply changed the store:\n got %s\nwant %s", again, got)
	}
}

func testApplyCancelled(t *testing.T, s store.Store, _ *clock.Fake) {
	seedApply(t, s)
	before := snapshot(t, s)
	ctx, cancel := context.WithCancel(ctxT(t))
	cancel()
	if err := s.Apply(ctx, batchChanges()); err == nil {
		t.Fatal("Apply with a cancelled context succeeded")
	}
	if after := snapshot(t, s); after != before {
		t.Errorf("cancelled Apply changed the store:\n got %s\nwant %s", after, before)
	}
}

// ErrInjected is the failure ApplyRollback injects.
var ErrInjected = errors.New("storetest: injected failure")

// ApplyRollback checks that an Apply failing mid-transaction leaves nothing
// of the batch. inject makes the adapter's next Apply fail with the given
// error right after the named step ("links", "connections", "versions" or
// "meta": the last one is after every write) and returns a function that
// removes the fault. Adapters call it from their own tests, since only they
// can reach inside their transaction.
func ApplyRollback(t *testing.T, s store.Store, inject func(step string, err error) (remove func())) {
	seedApply(t, s)
	before := snapshot(t, s)
	for _, step := range []string{"links", "connections", "versions", "meta"} {
		remove := inject(step, ErrInjected)
		err := s.Apply(ctxT(t), batchChanges())
		remove()
		if !errors.Is(err, ErrInjected) {
			t.Fatalf("Apply failing after %s: err %v, want the injected one", step, err)
		}
		if after := snapshot(t, s); after != before {
			t.Fatalf("Apply failing after %s left part of the batch:\n got %s\nwant %s", step, after, before)
		}
	}
	if err := s.Apply(ctxT(t), batchChanges()); err != nil {
		t.Fatalf("Apply after the faults: %v", err)
	}
	if snapshot(t, s) == before {
		t.Error("Apply after the faults changed nothing")
	}
}
