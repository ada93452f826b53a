package receiver

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/msisync/msisync/internal/event"
)

// FuzzWebhook checks the receiver's contract for any body: it answers one of
// the documented statuses, and enqueues exactly one valid event when (and
// only when) it answers 202 "queued".
func FuzzWebhook(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("..", "dataverse", "remotecontext", "testdata", "*.json"))
	files = append(files, exampleU, exampleC)
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, false)
		f.Add(b, true)
	}
	hs := newHarness(f, func(c *Config) { c.MaxMessageBytes = 4096 })
	f.Fuzz(func(t *testing.T, body []byte, custom bool) {
		path := RouteDataverse
		if custom {
			path = RouteEvents
		}
		before := len(hs.q.messages())
		r := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
		r.Header.Set(DefaultHeader, key)
		w := httptest.NewRecorder()
		hs.h.ServeHTTP(w, r)
		sent := hs.q.messages()[before:]
		switch w.Code {
		case http.StatusAccepted:
			acc := decodeJSON[Accepted](t, w)
			switch acc.Status {
			case "queued":
				if len(sent) != 1 || sent[0].ID != acc.ID {
					t.Fatalf("queued but sent %d", len(sent))
				}
				e, err := event.Decode(sent[0].Body)
				if err != nil {
					t.Fatalf("queued an undecodable event: %v", err)
				}
				if len(sent[0].Body) > 4096 && !e.Truncated {
					t.Fatalf("oversize event not reduced")
				}
			case "ignored":
				if len(sent) != 0 {
					t.Fatalf("ignored but sent %d", len(sent))
				}
			default:
				t.Fatalf("202 with status %q", acc.Status)
			}
		case http.StatusBadRequest, http.StatusUnprocessableEntity, http.StatusRequestEntityTooLarge:
			if len(sent) != 0 {
				t.Fatalf("%d but sent %d", w.Code, len(sent))
			}
			if p := decodeJSON[Problem](t, w); p.Status != w.Code || len(p.Errors) == 0 {
				t.Fatalf("problem %+v", p)
			}
		default:
			t.Fatalf("unexpected status %d: %s", w.Code, w.Body)
		}
	})
}
