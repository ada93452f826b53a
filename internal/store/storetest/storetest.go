// Package storetest is the conformance suite every store.Store adapter must
// pass, so that the SQLite and PostgreSQL stores behave the same.
package storetest

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/store"
)

// Start is where each subtest's fake clock begins. It has no sub-microsecond
// part because PostgreSQL keeps microseconds.
var Start = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// NewStore opens a fresh, empty store that takes its time from clk. It
// registers its own resource cleanup (temp files, schemas) with t; the suite
// closes the store itself, before those cleanups run.
type NewStore func(t *testing.T, clk *clock.Fake) store.Store

// Run runs the conformance suite, one subtest per behaviour, each on a fresh
// store.
func Run(t *testing.T, newStore func(t *testing.T, clk *clock.Fake) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store, clk *clock.Fake)
	}{
		{"LinksPutGet", testLinksPutGet},
		{"LinksUpsertOverwrites", testLinksUpsert},
		{"LinksKindsAreSeparate", testLinksKinds},
		{"LinksIDsStoredAsGiven", testLinksIDsAsGiven},
		{"LinksDuplicateInBatch", testLinksDuplicateInBatch},
		{"DeleteLinks", testDeleteLinks},
		{"ListLinksPaging", testListLinks},
		{"CountLinks", testCountLinks},
		{"LinksLargeBatch", testLinksLargeBatch},
		{"Versions", testVersions},
		{"VersionsLargeBatch", testVersionsLargeBatch},
		{"VersionsOfColumns", testVersionsOfColumns},
		{"VersionsOfColumnsLargeBatch", testVersionsOfColumnsLargeBatch},
		{"Connections", testConnections},
		{"ConnectionsByOpportunity", testConnectionsByOpportunity},
		{"MSIValues", testMSIValues},
		{"Lease", testLease},
		{"LeaseIndependentNames", testLeaseNames},
		{"LockRecords", testLockRecords},
		{"LockRecordsRenew", testLockRecordsRenew},
		{"LockRecordsConcurrent", testLockRecordsConcurrent},
		{"LockRecordsLargeBatch", testLockRecordsLarge},
		{"RecordLockExpiry", testRecordLockExpiry},
		{"LockLease", testLockLease},
		{"Meta", testMeta},
		{"Ping", testPing},
		{"EmptyInputs", testEmptyInputs},
		{"Apply", testApply},
		{"ApplyCancelled", testApplyCancelled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := clock.NewFake(Start)
			s := newStore(t, clk)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tc.fn(t, s, clk)
		})
	}
}

func ctxT(t *testing.T) context.Context { return t.Context() }

func mustPutLinks(t *testing.T, s store.Store, links ...store.Link) {
	t.Helper()
	if err := s.PutLinks(ctxT(t), links); err != nil {
		t.Fatalf("PutLinks(%d links): %v", len(links), err)
	}
}

func mustGetLinks(t *testing.T, s store.Store, kind string, ids ...string) map[string]store.Link {
	t.Helper()
	got, err := s.GetLinks(ctxT(t), kind, ids)
	if err != nil {
		t.Fatalf("GetLinks(%s, %d ids): %v", kind, len(ids), err)
	}
	return got
}

func sameLink(a, b store.Link) bool {
	return a.Kind == b.Kind && a.ExternalID == b.ExternalID && a.MarketoID == b.MarketoID &&
		a.Entity == b.Entity && a.Email == b.Email && a.UpdatedAt.Equal(b.UpdatedAt)
}

func testLinksPutGet(t *testing.T, s store.Store, clk *clock.Fake) {
	stamped := Start.Add(-time.Hour).Add(123 * time.Microsecond)
	a := store.Link{Kind: store.KindPerson, ExternalID: "3f2a0000-0000-0000-0000-000000000001", MarketoID: "1001",
		Entity: "contact", Email: "ann@example.com", UpdatedAt: stamped}
	b := store.Link{Kind: store.KindPerson, ExternalID: "3f2a0000-0000-0000-0000-000000000002", MarketoID: "1002",
		Entity: "lead"} // zero UpdatedAt: the store stamps it from its clock
	mustPutLinks(t, s, a, b)

	got := mustGetLinks(t, s, store.KindPerson, a.ExternalID, b.ExternalID, "3f2a0000-0000-0000-0000-0000000000ff")
	if len(got) != 2 {
		t.Fatalf("GetLinks returned %d links, want 2 (missing ids must be absent): %v", len(got), got)
	}
	if !sameLink(got[a.ExternalID], a) {
		t.Errorf("link a = %+v, want %+v", got[a.ExternalID], a)
	}
	wantB := b
	wantB.UpdatedAt = clk.Now()
	if !sameLink(got[b.ExternalID], wantB) {
		t.Errorf("link b = %+v, want %+v (zero UpdatedAt stamped with the clock)", got[b.ExternalID], wantB)
	}
	if _, ok := got["3f2a0000-0000-0000-0000-0000000000ff"]; ok {
		t.Errorf("missing id present in result")
	}
	if got := mustGetLinks(t, s, store.KindPerson, "nobody"); len(got) != 0 {
		t.Errorf("GetLinks(missing) = %v, want empty", got)
	}
}

func testLinksUpsert(t *testing.T, s store.Store, clk *clock.Fake) {
	id := "aaaa0000-0000-0000-0000-000000000001"
	mustPutLinks(t, s, store.Link{Kind: store.KindCompany, ExternalID: id, MarketoID: "c-1", Entity: "account"})
	clk.Advance(time.Minute)
	mustPutLinks(t, s, store.Link{Kind: store.KindCompany, ExternalID: id, MarketoID: "c-2", Entity: "account", Email: "x@y.z"})
	got := mustGetLinks(t, s, store.KindCompany, id)
	want := store.Link{Kind: store.KindCompany, ExternalID: id, MarketoID: "c-2", Entity: "account", Email: "x@y.z", UpdatedAt: clk.Now()}
	if !sameLink(got[id], want) {
		t.Errorf("after upsert got %+v, want %+v", got[id], want)
	}
	if n, err := s.CountLinks(ctxT(t), store.KindCompany); err != nil || n != 1 {
		t.Errorf("CountLinks after upsert = %d, %v; want 1", n, err)
	}
}

