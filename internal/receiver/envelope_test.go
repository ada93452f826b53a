package receiver

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
)

// Issue 14: the envelope is checked against itself. A body whose
// PrimaryEntityName says systemuser while its Target is a contact used to
// be queued as a systemuser Update.
func TestPrimaryEntityNameMustMatchTheTarget(t *testing.T) {
	hs := newHarness(t, nil)
	body := read(t, exampleU)
	// Only the top-level PrimaryEntityName (the last one in the body; the
	// ParentContext has its own).
	i := bytes.LastIndex(body, []byte(`"PrimaryEntityName":"contact"`))
	body = append(append(append([]byte{}, body[:i]...), []byte(`"PrimaryEntityName":"systemuser"`)...), body[i+len(`"PrimaryEntityName":"contact"`):]...)
	w := hs.do(t, req{path: RouteDataverse, body: body, header: withKey(nil)})
	if w.Code != http.StatusUnprocessableEntity {
		t.Fatalf("status %d, want 422: %s", w.Code, w.Body)
	}
	p := decodeJSON[Problem](t, w)
	fields := map[string]string{}
	for _, e := range p.Errors {
		fields[e.Field] = e.Reason
	}
	if !strings.Contains(fields["PrimaryEntityName"], "systemuser") || !strings.Contains(fields["InputParameters.Target.LogicalName"], "contact") {
		t.Fatalf("problem %+v: want both PrimaryEntityName and InputParameters.Target.LogicalName named", p)
	}
	if n := len(hs.q.messages()); n != 0 {
		t.Fatalf("%d messages queued for a self-contradicting envelope", n)
	}
}

// A repeated top-level key used to be accepted, the last one winning: a
// second "MessageName":"Delete" queued a Delete.
func TestRepeatedTopLevelKeyIsRefused(t *testing.T) {
	hs := newHarness(t, nil)
	body := bytes.TrimSpace(read(t, exampleU))
	body = append(body[:len(body)-1], []byte(`,"MessageName":"Delete"}`)...)
	w := hs.do(t, req{path: RouteDataverse, body: body, header: withKey(nil)})
	if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), `\"MessageName\" appears more than once`) {
		t.Fatalf("status %d, want 400 naming MessageName: %s", w.Code, w.Body)
	}
	if n := len(hs.q.messages()); n != 0 {
		t.Fatalf("%d messages queued for a body with a repeated key", n)
	}
	// The unmodified body is still accepted.
	ok := hs.do(t, req{path: RouteDataverse, body: read(t, exampleU), header: withKey(nil)})
	if ok.Code != http.StatusAccepted {
		t.Fatalf("the unmodified example: %d %s", ok.Code, ok.Body)
	}
}
