package main

// Real OS processes for the rollout and crash tests (issue 14): the test
// binary re-runs itself as `msisync serve`, so SIGTERM and SIGKILL reach a
// real process with main's signal handling.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/marketo/marketosim"
)

// childEnv switches the test binary into `msisync <args>` (space-separated).
const childEnv = "MSISYNC_TEST_PROCESS_ARGS"

// childLatencyEnv gives the child's Marketo sandbox a latency per call (a
// Go duration), as real Marketo calls take a while.
const childLatencyEnv = "MSISYNC_TEST_SANDBOX_LATENCY"

// TestProcessChild is not a test on its own: the tests below start the test
// binary with childEnv set, and it runs msisync as main does.
func TestProcessChild(t *testing.T) {
	args := os.Getenv(childEnv)
	if args == "" {
		t.Skip("runs only as a child process of the process tests")
	}
	if v := os.Getenv(childLatencyEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatal(err)
		}
		sandboxHook = func(s *marketosim.Server) { s.SetLatency(d) }
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	root := newRoot()
	root.SetArgs(strings.Fields(args))
	err := root.ExecuteContext(ctx)
	stop()
	os.Exit(exitCode(os.Stderr, err))
}

// proc is a running msisync child process.
type proc struct {
	cmd  *exec.Cmd
	base string
	logs *syncBuffer // stderr: the JSON logs
	done chan struct{}
	err  error // Wait's result, once done is closed
}

