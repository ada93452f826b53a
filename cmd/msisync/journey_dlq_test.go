package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// Journey (issue 3 "Done means"): a message that fails permanently shows up
// in `msisync dlq list --json` with a reason a human can act on; after the
// cause is fixed, `msisync dlq replay --all` puts it back and it syncs.
func TestJourneyDeadLetters(t *testing.T) {
	dataDir, base := cleanEnv(t)
	// One requeue, then dead-letter: the missing dependency stays missing
	// because Dataverse access is not configured (nothing to re-read from).
	t.Setenv("MSISYNC_MAX_ATTEMPTS", "1")
	startServe(t, base, "serve")
	key := webhookKey(t, dataDir)

	// The contact alone: its account and owner never arrive.
	if code, _, body := post(t, base+"/webhooks/events?code="+key, readExample(t, "demo-3-contact.json")); code != http.StatusAccepted {
		t.Fatalf("POST contact: %d %s", code, body)
	}

	var dead []deadView
	eventually(t, "the contact in `dlq list --json`", func() (bool, string) {
		out := mustRun(t, "dlq", "list", "--json")
		dead = nil
		if err := json.Unmarshal([]byte(out), &dead); err != nil {
			t.Fatalf("dlq list --json is not a JSON list: %v\n%s", err, out)
		}
		return len(dead) == 1, out
	})
	d := dead[0]
	if d.Entity != "contact" || d.RecordID != demoContact || d.Message != "Create" {
		t.Errorf("dead letter is %s/%s %s, want contact/%s Create", d.Entity, d.RecordID, d.Message, demoContact)
	}
	if d.Reason != "MissingDependency" {
		t.Errorf("reason = %q, want MissingDependency", d.Reason)
	}
	// Actionable: it names what is missing, by entity and id.
	if !strings.Contains(d.Description, "account "+demoAccount) && !strings.Contains(d.Description, "systemuser "+demoUser) {
		t.Errorf("description %q names neither the missing account %s nor the missing owner %s", d.Description, demoAccount, demoUser)
	}
	if d.DeliveryCount < 1 || d.ID == "" || d.LastFailureAt.IsZero() {
		t.Errorf("dead letter lacks id, delivery count or failure time: %+v", d)
	}
	if d.FirstFailureAt.IsZero() || d.FirstFailureAt.After(d.LastFailureAt) {
		t.Errorf("first failure %s should be set and not after last failure %s", d.FirstFailureAt, d.LastFailureAt)
	}

	// The table form and `show` tell the same story.
	if out := mustRun(t, "dlq", "list"); !strings.Contains(out, demoContact) || !strings.Contains(out, "MissingDependency") {
		t.Errorf("dlq list (table) does not show the record and reason:\n%s", out)
	}
	show := mustRun(t, "dlq", "show", d.ID)
	if !strings.Contains(show, `"event"`) || !strings.Contains(show, "ada.lovelace@contoso.example") {
		t.Errorf("dlq show %s does not include the event:\n%s", d.ID, show)
	}

	// Selectors a user might get wrong.
	r := run(t, "dlq", "list", "--entity", "invoice")
	if r.exitCode() != 2 || !strings.Contains(r.err.Error(), "invoice") || !strings.Contains(r.err.Error(), "systemuser, account, contact") {
		t.Errorf("dlq list --entity invoice: exit %d, err %v; want exit 2 naming the allowed entities", r.exitCode(), r.err)
	}
	r = run(t, "dlq", "purge", "--all")
	if r.exitCode() != 2 || !strings.Contains(r.err.Error(), "--yes") {
		t.Errorf("dlq purge --all without --yes: exit %d, err %v; want exit 2 naming --yes", r.exitCode(), r.err)
	}
	r = run(t, "dlq", "replay")
	if r.exitCode() != 2 || !strings.Contains(r.err.Error(), "--all") {
		t.Errorf("dlq replay with neither --all nor ids: exit %d, err %v; want exit 2 naming --all", r.exitCode(), r.err)
	}
	if out := mustRun(t, "dlq", "replay", "--all", "--dry-run"); !strings.Contains(out, "1 dead letter(s) would be replayed") {
		t.Errorf("dlq replay --all --dry-run: %q", out)
	}
	if out := mustRun(t, "dlq", "list", "--json"); !strings.Contains(out, d.ID) {
		t.Errorf("a dry run changed the dead-letter queue:\n%s", out)
	}

	// Fix the cause: the account and its owner arrive and sync.
	for _, name := range []string{"demo-1-user.json", "demo-2-account.json"} {
		if code, _, body := post(t, base+"/webhooks/events?code="+key, readExample(t, name)); code != http.StatusAccepted {
			t.Fatalf("POST %s: %d %s", name, code, body)
		}
	}
	eventually(t, "the account synced", func() (bool, string) {
		st := sandboxState(t, base)
		return find(st.Companies, "externalCompanyId", demoAccount) != nil, st.String()
	})
	if st := sandboxState(t, base); find(st.Leads, "externalPersonId", demoContact) != nil {
		t.Fatalf("the dead-lettered contact reached Marketo before the replay:\n%s", st)
	}

	if out := mustRun(t, "dlq", "replay", "--all"); !strings.Contains(out, "replayed 1 dead letter(s)") {
		t.Errorf("dlq replay --all printed %q, want it to report 1 replayed", out)
	}
	eventually(t, "the replayed contact synced and linked", func() (bool, string) {
		st := sandboxState(t, base)
		ld := find(st.Leads, "externalPersonId", demoContact)
		return strings.EqualFold(str(ld, "externalCompanyId"), demoAccount) && strings.EqualFold(str(ld, "externalSalesPersonId"), demoUser), st.String()
	})
	if out := mustRun(t, "dlq", "list", "--json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("dead-letter queue not empty after a successful replay:\n%s", out)
	}
}

// Purging asks for confirmation and then deletes for good.
func TestJourneyDeadLetterPurge(t *testing.T) {
	dataDir, base := cleanEnv(t)
	t.Setenv("MSISYNC_MAX_ATTEMPTS", "1")
	startServe(t, base, "serve")
	key := webhookKey(t, dataDir)
	if code, _, body := post(t, base+"/webhooks/events?code="+key, readExample(t, "demo-3-contact.json")); code != http.StatusAccepted {
		t.Fatalf("POST contact: %d %s", code, body)
	}
	eventually(t, "one dead letter", func() (bool, string) {
		out := mustRun(t, "dlq", "list", "--json")
		return strings.Contains(out, demoContact), out
	})
	// Selectors narrow the purge: nothing matches another entity.
	if out := mustRun(t, "dlq", "purge", "--all", "--entity", "lead", "--yes"); !strings.Contains(out, "purged 0 dead letter(s)") {
		t.Errorf("purge --entity lead: %q, want 0 purged", out)
	}
	if out := mustRun(t, "dlq", "purge", "--all", "--entity", "contact", "--yes"); !strings.Contains(out, "purged 1 dead letter(s)") {
		t.Errorf("purge --entity contact: %q, want 1 purged", out)
	}
	if out := mustRun(t, "dlq", "list", "--json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("dead letters left after purge:\n%s", out)
	}
}