func testLinksKinds(t *testing.T, s store.Store, _ *clock.Fake) {
	id := "bbbb0000-0000-0000-0000-000000000001"
	mustPutLinks(t, s,
		store.Link{Kind: store.KindCompany, ExternalID: id, MarketoID: "company-7"},
		store.Link{Kind: store.KindPerson, ExternalID: id, MarketoID: "person-7"},
	)
	if got := mustGetLinks(t, s, store.KindCompany, id); got[id].MarketoID != "company-7" {
		t.Errorf("company link = %+v, want MarketoID company-7", got[id])
	}
	if got := mustGetLinks(t, s, store.KindPerson, id); got[id].MarketoID != "person-7" {
		t.Errorf("person link = %+v, want MarketoID person-7", got[id])
	}
	if got := mustGetLinks(t, s, store.KindOpportunity, id); len(got) != 0 {
		t.Errorf("opportunity links = %v, want none", got)
	}
	if err := s.DeleteLinks(ctxT(t), store.KindCompany, []string{id}); err != nil {
		t.Fatalf("DeleteLinks: %v", err)
	}
	if got := mustGetLinks(t, s, store.KindPerson, id); got[id].MarketoID != "person-7" {
		t.Errorf("deleting the company link removed the person link: %v", got)
	}
}

func testLinksIDsAsGiven(t *testing.T, s store.Store, _ *clock.Fake) {
	upper := "CCCC0000-0000-0000-0000-000000000001"
	lower := "cccc0000-0000-0000-0000-000000000001"
	mustPutLinks(t, s, store.Link{Kind: store.KindPerson, ExternalID: upper, MarketoID: "1"})
	if got := mustGetLinks(t, s, store.KindPerson, lower); len(got) != 0 {
		t.Errorf("lower-case lookup of an upper-case id found %v; ids must be stored as given", got)
	}
	got := mustGetLinks(t, s, store.KindPerson, upper)
	if got[upper].ExternalID != upper {
		t.Errorf("ExternalID = %q, want %q", got[upper].ExternalID, upper)
	}
}

func testLinksDuplicateInBatch(t *testing.T, s store.Store, _ *clock.Fake) {
	id := "dddd0000-0000-0000-0000-000000000001"
	mustPutLinks(t, s,
		store.Link{Kind: store.KindPerson, ExternalID: id, MarketoID: "first"},
		store.Link{Kind: store.KindPerson, ExternalID: id, MarketoID: "last"},
	)
	if got := mustGetLinks(t, s, store.KindPerson, id, id); got[id].MarketoID != "last" || len(got) != 1 {
		t.Errorf("duplicate id in one batch: got %v, want the last one (MarketoID last)", got)
	}
}

func testDeleteLinks(t *testing.T, s store.Store, _ *clock.Fake) {
	var links []store.Link
	for i := range 5 {
		links = append(links, store.Link{Kind: store.KindOpportunity, ExternalID: fmt.Sprintf("opp-%d", i), MarketoID: fmt.Sprintf("m%d", i)})
	}
	mustPutLinks(t, s, links...)
	if err := s.DeleteLinks(ctxT(t), store.KindOpportunity, []string{"opp-1", "opp-3", "opp-missing"}); err != nil {
		t.Fatalf("DeleteLinks: %v", err)
	}
	got := mustGetLinks(t, s, store.KindOpportunity, "opp-0", "opp-1", "opp-2", "opp-3", "opp-4")
	want := []string{"opp-0", "opp-2", "opp-4"}
	if keys := slices.Sorted(maps.Keys(got)); !slices.Equal(keys, want) {
		t.Errorf("after delete, remaining = %v, want %v", keys, want)
	}
}

func testListLinks(t *testing.T, s store.Store, _ *clock.Fake) {
	// Insert out of order; listing must come back in external-id order.
	ids := []string{"e5", "a1", "c3", "b2", "d4", "f6", "g7"}
	var links []store.Link
	for _, id := range ids {
		links = append(links, store.Link{Kind: store.KindCompany, ExternalID: id, MarketoID: "m-" + id})
	}
	links = append(links, store.Link{Kind: store.KindPerson, ExternalID: "a0", MarketoID: "other kind"})
	mustPutLinks(t, s, links...)

	var seen []string
	after := ""
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatalf("ListLinks did not terminate; seen %v", seen)
		}
		page, err := s.ListLinks(ctxT(t), store.KindCompany, after, 3)
		if err != nil {
			t.Fatalf("ListLinks(after %q): %v", after, err)
		}
		if len(page) > 3 {
			t.Fatalf("ListLinks(limit 3) returned %d links", len(page))
		}
		if len(page) == 0 {
			break
		}
		for _, l := range page {
			if l.Kind != store.KindCompany || l.MarketoID != "m-"+l.ExternalID {
				t.Errorf("listed link %+v does not match what was put", l)
			}
			seen = append(seen, l.ExternalID)
		}
		after = page[len(page)-1].ExternalID
	}
	want := slices.Sorted(slices.Values(ids))
	if !slices.Equal(seen, want) {
		t.Errorf("paged listing = %v, want %v", seen, want)
	}

	page, err := s.ListLinks(ctxT(t), store.KindCompany, "c3", 2)
	if err != nil {
		t.Fatalf("ListLinks(after c3): %v", err)
	}
	if got := linkIDs(page); !slices.Equal(got, []string{"d4", "e5"}) {
		t.Errorf("ListLinks(after c3, limit 2) = %v, want [d4 e5]", got)
	}
	page, err = s.ListLinks(ctxT(t), store.KindCompany, "c", 1)
	if err != nil {
		t.Fatalf("ListLinks(after c): %v", err)
	}
	if got := linkIDs(page); !slices.Equal(got, []string{"c3"}) {
		t.Errorf("ListLinks(after c, limit 1) = %v, want [c3] (after need not be a stored id)", got)
	}
}

func linkIDs(links []store.Link) []string {
	var ids []string
	for _, l := range links {
		ids = append(ids, l.ExternalID)
	}
	return ids
}

