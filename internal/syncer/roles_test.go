package syncer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/marketo/marketotype"
	"github.com/msisync/msisync/internal/store"
)

// roleKeys lists Marketo's roles as "opp|leadId|role", sorted.
func (e *env) roleKeys() []string {
	e.mk.mu.Lock()
	defer e.mk.mu.Unlock()
	var out []string
	for k := range e.mk.roles {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// roleKeyOf is the fake Marketo's key of contactID's role on oppID.
func (e *env) roleKeyOf(role string) string {
	e.t.Helper()
	lid, _ := e.mk.leadByExt(contactID)
	if lid == 0 {
		e.t.Fatalf("contact %s not in Marketo", contactID)
	}
	return fmt.Sprintf("%s|%d|%s", oppID, lid, role)
}

func (e *env) roleDeletes() [][]marketotype.Record {
	e.mk.mu.Lock()
	defer e.mk.mu.Unlock()
	return slices.Clone(e.mk.deletes)
}

func (e *env) storedConn(id string) (store.Connection, bool) {
	e.t.Helper()
	got, err := e.st.GetConnections(context.Background(), []string{id})
	if err != nil {
		e.t.Fatal(err)
	}
	c, ok := got[id]
	return c, ok
}

func stateEv(id, msg string, state, status int) *event.Event {
	return ev(event.EntityConnection, id, msg, event.Attributes{"statecode": event.Option(state), "statuscode": event.Option(status)})
}

func TestDeactivatedConnectionLosesItsRoleAndGetsItBackOnReactivation(t *testing.T) {
	e := newEnv(t, nil)
	e.send(graph()...) // versions 1..5; the connection is 5
	e.drain()
	key := e.roleKeyOf("Decision Maker")
	if got := e.roleKeys(); !slices.Equal(got, []string{key}) {
		t.Fatalf("roles %v, want %s", got, key)
	}

	e.send(stateEv(connID, event.MessageUpdate, 1, 2)) // version 6
	st := e.drain()
	if got := e.roleKeys(); len(got) != 0 || st.Deleted[marketotype.Roles] != 1 {
		t.Fatalf("after deactivation: roles %v, deleted %v", got, st.Deleted)
	}
	if c, ok := e.storedConn(connID); !ok || c.Role != "Decision Maker" || c.OpportunityID != oppID || c.PersonID != contactID {
		t.Fatalf("stored connection %+v (%v): a reactivation needs it", c, ok)
	}

	// A late copy of the connection's Create (no statecode, older) must not
	// bring the role back.
	late := connEv(connID, oppID, contactID, "Decision Maker")
	late.Version = 5
	e.send(late)
	e.drain()
	if got := e.roleKeys(); len(got) != 0 {
		t.Fatalf("late create revived the role: %v", got)
	}

	e.send(stateEv(connID, event.MessageSetState, 0, 1)) // version 8
	e.drain()
	if got := e.roleKeys(); !slices.Equal(got, []string{key}) {
		t.Fatalf("after reactivation: roles %v, want %s", got, key)
	}

	// The deactivation is older than the reactivation: stale.
	old := stateEv(connID, event.MessageUpdate, 1, 2)
	old.Version = 7
	e.send(old)
	st = e.drain()
	if got := e.roleKeys(); !slices.Equal(got, []string{key}) || st.Skipped != 1 {
		t.Fatalf("stale deactivation: roles %v, stats %+v", got, st)
	}
	if dl := e.q.deadLetters(); len(dl) != 0 {
		t.Fatalf("dead letters %+v", dl)
	}
}

func TestConnectionCreatedAndDeactivatedInOneBatchIsNeverWritten(t *testing.T) {
	e := newEnv(t, nil)
	evs := graph()
	e.send(append(evs, stateEv(connID, event.MessageUpdate, 1, 2))...)
	e.drain()
	if got := e.roleKeys(); len(got) != 0 {
		t.Fatalf("roles %v", got)
	}
	if e.mk.callCount("opportunities/roles sync") != 0 {
		t.Fatalf("roles written: %v", e.mk.calls)
	}
	// It is known, inactive: a reactivation alone creates it.
	e.send(stateEv(connID, event.MessageUpdate, 0, 1))
	e.drain()
	if got := e.roleKeys(); !slices.Equal(got, []string{e.roleKeyOf("Decision Maker")}) {
		t.Fatalf("after reactivation: roles %v", got)
	}
}

// Two connections with the same opportunity, contact and role are one
// Marketo role: it goes with the last of them.
func TestSharedRoleSurvivesUntilItsLastConnectionGoes(t *testing.T) {
	conn2 := gid("conne", 2)
	setup := func(t *testing.T) (*env, string) {
		e := newEnv(t, nil)
		e.send(append(graph(), connEv(conn2, oppID, contactID, "Decision Maker"))...)
		e.drain()
		key := e.roleKeyOf("Decision Maker")
		if got := e.roleKeys(); !slices.Equal(got, []string{key}) {
			t.Fatalf("roles %v, want %s", got, key)
		}
		return e, key
	}
	t.Run("delete", func(t *testing.T) {
		e, key := setup(t)
		e.send(ev(event.EntityConnection, connID, event.MessageDelete, nil))
		e.drain()
		if got := e.roleKeys(); !slices.Equal(got, []string{key}) || len(e.roleDeletes()) != 0 {
			t.Fatalf("after deleting one: roles %v, role deletes %v", got, e.roleDeletes())
		}
		if _, ok := e.storedConn(connID); ok {
			t.Fatal("deleted connection still stored")
		}
		e.send(ev(event.EntityConnection, conn2, event.MessageDelete, nil))
		e.drain()
		if got := e.roleKeys(); len(got) != 0 {
			t.Fatalf("after deleting both: roles %v", got)
		}
	})
	t.Run("deactivate", func(t *testing.T) {
		e, key := setup(t)
		e.send(stateEv(connID, event.MessageUpdate, 1, 2))
		e.drain()
		if got := e.roleKeys(); !slices.Equal(got, []string{key}) || len(e.roleDeletes()) != 0 {
			t.Fatalf("after deactivating one: roles %v, role deletes %v", got, e.roleDeletes())
		}
		// The inactive connection does not hold the role.
		e.send(ev(event.EntityConnection, conn2, event.MessageDelete, nil))
		e.drain()
		if got := e.roleKeys(); len(got) != 0 {
			t.Fatalf("after deleting the active one: roles %v", got)
		}
		// Deleting the inactive one has nothing left to delete.
		e.send(ev(event.EntityConnection, connID, event.MessageDelete, nil))
		n := len(e.roleDeletes())
		e.drain()
		if len(e.roleDeletes()) != n {
			t.Fatalf("inactive connection's delete called Marketo: %v", e.roleDeletes()[n:])
		}
	})
	t.Run("role change", func(t *testing.T) {
		e, key := setup(t)
		e.send(WebhookShape(ev(event.EntityConnection, connID, event.MessageUpdate, event.Attributes{
			"record2roleid": event.Reference("connectionrole", gid("role", 8), "Champion")})))
		e.drain()
		want := []string{e.roleKeyOf("Champion"), key}
		slices.Sort(want)
		if got := e.roleKeys(); !slices.Equal(got, want) || len(e.roleDeletes()) != 0 {
			t.Fatalf("roles %v, want %v; role deletes %v", got, want, e.roleDeletes())
		}
	})
	t.Run("both in one batch", func(t *testing.T) {
		e, _ := setup(t)
		e.send(ev(event.EntityConnection, connID, event.MessageDelete, nil), ev(event.EntityConnection, conn2, event.MessageDelete, nil))
		st := e.drain()
		if got := e.roleKeys(); len(got) != 0 || st.Completed != 2 {
			t.Fatalf("roles %v, stats %+v", got, st)
		}
		if d := e.roleDeletes(); len(d) != 1 || len(d[0]) != 1 {
			t.Fatalf("role deletes %v, want one call with the role once", d)
		}
	})
	t.Run("opportunity delete", func(t *testing.T) {
		e, _ := setup(t)
		e.send(ev(event.EntityOpportunity, oppID, event.MessageDelete, nil))
		e.drain()
		if d := e.roleDeletes(); len(d) != 1 || len(d[0]) != 1 || len(e.roleKeys()) != 0 {
			t.Fatalf("role deletes %v, roles %v", d, e.roleKeys())
		}
	})
}

// stakeholderDV knows three roles: Decision Maker and Champion are
// Stakeholder roles, Account Manager a Sales Team role.
func stakeholderDV() *fakeDataverse {
	role := func(name string, cat int) event.Attributes {
		return event.Attributes{"name": event.String(name), "category": event.Option(cat)}
	}
	return &fakeDataverse{records: map[string]event.Attributes{
		"connectionrole/" + gid("role", len("Decision Maker")):  role("Decision Maker", 1000),
		"connectionrole/" + gid("role", len("Champion")):        role("Champion", 1000),
		"connectionrole/" + gid("role", len("Account Manager")): role("Account Manager", 1001),
	}}
}

func TestOnlyStakeholderRolesBecomeMarketoRoles(t *testing.T) {
	conn2, conn3 := gid("conne", 2), gid("conne", 3)
	dmRead := "connectionrole/" + gid("role", len("Decision Maker"))
	t.Run("dataverse", func(t *testing.T) {
		dv := stakeholderDV()
		e := newEnv(t, func(c *Config) { c.Dataverse = dv })
		e.send(append(graph(), connEv(conn2, oppID, contactID, "Account Manager"))...)
		st := e.drain()
		if got := e.roleKeys(); !slices.Equal(got, []string{e.roleKeyOf("Decision Maker")}) || st.Skipped != 1 {
			t.Fatalf("roles %v, stats %+v", got, st)
		}
		if _, ok := e.storedConn(conn2); ok {
			t.Fatal("sales team connection stored")
		}
		// The category is cached: a later connection with the role reads nothing.
		e.send(connEv(conn3, oppID, contactID, "Decision Maker"))
		e.drain()
		if n := countOf(dv.reads, dmRead); n != 1 {
			t.Fatalf("%s read %d times, want once (reads %v)", dmRead, n, dv.reads)
		}
		if _, ok := e.storedConn(conn3); !ok {
			t.Fatal("second stakeholder connection not stored")
		}
	})
	t.Run("no dataverse keeps every role", func(t *testing.T) {
		e := newEnv(t, nil)
		e.send(append(graph(), connEv(conn2, oppID, contactID, "Account Manager"))...)
		e.drain()
		if got := e.roleKeys(); len(got) != 2 {
			t.Fatalf("roles %v, want both", got)
		}
	})
	t.Run("AnyConnectionRole", func(t *testing.T) {
		dv := stakeholderDV()
		e := newEnv(t, func(c *Config) { c.Dataverse = dv; c.AnyConnectionRole = true })
		e.send(append(graph(), connEv(conn2, oppID, contactID, "Account Manager"))...)
		e.drain()
		if got := e.roleKeys(); len(got) != 2 || len(dv.reads) != 0 {
			t.Fatalf("roles %v, reads %v", got, dv.reads)
		}
	})
	t.Run("unknown role", func(t *testing.T) {
		e := newEnv(t, func(c *Config) { c.Dataverse = stakeholderDV() })
		e.send(append(graph(), connEv(conn2, oppID, contactID, "Stakeholder"))...) // not in Dataverse
		st := e.drain()
		if got := e.roleKeys(); len(got) != 1 || st.Skipped != 1 || len(e.q.deadLetters()) != 0 {
			t.Fatalf("roles %v, stats %+v", got, st)
		}
	})
}

func TestRoleChangedToNonStakeholderRoleRemovesTheMarketoRole(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Dataverse = stakeholderDV() })
	e.send(graph()...)
	e.drain()
	if len(e.roleKeys()) != 1 {
		t.Fatalf("roles %v", e.roleKeys())
	}
	e.send(WebhookShape(ev(event.EntityConnection, connID, event.MessageUpdate, event.Attributes{
		"record2roleid": event.Reference("connectionrole", gid("role", len("Account Manager")), "Account Manager")})))
	e.drain()
	if got := e.roleKeys(); len(got) != 0 {
		t.Fatalf("roles %v", got)
	}
	if _, ok := e.storedConn(connID); ok {
		t.Fatal("connection with a sales team role still stored")
	}
	// Back to a stakeholder role, with the whole row (as a post image or a
	// re-read gives it): the role comes back.
	e.send(connEv(connID, oppID, contactID, "Champion"))
	e.drain()
	if got := e.roleKeys(); !slices.Equal(got, []string{e.roleKeyOf("Champion")}) {
		t.Fatalf("roles %v", got)
	}
}

func TestRoleCategoryReadFailureRequeuesThenDeadLetters(t *testing.T) {
	dv := stakeholderDV()
	dv.err = errors.New("503 service unavailable")
	e := newEnv(t, func(c *Config) { c.Dataverse = dv })
	e.send(graph()...)
	st := e.drain()
	if len(e.roleKeys()) != 0 || st.Requeued == 0 {
		t.Fatalf("roles %v, stats %+v", e.roleKeys(), st)
	}
	dl := e.q.deadLetters()
	if len(dl) != 1 || dl[0].Reason != ReasonGaveUp || !strings.Contains(dl[0].Description, "read connectionrole "+gid("role", len("Decision Maker"))) ||
		!strings.Contains(dl[0].Description, "503") {
		t.Fatalf("dead letters %+v", dl)
	}
}

func countOf(xs []string, x string) int {
	n := 0
	for _, y := range xs {
		if y == x {
			n++
		}
	}
	return n
}
