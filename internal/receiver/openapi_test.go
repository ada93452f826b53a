package receiver

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"
	"go.yaml.in/yaml/v3"

	"github.com/msisync/msisync/api"
)

// TestOpenAPICoversEveryRoute keeps api/openapi.yaml in step with the router:
// every route the receiver serves is documented with its method, and every
// documented operation is served.
func TestOpenAPICoversEveryRoute(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(api.OpenAPI, &doc); err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for path, ops := range doc.Paths {
		for method := range ops {
			documented[strings.ToUpper(method)+" "+path] = true
		}
	}
	// Every optional admin route on: the doctor and the budget (cmd wires them).
	hs := newHarness(t, func(c *Config) {
		c.Diagnose = func(context.Context, string, string) (any, error) { return nil, nil }
		c.Budget = func(context.Context) (any, error) { return nil, nil }
	})
	served := map[string]bool{}
	err := chi.Walk(hs.h.(chi.Routes), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		served[method+" "+route] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(served) < 10 {
		t.Fatalf("walked only %v", served)
	}
	for r := range served {
		if !documented[r] {
			t.Errorf("%s is served but not in api/openapi.yaml", r)
		}
	}
	for r := range documented {
		if !served[r] {
			t.Errorf("%s is in api/openapi.yaml but not served", r)
		}
	}
	if w := hs.do(t, req{method: "GET", path: RouteOpenAPI}); w.Code != 200 || !strings.HasPrefix(w.Body.String(), "openapi: 3.1") {
		t.Errorf("GET /openapi.yaml: %d", w.Code)
	}
}