func testCountLinks(t *testing.T, s store.Store, _ *clock.Fake) {
	for _, kind := range []string{store.KindSalesPerson, store.KindRole} {
		if n, err := s.CountLinks(ctxT(t), kind); err != nil || n != 0 {
			t.Fatalf("CountLinks(%s) on empty store = %d, %v; want 0", kind, n, err)
		}
	}
	var links []store.Link
	for i := range 7 {
		links = append(links, store.Link{Kind: store.KindSalesPerson, ExternalID: fmt.Sprintf("u%d", i), MarketoID: "x"})
	}
	for i := range 3 {
		links = append(links, store.Link{Kind: store.KindRole, ExternalID: fmt.Sprintf("r%d", i), MarketoID: "y"})
	}
	mustPutLinks(t, s, links...)
	if err := s.DeleteLinks(ctxT(t), store.KindSalesPerson, []string{"u0"}); err != nil {
		t.Fatalf("DeleteLinks: %v", err)
	}
	for kind, want := range map[string]int{store.KindSalesPerson: 6, store.KindRole: 3, store.KindCompany: 0} {
		if n, err := s.CountLinks(ctxT(t), kind); err != nil || n != want {
			t.Errorf("CountLinks(%s) = %d, %v; want %d", kind, n, err, want)
		}
	}
}

// LargeBatch is the size of the big-batch subtests: well past SQLite's
// bound-parameter limit when each row takes several parameters.
const LargeBatch = 5000

// otherBatch sizes the big batches of the other tables: past any chunk size
// an adapter is likely to use, yet quick under -race.
const otherBatch = 2000

func testLinksLargeBatch(t *testing.T, s store.Store, _ *clock.Fake) {
	links := make([]store.Link, LargeBatch)
	ids := make([]string, LargeBatch)
	for i := range links {
		ids[i] = fmt.Sprintf("%08x-0000-0000-0000-000000000000", i)
		links[i] = store.Link{Kind: store.KindPerson, ExternalID: ids[i], MarketoID: fmt.Sprint(100000 + i),
			Entity: "contact", Email: fmt.Sprintf("p%d@example.com", i)}
	}
	mustPutLinks(t, s, links...)
	got := mustGetLinks(t, s, store.KindPerson, ids...)
	if len(got) != LargeBatch {
		t.Fatalf("GetLinks(%d ids) returned %d", LargeBatch, len(got))
	}
	for i, id := range ids {
		if got[id].MarketoID != fmt.Sprint(100000+i) || got[id].Email != fmt.Sprintf("p%d@example.com", i) {
			t.Fatalf("link %s = %+v, want MarketoID %d", id, got[id], 100000+i)
		}
	}
	if n, err := s.CountLinks(ctxT(t), store.KindPerson); err != nil || n != LargeBatch {
		t.Errorf("CountLinks = %d, %v; want %d", n, err, LargeBatch)
	}
	if err := s.DeleteLinks(ctxT(t), store.KindPerson, ids[:LargeBatch-1]); err != nil {
		t.Fatalf("DeleteLinks(%d ids): %v", LargeBatch-1, err)
	}
	if n, err := s.CountLinks(ctxT(t), store.KindPerson); err != nil || n != 1 {
		t.Errorf("CountLinks after deleting all but one = %d, %v; want 1", n, err)
	}
}

func testVersions(t *testing.T, s store.Store, _ *clock.Fake) {
	ctx := ctxT(t)
	if err := s.PutVersions(ctx, map[string]int64{"contact/a": 10, "account/b": 5}); err != nil {
		t.Fatalf("PutVersions: %v", err)
	}
	// A stale write for a is ignored; a newer write for b applies; c is new.
	if err := s.PutVersions(ctx, map[string]int64{"contact/a": 7, "account/b": 9, "lead/c": 1}); err != nil {
		t.Fatalf("PutVersions: %v", err)
	}
	got, err := s.GetVersions(ctx, []string{"contact/a", "account/b", "lead/c", "lead/missing"})
	if err != nil {
		t.Fatalf("GetVersions: %v", err)
	}
	want := map[string]int64{"contact/a": 10, "account/b": 9, "lead/c": 1}
	if !maps.Equal(got, want) {
		t.Errorf("GetVersions = %v, want %v", got, want)
	}
	// Equal version: no change, no error.
	if err := s.PutVersions(ctx, map[string]int64{"contact/a": 10}); err != nil {
		t.Fatalf("PutVersions(equal): %v", err)
	}
	// Large versions (RowVersion values) survive.
	big := int64(1) << 62
	if err := s.PutVersions(ctx, map[string]int64{"contact/a": big}); err != nil {
		t.Fatalf("PutVersions(big): %v", err)
	}
	got, err = s.GetVersions(ctx, []string{"contact/a"})
	if err != nil || got["contact/a"] != big {
		t.Errorf("GetVersions after big = %v, %v; want %d", got, err, big)
	}
}

// testVersionsOfColumns covers the keys the syncer writes per column
// ("record#column", several per record, put in several batches): each is a
// version of its own, whatever the other keys of its record hold; an
// adapter may store them per record, so odd columns must round-trip too.
func testVersionsOfColumns(t *testing.T, s store.Store, _ *clock.Fake) {
	ctx := ctxT(t)
	first := map[string]int64{
		"contact/a": 10, "contact/a#lastname": 10, "contact/a#emailaddress1": 7, "contact/a@rv": 99,
		"contact/b#lastname": 3,
		"contact/c#x#y":      4, "contact/c#": 5, "#col": 6, "contact/c#12:3;": 7, "contact/c#é": 8,
	}
	if err := s.PutVersions(ctx, first); err != nil {
		t.Fatalf("PutVersions: %v", err)
	}
	// A later batch: one column newer, one older (ignored), a new column,
	// and the record version alone.
	var c store.Changes
	c.PutVersions(map[string]int64{"contact/a#lastname": 12, "contact/a#emailaddress1": 5, "contact/a#jobtitle": 12,
		"contact/b": 4, "contact/c#x#y": 9})
	if err := s.Apply(ctx, &c); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	keys := []string{"contact/a", "contact/a#lastname", "contact/a#emailaddress1", "contact/a#jobtitle", "contact/a@rv",
		"contact/a#missing", "contact/b", "contact/b#lastname", "contact/b#missing", "contact/c#x#y", "contact/c#x",
		"contact/c#", "#col", "contact/c#12:3;", "contact/c#é", "contact/c", "contact/missing#lastname", "contact/a#lastname"}
	got, err := s.GetVersions(ctx, keys)
	if err != nil {
		t.Fatalf("GetVersions: %v", err)
	}
	want := map[string]int64{
		"contact/a": 10, "contact/a#lastname": 12, "contact/a#emailaddress1": 7, "contact/a#jobtitle": 12, "contact/a@rv": 99,
		"contact/b": 4, "contact/b#lastname": 3, "contact/c#x#y": 9, "contact/c#": 5, "#col": 6, "contact/c#12:3;": 7, "contact/c#é": 8,
	}
	if !maps.Equal(got, want) {
		t.Errorf("GetVersions = %v\nwant %v", got, want)
	}
	// PutVersions never lowers a column either.
	if err := s.PutVersions(ctx, map[string]int64{"contact/a#lastname": 1, "contact/a#jobtitle": 13}); err != nil {
		t.Fatalf("PutVersions: %v", err)
	}
	got, err = s.GetVersions(ctx, []string{"contact/a#lastname", "contact/a#jobtitle", "contact/a#emailaddress1"})
	if err != nil || got["contact/a#lastname"] != 12 || got["contact/a#jobtitle"] != 13 || got["contact/a#emailaddress1"] != 7 {
		t.Errorf("GetVersions after a lower put = %v, %v; want lastname 12, jobtitle 13, emailaddress1 7", got, err)
	}
}

