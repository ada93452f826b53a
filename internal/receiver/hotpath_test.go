package receiver

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/queue"
)

// Bodies are read into pooled buffers: what one request queued must not
// change when the next request's body lands in the same buffer, whichever
// parser (direct, tree, simple envelope) built the event.
func TestPooledBodiesDoNotLeakIntoQueuedEvents(t *testing.T) {
	hs := newHarness(t, nil)
	custom := []byte(`{"entity":"contact","id":"9A1E0000-0000-0000-0000-0000000000C1","message":"Update","attributes":{"firstname":"Zoë"}}`)
	bodies := []struct {
		path string
		body []byte
	}{
		{RouteDataverse, fixture(t, "contact_update.json")},
		{RouteDataverse, fixture(t, "contact_update_unescaped.json")},
		{RouteDataverse, fixture(t, "opportunity_create.json")},
		{RouteEvents, custom},
		{RouteDataverse, fixture(t, "account_update.json")},
		{RouteDataverse, fixture(t, "lead_qualifylead.json")},
	}
	type snap struct {
		body  []byte
		props map[string]string
	}
	var before []snap
	for i, b := range bodies {
		if w := hs.do(t, req{path: b.path, body: b.body, header: withKey(nil)}); w.Code != http.StatusAccepted {
			t.Fatalf("body %d: status %d: %s", i, w.Code, w.Body)
		}
		msgs := hs.q.messages()
		if len(msgs) != i+1 {
			t.Fatalf("body %d: %d messages queued, want %d", i, len(msgs), i+1)
		}
		m := msgs[i]
		props := map[string]string{}
		for k, v := range m.Properties {
			props[k] = string([]byte(v)) // a copy, made before the next request
		}
		before = append(before, snap{append([]byte(nil), m.Body...), props})
	}
	// Overwrite every pooled buffer with junk of the same sizes.
	for range 4 {
		junk := bytes.Repeat([]byte("X"), 8000)
		hs.do(t, req{path: RouteDataverse, body: junk, header: withKey(nil)})
	}
	for i, m := range hs.q.messages() {
		if !bytes.Equal(m.Body, before[i].body) {
			t.Errorf("message %d body changed after later requests", i)
		}
		for k, v := range before[i].props {
			if m.Properties[k] != v {
				t.Errorf("message %d property %s = %q, was %q", i, k, m.Properties[k], v)
			}
		}
		e, err := event.Decode(m.Body)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if e.RecordID != m.Properties[queue.PropRecordID] {
			t.Errorf("message %d: record %s, property %v", i, e.RecordID, m.Properties)
		}
	}
}

// queryValue must agree with url.Values.Get on every raw query.
func FuzzQueryValue(f *testing.F) {
	for _, q := range []string{"code=abc", "a=1&code=x%2By&code=2", "co%64e=k", "code=a;b&code=c", "code=%zz&code=ok",
		"code", "code=", "&&code=+a+", "x=1;code=2", "code=1&co%zde=2", "%63ode=%41"} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		want := url.Values{}
		if v, err := url.ParseQuery(raw); err == nil || v != nil {
			want = v
		}
		if got := queryValue(raw, "code"); got != want.Get("code") {
			t.Fatalf("queryValue(%q) = %q, url.ParseQuery says %q", raw, got, want.Get("code"))
		}
	})
}

// The hand-written 202 body is what writeJSON would write.
func TestWriteQueuedMatchesWriteJSON(t *testing.T) {
	for _, a := range []Accepted{{Status: "queued", ID: "0123456789abcdef0123456789abcdef"}, {Status: "queued", ID: "x", Reduced: true},
		{Status: "queued"}, {Status: "queued", ID: `<"odd" id>`, Reduced: true}} {
		var want bytes.Buffer
		b, _ := json.Marshal(a)
		want.Write(b)
		w := httptest.NewRecorder()
		writeQueued(w, a.ID, a.Reduced)
		if w.Body.String() != want.String() || w.Code != http.StatusAccepted || w.Header().Get("Content-Type") != "application/json" {
			t.Errorf("%+v: %d %s %q, want 202 %s", a, w.Code, w.Header().Get("Content-Type"), w.Body, want.String())
		}
	}
}
