package syncer

import (
	"context"
	"errors"
	"testing"

	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/store"
)

func mergeEv(entity, master, sub string, content event.Attributes) *event.Event {
	e := ev(entity, master, event.MessageMerge, content)
	e.SubordinateID = sub
	return e
}

// Either event of a merge retires the subordinate on its own: the Merge
// message (SubordinateId), or the subordinate's Update carrying merged =
// true (when the Merge step is not registered). Whichever comes second
// changes nothing more.
func TestMergeRetiresTheSubordinateFromEitherEvent(t *testing.T) {
	sub := gid("con", 2)
	for _, first := range []string{"merge", "update"} {
		for _, policy := range []string{DeleteKeep, DeleteDelete} {
			t.Run(first+"/"+policy, func(t *testing.T) {
				e := newEnv(t, func(c *Config) { c.DeletePolicy = policy; c.LeadStrategy = LeadSplit })
				e.send(userEv(userID, "a@example.com"), contactEv(contactID, "", userID, "joe@example.com"),
					contactEv(sub, "", userID, "jd@example.com"))
				e.drain()
				subPerson, _ := e.mk.leadByExt(sub)
				merge := mergeEv(event.EntityContact, contactID, sub, event.Attributes{"jobtitle": event.String("CTO")})
				off := ev(event.EntityContact, sub, event.MessageUpdate, event.Attributes{"statecode": event.Option(1),
					"statuscode": event.Option(2), "merged": event.Bool(true), "masterid": event.Reference(event.EntityContact, contactID, "")})
				evs := []*event.Event{merge, off}
				if first == "update" {
					evs = []*event.Event{off, merge}
				}
				e.send(evs[0])
				e.drain()
				check := func() {
					t.Helper()
					l, kept := e.mk.leads[subPerson]
					switch {
					case policy == DeleteDelete && kept:
						t.Fatalf("subordinate's person kept: %v", l)
					case policy == DeleteKeep && (!kept || l["externalPersonId"] != nil):
						t.Fatalf("subordinate's person %d = %v, want kept and unlinked", subPerson, l)
					}
					if links, _ := e.st.GetLinks(context.Background(), store.KindPerson, []string{sub}); len(links) != 0 {
						t.Fatalf("subordinate still linked in the store: %v", links)
					}
					if id, _ := e.mk.leadByExt(contactID); id == 0 {
						t.Fatal("master lost its person")
					}
				}
				check()
				calls := len(e.mk.calls)
				e.send(evs[1])
				e.drain()
				check()
				if first == "update" {
					// The Merge still re-syncs the master: one write.
					if _, l := e.mk.leadByExt(contactID); l["title"] != "CTO" {
						t.Fatalf("master %v", l)
					}
				} else if n := len(e.mk.calls) - calls; n != 0 {
					t.Fatalf("the subordinate's late Update cost %d calls: %v", n, e.mk.calls[calls:])
				}
				if dl := e.q.deadLetters(); len(dl) != 0 {
					t.Fatalf("dead letters %+v", dl)
				}
			})
		}
	}
}

// When the subordinate cannot be retired, the Merge is retried: it is not
// completed with the subordinate still linked.
func TestMergeIsRetriedUntilTheSubordinateIsRetired(t *testing.T) {
	sub := gid("con", 2)
	e := newEnv(t, func(c *Config) { c.DeletePolicy = DeleteDelete; c.LeadStrategy = LeadSplit })
	e.send(userEv(userID, "a@example.com"), contactEv(contactID, "", userID, "joe@example.com"),
		contactEv(sub, "", userID, "jd@example.com"))
	e.drain()
	subPerson, _ := e.mk.leadByExt(sub)
	e.send(mergeEv(event.EntityContact, contactID, sub, nil))
	// The master's write succeeds; the delete of the subordinate's person fails.
	e.mk.failDelete = errors.New("connection reset")
	st, err := e.s.ProcessBatch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Requeued != 1 || e.mk.leads[subPerson] == nil {
		t.Fatalf("stats %+v, subordinate person %v", st, e.mk.leads[subPerson])
	}
	e.mk.failDelete = nil
	e.drain()
	if e.mk.leads[subPerson] != nil {
		t.Fatalf("subordinate's person %v not deleted on retry", e.mk.leads[subPerson])
	}
}

// A backfill reads merged-away records too (inactive, merged = true): they
// get no Marketo person.
func TestBackfilledMergedRecordGetsNoPerson(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.LeadStrategy = LeadSplit })
	e.send(userEv(userID, "a@example.com"))
	e.drain()
	c := contactEv(contactID, "", userID, "joe@example.com")
	c.Source = event.SourceBackfill
	c.Attributes["merged"] = event.Bool(true)
	c.Attributes["statecode"] = event.Option(1)
	calls := len(e.mk.calls)
	e.send(c)
	st := e.drain()
	if len(e.mk.leads) != 0 || st.Completed != 1 || len(e.q.deadLetters()) != 0 {
		t.Fatalf("persons %v, stats %+v, calls %v", e.mk.leads, st, e.mk.calls[calls:])
	}
}