// testVersionsOfColumnsLargeBatch puts a drain-sized batch of column keys
// (several thousand records, several columns each) twice.
func testVersionsOfColumnsLargeBatch(t *testing.T, s store.Store, _ *clock.Fake) {
	ctx := ctxT(t)
	cols := []string{"emailaddress1", "firstname", "lastname", "ownerid", "parentcustomerid"}
	v := map[string]int64{}
	for i := range otherBatch {
		for j, c := range cols {
			v[fmt.Sprintf("contact/%06d#%s", i, c)] = int64(i + j)
		}
	}
	if err := s.PutVersions(ctx, v); err != nil {
		t.Fatalf("PutVersions(%d): %v", len(v), err)
	}
	var c store.Changes
	up := map[string]int64{}
	for i := range otherBatch {
		up[fmt.Sprintf("contact/%06d#lastname", i)] = int64(i + 1000)
		up[fmt.Sprintf("contact/%06d#firstname", i)] = 0 // older: ignored
		up[fmt.Sprintf("contact/%06d#jobtitle", i)] = 5
	}
	c.PutVersions(up)
	if err := s.Apply(ctx, &c); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	var keys []string
	for i := range otherBatch {
		for _, c := range append(cols, "jobtitle", "missing") {
			keys = append(keys, fmt.Sprintf("contact/%06d#%s", i, c))
		}
	}
	got, err := s.GetVersions(ctx, keys)
	if err != nil {
		t.Fatalf("GetVersions(%d): %v", len(keys), err)
	}
	if len(got) != otherBatch*(len(cols)+1) {
		t.Fatalf("GetVersions returned %d, want %d", len(got), otherBatch*(len(cols)+1))
	}
	for i := range otherBatch {
		for j, c := range cols {
			want := int64(i + j)
			if c == "lastname" {
				want = int64(i + 1000)
			}
			if k := fmt.Sprintf("contact/%06d#%s", i, c); got[k] != want {
				t.Fatalf("version %s = %d, want %d", k, got[k], want)
			}
		}
		if k := fmt.Sprintf("contact/%06d#jobtitle", i); got[k] != 5 {
			t.Fatalf("version %s = %d, want 5", k, got[k])
		}
	}
}

func testVersionsLargeBatch(t *testing.T, s store.Store, _ *clock.Fake) {
	ctx := ctxT(t)
	v := make(map[string]int64, otherBatch)
	keys := make([]string, 0, otherBatch)
	for i := range otherBatch {
		k := fmt.Sprintf("contact/%06d", i)
		v[k] = int64(i)
		keys = append(keys, k)
	}
	if err := s.PutVersions(ctx, v); err != nil {
		t.Fatalf("PutVersions(%d): %v", otherBatch, err)
	}
	// Lower the even ones (ignored), raise the odd ones.
	v2 := make(map[string]int64, otherBatch)
	for i, k := range keys {
		if i%2 == 0 {
			v2[k] = int64(i) - 1
		} else {
			v2[k] = int64(i) + 1000
		}
	}
	if err := s.PutVersions(ctx, v2); err != nil {
		t.Fatalf("PutVersions(%d): %v", otherBatch, err)
	}
	got, err := s.GetVersions(ctx, keys)
	if err != nil {
		t.Fatalf("GetVersions(%d): %v", otherBatch, err)
	}
	if len(got) != otherBatch {
		t.Fatalf("GetVersions returned %d, want %d", len(got), otherBatch)
	}
	for i, k := range keys {
		want := int64(i)
		if i%2 == 1 {
			want += 1000
		}
		if got[k] != want {
			t.Fatalf("version %s = %d, want %d", k, got[k], want)
		}
	}
}

func sameConn(a, b store.Connection) bool {
	return a.ID == b.ID && a.OpportunityID == b.OpportunityID && a.PersonID == b.PersonID &&
		a.Role == b.Role && a.UpdatedAt.Equal(b.UpdatedAt)
}

