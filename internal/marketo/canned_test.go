package marketo

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// cannedServer answers with fixed bodies keyed by "METHOD path"; a second
// page is keyed "METHOD path#page" and served when nextPageToken is sent.
// The identity response is the documented shape.
func cannedServer(t *testing.T, bodies map[string]string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json;charset=UTF-8")
		if r.URL.Path == "/identity/oauth/token" {
			io.WriteString(w, `{"access_token":"cdf01657-110d-4155-99a7-f986b2ff13a0:int","token_type":"bearer","expires_in":3599,"scope":"apis@acmeinc.com"}`)
			return
		}
		if r.URL.Query().Get("access_token") != "" || r.Header.Get("Authorization") != "Bearer cdf01657-110d-4155-99a7-f986b2ff13a0:int" {
			t.Errorf("bad auth on %s", r.URL)
		}
		m := r.Method
		if r.URL.Query().Get("_method") == "GET" {
			m = "GET"
		}
		key := m + " " + r.URL.Path
		_ = r.ParseForm()
		if r.Form.Get("nextPageToken") != "" {
			key += "#page"
		}
		b, ok := bodies[key]
		if !ok {
			io.WriteString(w, `{"requestId":"e#1","success":false,"errors":[{"code":"610","message":"Requested resource not found"}]}`)
			return
		}
		io.WriteString(w, b)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func cannedClient(t *testing.T, url string) *Client {
	t.Helper()
	c, err := New(Config{BaseURL: url, ClientID: "id", ClientSecret: "secret",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// handlerClient is an http.Client that calls h in-process.
func handlerClient(h http.Handler) *http.Client {
	return &http.Client{Transport: roundTripper(func(r *http.Request) (*http.Response, error) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		return rec.Result(), nil
	})}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
