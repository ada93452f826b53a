package mapping

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/event"
)

func TestDefaultApply(t *testing.T) {
	m := Default()
	closeDate := time.Date(2026, 3, 4, 15, 0, 0, 0, time.UTC)
	got := m.Apply(event.EntityOpportunity, event.Attributes{
		"name":               event.String("Big deal"),
		"estimatedvalue":     event.Money("1250.5"),
		"estimatedclosedate": event.Time(closeDate),
		"statecode":          event.Option(1),
		"description":        event.Null(),
	}, nil)
	want := map[string]any{"name": "Big deal", "amount": 1250.5, "closeDate": "2026-03-04", "isClosed": true, "isWon": true, "description": nil}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %#v, want %#v", k, got[k], v)
		}
	}
	if _, ok := got["stage"]; ok {
		t.Errorf("stage written although the update did not carry stepname: %v", got)
	}
	acc := m.Apply(event.EntityAccount, event.Attributes{"industrycode": event.Option(7)}, map[string]string{"industrycode": "Consulting"})
	if acc["industry"] != "Consulting" {
		t.Errorf("industry = %v, want the formatted label", acc["industry"])
	}
	// Apply sees the syncer's merged attributes, where the name came from an image.
	role := m.Apply(event.EntityConnection, event.Attributes{"record2roleid": event.Reference("connectionrole", "A1B2C3D4-0000-0000-0000-000000000001", "Decision Maker")}, nil)
	if role["role"] != "Decision Maker" {
		t.Errorf("role = %v", role["role"])
	}
	// A refname field never receives the GUID: a nameless lookup takes the
	// formatted value, else nothing.
	nameless := event.Attributes{"record2roleid": event.Reference("connectionrole", "A1B2C3D4-0000-0000-0000-000000000001", "")}
	if got := m.Apply(event.EntityConnection, nameless, map[string]string{"record2roleid": "Champion"})["role"]; got != "Champion" {
		t.Errorf("nameless role with a formatted value = %v, want Champion", got)
	}
	if got := m.Apply(event.EntityConnection, nameless, nil)["role"]; got != nil {
		t.Errorf("nameless role = %v, want nil (never the id)", got)
	}
}

func TestColumnsIncludesStructuralAndMapped(t *testing.T) {
	cols := Default().Columns(event.EntityContact)
	for _, c := range []string{"emailaddress1", "ownerid", "parentcustomerid", "originatingleadid", "contactid"} {
		if !slices.Contains(cols, c) {
			t.Errorf("Columns(contact) lacks %s: %v", c, cols)
		}
	}
	if !slices.IsSorted(cols) {
		t.Errorf("not sorted: %v", cols)
	}
}

func TestParseOverrides(t *testing.T) {
	m, err := Parse([]byte(`
writeBack: [new_score]
entities:
  contact:
    fields:
      - {column: new_Segment, field: segment, labels: {100000000: Enterprise, 100000001: SMB}}
      - {column: telephone1, field: ""}
      - {column: jobtitle, field: jobTitle}
`))
	if err != nil {
		t.Fatal(err)
	}
	got := m.Apply(event.EntityContact, event.Attributes{
		"new_segment": event.Option(100000001),
		"telephone1":  event.String("123"),
		"jobtitle":    event.String("CTO"),
	}, nil)
	if got["segment"] != "SMB" || got["jobTitle"] != "CTO" {
		t.Errorf("got %v", got)
	}
	if _, ok := got["phone"]; ok {
		t.Errorf("phone still mapped: %v", got)
	}
	if !m.IsWriteBack("new_score") || m.IsWriteBack("msi_priority") {
		t.Errorf("writeBack = %v", m.WriteBack())
	}
	if !slices.Contains(m.Columns(event.EntityContact), "new_segment") {
		t.Errorf("custom column missing from Columns")
	}
}

func TestParseErrorsNameLineAndField(t *testing.T) {
	cases := map[string]string{
		"entities:\n  widget:\n    fields: []\n":                                          `unknown entity "widget"`,
		"entities:\n  contact:\n    fields:\n      - {column: x, field: y, type: blob}\n": `line 4: entities.contact: column x: unknown type "blob"`,
		"entities:\n  contact:\n    fields:\n      - {field: y}\n":                        "line 4: entities.contact: field mapping needs a column",
		"entities:\n  contact:\n    fields:\n      - {column: x, field: email}\n":         `Marketo field "email" is already mapped from column emailaddress1`,
		"entitees: {}\n": "field entitees not found",
	}
	for doc, want := range cases {
		_, err := Parse([]byte(doc))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want error containing %q", doc, err, want)
		}
	}
}

func TestLoadNamesFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "m.yaml")
	if err := os.WriteFile(p, []byte("entities:\n  nope: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(p)
	if err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("Load error %v does not name the file", err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Fatal("missing file accepted")
	}
}

func TestAddWriteBackExtendsLoopPreventionOnce(t *testing.T) {
	m := Default()
	if m.IsWriteBack("new_score") {
		t.Fatal("new_score is a write-back column before it was added")
	}
	n := len(m.WriteBack())
	m.AddWriteBack("New_Score", "new_score", "msi_priority", " ")
	if !m.IsWriteBack("new_score") || len(m.WriteBack()) != n+1 {
		t.Fatalf("write-back = %v", m.WriteBack())
	}
}