func testConnections(t *testing.T, s store.Store, clk *clock.Fake) {
	ctx := ctxT(t)
	c1 := store.Connection{ID: "conn-1", OpportunityID: "opp-1", PersonID: "contact-1", Role: "Decision Maker"}
	c2 := store.Connection{ID: "conn-2", OpportunityID: "opp-1", PersonID: "contact-2", Role: "Influencer",
		UpdatedAt: Start.Add(-time.Hour)}
	if err := s.PutConnections(ctx, []store.Connection{c1, c2}); err != nil {
		t.Fatalf("PutConnections: %v", err)
	}
	got, err := s.GetConnections(ctx, []string{"conn-1", "conn-2", "conn-missing"})
	if err != nil {
		t.Fatalf("GetConnections: %v", err)
	}
	want1 := c1
	want1.UpdatedAt = clk.Now()
	if len(got) != 2 || !sameConn(got["conn-1"], want1) || !sameConn(got["conn-2"], c2) {
		t.Errorf("GetConnections = %+v, want conn-1 %+v and conn-2 %+v", got, want1, c2)
	}

	// A role change overwrites.
	clk.Advance(time.Second)
	c1.Role = "Champion"
	if err := s.PutConnections(ctx, []store.Connection{c1}); err != nil {
		t.Fatalf("PutConnections(update): %v", err)
	}
	got, err = s.GetConnections(ctx, []string{"conn-1"})
	if err != nil {
		t.Fatalf("GetConnections: %v", err)
	}
	want1 = c1
	want1.UpdatedAt = clk.Now()
	if !sameConn(got["conn-1"], want1) {
		t.Errorf("after role change got %+v, want %+v", got["conn-1"], want1)
	}

	if err := s.DeleteConnections(ctx, []string{"conn-1", "conn-missing"}); err != nil {
		t.Fatalf("DeleteConnections: %v", err)
	}
	got, err = s.GetConnections(ctx, []string{"conn-1", "conn-2"})
	if err != nil {
		t.Fatalf("GetConnections: %v", err)
	}
	if keys := slices.Sorted(maps.Keys(got)); !slices.Equal(keys, []string{"conn-2"}) {
		t.Errorf("after delete, connections = %v, want [conn-2]", keys)
	}

	// Large batch.
	var many []store.Connection
	var ids []string
	for i := range otherBatch {
		id := fmt.Sprintf("conn-big-%05d", i)
		ids = append(ids, id)
		many = append(many, store.Connection{ID: id, OpportunityID: fmt.Sprintf("opp-%d", i%10), PersonID: "p", Role: "r"})
	}
	if err := s.PutConnections(ctx, many); err != nil {
		t.Fatalf("PutConnections(%d): %v", otherBatch, err)
	}
	got, err = s.GetConnections(ctx, ids)
	if err != nil || len(got) != otherBatch {
		t.Fatalf("GetConnections(%d) = %d, %v", otherBatch, len(got), err)
	}
	if err := s.DeleteConnections(ctx, ids); err != nil {
		t.Fatalf("DeleteConnections(%d): %v", otherBatch, err)
	}
	got, err = s.GetConnections(ctx, ids)
	if err != nil || len(got) != 0 {
		t.Fatalf("GetConnections after deleting %d = %d, %v; want 0", otherBatch, len(got), err)
	}
}

func testConnectionsByOpportunity(t *testing.T, s store.Store, _ *clock.Fake) {
	ctx := ctxT(t)
	conns := []store.Connection{
		{ID: "c3", OpportunityID: "opp-a", PersonID: "p3", Role: "Influencer"},
		{ID: "c1", OpportunityID: "opp-a", PersonID: "p1", Role: "Champion"},
		{ID: "c2", OpportunityID: "opp-b", PersonID: "p2", Role: "Champion"},
	}
	if err := s.PutConnections(ctx, conns); err != nil {
		t.Fatalf("PutConnections: %v", err)
	}
	got, err := s.ConnectionsByOpportunity(ctx, "opp-a")
	if err != nil {
		t.Fatalf("ConnectionsByOpportunity: %v", err)
	}
	var ids []string
	for _, c := range got {
		if c.OpportunityID != "opp-a" {
			t.Errorf("connection %+v is not of opp-a", c)
		}
		ids = append(ids, c.ID+":"+c.PersonID+":"+c.Role)
	}
	sort.Strings(ids)
	if want := []string{"c1:p1:Champion", "c3:p3:Influencer"}; !slices.Equal(ids, want) {
		t.Errorf("ConnectionsByOpportunity(opp-a) = %v, want %v", ids, want)
	}
	// Moving a connection to another opportunity moves it in the index too.
	if err := s.PutConnections(ctx, []store.Connection{{ID: "c3", OpportunityID: "opp-b", PersonID: "p3", Role: "Influencer"}}); err != nil {
		t.Fatalf("PutConnections: %v", err)
	}
	got, err = s.ConnectionsByOpportunity(ctx, "opp-a")
	if err != nil || len(got) != 1 || got[0].ID != "c1" {
		t.Errorf("after moving c3, ConnectionsByOpportunity(opp-a) = %+v, %v; want only c1", got, err)
	}
	got, err = s.ConnectionsByOpportunity(ctx, "opp-none")
	if err != nil || len(got) != 0 {
		t.Errorf("ConnectionsByOpportunity(opp-none) = %+v, %v; want none", got, err)
	}
}

func testMSIValues(t *testing.T, s store.Store, _ *clock.Fake) {
	ctx := ctxT(t)
	in := map[string]map[string]string{
		"p1": {"msi_score": "42", "msi_priority": "3", "msi_urgency": "0.5"},
		"p2": {"msi_score": "7", "note": "ünïcødé, \"quoted\""},
	}
	if err := s.PutMSIValues(ctx, in); err != nil {
		t.Fatalf("PutMSIValues: %v", err)
	}
	got, err := s.GetMSIValues(ctx, []string{"p1", "p2", "p-missing"})
	if err != nil {
		t.Fatalf("GetMSIValues: %v", err)
	}
	if len(got) != 2 || !maps.Equal(got["p1"], in["p1"]) || !maps.Equal(got["p2"], in["p2"]) {
		t.Errorf("GetMSIValues = %v, want %v", got, in)
	}
	// The whole map of a person is replaced; other persons are untouched.
	if err := s.PutMSIValues(ctx, map[string]map[string]string{"p1": {"msi_score": "50"}}); err != nil {
		t.Fatalf("PutMSIValues(replace): %v", err)
	}
	got, err = s.GetMSIValues(ctx, []string{"p1", "p2"})
	if err != nil {
		t.Fatalf("GetMSIValues: %v", err)
	}
	if want := map[string]string{"msi_score": "50"}; !maps.Equal(got["p1"], want) {
		t.Errorf("after replace p1 = %v, want %v", got["p1"], want)
	}
	if !maps.Equal(got["p2"], in["p2"]) {
		t.Errorf("p2 changed to %v, want %v", got["p2"], in["p2"])
	}
	// Large batch.
	many := make(map[string]map[string]string, otherBatch)
	ids := make([]string, 0, otherBatch)
	for i := range otherBatch {
		id := fmt.Sprintf("person-%05d", i)
		ids = append(ids, id)
		many[id] = map[string]string{"msi_score": fmt.Sprint(i)}
	}
	if err := s.PutMSIValues(ctx, many); err != nil {
		t.Fatalf("PutMSIValues(%d): %v", otherBatch, err)
	}
	got, err = s.GetMSIValues(ctx, ids)
	if err != nil || len(got) != otherBatch {
		t.Fatalf("GetMSIValues(%d) = %d, %v", otherBatch, len(got), err)
	}
	if got["person-01234"]["msi_score"] != "1234" {
		t.Errorf("person-01234 = %v, want msi_score 1234", got["person-01234"])
	}
}

