package receiver

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// Issue 14: a 404 used to log the whole path at WARN and echo it in the
// body: ten requests with a 1 MB path wrote 10 MB of log.
func TestLongPathIsClippedInLogAndBody(t *testing.T) {
	hs := newHarness(t, nil)
	path := "/" + strings.Repeat("a", 1<<20)
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/x", nil)
	req.URL.Path = path
	req.Header.Set("x-ms-correlation-request-id", strings.Repeat("c", 1<<16))
	hs.h.ServeHTTP(rec, req)
	if rec.Code != http.StatusNotFound {
		t.Fatalf("status %d", rec.Code)
	}
	if n := rec.Body.Len(); n > 2048 {
		t.Fatalf("404 body is %d bytes for a 1 MB path, want ≤ 2 KB", n)
	}
	var p map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || !strings.Contains(p["detail"].(string), "more bytes)") {
		t.Fatalf("404 body %s: want the path clipped with a note of what was left out", rec.Body.String())
	}
	if n := hs.logs.Len(); n == 0 || n > 2048 {
		t.Fatalf("log for one 1 MB-path request is %d bytes, want 1..2048:\n%.500s", n, hs.logs.String())
	}
}

func TestUnauthenticatedFloodLogsAreRateLimitedAndCounted(t *testing.T) {
	hs := newHarness(t, nil)
	unauth := func() {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/webhooks/dataverse?code=wrong", strings.NewReader(`{}`))
		req.Header.Set("Content-Type", "application/json")
		hs.h.ServeHTTP(rec, req)
		if rec.Code != http.StatusUnauthorized {
			t.Fatalf("status %d, want 401", rec.Code)
		}
	}
	lines := func() int { return strings.Count(hs.logs.String(), `"msg":"request"`) }
	for range 1000 {
		unauth()
	}
	if n := lines(); n != noiseBurst {
		t.Fatalf("1000 unauthenticated requests in an instant wrote %d request lines, want %d (the burst)", n, noiseBurst)
	}
	if got := counter(t, hs, "msisync_receiver_logs_suppressed_total"); got != 1000-noiseBurst {
		t.Fatalf("suppressed counter %v, want %d", got, 1000-noiseBurst)
	}
	// A second later one more line, saying how many were left out.
	hs.clk.Advance(time.Second)
	unauth()
	if n := lines(); n != noiseBurst+1 || !strings.Contains(hs.logs.String(), `"suppressed_since_last":980`) {
		t.Fatalf("after 1 s: %d lines (want %d), with the suppressed count:\n%.600s", n, noiseBurst+1, tailString(hs.logs.String(), 600))
	}
}

func tailString(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func counter(t *testing.T, hs *harness, name string) float64 {
	t.Helper()
	mfs, err := hs.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}
