package remotecontext

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/msisync/msisync/internal/event"
)

// A Merge as Dynamics posts it: Target a reference to the master, the
// subordinate as a bare (upper-case) Guid, UpdateContent an Entity whose
// lookups carry no names.
func TestParseMerge(t *testing.T) {
	body, err := os.ReadFile(filepath.Join("testdata", "contact_merge.json"))
	if err != nil {
		t.Fatal(err)
	}
	e, err := Parse(body, Headers{})
	if err != nil {
		t.Fatal(err)
	}
	if e.Message != event.MessageMerge || e.Entity != "contact" || e.RecordID != "c0a1b2c3-0000-4000-8000-000000000001" ||
		e.SubordinateID != "c0a1b2c3-0000-4000-8000-000000000002" {
		t.Fatalf("event %s %s %s subordinate %q", e.Entity, e.Message, e.RecordID, e.SubordinateID)
	}
	if e.Attributes["jobtitle"].Text() != "CTO" {
		t.Fatalf("UpdateContent jobtitle %v", e.Attributes["jobtitle"])
	}
	if r, ok := e.Attributes["parentcustomerid"].Reference(); !ok || r.ID != "acc00000-0000-4000-8000-000000000001" || r.Name != "" {
		t.Fatalf("UpdateContent parentcustomerid %+v", e.Attributes["parentcustomerid"])
	}
	if err := e.Validate(); err != nil {
		t.Fatal(err)
	}
	bad := bytes.Replace(body, []byte(`"C0A1B2C3-0000-4000-8000-000000000002"`), []byte(`"not-a-guid"`), 1)
	_, err = Parse(bad, Headers{})
	if fes := FieldErrors(err); len(fes) != 1 || fes[0].Field != "InputParameters.SubordinateId" {
		t.Fatalf("bad SubordinateId: %v", err)
	}
}