func acquire(t *testing.T, s store.Store, name, holder string, ttl time.Duration) bool {
	t.Helper()
	ok, err := s.AcquireLease(ctxT(t), name, holder, ttl)
	if err != nil {
		t.Fatalf("AcquireLease(%s, %s): %v", name, holder, err)
	}
	return ok
}

func testLease(t *testing.T, s store.Store, clk *clock.Fake) {
	const ttl = 30 * time.Second
	if !acquire(t, s, "msi", "A", ttl) {
		t.Fatal("A could not take a free lease")
	}
	if acquire(t, s, "msi", "B", ttl) {
		t.Fatal("B took the lease A holds")
	}
	clk.Advance(20 * time.Second)
	if acquire(t, s, "msi", "B", ttl) {
		t.Fatal("B took the lease before A's ttl passed")
	}
	// A renews at t+20s: the lease now runs to t+50s.
	if !acquire(t, s, "msi", "A", ttl) {
		t.Fatal("A could not renew its own lease")
	}
	clk.Advance(20 * time.Second) // t+40s: past A's first ttl, inside the renewed one
	if acquire(t, s, "msi", "B", ttl) {
		t.Fatal("B took the lease A renewed")
	}
	// Releasing by the wrong holder does nothing.
	if err := s.ReleaseLease(ctxT(t), "msi", "B"); err != nil {
		t.Fatalf("ReleaseLease by B: %v", err)
	}
	if acquire(t, s, "msi", "B", ttl) {
		t.Fatal("B's release freed A's lease")
	}
	clk.Advance(10*time.Second + time.Millisecond) // past t+50s
	if !acquire(t, s, "msi", "B", ttl) {
		t.Fatal("B could not take the lease after A's ttl passed")
	}
	if acquire(t, s, "msi", "A", ttl) {
		t.Fatal("A took the lease back from B")
	}
	if err := s.ReleaseLease(ctxT(t), "msi", "B"); err != nil {
		t.Fatalf("ReleaseLease by B: %v", err)
	}
	if !acquire(t, s, "msi", "A", ttl) {
		t.Fatal("A could not take the lease B released")
	}
}

func testLeaseNames(t *testing.T, s store.Store, _ *clock.Fake) {
	if !acquire(t, s, "one", "A", time.Minute) || !acquire(t, s, "two", "B", time.Minute) {
		t.Fatal("distinct lease names must not block each other")
	}
	if acquire(t, s, "two", "A", time.Minute) {
		t.Fatal("A took B's lease two")
	}
	// Releasing a lease that does not exist is not an error.
	if err := s.ReleaseLease(ctxT(t), "never", "A"); err != nil {
		t.Fatalf("ReleaseLease(never): %v", err)
	}
}

func lock(t *testing.T, s store.Store, owner string, ttl time.Duration, keys ...string) []string {
	t.Helper()
	got, err := s.LockRecords(ctxT(t), owner, keys, ttl)
	if err != nil {
		t.Fatalf("LockRecords(%s, %v): %v", owner, keys, err)
	}
	return slices.Sorted(slices.Values(got))
}

func testLockRecords(t *testing.T, s store.Store, clk *clock.Fake) {
	const ttl = time.Minute
	if got := lock(t, s, "A", ttl, "k1", "k2"); !slices.Equal(got, []string{"k1", "k2"}) {
		t.Fatalf("A locked %v, want [k1 k2]", got)
	}
	if got := lock(t, s, "B", ttl, "k2", "k3"); !slices.Equal(got, []string{"k3"}) {
		t.Fatalf("B locked %v, want [k3] (k2 is A's)", got)
	}
	clk.Advance(ttl / 2)
	if got := lock(t, s, "B", ttl, "k2"); len(got) != 0 {
		t.Fatalf("B locked %v before A's ttl passed", got)
	}
	clk.Advance(ttl/2 + time.Millisecond)
	if got := lock(t, s, "B", ttl, "k2"); !slices.Equal(got, []string{"k2"}) {
		t.Fatalf("B locked %v after A's ttl passed, want [k2]", got)
	}
	// k1 is still A's (expired, but nobody took it); k2 is now B's.
	if got := lock(t, s, "A", ttl, "k1", "k2"); !slices.Equal(got, []string{"k1"}) {
		t.Fatalf("A locked %v, want [k1]", got)
	}
	// Unlock by the wrong owner does nothing.
	if err := s.UnlockRecords(ctxT(t), "A", []string{"k2"}); err != nil {
		t.Fatalf("UnlockRecords: %v", err)
	}
	if got := lock(t, s, "C", ttl, "k1", "k2"); len(got) != 0 {
		t.Fatalf("C locked %v; A's unlock of B's key must not free it", got)
	}
	// A frees its keys; others can take them at once.
	if err := s.UnlockRecords(ctxT(t), "A", []string{"k1"}); err != nil {
		t.Fatalf("UnlockRecords: %v", err)
	}
	if got := lock(t, s, "C", ttl, "k1", "k2"); !slices.Equal(got, []string{"k1"}) {
		t.Fatalf("C locked %v after A unlocked k1, want [k1]", got)
	}
	if err := s.UnlockRecords(ctxT(t), "B", []string{"k2", "k3"}); err != nil {
		t.Fatalf("UnlockRecords: %v", err)
	}
	if got := lock(t, s, "A", ttl, "k2", "k3", "k3"); !slices.Equal(got, []string{"k2", "k3"}) {
		t.Fatalf("A locked %v after B unlocked, want [k2 k3] (duplicates reported once)", got)
	}
}

func testLockRecordsRenew(t *testing.T, s store.Store, clk *clock.Fake) {
	const ttl = time.Minute
	if got := lock(t, s, "A", ttl, "k"); !slices.Equal(got, []string{"k"}) {
		t.Fatalf("A locked %v, want [k]", got)
	}
	clk.Advance(50 * time.Second)
	if got := lock(t, s, "A", ttl, "k"); !slices.Equal(got, []string{"k"}) {
		t.Fatalf("A could not renew its lock: got %v", got)
	}
	clk.Advance(50 * time.Second) // past the first ttl, inside the renewed one
	if got := lock(t, s, "B", ttl, "k"); len(got) != 0 {
		t.Fatalf("B took %v that A renewed", got)
	}
	clk.Advance(10*time.Second + time.Millisecond)
	if got := lock(t, s, "B", ttl, "k"); !slices.Equal(got, []string{"k"}) {
		t.Fatalf("B could not take k after the renewed ttl: got %v", got)
	}
}

