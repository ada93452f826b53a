package receiver

import (
	"net/http"
	"strings"
	"testing"
)

// Issue 14: the admin filters validate their input as the CLI does, and a
// dry run always says what it would do.
func TestAdminEntityFilterIsValidated(t *testing.T) {
	hs := newHarness(t, nil)
	w := hs.do(t, req{method: "GET", path: RouteDLQ + "?entity=contacts", header: bearer(admin)})
	if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), `"field":"entity"`) || !strings.Contains(w.Body.String(), "contact") {
		t.Fatalf("list with entity=contacts: %d %s, want 400 naming entity and the allowed values", w.Code, w.Body)
	}
	w = hs.do(t, req{path: RouteDLQReplay, body: []byte(`{"all":true,"entity":"Contactz","dryRun":true}`), header: bearer(admin)})
	if w.Code != http.StatusUnprocessableEntity || !strings.Contains(w.Body.String(), `"field":"entity"`) {
		t.Fatalf("replay with entity=Contactz: %d %s, want 422 naming entity", w.Code, w.Body)
	}
	if w := hs.do(t, req{method: "GET", path: RouteDLQ + "?entity=opportunity", header: bearer(admin)}); w.Code != http.StatusOK {
		t.Fatalf("list with entity=opportunity: %d %s", w.Code, w.Body)
	}
}

func TestAdminSinceFilterRejectsMalformedValues(t *testing.T) {
	hs := newHarness(t, nil)
	for _, v := range []string{"yesterday", "1d", "2026-01-01", "-2h"} {
		w := hs.do(t, req{method: "GET", path: RouteDLQ + "?since=" + v, header: bearer(admin)})
		if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), `"field":"since"`) {
			t.Errorf("since=%s: %d %s, want 400 naming since", v, w.Code, w.Body)
		}
	}
}

func TestDryRunMatchingNothingSaysZero(t *testing.T) {
	hs := newHarness(t, nil)
	for _, route := range []string{RouteDLQReplay, RouteDLQPurge} {
		w := hs.do(t, req{path: route, body: []byte(`{"all":true,"reason":"no such reason","dryRun":true}`), header: bearer(admin)})
		if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"matched":0`) || !strings.Contains(w.Body.String(), `"ids":[]`) {
			t.Fatalf("%s dry run matching nothing: %d %s, want matched 0 and ids []", route, w.Code, w.Body)
		}
	}
}
