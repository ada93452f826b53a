package syncer

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/marketo/marketotype"
	"github.com/msisync/msisync/internal/store"
)

// A batch saves its bookkeeping in one Apply; when that fails nothing of
// the batch is in the store and no message is settled, so the redelivered
// messages write the same Marketo records again, without duplicates.
func TestFailedSaveLeavesNoBookkeepingAndRedeliveryCompletes(t *testing.T) {
	e := newEnv(t, nil)
	e.send(graph()...)
	disk := errors.New("disk I/O error")
	e.st.applyErr = disk
	_, err := e.s.ProcessBatch(context.Background())
	if !errors.Is(err, disk) {
		t.Fatalf("ProcessBatch err = %v, want the store's", err)
	}
	for _, kind := range []string{store.KindSalesPerson, store.KindCompany, store.KindPerson, store.KindOpportunity, store.KindRole} {
		if n, _ := e.st.CountLinks(context.Background(), kind); n != 0 {
			t.Errorf("%d %s links after the failed save, want none", n, kind)
		}
	}
	if c, _ := e.st.GetConnections(context.Background(), []string{connID}); len(c) != 0 {
		t.Errorf("connection stored after the failed save: %v", c)
	}
	if v, _ := e.st.GetVersions(context.Background(), []string{"account/" + accountID, "contact/" + contactID}); len(v) != 0 {
		t.Errorf("versions stored after the failed save: %v", v)
	}
	if n := e.q.pending(); n != 5 {
		t.Fatalf("%d messages pending after the failed save, want all 5", n)
	}
	leads := len(e.mk.leads)
	if leads != 1 {
		t.Fatalf("%d Marketo leads after the first try, want 1", leads)
	}

	e.st.applyErr = nil
	e.clk.Advance(2 * time.Minute) // past the queue lock
	st := e.drain()
	if st.Completed != 5 || st.DeadLettered != 0 {
		t.Fatalf("stats after redelivery %+v", st)
	}
	if len(e.mk.leads) != 1 {
		t.Errorf("%d Marketo leads after redelivery, want still 1", len(e.mk.leads))
	}
	links, _ := e.st.GetLinks(context.Background(), store.KindPerson, []string{contactID})
	if lid, l := e.mk.leadByExt(contactID); l == nil || links[contactID].MarketoID != fmt.Sprint(lid) {
		t.Errorf("person link after redelivery = %+v", links[contactID])
	}
	if c, _ := e.st.GetConnections(context.Background(), []string{connID}); c[connID].Role != "Decision Maker" {
		t.Errorf("connection after redelivery: %v", c)
	}
	if e.st.applies != 1 {
		t.Errorf("%d Apply calls for one completed batch, want 1", e.st.applies)
	}
}

// The Marketo ids a query finds for dependencies are bookkeeping too: a
// failed save keeps none of them, and the redelivery asks Marketo again.
func TestFailedSaveKeepsNoLinkAQueryFound(t *testing.T) {
	e := newEnv(t, nil)
	// The sales person and the company are in Marketo but not in the store
	// (synced before the store was lost, or by a backfill elsewhere).
	e.mk.salesPersons[userID] = marketotype.Record{"externalSalesPersonId": userID, "email": "ann@example.com"}
	e.mk.companies[accountID] = marketotype.Record{"externalCompanyId": accountID, "company": "Acme"}
	e.send(contactEv(contactID, accountID, userID, "joe@example.com"))
	disk := errors.New("disk I/O error")
	e.st.applyErr = disk
	if _, err := e.s.ProcessBatch(context.Background()); !errors.Is(err, disk) {
		t.Fatalf("ProcessBatch err = %v, want the store's", err)
	}
	queries := func() int { return e.mk.callCount("companies query") }
	if queries() != 1 {
		t.Fatalf("%d company queries in the first try, want 1", queries())
	}
	for _, kind := range []string{store.KindSalesPerson, store.KindCompany} {
		if n, _ := e.st.CountLinks(context.Background(), kind); n != 0 {
			t.Errorf("%d %s links stored by the failed batch, want none", n, kind)
		}
	}

	e.st.applyErr = nil
	e.clk.Advance(2 * time.Minute) // past the queue lock
	if st := e.drain(); st.Completed != 1 || st.DeadLettered != 0 {
		t.Fatalf("stats after redelivery %+v", st)
	}
	if queries() != 2 {
		t.Errorf("%d company queries after redelivery, want 2 (the failed batch's finding was not kept)", queries())
	}
	links, _ := e.st.GetLinks(context.Background(), store.KindCompany, []string{accountID})
	if links[accountID].MarketoID == "" {
		t.Errorf("company link after redelivery = %+v, want the id Marketo reported", links[accountID])
	}
	if _, l := e.mk.leadByExt(contactID); l == nil || l["externalCompanyId"] != accountID {
		t.Errorf("lead after redelivery = %v", l)
	}
}
