package receiverbench

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/msisync/msisync/api"
	"github.com/msisync/msisync/internal/dataverse/remotecontext"
)

func TestRunCountsEveryRequestOnce(t *testing.T) {
	var prof bytes.Buffer
	rep, err := Run(t.Context(), Options{Requests: 300, Concurrency: 8, Dir: t.TempDir(), CPUProfile: &prof})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []Result{rep.Bare, rep.NoQueue, rep.Receiver} {
		if r.Requests != 300 || r.Accepted != 300 || r.Errors != 0 {
			t.Errorf("%s: requests %d, accepted %d, errors %d (%s); want 300, 300, 0", r.Name, r.Requests, r.Accepted, r.Errors, r.FirstError)
		}
		if !(r.P50 > 0 && r.P50 <= r.P95 && r.P95 <= r.P99 && r.P99 <= r.Max) {
			t.Errorf("%s: percentiles out of order: %s %s %s %s", r.Name, r.P50, r.P95, r.P99, r.Max)
		}
		if r.RPS() <= 0 {
			t.Errorf("%s: req/s %f", r.Name, r.RPS())
		}
	}
	// Every accepted request is a distinct message in the queue: the varied
	// OperationId defeats duplicate detection, and nothing is lost.
	if rep.Receiver.Queued != rep.Receiver.Accepted {
		t.Errorf("queued %d, accepted %d", rep.Receiver.Queued, rep.Receiver.Accepted)
	}
	if rep.Bare.Queued != -1 || rep.NoQueue.Queued != -1 {
		t.Errorf("queued = %d and %d without a queue, want -1", rep.Bare.Queued, rep.NoQueue.Queued)
	}
	// The server-side means come from the receiver's metrics: the durable
	// queue's Send takes time and is part of the handler's; the bare handler
	// has no metrics.
	if r := rep.Receiver; !(r.EnqueueMean > 0 && r.HandlerMean > r.EnqueueMean) {
		t.Errorf("receiver handler mean %s, enqueue mean %s: want 0 < enqueue < handler", r.HandlerMean, r.EnqueueMean)
	}
	if rep.NoQueue.HandlerMean <= 0 || rep.Bare.HandlerMean != 0 {
		t.Errorf("handler means: no-op queue %s, bare %s", rep.NoQueue.HandlerMean, rep.Bare.HandlerMean)
	}
	if prof.Len() == 0 {
		t.Error("no CPU profile written")
	}
	s := rep.String()
	for _, want := range []string{"bare chi 202", "no-op queue", "receiver+sqlitequeue", "p99", "300"} {
		if !strings.Contains(s, want) {
			t.Errorf("report lacks %q:\n%s", want, s)
		}
	}
}

func TestRunStopsAtDuration(t *testing.T) {
	// A tiny time limit ends each phase long before a million requests.
	rep, err := Run(t.Context(), Options{Requests: 1_000_000, Concurrency: 4, Duration: 200 * time.Millisecond, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Receiver.Requests >= 1_000_000 || rep.Bare.Requests >= 1_000_000 {
		t.Fatalf("did not stop at the time limit: %d, %d requests", rep.Bare.Requests, rep.Receiver.Requests)
	}
	if rep.Receiver.Queued != rep.Receiver.Accepted {
		t.Errorf("queued %d, accepted %d", rep.Receiver.Queued, rep.Receiver.Accepted)
	}
}

func TestBodiesVaryOperationID(t *testing.T) {
	b, err := newBodies(api.ExampleDataverseUpdate)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for n := uint64(1); n <= 3; n++ {
		body := b.fill(nil, 1<<32+n)
		if len(body) != len(api.ExampleDataverseUpdate) {
			t.Fatalf("body %d is %d bytes, template %d", n, len(body), len(api.ExampleDataverseUpdate))
		}
		e, err := remotecontext.Parse(body, remotecontext.Headers{})
		if err != nil {
			t.Fatalf("body %d: %v", n, err)
		}
		ids[e.ID] = true
	}
	if len(ids) != 3 {
		t.Errorf("3 bodies gave %d distinct event ids", len(ids))
	}
}

func TestOptionErrors(t *testing.T) {
	for name, o := range map[string]Options{
		"requests":    {Requests: -1},
		"concurrency": {Concurrency: -2},
		"OperationId": {Payload: []byte(`{"entity":"contact"}`)},
		"JSON object": {Payload: []byte(`[1]`)},
	} {
		_, err := Run(context.Background(), o)
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: error %v, want one naming %q", name, err, name)
		}
	}
}

func TestRunTwiceInOneDirCountsEachRunAlone(t *testing.T) {
	dir := t.TempDir()
	for i := range 2 {
		rep, err := Run(t.Context(), Options{Requests: 50, Concurrency: 4, Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Receiver.Queued != 50 {
			t.Errorf("run %d: queued %d, want 50", i+1, rep.Receiver.Queued)
		}
	}
}
