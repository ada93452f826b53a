package receiver

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
)

type inputErr struct{ field, reason string }

func (e *inputErr) Error() string                      { return "doctor: " + e.field + " " + e.reason }
func (e *inputErr) FieldIssue() (field, reason string) { return e.field, e.reason }

const diagGUID = "9B1C7E2A-0000-4000-8000-000000000001"

func TestDiagnosisRoute(t *testing.T) {
	var asked [2]string
	hs := newHarness(t, func(c *Config) {
		c.Diagnose = func(_ context.Context, entity, id string) (any, error) {
			asked = [2]string{entity, id}
			switch id {
			case "not-a-guid":
				return nil, &inputErr{"id", `"not-a-guid" is not a GUID`}
			case "upstream":
				return nil, errors.New("doctor: marketo: 601 access token invalid")
			}
			return map[string]any{"checks": []map[string]string{{"name": "link", "status": "ok"}}}, nil
		}
	})
	path := func(id string) string { return "/admin/v1/records/contact/" + id + "/diagnosis" }

	w := hs.do(t, req{method: "GET", path: path(diagGUID), header: bearer(admin)})
	var rep struct {
		Checks []struct{ Name, Status string }
	}
	if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "application/json" ||
		json.Unmarshal(w.Body.Bytes(), &rep) != nil || len(rep.Checks) != 1 || rep.Checks[0].Name != "link" {
		t.Fatalf("diagnosis: %d %q %s", w.Code, w.Header().Get("Content-Type"), w.Body)
	}
	if asked != [2]string{"contact", diagGUID} {
		t.Errorf("doctor asked about %v", asked)
	}

	var p Problem
	w = hs.do(t, req{method: "GET", path: path("not-a-guid"), header: bearer(admin)})
	if w.Code != http.StatusUnprocessableEntity || w.Header().Get("Content-Type") != "application/problem+json" || w.Header().Get("Cache-Control") != "no-store" ||
		json.Unmarshal(w.Body.Bytes(), &p) != nil || p.Type != ProblemTypePrefix+"diagnosis" || p.Status != 422 ||
		len(p.Errors) != 1 || p.Errors[0].Field != "id" {
		t.Errorf("bad id: %d %v %s, want a 422 problem naming the id", w.Code, w.Header(), w.Body)
	}

	p = Problem{}
	w = hs.do(t, req{method: "GET", path: path("upstream"), header: bearer(admin)})
	if w.Code != http.StatusBadGateway || json.Unmarshal(w.Body.Bytes(), &p) != nil || p.Title != "Diagnosis failed upstream" || len(p.Errors) != 0 {
		t.Errorf("upstream failure: %d %s, want a 502 problem", w.Code, w.Body)
	}

	asked = [2]string{}
	if w := hs.do(t, req{method: "GET", path: path(diagGUID), header: bearer("wrong")}); w.Code != http.StatusUnauthorized || asked != [2]string{} {
		t.Errorf("wrong token: %d, doctor asked %v; want 401 before the doctor", w.Code, asked)
	}
}

func TestDiagnosisRouteAbsentWithoutDoctor(t *testing.T) {
	hs := newHarness(t, nil)
	if w := hs.do(t, req{method: "GET", path: "/admin/v1/records/contact/" + diagGUID + "/diagnosis", header: bearer(admin)}); w.Code != http.StatusNotFound {
		t.Errorf("diagnosis without a doctor: %d, want 404", w.Code)
	}
}
