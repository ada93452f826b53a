package marketo_test

// The shared governor across real OS processes: the test binary re-runs
// itself as worker children that share one store (a SQLite file, or a
// PostgreSQL schema) and call one simulator served by the parent.

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/msisync/msisync/internal/marketo"
	"github.com/msisync/msisync/internal/marketo/marketosim"
	"github.com/msisync/msisync/internal/marketo/marketotype"
	"github.com/msisync/msisync/internal/store"
	"github.com/msisync/msisync/internal/store/pgstore"
	"github.com/msisync/msisync/internal/store/sqlitestore"
)

const (
	govChildEnv = "MSISYNC_GOVERNOR_CHILD" // "backlog" or "hold"
	govStoreEnv = "MSISYNC_GOVERNOR_STORE" // sqlite:<path> or pg:<schema>
	govURLEnv   = "MSISYNC_GOVERNOR_URL"
	govRunEnv   = "MSISYNC_GOVERNOR_RUN" // how long a backlog child calls
	govWinEnv   = "MSISYNC_GOVERNOR_WINDOW"

	govLimit      = 20 // calls per window, as the issue asks
	govConcurrent = 3
	govTTL        = 3 * time.Second
)

const pgTestURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

func pgURL() string {
	if u := os.Getenv("MSISYNC_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return pgTestURL
}

// govWindow is the window of the test: the 20 s with
// MSISYNC_GOVERNOR_SOAK=1, else 4 s so the test stays short (the
// governor's arithmetic does not depend on the window's length).
func govWindow() time.Duration {
	if os.Getenv("MSISYNC_GOVERNOR_SOAK") == "1" {
		return 20 * time.Second
	}
	return 4 * time.Second
}

func openSharedStore(ctx context.Context, spec string) (store.Store, error) {
	quiet := slog.New(slog.DiscardHandler)
	kind, arg, _ := strings.Cut(spec, ":")
	if kind == "pg" {
		return pgstore.Open(ctx, pgURL(), pgstore.Options{Schema: arg, Logger: quiet})
	}
	return sqlitestore.Open(ctx, arg, sqlitestore.Options{Logger: quiet})
}

func sharedClient(t testing.TB, url string, slots marketo.SlotStore, holder string, window time.Duration) *marketo.Client {
	c, err := marketo.New(marketo.Config{BaseURL: url, ClientID: "gov", ClientSecret: "gov-secret",
		CallsPerWindow: govLimit, MaxConcurrent: govConcurrent, Window: window, Slots: slots, Holder: holder,
		GrantTTL: govTTL, Logger: slog.New(slog.DiscardHandler), MaxRetries: 1})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestGovernorChild is not a test on its own: the tests below run it as a
// child process.
func TestGovernorChild(t *testing.T) {
	mode := os.Getenv(govChildEnv)
	if mode == "" {
		t.Skip("runs only as a child of the shared governor process tests")
	}
	ctx := context.Background()
	st, err := openSharedStore(ctx, os.Getenv(govStoreEnv))
	if err != nil {
		t.Fatal(err)
	}
	window, _ := time.ParseDuration(os.Getenv(govWinEnv))
	c := sharedClient(t, os.Getenv(govURLEnv), st.(marketo.SlotStore), fmt.Sprintf("child-%d", os.Getpid()), window)
	switch mode {
	case "hold": // start the concurrent calls the simulator holds, then wait for SIGKILL
		var wg sync.WaitGroup
		for i := 0; i < govConcurrent; i++ {
			wg.Add(1)
			go func() { defer wg.Done(); _, _ = c.Describe(ctx, marketotype.Companies) }()
		}
		fmt.Println("calling")
		wg.Wait()
		time.Sleep(time.Hour)
	case "backlog": // four workers with an endless backlog until the run ends
		run, _ := time.ParseDuration(os.Getenv(govRunEnv))
		rctx, cancel := context.WithTimeout(ctx, run)
		defer cancel()
		var calls, fails atomic.Int64
		var wg sync.WaitGroup
		for i := 0; i < 4; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for rctx.Err() == nil {
					if _, err := c.Describe(rctx, marketotype.Companies); err != nil {
						if rctx.Err() == nil {
							fails.Add(1)
							fmt.Fprintln(os.Stderr, "call failed:", err)
						}
						continue
					}
					calls.Add(1)
				}
			}()
		}
		wg.Wait()
		c.Close()
		fmt.Printf("calls=%d fails=%d\n", calls.Load(), fails.Load())
	}
}

