package syncer_test

import (
	"testing"

	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/marketo/marketosim"
	"github.com/msisync/msisync/internal/syncer"
)

// Two Dataverse connections between the same opportunity and contact with
// the same role are one Marketo opportunity role (its dedupe key). Synced
// in one batch they must not go into one call twice (Marketo answers 1036
// "Duplicate object found in input" for the second): both complete, one role.
func TestDuplicateConnectionsInOneBatchAreOneRole(t *testing.T) {
	k := newStack(t, marketosim.Options{}, nil)
	user, acc, con, opp := guid(0, 1), guid(1, 1), guid(2, 1), guid(3, 1)
	own := event.Reference(event.EntitySystemUser, user, "")
	// Named here; WebhookShape moves the name into the post image, as Dataverse sends it.
	role := event.Reference("connectionrole", guid(5, 1), "Decision Maker")
	conn := func(id string) *event.Event {
		return syncer.WebhookShape(mkEvent(event.EntityConnection, id, event.Attributes{"record1id": event.Reference(event.EntityOpportunity, opp, ""),
			"record2id": event.Reference(event.EntityContact, con, ""), "record2roleid": role}))
	}
	k.send(
		mkEvent(event.EntitySystemUser, user, event.Attributes{"internalemailaddress": event.String("ann@example.com")}),
		mkEvent(event.EntityAccount, acc, event.Attributes{"name": event.String("Acme"), "ownerid": own}),
		mkEvent(event.EntityContact, con, event.Attributes{"emailaddress1": event.String("joe@example.com"), "ownerid": own,
			"parentcustomerid": event.Reference(event.EntityAccount, acc, "")}),
		mkEvent(event.EntityOpportunity, opp, event.Attributes{"name": event.String("Deal"), "ownerid": own,
			"parentaccountid": event.Reference(event.EntityAccount, acc, "")}),
		conn(guid(4, 1)), conn(guid(4, 2)),
	)
	st := k.drain()
	if st.DeadLettered != 0 || st.Completed != 6 {
		t.Fatalf("stats %+v, want 6 completed and none dead-lettered", st)
	}
	if d := k.sim.Dump(); len(d.Roles) != 1 {
		t.Fatalf("roles %v, want exactly one", d.Roles)
	}
	if n := k.sim.Stats().RecordReasons["1036"]; n != 0 {
		t.Errorf("Marketo saw %d duplicate records in one call (1036)", n)
	}
}
