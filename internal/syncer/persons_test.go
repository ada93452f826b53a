package syncer

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/marketo/marketotype"
)

// Several Marketo persons hold the email: the unlinked one with the lowest
// id is taken, in both strategies; a person linked to another record never.
func TestSeveralEmailMatchesPreferTheUnlinkedOneDeterministically(t *testing.T) {
	for _, strategy := range []string{LeadSplit, LeadLookup} {
		t.Run(strategy, func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.LeadStrategy = strategy })
			e.mk.lookupSupported = strategy == LeadLookup
			e.send(userEv(userID, "a@example.com"))
			e.drain()
			other := gid("other", 1)
			e.mk.leads[5] = marketotype.Record{"email": "JOE@example.com", "externalPersonId": other}
			e.mk.leads[9] = marketotype.Record{"email": "joe@example.com"}
			e.mk.leads[7] = marketotype.Record{"email": "joe@example.com"}
			// Two records of one batch share the email: the first (by key)
			// takes person 7, the second person 9.
			c1, c2 := gid("con", 1), gid("con", 2)
			e.send(contactEv(c2, "", userID, "joe@example.com"), contactEv(c1, "", userID, "joe@example.com"))
			calls := len(e.mk.calls)
			e.drain()
			if dl := e.q.deadLetters(); len(dl) != 0 {
				t.Fatalf("dead letters %+v", dl)
			}
			if got := e.mk.leads[7]["externalPersonId"]; got != c1 {
				t.Fatalf("person 7 linked to %v, want %s (calls %v)", got, c1, e.mk.calls[calls:])
			}
			if got := e.mk.leads[9]["externalPersonId"]; got != c2 {
				t.Fatalf("person 9 linked to %v, want %s", got, c2)
			}
			if got := e.mk.leads[5]["externalPersonId"]; got != other {
				t.Fatalf("linked person 5 re-linked to %v", got)
			}
			if len(e.mk.leads) != 3 {
				t.Fatalf("%d persons, want no new one: %v", len(e.mk.leads), e.mk.leads)
			}
			// A third record with the email: only a linked person is left.
			c3 := gid("con", 3)
			e.send(contactEv(c3, "", userID, "joe@example.com"))
			e.drain()
			id, _ := e.mk.leadByExt(c3)
			if id == 0 || id == 5 || id == 7 || id == 9 || e.mk.leads[5]["externalPersonId"] != other {
				t.Fatalf("third contact on person %d; persons %v", id, e.mk.leads)
			}
			t.Logf("calls %v", e.mk.calls[calls:])
		})
	}
}

// The email query is one call per ≤ 300 distinct emails, not one per person.
func TestEmailQueryIsBatched(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.LeadStrategy = LeadSplit })
	e.send(userEv(userID, "a@example.com"))
	e.drain()
	for i := 0; i < 250; i++ {
		e.send(contactEv(gid("c", i), "", userID, fmt.Sprintf("p%d@example.com", i%125)))
	}
	e.drain()
	if n := e.mk.callCount("leads query email"); n != 1 {
		t.Fatalf("%d email queries for 250 contacts (125 emails)", n)
	}
	if len(e.mk.leads) != 250 {
		t.Fatalf("%d persons, want 250", len(e.mk.leads))
	}
}

// Two workers must not link one unlinked Marketo person to two records: the
// email is locked while it is matched, and a record whose email another
// worker holds waits.
func TestEmailMatchIsLockedAgainstOtherWorkers(t *testing.T) {
	for _, strategy := range []string{LeadSplit, LeadLookup} {
		t.Run(strategy, func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.LeadStrategy = strategy })
			e.mk.lookupSupported = strategy == LeadLookup
			e.send(userEv(userID, "a@example.com"))
			e.drain()
			if _, err := e.st.LockRecords(context.Background(), "other", []string{"email/joe@example.com"}, time.Minute); err != nil {
				t.Fatal(err)
			}
			e.send(contactEv(contactID, "", userID, "Joe@Example.com"))
			calls := len(e.mk.calls)
			st, err := e.s.ProcessBatch(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if st.Rescheduled != 1 || len(e.mk.leads) != 0 {
				t.Fatalf("stats %+v, persons %v, calls %v", st, e.mk.leads, e.mk.calls[calls:])
			}
			if err := e.st.UnlockRecords(context.Background(), "other", []string{"email/joe@example.com"}); err != nil {
				t.Fatal(err)
			}
			e.drain()
			if id, _ := e.mk.leadByExt(contactID); id == 0 {
				t.Fatal("contact not written once the email is free")
			}
		})
	}
}

// A contact new in Dataverse skips the query by externalPersonId, unless a
// worker may already have created its person (the marker written before
// every create): then a person with its id but another email is found, not
// duplicated. Without the marker, a person msisync made with its email is
// found by the email query.
func TestNewRecordsSkipTheIDQueryUnlessACreateWasUnderWay(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.LeadStrategy = LeadSplit })
	e.send(userEv(userID, "a@example.com"))
	e.drain()
	c1, c2, c3 := gid("con", 1), gid("con", 2), gid("con", 3)
	// c1: a create was under way (marker) and landed with an older email.
	if err := e.st.PutVersions(context.Background(), map[string]int64{creatingKey(c1): 1}); err != nil {
		t.Fatal(err)
	}
	e.mk.leads[41] = marketotype.Record{"email": "old@example.com", "externalPersonId": c1}
	// c2: no marker, a person with its id and its email (store lost).
	e.mk.leads[42] = marketotype.Record{"email": "c2@example.com", "externalPersonId": c2}
	e.send(contactEv(c1, "", userID, "c1@example.com"), contactEv(c2, "", userID, "c2@example.com"),
		contactEv(c3, "", userID, "c3@example.com"))
	calls := len(e.mk.calls)
	e.drain()
	got := e.mk.calls[calls:]
	if id, _ := e.mk.leadByExt(c1); id != 41 || e.mk.leads[41]["email"] != "c1@example.com" {
		t.Fatalf("c1 on person %d: %v (calls %v)", id, e.mk.leads, got)
	}
	if id, _ := e.mk.leadByExt(c2); id != 42 {
		t.Fatalf("c2 on person %d: %v", id, e.mk.leads)
	}
	if len(e.mk.leads) != 3 {
		t.Fatalf("%d persons, want 3: %v", len(e.mk.leads), e.mk.leads)
	}
	want := []string{"leads query externalPersonId", "leads query email", "leads sync updateOnly/id", "leads sync createDuplicate/"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("calls %v, want %v", got, want)
	}
	if v, _ := e.st.GetVersions(context.Background(), []string{creatingKey(c3)}); v[creatingKey(c3)] == 0 {
		t.Fatal("no marker written before creating c3's person")
	}
}