func startChild(t *testing.T, mode, storeSpec, url string, run time.Duration) (*exec.Cmd, *bufio.Reader, *strings.Builder) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestGovernorChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), govChildEnv+"="+mode, govStoreEnv+"="+storeSpec, govURLEnv+"="+url,
		govRunEnv+"="+run.String(), govWinEnv+"="+govWindow().String())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd, bufio.NewReader(out), &stderr
}

func newSim(t *testing.T) (*marketosim.Server, string) {
	sim := marketosim.New(marketosim.Options{ClientID: "gov", ClientSecret: "gov-secret",
		CallsPerWindow: govLimit, Window: govWindow(), MaxConcurrent: govConcurrent})
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	return sim, srv.URL
}

// storeSpecs are the shared stores to test: SQLite always, PostgreSQL when
// it answers (under CI=true it must).
func storeSpecs(t *testing.T) map[string]string {
	specs := map[string]string{"sqlite": "sqlite:" + filepath.Join(t.TempDir(), "store.db")}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, pgURL())
	if err == nil {
		err = pool.Ping(ctx)
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL not reachable at %s (CI=true requires it): %v", pgstore.Redact(pgURL()), err)
		}
		t.Logf("PostgreSQL not reachable, testing SQLite only: %v", err)
		return specs
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	schema := "msisync_gov_" + hex.EncodeToString(b)
	t.Cleanup(func() {
		_, _ = pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
		pool.Close()
	})
	specs["postgres"] = "pg:" + schema
	return specs
}

// TestSharedGovernorThreeProcesses: three worker processes with a backlog
// on one store never exceed the simulator's window or concurrency.
func TestSharedGovernorThreeProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes for ~8 s per store")
	}
	for name, spec := range storeSpecs(t) {
		t.Run(name, func(t *testing.T) {
			sim, url := newSim(t)
			sim.SetLatency(30 * time.Millisecond)
			// Create the tables once, so the children do not race on it.
			st, err := openSharedStore(t.Context(), spec)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			if _, err := st.(store.CallSlots).CallUsage(t.Context(), "warmup"); err != nil {
				t.Fatal(err)
			}
			run := 2 * govWindow()
			var outs []*bufio.Reader
			var errs []*strings.Builder
			var cmds []*exec.Cmd
			for i := 0; i < 3; i++ {
				cmd, out, stderr := startChild(t, "backlog", spec, url, run)
				cmds, outs, errs = append(cmds, cmd), append(outs, out), append(errs, stderr)
			}
			total := 0
			for i, cmd := range cmds {
				b, _ := io.ReadAll(outs[i])
				if err := cmd.Wait(); err != nil {
					t.Fatalf("child %d: %v\n%s\n%s", i, err, b, errs[i])
				}
				var calls, fails int
				for _, line := range strings.Split(string(b), "\n") {
					if strings.HasPrefix(line, "calls=") {
						_, _ = fmt.Sscanf(line, "calls=%d fails=%d", &calls, &fails)
					}
				}
				if fails != 0 {
					t.Errorf("child %d: %d calls failed:\n%s", i, fails, errs[i])
				}
				// No fairness between processes is promised (whoever asks
				// first when the window frees wins), so a late starter may
				// get nothing in two windows; the limits are what is tested.
				t.Logf("child %d made %d calls", i, calls)
				total += calls
			}
			st2 := sim.Stats()
			log := sim.CallLog()
			maxWin := marketosim.MaxInWindow(log, govWindow())
			t.Logf("%s: %d calls by 3 processes in %v; max %d calls in any %v window (limit %d); most concurrent %d (limit %d); 606=%d 615=%d",
				name, len(log), run, maxWin, govWindow(), govLimit, st2.MaxConcurrency, govConcurrent, st2.Throttled606, st2.Throttled615)
			if st2.Throttled606 != 0 || st2.Throttled615 != 0 {
				t.Errorf("simulator answered 606 %d times and 615 %d times, want 0", st2.Throttled606, st2.Throttled615)
			}
			if maxWin > govLimit {
				t.Errorf("max calls in a %v window = %d, want ≤ %d", govWindow(), maxWin, govLimit)
			}
			// Under a backlog the processes together get past the first window.
			if len(log) <= govLimit {
				t.Errorf("only %d calls in %v: the governor is far below the limit", len(log), run)
			}
			if total != len(log) {
				t.Errorf("children counted %d calls, simulator %d", total, len(log))
			}
		})
	}
}

