package syncer

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/msisync/msisync/internal/event"
)

// overlay decides per value what a message's Target may erase or rename
// (see names.go); these cases are the shapes real webhooks send.
func TestOverlayKeepsImageNamesAndRealClears(t *testing.T) {
	role := "0f2a7c1e-5b8d-4c3a-9e61-3d2b1a0f9e8c"
	other := "1a2b3c4d-0000-4000-8000-000000000001"
	// Target lookups carry no name in real webhooks (bound by id), and the
	// id may be upper case.
	nameless := event.Value{Kind: event.KindRef, Ref: &event.Ref{LogicalName: "connectionrole", ID: "0F2A7C1E-5B8D-4C3A-9E61-3D2B1A0F9E8C"}}
	named := event.Reference("connectionrole", role, "Decision Maker")
	cases := []struct {
		name      string
		ev        *event.Event
		cur       *event.Value
		val       event.Value
		target    bool
		wantName  string
		wantNull  bool
		wantApply bool
	}{
		{name: "post image names the Target lookup", target: true, val: nameless, wantApply: true, wantName: "Decision Maker",
			ev: &event.Event{Message: event.MessageCreate, PostImages: map[string]event.Attributes{"PostImage": {"record2roleid": named}}}},
		{name: "pre image names an unchanged lookup", target: true, val: nameless, wantApply: true, wantName: "Decision Maker",
			ev: &event.Event{Message: event.MessageUpdate, PreImages: map[string]event.Attributes{"PreImage": {"record2roleid": named}}}},
		{name: "pre image of another row does not", target: true, val: nameless, wantApply: true, wantName: "",
			ev: &event.Event{Message: event.MessageUpdate, PreImages: map[string]event.Attributes{"PreImage": {"record2roleid": event.Reference("connectionrole", other, "Champion")}}}},
		{name: "an earlier event's name of the same row", target: true, val: nameless, cur: &named, wantApply: true, wantName: "Decision Maker",
			ev: &event.Event{Message: event.MessageUpdate}},
		{name: "null in an Update's Target is a clear", target: true, val: event.Null(), cur: &named, wantApply: true, wantNull: true,
			ev: &event.Event{Message: event.MessageUpdate}},
		{name: "null built from an Assign's inputs keeps the image value", target: true, val: event.Null(), cur: &named, wantApply: false,
			ev: &event.Event{Message: event.MessageAssign}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var cur event.Value
			if c.cur != nil {
				cur = *c.cur
			}
			got, apply := overlay(cur, c.cur != nil, c.val, c.ev, "record2roleid", c.target)
			if apply != c.wantApply {
				t.Fatalf("apply %v, want %v", apply, c.wantApply)
			}
			if !apply {
				return
			}
			if c.wantNull {
				if !got.IsNull() {
					t.Fatalf("got %+v, want null", got)
				}
				return
			}
			ref, ok := got.Reference()
			if !ok || !strings.EqualFold(ref.ID, role) || ref.Name != c.wantName {
				t.Fatalf("got %+v, want %s named %q", ref, role, c.wantName)
			}
		})
	}
}

// A name learnt from one event's image serves a later event whose Target
// names the same role by id only and has no image (the store source), also
// in a new worker process (a new Syncer on the same store); a role never
// named anywhere waits, and its record is dead-lettered naming the lookup.
func TestLookupNameFromTheStoreAndDeadLetterWithoutOne(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxAttempts = 1 })
	e.send(graph()...) // connEv: Decision Maker named in the post image
	e.drain()
	restarted, err := New(e.s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.s = restarted // the in-process cache is gone; the store remembers
	bare := func(id string, roleN int) *event.Event {
		return ev(event.EntityConnection, id, event.MessageCreate, event.Attributes{
			"record1id":     event.Reference(event.EntityOpportunity, oppID, ""),
			"record2id":     event.Reference(event.EntityContact, contactID, ""),
			"record2roleid": event.Reference("connectionrole", gid("role", roleN), "")})
	}
	e.send(bare(gid("conne", 7), len("Decision Maker")), bare(gid("conne", 8), 99))
	e.drain()
	if got := e.roleKeys(); !slices.Equal(got, []string{e.roleKeyOf("Decision Maker")}) {
		t.Fatalf("roles %v, want only Decision Maker", got)
	}
	dead := e.q.deadLetters()
	if len(dead) != 1 || dead[0].Reason != ReasonMissingData || !strings.Contains(dead[0].Description, "lookup record2roleid of connection "+gid("conne", 8)) {
		t.Fatalf("dead letters %+v, want connection %s dead-lettered for its nameless role", dead, gid("conne", 8))
	}
	for _, r := range e.mk.roles {
		if s := fmt.Sprint(r["role"]); event.IsGUID(s) {
			t.Fatalf("a role named by its GUID reached Marketo: %v", r)
		}
	}
}

// An option-set label from an earlier event of the batch survives a later
// event that repeats the value without labels, and is dropped when the later
// event changes the value (the old label would describe the old value).
func TestLabelKeptForTheSameValueDroppedForANewOne(t *testing.T) {
	for _, tc := range []struct {
		name  string
		later int
		want  string
	}{{"same value", 7, "Consulting"}, {"new value", 8, "8"}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			create := accountEv(accountID, userID)
			create.Attributes["industrycode"] = event.Option(7)
			create.Formatted = map[string]string{"industrycode": "Consulting"}
			up := ev(event.EntityAccount, accountID, event.MessageUpdate, event.Attributes{"industrycode": event.Option(tc.later)})
			e.send(userEv(userID, "ann@example.com"), create, up)
			e.drain()
			e.mk.mu.Lock()
			got := e.mk.companies[accountID]["industry"]
			e.mk.mu.Unlock()
			if fmt.Sprint(got) != tc.want {
				t.Fatalf("industry %v, want %s", got, tc.want)
			}
		})
	}
}
