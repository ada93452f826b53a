package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/dataverse/dataversesim"
	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/queue/sqlitequeue"
)

// backfillLine is one entity line of the backfill report:
// "contact: 300 rows in 1 pages, 300 sent, …".
var backfillLine = regexp.MustCompile(`(?m)^(\w+): (\d+) rows in (\d+) pages, (\d+) sent`)

type backfillEntity struct {
	entity     string
	rows, sent int
}

func parseBackfill(t *testing.T, out string) []backfillEntity {
	t.Helper()
	var got []backfillEntity
	for _, m := range backfillLine.FindAllStringSubmatch(out, -1) {
		rows, _ := strconv.Atoi(m[2])
		sent, _ := strconv.Atoi(m[4])
		got = append(got, backfillEntity{m[1], rows, sent})
	}
	if len(got) == 0 {
		t.Fatalf("backfill printed no report:\n%s", out)
	}
	return got
}

// queuedEntities claims every message on the embedded queue, returns their
// entities in delivery order, and leaves them for a worker to take.
func queuedEntities(t *testing.T, dataDir string, want int) []string {
	t.Helper()
	ctx := context.Background()
	// Locks of a millisecond: the messages are free again for the worker as
	// soon as they have been looked at (abandoning 1,000 one by one is slow
	// under -race).
	q, err := sqlitequeue.Open(ctx, filepath.Join(dataDir, "queue.db"), sqlitequeue.Options{LockDuration: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	// One claim takes them all, so none is seen twice after its lock lapsed.
	ds, err := q.Receive(ctx, want+1, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var entities []string
	for _, d := range ds {
		ev, err := event.Decode(d.Body)
		if err != nil {
			t.Fatalf("queued message %s: %v", d.ID, err)
		}
		if ev.Source != "backfill" {
			t.Errorf("queued event %s has source %q, want backfill", d.ID, ev.Source)
		}
		entities = append(entities, ev.Entity)
	}
	return entities
}

// Journey (issue 5): seed Dataverse with a few hundred rows per entity, run
// `msisync backfill`: events reach the queue in dependency order and a
// worker syncs them all; a second run resumes from its checkpoint instead
// of enqueueing everything again; a later change is picked up alone.
func TestJourneyBackfill(t *testing.T) {
	dataDir, base := cleanEnv(t)
	sims := startSimulators(t)
	dv := sims.dv
	t.Setenv("MSISYNC_MSI_INTERVAL", "0")
	seed, err := dv.Seed(dataversesim.SeedOptions{Users: 10, Accounts: 200, Contacts: 200, Leads: 200, Opportunities: 150, Connections: 150})
	if err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	lap := func(what string) { t.Logf("%6.2fs %s", time.Since(start).Seconds(), what) }
	r := run(t, "backfill", "--page-size", "250")
	lap("first backfill")
	if r.err != nil {
		t.Fatalf("backfill: %v\n%s\n%s", r.err, r.stdout, r.stderr)
	}
	t.Logf("first backfill:\n%s", r.stdout)
	first := parseBackfill(t, r.stdout)
	var order []string
	total := 0
	for _, e := range first {
		order = append(order, e.entity)
		total += e.sent
		if e.sent != e.rows {
			t.Errorf("first backfill of %s: %d rows read, %d sent, want all sent", e.entity, e.rows, e.sent)
		}
		if e.rows != dv.Count(e.entity) {
			t.Errorf("first backfill of %s read %d rows, Dataverse has %d", e.entity, e.rows, dv.Count(e.entity))
		}
	}
	if strings.Join(order, ",") != strings.Join(event.SyncedEntities, ",") {
		t.Errorf("backfill report order %v, want dependency order %v", order, event.SyncedEntities)
	}

	// The queue holds them in dependency order: no entity comes after one
	// that depends on it.
	queued := queuedEntities(t, dataDir, total)
	if len(queued) != total {
		t.Fatalf("queue holds %d messages, backfill reported %d sent", len(queued), total)
	}
	rank := map[string]int{}
	for i, e := range event.SyncedEntities {
		rank[e] = i
	}
	for i := 1; i < len(queued); i++ {
		if rank[queued[i]] < rank[queued[i-1]] {
			t.Fatalf("queue order: %s at position %d after %s", queued[i], i, queued[i-1])
		}
	}

	lap("queue order checked")
	// A worker drains the backlog into Marketo.
	startServe(t, base, "worker")
	stakeholders := distinctRoles(t, dv, seed.IDs["connection"])
	eventuallyWithin(t, 2*pollTimeout, "the backfilled records in Marketo", func() (bool, string) {
		st := sims.marketo()
		got := summary("companies %d/%d, leads %d/%d, opportunities %d/%d, roles %d/%d",
			len(st.Companies), len(seed.IDs["account"]), len(st.Leads), len(seed.IDs["contact"])+len(seed.IDs["lead"]),
			len(st.Opportunities), len(seed.IDs["opportunity"]), len(st.Roles), stakeholders)
		return len(st.Companies) == len(seed.IDs["account"]) &&
			len(st.Leads) == len(seed.IDs["contact"])+len(seed.IDs["lead"]) &&
			len(st.Opportunities) == len(seed.IDs["opportunity"]) &&
			len(st.Roles) == stakeholders, got
	})
	lap("worker drained")
	// Linked, not just present: every company's sales person exists.
	st := sims.marketo()
	for _, co := range st.Companies {
		if find(st.SalesPersons, "externalSalesPersonId", str(co, "externalSalesPersonId")) == nil {
			t.Fatalf("company %s names sales person %q that is not in Marketo", str(co, "externalCompanyId"), str(co, "externalSalesPersonId"))
		}
	}
	var dead []deadView
	if err := json.Unmarshal([]byte(mustRun(t, "dlq", "list", "--json")), &dead); err != nil {
		t.Fatal(err)
	}
	if len(dead) != 0 {
		t.Errorf("backfill left %d dead letters, first: %+v", len(dead), dead[0])
	}

	// Second run: checkpoints say everything was sent; nothing is sent again.
	out := mustRun(t, "backfill", "--page-size", "250")
	t.Logf("second backfill:\n%s", out)
	second := parseBackfill(t, out)
	read := 0
	for _, e := range second {
		read += e.rows
		if e.sent != 0 {
			t.Errorf("second backfill re-sent %d %s rows (read %d), want 0", e.sent, e.entity, e.rows)
		}
	}
	// It resumed from the checkpoints' high-water marks, not from scratch.
	if read*2 > total {
		t.Errorf("second backfill read %d rows of %d: the checkpoints did not narrow it", read, total)
	}

	lap("second backfill")
	// A change after the backfill is picked up, alone.
	contact := seed.IDs["contact"][0]
	if err := dv.Update("contact", contact, map[string]any{"jobtitle": "Chief Backfill Officer"}); err != nil {
		t.Fatal(err)
	}
	third := parseBackfill(t, mustRun(t, "backfill", "--page-size", "250"))
	for _, e := range third {
		want := 0
		if e.entity == "contact" {
			want = 1
		}
		if e.sent != want {
			t.Errorf("third backfill sent %d %s rows, want %d", e.sent, e.entity, want)
		}
	}
	lap("third backfill")
	eventually(t, "the changed contact in Marketo", func() (bool, string) {
		ld := find(sims.marketo().Leads, "externalPersonId", contact)
		return str(ld, "title") == "Chief Backfill Officer", summary("%v", ld)
	})
}

// distinctRoles counts the Marketo opportunity roles the seeded connections
// make: one per (opportunity, contact, Stakeholder role), whichever row of
// the pair.
func distinctRoles(t *testing.T, dv *dataversesim.Server, ids []string) int {
	t.Helper()
	keys := map[string]bool{}
	for _, id := range ids {
		row, ok := dv.Get("connection", id)
		if !ok {
			t.Fatalf("seeded connection %s not found", id)
		}
		r1, _ := row["record1id"].(dataversesim.Ref)
		r2, _ := row["record2id"].(dataversesim.Ref)
		role, _ := row["record2roleid"].(dataversesim.Ref)
		if r1.LogicalName == "contact" {
			r1, r2 = r2, r1
			role, _ = row["record1roleid"].(dataversesim.Ref)
		}
		if r1.LogicalName != "opportunity" || r2.LogicalName != "contact" {
			t.Fatalf("seeded connection %s links %s to %s", id, r1.LogicalName, r2.LogicalName)
		}
		// Only Stakeholder-category roles become Marketo roles.
		if rr, _ := dv.Get("connectionrole", role.ID); rr["category"] != dataversesim.OptionValue(1000) {
			continue
		}
		keys[r1.ID+"|"+r2.ID+"|"+role.ID] = true
	}
	if len(keys) == 0 {
		t.Fatal("no seeded connections")
	}
	return len(keys)
}
