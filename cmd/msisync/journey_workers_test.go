package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/marketo/marketosim"
)

const workerChildEnv = "MSISYNC_TEST_WORKER_CHILD"

// TestWorkerChild is not a test on its own: TestJourneyThreeWorkerProcesses
// runs it as a child process that is `msisync worker` with the inherited
// settings, until SIGTERM.
func TestWorkerChild(t *testing.T) {
	if os.Getenv(workerChildEnv) == "" {
		t.Skip("runs only as a child of TestJourneyThreeWorkerProcesses")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	root := newRoot()
	root.SetArgs([]string{"worker"})
	if err := root.ExecuteContext(ctx); err != nil {
		t.Fatal(err)
	}
}

// Journey (issue 9): three `msisync worker` OS processes on one data folder
// drain a backlog into a Marketo limited to 20 calls per 20 s and 3
// concurrent calls: together they never exceed the window or the
// concurrency (0 × 606, 0 × 615). Marketo's window is 20 s, so this takes
// about a minute: it runs with MSISYNC_TEST_WORKER_PROCESSES=1.
func TestJourneyThreeWorkerProcesses(t *testing.T) {
	if os.Getenv("MSISYNC_TEST_WORKER_PROCESSES") != "1" {
		t.Skip("about a minute (Marketo's 20 s window); set MSISYNC_TEST_WORKER_PROCESSES=1")
	}
	dataDir, base := cleanEnv(t)
	sim := marketosim.New(marketosim.Options{ClientID: "workers", ClientSecret: "workers-secret",
		CallsPerWindow: 20, MaxConcurrent: 3})
	sim.SetLatency(50 * time.Millisecond)
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	t.Setenv("MSISYNC_MARKETO_URL", srv.URL)
	t.Setenv("MSISYNC_MARKETO_CLIENT_ID", "workers")
	t.Setenv("MSISYNC_MARKETO_CLIENT_SECRET", "workers-secret")
	t.Setenv("MSISYNC_MARKETO_CALLS_PER_20S", "20")
	t.Setenv("MSISYNC_MARKETO_CONCURRENCY", "3")
	t.Setenv("MSISYNC_MSI_INTERVAL", "0")
	t.Setenv("MSISYNC_BATCH_SIZE", "10")

	// The backlog: 300 contacts, queued by a receiver before any worker runs.
	recv := startServe(t, base, "receiver")
	key := webhookKey(t, dataDir)
	const n = 300
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("9a100000-0000-4000-8000-%012d", i)
		body := envelopeJSON(t, "contact", id, map[string]any{"lastname": fmt.Sprint("Worker ", i),
			"emailaddress1": fmt.Sprintf("w%d@workers.example", i)})
		if code, _, resp := post(t, base+"/webhooks/events?code="+key, body); code != http.StatusAccepted {
			t.Fatalf("post %d: %d %s", i, code, resp)
		}
	}
	recv.stop(t)

	var cmds []*exec.Cmd
	for i := 0; i < 3; i++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestWorkerChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), workerChildEnv+"=1", "MSISYNC_ADDR="+freeAddr(t))
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
		t.Cleanup(func() {
			if cmd.ProcessState == nil {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
			}
			if t.Failed() {
				t.Logf("worker %d output:\n%s", i, out.String())
			}
		})
	}
	deadline := time.Now().Add(3 * time.Minute)
	for len(sim.Dump().Leads) < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d contacts in Marketo after 3 min", len(sim.Dump().Leads), n)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, cmd := range cmds {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}
	st := sim.Stats()
	log := sim.CallLog()
	maxWin := marketosim.MaxInWindow(log, 20*time.Second)
	t.Logf("3 worker processes, %d contacts: %d Marketo calls over %v; max %d in any 20 s window (limit 20); most concurrent %d (limit 3); 606=%d 615=%d",
		n, len(log), log[len(log)-1].Sub(log[0]).Round(time.Second), maxWin, st.MaxConcurrency, st.Throttled606, st.Throttled615)
	if maxWin > 20 || st.Throttled606 != 0 || st.Throttled615 != 0 {
		t.Errorf("max %d calls in a 20 s window, %d × 606, %d × 615; want ≤ 20 and none", maxWin, st.Throttled606, st.Throttled615)
	}
	if len(log) <= 20 {
		t.Errorf("only %d calls: the backlog did not need more than one window", len(log))
	}
}
