package receiver

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// The console is mounted under /console (every path below it reaches it,
// with no admin bearer token: it has its own login) and / leads to it.
func TestConsoleIsMountedUnderItsPath(t *testing.T) {
	var got []string
	console := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.URL.Path)
		w.WriteHeader(http.StatusTeapot)
	})
	h, err := New(Config{Keys: []string{"0123456789abcdef0123"}, Queue: &recorder{}, Registerer: prometheus.NewRegistry(), Console: console})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/console", "/console/", "/console/deadletters/abc", "/console/static/console.css"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, p, nil))
		if rec.Code != http.StatusTeapot {
			t.Errorf("GET %s: %d, want the console's answer", p, rec.Code)
		}
	}
	if len(got) != 4 || got[2] != "/console/deadletters/abc" {
		t.Errorf("console saw paths %v, want the full paths", got)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	if rec.Code != http.StatusFound || rec.Header().Get("Location") != "/console/" {
		t.Errorf("GET /: %d → %q, want a redirect to /console/", rec.Code, rec.Header().Get("Location"))
	}
	// Without a console, / stays a 404.
	h, _ = New(Config{Keys: []string{"0123456789abcdef0123"}, Queue: &recorder{}, Registerer: prometheus.NewRegistry()})
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/console/", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("GET /console/ without a console: %d, want 404", rec.Code)
	}
}