// testRecordLockExpiry: a worker that finds a record locked schedules one
// retry at the lock's expiry, so the expiry must be the renewed one, and
// free, unlocked and expired keys must be absent.
func testRecordLockExpiry(t *testing.T, s store.Store, clk *clock.Fake) {
	li, ok := s.(store.LockInspector)
	if !ok {
		t.Skip("store does not implement store.LockInspector")
	}
	expiry := func(keys ...string) map[string]time.Time {
		t.Helper()
		got, err := li.RecordLockExpiry(ctxT(t), keys)
		if err != nil {
			t.Fatalf("RecordLockExpiry(%v): %v", keys, err)
		}
		return got
	}
	const ttl = 15 * time.Second
	lock(t, s, "A", ttl, "k1", "k2")
	lock(t, s, "B", ttl, "k3")
	if err := s.UnlockRecords(ctxT(t), "A", []string{"k2"}); err != nil {
		t.Fatalf("UnlockRecords: %v", err)
	}
	got := expiry("k1", "k2", "k3", "free")
	want := Start.Add(ttl)
	if len(got) != 2 || !got["k1"].Equal(want) || !got["k3"].Equal(want) {
		t.Fatalf("RecordLockExpiry = %v, want k1 and k3 at %v (k2 unlocked, free never locked)", got, want)
	}
	clk.Advance(10 * time.Second)
	lock(t, s, "A", ttl, "k1") // renewal moves the expiry
	got = expiry("k1", "k3")
	if !got["k1"].Equal(Start.Add(10*time.Second + ttl)) {
		t.Fatalf("k1 expires %v after renewal, want %v", got["k1"], Start.Add(10*time.Second+ttl))
	}
	clk.Advance(5*time.Second + time.Millisecond) // k3 expired, k1 renewed
	got = expiry("k1", "k3")
	if _, ok := got["k3"]; ok || len(got) != 1 {
		t.Fatalf("RecordLockExpiry = %v, want only k1 (k3 expired)", got)
	}
	if got := expiry(); len(got) != 0 {
		t.Fatalf("RecordLockExpiry() = %v, want empty", got)
	}
}

// testLockLease: an owner's lock lease keeps all its record locks past their
// own expiry while it is renewed, for one write however many they are; once
// it lapses they can be taken, and the next renewal says it had lapsed.
func testLockLease(t *testing.T, s store.Store, clk *clock.Fake) {
	ll, ok := s.(store.LockLeaser)
	if !ok {
		t.Skip("store does not implement store.LockLeaser")
	}
	renew := func(owner string) bool {
		t.Helper()
		alive, err := ll.RenewLockLease(ctxT(t), owner, 15*time.Second)
		if err != nil {
			t.Fatalf("RenewLockLease(%s): %v", owner, err)
		}
		return alive
	}
	if _, err := ll.RenewLockLease(ctxT(t), "A", 0); err == nil {
		t.Error("RenewLockLease with ttl 0: no error")
	}
	const ttl = 15 * time.Second
	lock(t, s, "A", ttl, "k1", "k2")
	lock(t, s, "B", ttl, "k3")
	if renew("A") {
		t.Fatal("first RenewLockLease of A reports a live lease")
	}
	clk.Advance(10 * time.Second)
	if !renew("A") {
		t.Fatal("RenewLockLease of A 10 s after the last one reports a lapsed lease")
	}
	clk.Advance(10 * time.Second) // t=20: the rows expired at 15, A's lease runs to 25
	if got := lock(t, s, "B", ttl, "k1", "k2", "k3"); !slices.Equal(got, []string{"k3"}) {
		t.Fatalf("B took %v while A's lease is alive, want only its own k3", got)
	}
	if li, ok := s.(store.LockInspector); ok {
		got, err := li.RecordLockExpiry(ctxT(t), []string{"k1", "k3"})
		if err != nil {
			t.Fatal(err)
		}
		if want := Start.Add(25 * time.Second); !got["k1"].Equal(want) {
			t.Errorf("k1 expires %v, want A's lease end %v", got["k1"], want)
		}
		if want := Start.Add(35 * time.Second); !got["k3"].Equal(want) {
			t.Errorf("k3 expires %v, want its own renewed expiry %v", got["k3"], want)
		}
	}
	if got := lock(t, s, "A", ttl, "k1"); !slices.Equal(got, []string{"k1"}) {
		t.Fatalf("A re-locking its own k1 got %v", got)
	}
	clk.Advance(20 * time.Second) // t=40: A stalled past its lease (25) and k1's own expiry (35)
	if got := lock(t, s, "B", ttl, "k1", "k2"); !slices.Equal(got, []string{"k1", "k2"}) {
		t.Fatalf("B took %v after A's lease lapsed, want k1 and k2", got)
	}
	if renew("A") {
		t.Error("RenewLockLease of A after it lapsed reports a live lease")
	}
	if got := lock(t, s, "A", ttl, "k1", "k2"); len(got) != 0 {
		t.Errorf("A's renewed lease gave it back %v that B took", got)
	}
	// A lease renewed again and again stays alive; one left for good (its
	// process gone) no longer protects anything once it lapses.
	if !renew("A") {
		t.Error("RenewLockLease right after a renewal reports a lapsed lease")
	}
}

