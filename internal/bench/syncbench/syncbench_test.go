package syncbench

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestBenchSmallBacklogDrainsCompletely(t *testing.T) {
	r, err := Bench(context.Background(), Options{Events: 3000, CallsPerWindow: 100, Window: time.Second, Dir: t.TempDir(), ReceiveMax: 1000})
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + r.String())
	if r.DeadLettered != 0 {
		t.Fatalf("%d dead letters", r.DeadLettered)
	}
	for obj, n := range r.Records {
		if r.Written[obj] < n {
			t.Errorf("%s: %d written, want at least %d", obj, r.Written[obj], n)
		}
	}
	if r.TotalCalls < r.IdealCalls || r.Ratio <= 0 || r.Ratio > 1.05 || r.CallEfficiency <= 0 || r.CallEfficiency > 1 {
		t.Errorf("calls %d, ideal %d, ratio %.2f", r.TotalCalls, r.IdealCalls, r.Ratio)
	}
	if !strings.Contains(r.String(), "ideal / measured") {
		t.Error("report lacks the ratio")
	}
}

// TestBenchReal runs the full benchmark at Marketo's real limits when
// MSISYNC_BENCH_EVENTS is set (e.g. 30000); it takes minutes.
func TestBenchReal(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("MSISYNC_BENCH_EVENTS"))
	if n == 0 {
		t.Skip("set MSISYNC_BENCH_EVENTS=30000 to run the real-limits benchmark")
	}
	lookup := os.Getenv("MSISYNC_BENCH_LOOKUP") == "1"
	cold := os.Getenv("MSISYNC_BENCH_COLD") == "1"
	window, _ := time.ParseDuration(os.Getenv("MSISYNC_BENCH_WINDOW"))
	conc, _ := strconv.Atoi(os.Getenv("MSISYNC_BENCH_CONCURRENCY"))
	recv, _ := strconv.Atoi(os.Getenv("MSISYNC_BENCH_RECEIVE"))
	r, err := Bench(context.Background(), Options{Events: n, LookupExternalPersonID: lookup, Concurrency: conc, ReceiveMax: recv, Cold: cold, Window: window, Dir: t.TempDir(),
		Progress: func(done, total int) { t.Logf("%d/%d settled", done, total) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + r.String())
}
