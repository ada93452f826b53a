package receiverbench

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestPacedOffersTheRateAndCountsStalls: every request carries its own
// OperationId, all offered requests are sent, and a server stall shows in the
// latency (measured from the due time) while the other requests still go
// out on schedule (open loop: all 100 are sent, none waits for the stall).
func TestPacedOffersTheRateAndCountsStalls(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]bool{}
	stall := make(chan struct{})
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct{ OperationId string }
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &body); err != nil || body.OperationId == "" {
			http.Error(w, "no OperationId", http.StatusBadRequest)
			return
		}
		mu.Lock()
		seen[body.OperationId] = true
		n := len(seen)
		mu.Unlock()
		if n == 20 { // one request holds the server's answer for 300 ms
			once.Do(func() { time.AfterFunc(300*time.Millisecond, func() { close(stall) }) })
			<-stall
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()

	res, err := Paced(t.Context(), PacedOptions{URL: srv.URL + "/webhooks/dataverse", Rate: 200, Duration: 500 * time.Millisecond, Seed: 1 << 40})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 100 || res.Accepted != 100 || res.Errors != 0 {
		t.Fatalf("requests %d accepted %d errors %d (%s); want 100, 100, 0", res.Requests, res.Accepted, res.Errors, res.FirstError)
	}
	if len(seen) != 100 {
		t.Fatalf("%d distinct OperationIds for 100 requests", len(seen))
	}
	if res.Max < 300*time.Millisecond {
		t.Errorf("max latency %s; the 300 ms stall must show", res.Max)
	}
}

func TestPacedRejectsBadOptions(t *testing.T) {
	for _, c := range []struct {
		o    PacedOptions
		want string
	}{
		{PacedOptions{URL: "http://x", Rate: 0, Duration: time.Second}, "rate"},
		{PacedOptions{URL: "http://x", Rate: 1, Duration: 0}, "duration"},
		{PacedOptions{URL: "ftp://x", Rate: 1, Duration: time.Second}, "url"},
	} {
		if _, err := Paced(t.Context(), c.o); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Paced(%+v) = %v, want an error naming %s", c.o, err, c.want)
		}
	}
}

func TestServeBareAnswers202AndStops(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- ServeBare(ctx, addr) }()
	var resp *http.Response
	for range 100 { // until it listens
		if resp, err = http.Post("http://"+addr+"/webhooks/dataverse", "application/json", strings.NewReader(`{}`)); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("status %d, want 202", resp.StatusCode)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("ServeBare after cancel: %v", err)
	}
	if err := ServeBare(t.Context(), "256.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "256.0.0.1:1") {
		t.Fatalf("ServeBare(bad addr) = %v, want an error naming it", err)
	}
}