func testLockRecordsConcurrent(t *testing.T, s store.Store, _ *clock.Fake) {
	const workers = 8
	const rounds = 5
	keys := make([]string, 40)
	for i := range keys {
		keys[i] = fmt.Sprintf("contact/%02d", i)
	}
	ctx := ctxT(t)
	for round := range rounds {
		var (
			wg    sync.WaitGroup
			start = make(chan struct{})
			got   = make([][]string, workers)
			errs  = make([]error, workers)
		)
		for w := range workers {
			// Each worker asks for an overlapping, differently ordered window.
			mine := slices.Clone(keys[(w*3)%len(keys):])
			mine = append(mine, keys[:(w*3)%len(keys)]...)
			mine = mine[:25]
			if w%2 == 1 {
				slices.Reverse(mine)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				got[w], errs[w] = s.LockRecords(ctx, fmt.Sprintf("worker-%d-%d", round, w), mine, time.Minute)
			}()
		}
		close(start)
		wg.Wait()
		owner := map[string]int{}
		for w := range workers {
			if errs[w] != nil {
				t.Fatalf("round %d worker %d: LockRecords: %v", round, w, errs[w])
			}
			for _, k := range got[w] {
				if prev, ok := owner[k]; ok {
					t.Fatalf("round %d: key %s locked by both worker %d and worker %d", round, k, prev, w)
				}
				owner[k] = w
			}
		}
		// Every key someone asked for is held by someone: a lock is only
		// refused because another worker holds it.
		if len(owner) != len(keys) {
			t.Fatalf("round %d: %d of %d keys locked, want all", round, len(owner), len(keys))
		}
		for w := range workers {
			if err := s.UnlockRecords(ctx, fmt.Sprintf("worker-%d-%d", round, w), got[w]); err != nil {
				t.Fatalf("UnlockRecords: %v", err)
			}
		}
	}
}

func testLockRecordsLarge(t *testing.T, s store.Store, _ *clock.Fake) {
	keys := make([]string, otherBatch)
	for i := range keys {
		keys[i] = fmt.Sprintf("contact/%06d", i)
	}
	got := lock(t, s, "A", time.Minute, keys...)
	if len(got) != otherBatch {
		t.Fatalf("A locked %d of %d free keys", len(got), otherBatch)
	}
	got = lock(t, s, "B", time.Minute, append(slices.Clone(keys[otherBatch-10:]), "contact/new")...)
	if !slices.Equal(got, []string{"contact/new"}) {
		t.Fatalf("B locked %v, want [contact/new]", got)
	}
	if err := s.UnlockRecords(ctxT(t), "A", keys); err != nil {
		t.Fatalf("UnlockRecords(%d): %v", otherBatch, err)
	}
	if got := lock(t, s, "B", time.Minute, keys...); len(got) != otherBatch {
		t.Fatalf("B locked %d of %d after A unlocked", len(got), otherBatch)
	}
}

func testMeta(t *testing.T, s store.Store, _ *clock.Fake) {
	ctx := ctxT(t)
	if v, ok, err := s.GetMeta(ctx, "backfill/contact"); err != nil || ok || v != "" {
		t.Fatalf("GetMeta(missing) = %q, %v, %v; want \"\", false, nil", v, ok, err)
	}
	if err := s.PutMeta(ctx, "backfill/contact", "page-1"); err != nil {
		t.Fatalf("PutMeta: %v", err)
	}
	if err := s.PutMeta(ctx, "marketo/lookupField", "externalPersonId"); err != nil {
		t.Fatalf("PutMeta: %v", err)
	}
	if err := s.PutMeta(ctx, "backfill/contact", "page-2"); err != nil {
		t.Fatalf("PutMeta(overwrite): %v", err)
	}
	for k, want := range map[string]string{"backfill/contact": "page-2", "marketo/lookupField": "externalPersonId"} {
		if v, ok, err := s.GetMeta(ctx, k); err != nil || !ok || v != want {
			t.Errorf("GetMeta(%s) = %q, %v, %v; want %q", k, v, ok, err, want)
		}
	}
	// An empty value is a value, not absence.
	if err := s.PutMeta(ctx, "empty", ""); err != nil {
		t.Fatalf("PutMeta(empty): %v", err)
	}
	if v, ok, err := s.GetMeta(ctx, "empty"); err != nil || !ok || v != "" {
		t.Errorf("GetMeta(empty) = %q, %v, %v; want \"\", true, nil", v, ok, err)
	}
}

func testPing(t *testing.T, s store.Store, _ *clock.Fake) {
	if err := s.Ping(ctxT(t)); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	ctx, cancel := context.WithCancel(ctxT(t))
	cancel()
	if err := s.Ping(ctx); err == nil {
		t.Errorf("Ping with a cancelled context succeeded")
	}
}

func testEmptyInputs(t *testing.T, s store.Store, _ *clock.Fake) {
	ctx := ctxT(t)
	if got, err := s.GetLinks(ctx, store.KindPerson, nil); err != nil || got == nil || len(got) != 0 {
		t.Errorf("GetLinks(nil) = %v, %v; want empty non-nil map", got, err)
	}
	if err := s.PutLinks(ctx, nil); err != nil {
		t.Errorf("PutLinks(nil): %v", err)
	}
	if err := s.DeleteLinks(ctx, store.KindPerson, nil); err != nil {
		t.Errorf("DeleteLinks(nil): %v", err)
	}
	if got, err := s.GetVersions(ctx, nil); err != nil || got == nil || len(got) != 0 {
		t.Errorf("GetVersions(nil) = %v, %v; want empty non-nil map", got, err)
	}
	if err := s.PutVersions(ctx, nil); err != nil {
		t.Errorf("PutVersions(nil): %v", err)
	}
	if got, err := s.GetConnections(ctx, nil); err != nil || got == nil || len(got) != 0 {
		t.Errorf("GetConnections(nil) = %v, %v; want empty non-nil map", got, err)
	}
	if err := s.PutConnections(ctx, nil); err != nil {
		t.Errorf("PutConnections(nil): %v", err)
	}
	if err := s.DeleteConnections(ctx, nil); err != nil {
		t.Errorf("DeleteConnections(nil): %v", err)
	}
	if got, err := s.GetMSIValues(ctx, nil); err != nil || got == nil || len(got) != 0 {
		t.Errorf("GetMSIValues(nil) = %v, %v; want empty non-nil map", got, err)
	}
	if err := s.PutMSIValues(ctx, nil); err != nil {
		t.Errorf("PutMSIValues(nil): %v", err)
	}
	if got, err := s.LockRecords(ctx, "A", nil, time.Minute); err != nil || len(got) != 0 {
		t.Errorf("LockRecords(nil) = %v, %v; want none", got, err)
	}
	if err := s.UnlockRecords(ctx, "A", nil); err != nil {
		t.Errorf("UnlockRecords(nil): %v", err)
	}
	if got, err := s.ListLinks(ctx, store.KindPerson, "", 10); err != nil || len(got) != 0 {
		t.Errorf("ListLinks on empty store = %v, %v; want none", got, err)
	}
}