// startProc starts `msisync args…` as a child process with the test's
// environment and waits until /healthz answers.
func startProc(t *testing.T, base string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestProcessChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"="+strings.Join(args, " "))
	if bin := os.Getenv(measureBinEnv); bin != "" {
		cmd = exec.Command(bin, args...) // a built msisync (measurements of another version)
	}
	p := &proc{cmd: cmd, base: base, logs: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = p.logs
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("logs of msisync %s (pid %d):\n%s", strings.Join(args, " "), cmd.Process.Pid, tail(p.logs.String(), 4000))
		}
	})
	deadline := time.Now().Add(pollTimeout)
	for {
		select {
		case <-p.done:
			t.Fatalf("msisync %s exited during start-up: %v\n%s", strings.Join(args, " "), p.err, p.logs.String())
		default:
		}
		if resp, err := http.Get(base + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("msisync %s: /healthz not up after %s", strings.Join(args, " "), pollTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// signal sends sig and waits for the process to exit; it returns the exit
// status (-1 when killed by a signal).
func (p *proc) stop(t *testing.T, sig syscall.Signal) int {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("process did not exit within 60 s of %v", sig)
	}
	return p.cmd.ProcessState.ExitCode()
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// metric reads one sample from /metrics: name{labels} (labels as printed,
// e.g. `outcome="rescheduled"`); 0 when absent.
func metric(t *testing.T, base, name, labels string) float64 {
	t.Helper()
	code, body := get(t, base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d", code)
	}
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\{` + regexp.QuoteMeta(labels) + `\} (\S+)$`)
	m := re.FindStringSubmatch(body)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// Dependencies of the RemoteExecutionContext template
// (api/examples/dataverse-update-contact.json): its owner and account.
const (
	templUser    = "5d8e0e7a-3c1b-4f6a-8e2d-9b7c6a5f4e3d"
	templAccount = "b1a2c3d4-e5f6-4789-9abc-def012345678"
)

// postDependencies posts the owner and account of the template's contact
// (our own event format, as api/examples/demo-*.json).
func postDependencies(t *testing.T, base, key string) {
	t.Helper()
	for _, body := range []string{
		`{"entity":"systemuser","id":"` + templUser + `","message":"Create","attributes":{"firstname":"Grace","lastname":"Hopper","internalemailaddress":"grace.hopper@example.org"}}`,
		`{"entity":"account","id":"` + templAccount + `","message":"Create","attributes":{"name":"Analytical Engines Ltd","ownerid":{"logicalName":"systemuser","id":"` + templUser + `"}}}`,
	} {
		if code, _, resp := post(t, base+"/webhooks/events?code="+key, []byte(body)); code != http.StatusAccepted {
			t.Fatalf("POST dependency: %d %s", code, resp)
		}
	}
}

// contactUpdates renders Dataverse's RemoteExecutionContext for contact
// updates from the real example body: its Target has no lookup names and
// upper-case GUIDs where Dataverse writes them; only the contact id, the
// email, the version and the operation change.
type contactUpdates struct {
	templ []byte
	mu    sync.Mutex
	n     int64
}

func newContactUpdates(t *testing.T) *contactUpdates {
	return &contactUpdates{templ: readExample(t, "dataverse-update-contact.json")}
}

func (c *contactUpdates) body(contactID, email string) []byte {
	return c.bodyOf(contactID, email, templAccount)
}

// bodyOf is body with the contact's account (parentcustomerid) too.
func (c *contactUpdates) bodyOf(contactID, email, accountID string) []byte {
	c.mu.Lock()
	c.n++
	n := c.n
	c.mu.Unlock()
	b := bytes.ReplaceAll(c.templ, []byte("c0ffee00-1234-4567-89ab-cdef01234567"), []byte(contactID))
	b = bytes.ReplaceAll(b, []byte("ada.lovelace@example.org"), []byte(email))
	b = bytes.ReplaceAll(b, []byte(templAccount), []byte(accountID))
	b = bytes.ReplaceAll(b, []byte(`\/Date(1767261660000)\/`), []byte(fmt.Sprintf(`\/Date(%d)\/`, 1767261660000+n*1000)))
	b = bytes.ReplaceAll(b, []byte(`"1234600"`), []byte(fmt.Sprintf(`"%d"`, 1234600+n)))
	b = bytes.ReplaceAll(b, []byte("0F000000-0000-4000-8000-000000000002"), []byte(fmt.Sprintf("0F000000-0000-4000-8000-%012X", n)))
	return b
}

func contactID(i int) string { return fmt.Sprintf("c0ffee00-0000-4000-8000-%012d", i) }

// trickle posts contact updates at a steady pace until stopped, retrying a
// post the service did not accept (it is restarting) as Dataverse's retry
// of an asynchronous step would. oracle is the last accepted email of each
// contact.
type trickle struct {
	stop   chan struct{}
	done   chan struct{}
	mu     sync.Mutex
	oracle map[string]string
	posted int
}

func startTrickle(t *testing.T, base, key string, contacts int, every time.Duration) *trickle {
	tr := &trickle{stop: make(chan struct{}), done: make(chan struct{}), oracle: map[string]string{}}
	cu := newContactUpdates(t)
	client := &http.Client{Timeout: 10 * time.Second}
	go func() {
		defer close(tr.done)
		for i := 0; ; i++ {
			id := contactID(i % contacts)
			email := fmt.Sprintf("person%d.v%d@example.org", i%contacts, i)
			body := cu.body(id, email)
			for {
				select {
				case <-tr.stop:
					return
				default:
				}
				resp, err := client.Post(base+"/webhooks/dataverse?code="+key, "application/json", bytes.NewReader(body))
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode == http.StatusAccepted {
						break
					}
				}
				time.Sleep(50 * time.Millisecond) // the service is restarting
			}
			tr.mu.Lock()
			tr.oracle[id] = email
			tr.posted++
			tr.mu.Unlock()
			select {
			case <-tr.stop:
				return
			case <-time.After(every):
			}
		}
	}()
	return tr
}

func (tr *trickle) finish() map[string]string {
	close(tr.stop)
	<-tr.done
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.oracle
}

func (tr *trickle) count() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.posted
}

// converged reports whether the sandbox holds exactly the oracle's persons
// with their last emails.
func converged(st marketoState, oracle map[string]string) (bool, string) {
	wrong := 0
	var first string
	for id, email := range oracle {
		ld := find(st.Leads, "externalPersonId", id)
		if !strings.EqualFold(str(ld, "email"), email) {
			wrong++
			if first == "" {
				first = fmt.Sprintf("%s: %q, want %q", id, str(ld, "email"), email)
			}
		}
	}
	return wrong == 0 && len(st.Leads) == len(oracle), fmt.Sprintf("%d of %d persons wrong (e.g. %s); %d leads", wrong, len(oracle), first, len(st.Leads))
}

// Rolling restart (issue 14): serve restarted three times with SIGTERM
// under a steady trickle of real Dataverse webhooks. Each stop is clean
// (exit 0, the batch in flight finished, its record locks released), so the
// replacement writes to Marketo at once instead of after the 15 s record
// locks or the 60 s queue locks, with no reschedules; Marketo ends equal to
// the oracle with no dead letters.
func TestRollingRestartUnderATrickle(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	dataDir, base := cleanEnv(t)
	// Marketo's latency (400 ms a call) keeps a backlog, so a SIGTERM lands
	// while a batch is in flight.
	t.Setenv("MSISYNC_BATCH_SIZE", "20")
	t.Setenv(childLatencyEnv, "400ms")
	t.Setenv("MSISYNC_LOG_LEVEL", "info")
	p := startProc(t, base, "serve")
	key := webhookKey(t, dataDir)
	postDependencies(t, base, key)
	tr := startTrickle(t, base, key, 30, 20*time.Millisecond)
	rescheduled := 0.0
	for restart := 1; restart <= 3; restart++ {
		// Let a backlog build, then roll.
		before := tr.count()
		eventually(t, "a backlog of webhooks accepted", func() (bool, string) {
			return tr.count() >= before+60, fmt.Sprintf("%d posted", tr.count())
		})
		rescheduled += metric(t, base, "msisync_syncer_messages_total", `outcome="rescheduled"`)
		if code := p.stop(t, syscall.SIGTERM); code != 0 {
			t.Fatalf("restart %d: exit status %d after SIGTERM, want 0 (a clean stop)\n%s", restart, code, tail(p.logs.String(), 3000))
		}
		started := time.Now()
		p = startProc(t, base, "serve")
		// The first completed message is the first Marketo write of the
		// new process (the backlog is there: the trickle posted through
		// the restart).
		var first time.Duration
		eventually(t, fmt.Sprintf("restart %d: first message synced by the new process", restart), func() (bool, string) {
			n := metric(t, base, "msisync_syncer_messages_total", `outcome="completed"`)
			first = time.Since(started)
			return n > 0, fmt.Sprintf("completed %v", n)
		})
		t.Logf("restart %d: first Marketo write %v after the restart", restart, first.Round(10*time.Millisecond))
		// Waiting for a lock would take 15 s (record locks) or 60 s
		// (queue locks); a restart that left none is far quicker.
		if first >= 15*time.Second {
			t.Errorf("restart %d: first write %v after the restart: the new process waited for locks", restart, first)
		}
	}
	oracle := tr.finish()
	eventuallyWithin(t, 2*pollTimeout, "Marketo equal to the oracle", func() (bool, string) {
		return converged(sandboxState(t, base), oracle)
	})
	rescheduled += metric(t, base, "msisync_syncer_messages_total", `outcome="rescheduled"`)
	if dead := metric(t, base, "msisync_queue_messages", `state="dead"`); dead != 0 {
		t.Errorf("%v dead letters after the rolling restart, want 0", dead)
	}
	t.Logf("%d webhooks on %d contacts, %v reschedules over three restarts", tr.count(), len(oracle), rescheduled)
	if rescheduled > 0 {
		t.Errorf("%v messages rescheduled over three clean restarts, want 0 (no record lock left behind)", rescheduled)
	}
	if code := p.stop(t, syscall.SIGTERM); code != 0 {
		t.Errorf("final stop: exit status %d", code)
	}
}

// Sandbox crash test (issue 14): serve is killed with SIGKILL at random
// points while it syncs linked events (accounts, and contacts of them as
// real Dataverse webhooks), five times. The sandbox commits its records
// before answering, so after each restart the store's links name records
// the sandbox has: everything converges with no dead letters (before, the
// sandbox lost what it got since its last minute save and the contacts of
// lost companies were dead-lettered with "1013 Company not found").
func TestSandboxSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	dataDir, base := cleanEnv(t)
	t.Setenv("MSISYNC_BATCH_SIZE", "20")
	t.Setenv(childLatencyEnv, "30ms")
	seed := time.Now().UnixNano()
	rnd := rand.New(rand.NewPCG(uint64(seed), 1))
	t.Logf("kill points from seed %d", seed)
	cu := newContactUpdates(t)
	type person struct{ account, email string }
	want := map[string]person{} // contact → account and email
	const runs, perRun = 5, 16
	var p *proc
	for run := 0; run < runs; run++ {
		p = startProc(t, base, "serve")
		key := webhookKey(t, dataDir)
		if run == 0 {
			postDependencies(t, base, key)
		}
		for i := 0; i < perRun; i++ {
			n := run*perRun + i
			acc := fmt.Sprintf("acc00000-0000-4000-8000-%012d", n)
			body := `{"entity":"account","id":"` + acc + `","message":"Create","attributes":{"name":"Company ` + strconv.Itoa(n) +
				`","ownerid":{"logicalName":"systemuser","id":"` + templUser + `"}}}`
			if code, _, resp := post(t, base+"/webhooks/events?code="+key, []byte(body)); code != http.StatusAccepted {
				t.Fatalf("POST account: %d %s", code, resp)
			}
			id, email := contactID(n), fmt.Sprintf("person%d@example.org", n)
			if code, _, resp := post(t, base+"/webhooks/dataverse?code="+key, cu.bodyOf(id, email, acc)); code != http.StatusAccepted {
				t.Fatalf("POST contact: %d %s", code, resp)
			}
			want[id] = person{acc, email}
		}
		// Kill at a random point of the sync, once some events completed
		// (their records must survive).
		eventually(t, fmt.Sprintf("run %d: events synced", run), func() (bool, string) {
			n := metric(t, base, "msisync_syncer_messages_total", `outcome="completed"`)
			return n > 0, fmt.Sprintf("completed %v", n)
		})
		time.Sleep(time.Duration(rnd.IntN(800)) * time.Millisecond)
		if code := p.stop(t, syscall.SIGKILL); code != -1 {
			t.Fatalf("run %d: exit status %d, want killed", run, code)
		}
	}
	p = startProc(t, base, "serve")
	eventuallyWithin(t, 2*pollTimeout, "every contact in the sandbox, linked to its company", func() (bool, string) {
		st := sandboxState(t, base)
		bad := 0
		var first string
		for id, w := range want {
			ld := find(st.Leads, "externalPersonId", id)
			co := find(st.Companies, "externalCompanyId", w.account)
			if ld == nil || co == nil || !strings.EqualFold(str(ld, "externalCompanyId"), w.account) || !strings.EqualFold(str(ld, "email"), w.email) {
				bad++
				if first == "" {
					first = fmt.Sprintf("contact %s: lead %v, company %v", id, ld, co)
				}
			}
		}
		dead := metric(t, base, "msisync_queue_messages", `state="dead"`)
		if dead > 0 {
			code, body := get(t, base+"/metrics")
			_ = code
			t.Fatalf("%v dead letters after the crashes, want 0\n%s", dead, tail(body, 200))
		}
		return bad == 0 && len(st.Leads) == len(want) && len(st.Companies) == len(want)+1,
			fmt.Sprintf("%d of %d contacts wrong (e.g. %s); %d leads, %d companies", bad, len(want), first, len(st.Leads), len(st.Companies))
	})
	if code := p.stop(t, syscall.SIGTERM); code != 0 {
		t.Errorf("final stop: exit status %d", code)
	}
}