// TestSharedGovernorSIGKILLFreesSlots: a process killed mid-call holds its
// concurrent slots only until its grant's lease ends.
func TestSharedGovernorSIGKILLFreesSlots(t *testing.T) {
	for name, spec := range storeSpecs(t) {
		t.Run(name, func(t *testing.T) {
			sim, url := newSim(t)
			release := sim.Hold()
			defer release()
			st, err := openSharedStore(t.Context(), spec)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			slots := st.(store.CallSlots)
			cmd, out, stderr := startChild(t, "hold", spec, url, 0)
			if line, err := out.ReadString('\n'); err != nil || !strings.HasPrefix(line, "calling") {
				t.Fatalf("child: %q %v\n%s", line, err, stderr)
			}
			deadline := time.Now().Add(10 * time.Second)
			for sim.InFlight() < govConcurrent {
				if time.Now().After(deadline) {
					t.Fatalf("child has %d calls in flight, want %d\n%s", sim.InFlight(), govConcurrent, stderr)
				}
				time.Sleep(5 * time.Millisecond)
			}
			if err := cmd.Process.Kill(); err != nil { // SIGKILL: no deferred code runs
				t.Fatal(err)
			}
			_ = cmd.Wait()
			killed := time.Now()
			release() // the server finishes the dead calls; only the store still holds the slots
			u, err := slots.CallUsage(t.Context(), "any")
			if err != nil {
				t.Fatal(err)
			}
			if u.InFlight != govConcurrent {
				t.Fatalf("right after the kill the store holds %d slots, want the dead process's %d", u.InFlight, govConcurrent)
			}
			// A live process gets all the slots back within the lease.
			c := sharedClient(t, url, slots, "survivor", govWindow())
			defer c.Close()
			ctx, cancel := context.WithTimeout(t.Context(), 2*govTTL)
			defer cancel()
			before := sim.Stats().Throttled615
			var wg sync.WaitGroup
			var failed atomic.Int64
			for i := 0; i < govConcurrent; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if _, err := c.Describe(ctx, marketotype.Companies); err != nil {
						failed.Add(1)
						t.Errorf("call after the kill: %v", err)
					}
				}()
			}
			wg.Wait()
			took := time.Since(killed)
			t.Logf("%s: slots of the killed process were back after %v (lease %v)", name, took.Round(time.Millisecond), govTTL)
			if took > govTTL+time.Second {
				t.Errorf("slots came back after %v, want within the lease %v (+1 s)", took, govTTL)
			}
			if n := sim.Stats().Throttled615 - before; n != 0 {
				t.Errorf("%d × 615 after the kill", n)
			}
			if failed.Load() != 0 {
				t.Fatal("calls failed")
			}
		})
	}
}
