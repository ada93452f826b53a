package main

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Measurements for issue 14's "Done means", not tests: they print figures
// and assert nothing version-specific. Run them with
//
//	MSISYNC_MEASURE=1 go test ./cmd/msisync -run '^TestMeasure' -v
//
// and, for another build of msisync (e.g. main's), add
// MSISYNC_MEASURE_BIN=/path/to/msisync.
const (
	measureEnv    = "MSISYNC_MEASURE"
	measureBinEnv = "MSISYNC_MEASURE_BIN"
)

func measuring(t *testing.T) {
	if os.Getenv(measureEnv) == "" {
		t.Skip("a measurement: set " + measureEnv + "=1")
	}
}

// postBacklog posts n contact updates over the given contacts, fast.
func postBacklog(t *testing.T, base, key string, n, contacts int) map[string]string {
	t.Helper()
	cu := newContactUpdates(t)
	oracle := map[string]string{}
	for i := 0; i < n; i++ {
		id := contactID(i % contacts)
		email := fmt.Sprintf("person%d.v%d@example.org", i%contacts, i)
		if code, _, body := post(t, base+"/webhooks/dataverse?code="+key, cu.body(id, email)); code != http.StatusAccepted {
			t.Fatalf("POST: %d %s", code, body)
		}
		oracle[id] = email
	}
	return oracle
}

// TestMeasureRestart: the time from a restart to the first Marketo write
// under a backlog, after SIGTERM and after SIGKILL, and the reschedules per
// message until the backlog is synced.
func TestMeasureRestart(t *testing.T) {
	measuring(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			dataDir, base := cleanEnv(t)
			// A slow Marketo (10 calls per 20 s) keeps batches in flight.
			t.Setenv("MSISYNC_BATCH_SIZE", "20")
			t.Setenv("MSISYNC_MARKETO_CALLS_PER_20S", "10")
			if v := os.Getenv("MSISYNC_MEASURE_SHUTDOWN_TIMEOUT"); v != "" {
				t.Setenv("MSISYNC_SHUTDOWN_TIMEOUT", v) // e.g. the Kubernetes worker's 80s
			}
			p := startProc(t, base, "serve")
			key := webhookKey(t, dataDir)
			postDependencies(t, base, key)
			const n, contacts = 300, 60
			oracle := postBacklog(t, base, key, n, contacts)
			eventually(t, "first events synced", func() (bool, string) {
				return metric(t, base, "msisync_syncer_messages_total", `outcome="completed"`) > 0, ""
			})
			stopped := time.Now()
			code := p.stop(t, sig)
			stopTook := time.Since(stopped)
			p = startProc(t, base, "serve")
			up := time.Now()
			outcome := func(o string) float64 {
				return metric(t, base, "msisync_syncer_messages_total", `outcome="`+o+`"`)
			}
			var first time.Duration
			for deadline := up.Add(4 * time.Minute); ; time.Sleep(50 * time.Millisecond) {
				first = time.Since(up)
				if outcome("completed") > 0 || time.Now().After(deadline) {
					break
				}
			}
			synced := false
			for deadline := up.Add(6 * time.Minute); !synced && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
				synced, _ = converged(sandboxState(t, base), oracle)
			}
			all := time.Since(up)
			resched := outcome("rescheduled")
			_, state := converged(sandboxState(t, base), oracle)
			t.Logf("MEASURE %s: stop took %v (exit %d); first Marketo write %v after the restart (completed %v); backlog synced=%v after %v (%s); dead-lettered %v; %v reschedules for %d messages (%.2f per message)",
				sig, stopTook.Round(10*time.Millisecond), code, first.Round(10*time.Millisecond), outcome("completed"), synced, all.Round(100*time.Millisecond), state, outcome("deadlettered"), resched, n, resched/n)
		})
	}
}

// TestMeasureUnauthenticatedLogBytes: the log bytes 10,000 unauthenticated
// requests make serve write (at the default log level).
func TestMeasureUnauthenticatedLogBytes(t *testing.T) {
	measuring(t)
	_, base := cleanEnv(t)
	t.Setenv("MSISYNC_LOG_LEVEL", "info")
	p := startProc(t, base, "serve")
	time.Sleep(2 * time.Second) // let start-up logging finish before the baseline
	before := len(p.logs.String())
	var wg sync.WaitGroup
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	for w := 0; w < 8; w++ {
		wg.Go(func() {
			for i := w; i < 10000; i += 8 {
				resp, err := client.Post(base+"/webhooks/dataverse?code=wrong-key-0123456789", "application/json", strings.NewReader(`{}`))
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	time.Sleep(time.Second) // the child's last lines
	t.Logf("MEASURE 10,000 unauthenticated requests: %d log bytes", len(p.logs.String())-before)
}
