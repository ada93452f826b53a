package syncer_test

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/dataverse"
	"github.com/msisync/msisync/internal/dataverse/dataversesim"
	"github.com/msisync/msisync/internal/marketo"
	"github.com/msisync/msisync/internal/marketo/marketosim"
	"github.com/msisync/msisync/internal/queue/sqlitequeue"
	"github.com/msisync/msisync/internal/receiver"
	"github.com/msisync/msisync/internal/store/sqlitestore"
	"github.com/msisync/msisync/internal/syncer"
	"github.com/msisync/msisync/internal/syncer/mapping"
	"github.com/prometheus/client_golang/prometheus"
)

// The chaos test runs the receiver and the worker as separate OS processes
// (this test binary re-executed with chaosRoleEnv set) and kills them with
// SIGKILL: the receiver once while the Dataverse simulator is delivering,
// the worker twice while it holds a batch. Everything they share lives in
// files (the SQLite queue and store), as in production.
const (
	chaosRoleEnv    = "MSISYNC_CHAOS_ROLE" // "receiver" or "worker"
	chaosDirEnv     = "MSISYNC_CHAOS_DIR"
	chaosAddrEnv    = "MSISYNC_CHAOS_ADDR"
	chaosMarketoEnv = "MSISYNC_CHAOS_MARKETO"
	chaosWorkerEnv  = "MSISYNC_CHAOS_WORKER"
	chaosKey        = "chaos-key"
)

var chaosQueueOptions = sqlitequeue.Options{LockDuration: 3 * time.Second, MaxDeliveryCount: 100, PollInterval: 10 * time.Millisecond, BusyTimeout: 30 * time.Second}

// TestChaosHelperProcess is not a test on its own: TestChaos runs it as the
// receiver or the worker process. It prints "ready <addr>" and serves until
// it is killed.
func TestChaosHelperProcess(t *testing.T) {
	role := os.Getenv(chaosRoleEnv)
	if role == "" {
		t.Skip("runs only as a process of TestChaos")
	}
	var err error
	switch role {
	case "receiver":
		err = chaosReceiver()
	case "worker":
		err = chaosWorker()
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	fmt.Fprintln(os.Stderr, "chaos helper:", err)
	os.Exit(2)
}

func chaosReceiver() error {
	ctx := context.Background()
	q, err := sqlitequeue.Open(ctx, filepath.Join(os.Getenv(chaosDirEnv), "queue.db"), chaosQueueOptions)
	if err != nil {
		return err
	}
	recv, err := receiver.New(receiver.Config{Keys: []string{chaosKey}, Queue: q, MaxMessageBytes: q.MaxMessageBytes(),
		Logger: slog.New(slog.DiscardHandler), Registerer: prometheus.NewRegistry()})
	if err != nil {
		return err
	}
	// A restarted receiver takes the address of the one killed, which the
	// kernel may hold for a moment.
	var ln net.Listener
	for i := 0; ; i++ {
		if ln, err = net.Listen("tcp", os.Getenv(chaosAddrEnv)); err == nil || i == 100 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	fmt.Println("ready", ln.Addr())
	return http.Serve(ln, recv)
}

func chaosWorker() error {
	ctx := context.Background()
	dir := os.Getenv(chaosDirEnv)
	q, err := sqlitequeue.Open(ctx, filepath.Join(dir, "queue.db"), chaosQueueOptions)
	if err != nil {
		return err
	}
	st, err := sqlitestore.Open(ctx, filepath.Join(dir, "store.db"), sqlitestore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	mk, err := marketo.New(marketo.Config{BaseURL: os.Getenv(chaosMarketoEnv), ClientID: "id", ClientSecret: "secret", CallsPerWindow: 100, Window: time.Second,
		MaxConcurrent: 10, InitialBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, MaxRetries: 4, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	s, err := syncer.New(syncer.Config{Queue: q, Store: st, Marketo: mk, WorkerID: os.Getenv(chaosWorkerEnv),
		IdleWait: 50 * time.Millisecond, BatchWait: 20 * time.Millisecond, ReceiveMax: 300, MaxAttempts: 12, RequeueBase: 100 * time.Millisecond,
		RequeueMax: time.Second, LockedDelay: 200 * time.Millisecond, RecordLockTTL: 2 * time.Second, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	fmt.Println("ready", os.Getpid())
	return s.Run(ctx)
}

// helper is one running helper process.
type helper struct {
	name   string
	cmd    *exec.Cmd
	ready  string // what follows "ready " on its first line
	exited chan struct{}
	stderr *bytes.Buffer
	killed bool
}

func startHelper(t *testing.T, name string, env ...string) *helper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestChaosHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	h := &helper{name: name, cmd: cmd, exited: make(chan struct{}), stderr: &bytes.Buffer{}}
	cmd.Stderr = h.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(h.exited) }()
	t.Cleanup(func() { h.kill(t) })
	line := make(chan string, 1)
	go func() {
		r := bufio.NewReader(out)
		s, _ := r.ReadString('\n')
		line <- s
		io.Copy(io.Discard, r)
	}()
	select {
	case s := <-line:
		if !strings.HasPrefix(s, "ready ") {
			<-h.exited
			t.Fatalf("%s did not start: %q\n%s", name, s, h.stderr)
		}
		h.ready = strings.TrimSpace(strings.TrimPrefix(s, "ready "))
	case <-time.After(60 * time.Second):
		t.Fatalf("%s did not start in time\n%s", name, h.stderr)
	}
	return h
}

// kill sends SIGKILL and waits for the process to be gone. A process that
// exited on its own before (a crash, a data race) fails the test.
func (h *helper) kill(t *testing.T) {
	if h.killed {
		return
	}
	h.killed = true
	select {
	case <-h.exited:
		t.Errorf("%s exited before it was killed: %v\n%s", h.name, h.cmd.ProcessState, h.stderr)
		return
	default:
	}
	if err := h.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Error(err)
	}
	<-h.exited
}

// retryingTransport re-sends a webhook while the receiver is down (connection
// refused or reset): the stand-in for the operator who resubmits the
// Failed system jobs of a Dataverse whose receiver was away. A request that
// reached the receiver before it died is sent twice; the queue drops the
// duplicate by its stable message id.
type retryingTransport struct {
	base    http.RoundTripper
	retries *atomic.Int64 // re-sends made while the receiver was away
}

func (rt retryingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		r := req.Clone(req.Context())
		if req.GetBody != nil {
			b, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			r.Body = b
		}
		resp, err := rt.base.RoundTrip(r)
		if err == nil || time.Now().After(deadline) || req.Context().Err() != nil {
			return resp, err
		}
		rt.retries.Add(1)
		time.Sleep(20 * time.Millisecond)
	}
}

var chaosRoles = []string{"Stakeholder", "Champion", "Decision Maker", "End User", "Economic Buyer", "Influencer", "Technical Buyer"}

// chaosOps works in the Dataverse simulator as users would, about
// scale × 2,500 webhook deliveries: creates, partial updates, owner changes
// (Assign), SetState, role changes, lead qualification, deletes. midway runs
// once, half-way through. invalid lists the accounts Marketo must refuse
// (a name over its 255 characters, which Dataverse takes).
func chaosOps(t *testing.T, dv *dataversesim.Server, seed uint64, scale int, midway func()) (users, invalid []string) {
	t.Helper()
	rnd := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	pick := func(ids []string) string { return ids[rnd.IntN(len(ids))] }
	must := func(id string, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	ref := func(entity, id string) dataversesim.Ref { return dataversesim.Ref{LogicalName: entity, ID: id} }
	for i := 0; i < 8; i++ {
		users = append(users, must(dv.Create("systemuser", map[string]any{"firstname": "Rep", "lastname": strconv.Itoa(i),
			"internalemailaddress": fmt.Sprintf("rep%d@example.com", i)})))
	}
	owner := func() dataversesim.Ref { return ref("systemuser", pick(users)) }
	var accounts, lonely, contacts, leads, opps, conns []string
	for i := 0; i < 120*scale; i++ {
		id := must(dv.Create("account", map[string]any{"name": fmt.Sprintf("Account %d", i), "ownerid": owner()}))
		if i%24 == 0 {
			lonely = append(lonely, id)
		} else {
			accounts = append(accounts, id)
		}
	}
	for i := 0; i < 500*scale; i++ {
		attrs := map[string]any{"lastname": fmt.Sprintf("Last%d", i), "emailaddress1": fmt.Sprintf("c%d@example.com", i), "ownerid": owner()}
		if i%5 != 0 {
			attrs["parentcustomerid"] = ref("account", pick(accounts))
		}
		contacts = append(contacts, must(dv.Create("contact", attrs)))
	}
	for i := 0; i < 150*scale; i++ {
		leads = append(leads, must(dv.Create("lead", map[string]any{"lastname": fmt.Sprintf("Lead%d", i), "emailaddress1": fmt.Sprintf("l%d@example.com", i),
			"companyname": "Prospect Inc", "ownerid": owner()})))
	}
	for i := 0; i < 200*scale; i++ {
		opps = append(opps, must(dv.Create("opportunity", map[string]any{"name": fmt.Sprintf("Deal %d", i), "ownerid": owner(),
			"parentaccountid": ref("account", pick(accounts)), "estimatedvalue": dataversesim.Money(1000 * (1 + rnd.IntN(90)))})))
	}
	midway()
	for i := 0; i < 400*scale; i++ {
		conns = append(conns, must(dv.Connect(pick(opps), pick(contacts), chaosRoles[rnd.IntN(len(chaosRoles))])))
	}
	roleIDs := map[string]string{}
	for _, id := range dv.IDs("connectionrole") {
		row, _ := dv.Get("connectionrole", id)
		roleIDs[fmt.Sprint(row["name"])] = id
	}
	for i := 0; i < 600*scale; i++ {
		var err error
		switch rnd.IntN(6) {
		case 0:
			err = dv.Update("contact", pick(contacts), map[string]any{"jobtitle": fmt.Sprintf("Title %d", i)})
		case 1:
			err = dv.Update("contact", pick(contacts), map[string]any{"lastname": fmt.Sprintf("Renamed%d", i)})
		case 2:
			err = dv.Update("account", pick(accounts), map[string]any{"name": fmt.Sprintf("Account v%d", i)})
		case 3:
			id := pick(opps)
			if rnd.IntN(3) == 0 {
				if row, _ := dv.Get("opportunity", id); fmt.Sprint(row["statecode"]) == "0" {
					err = dv.SetState("opportunity", id, 1, 3) // won
				}
			} else {
				err = dv.Update("opportunity", id, map[string]any{"estimatedvalue": dataversesim.Money(500 * (1 + rnd.IntN(200)))})
			}
		case 4:
			entity, ids := "account", accounts
			switch rnd.IntN(3) {
			case 1:
				entity, ids = "contact", contacts
			case 2:
				entity, ids = "opportunity", opps
			}
			err = dv.Assign(entity, pick(ids), pick(users))
		case 5:
			err = dv.Update("connection", pick(conns), map[string]any{"record2roleid": ref("connectionrole", roleIDs[chaosRoles[rnd.IntN(len(chaosRoles))]])})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range leads[:30*scale] {
		if _, _, _, err := dv.QualifyLead(id); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range conns {
		if rnd.IntN(10) == 0 {
			if _, ok := dv.Get("connection", id); ok {
				must("", dv.Delete("connection", id))
			}
		}
	}
	for _, id := range opps {
		if rnd.IntN(30) != 0 {
			continue
		}
		// The user removes the deal's stakeholders, then the deal (from the
		// opportunity's side: the master row, whose delete removes both rows).
		for _, c := range dv.IDs("connection") {
			if row, ok := dv.Get("connection", c); ok && refID(row["record1id"]) == id {
				must("", dv.Delete("connection", c))
			}
		}
		must("", dv.Delete("opportunity", id))
	}
	for i, id := range lonely {
		if i%2 == 0 {
			must("", dv.Delete("account", id))
		}
	}
	for i := 0; i < 2; i++ {
		invalid = append(invalid, must(dv.Create("account", map[string]any{"name": strings.Repeat("X", 300), "ownerid": owner()})))
	}
	return users, invalid
}

// steppingClock moves one second each time it is read.
type steppingClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *steppingClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second)
	return c.t
}

func refID(v any) string {
	if r, ok := v.(dataversesim.Ref); ok {
		return r.ID
	}
	return ""
}

func TestChaos(t *testing.T) {
	if os.Getenv(chaosRoleEnv) != "" {
		t.Skip("helper process")
	}
	// Scale 1 is about 2,500 webhooks; MSISYNC_CHAOS_SCALE=4 runs about 10,000.
	scale := 1
	if v, err := strconv.Atoi(os.Getenv("MSISYNC_CHAOS_SCALE")); err == nil && v > 0 {
		scale = v
	}
	seed := uint64(20261129)
	if v, err := strconv.ParseUint(os.Getenv("MSISYNC_CHAOS_SEED"), 10, 64); err == nil {
		seed = v
	}
	start := time.Now()
	ctx := context.Background()
	dir := t.TempDir()

	sim := marketosim.New(marketosim.Options{ClientID: "id", ClientSecret: "secret", CallsPerWindow: 1000, Window: time.Second, Seed: 7,
		LookupExternalPersonID: os.Getenv("MSISYNC_CHAOS_LOOKUP") == "1"})
	srv := httptest.NewServer(sim)
	defer srv.Close()
	// Transient faults the worker must ride out.
	for code, rate := range map[string]float64{"606": 0.03, "615": 0.03, "604": 0.03, "502": 0.03, "611": 0.02} {
		sim.SetFault(code, rate)
	}
	sim.DropConnections(0.01)
	stopTokens := make(chan struct{})
	var tokWG sync.WaitGroup
	tokWG.Add(1)
	go func() {
		defer tokWG.Done()
		tick := time.NewTicker(700 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopTokens:
				return
			case <-tick.C:
				sim.ExpireTokens()
			}
		}
	}()
	defer func() { close(stopTokens); tokWG.Wait() }()

	env := func(role string, more ...string) []string {
		return append([]string{chaosRoleEnv + "=" + role, chaosDirEnv + "=" + dir}, more...)
	}
	recv := startHelper(t, "receiver 0", env("receiver", chaosAddrEnv+"=127.0.0.1:0")...)
	addr := recv.ready

	// Dataverse's modifiedon has whole seconds, and it is the version the
	// syncer orders changes by: two changes of one record in the same second
	// delivered out of order cannot be told apart (the RowVersion the events
	// also carry would; see the issue 10 report). The simulator's clock moves
	// a second per reading, as changes of one record by people are apart.
	// MSISYNC_CHAOS_REALCLOCK=1 uses the real clock: it reproduces the
	// same-second reordering (an open issue).
	var simClock clock.Clock = &steppingClock{t: time.Date(2026, 10, 1, 8, 0, 0, 0, time.UTC)}
	if os.Getenv("MSISYNC_CHAOS_REALCLOCK") == "1" {
		simClock = clock.System{}
	}
	var resent atomic.Int64
	dv := dataversesim.New(dataversesim.Options{Token: "tok", Logger: slog.New(slog.DiscardHandler), Delivery: dataversesim.DeliveryShuffled,
		UpperCaseGUIDs: true,
		Clock:          simClock,
		HTTPClient:     &http.Client{Timeout: 60 * time.Second, Transport: retryingTransport{base: http.DefaultTransport, retries: &resent}}})
	dsrv := httptest.NewServer(dv)
	defer dsrv.Close()
	dc, err := dataverse.New(dataverse.Config{URL: dsrv.URL, Token: "tok", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	m := mapping.Default()
	if _, err := dc.Register(ctx, dataverse.RegisterOptions{Salt: []byte("test-install-salt-for-syncer"), URL: "http://" + addr + receiver.RouteDataverse, Key: chaosKey,
		Steps: dataverse.StepsFor(m.Columns, m.WriteBack())}); err != nil {
		t.Fatal(err)
	}

	kills := 0
	users, invalid := chaosOps(t, dv, seed, scale, func() {
		// Kill the receiver while webhooks are still being delivered.
		for dv.Stats().Attempts < 400 {
			time.Sleep(5 * time.Millisecond)
		}
		recv.kill(t)
		kills++
		t.Logf("killed the receiver after %d webhook posts (%v)", dv.Stats().Attempts, time.Since(start))
		recv = startHelper(t, "receiver 1", env("receiver", chaosAddrEnv+"="+addr)...)
	})
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if err := dv.WaitIdle(wctx); err != nil {
		t.Fatal(err)
	}
	ds := dv.Stats()
	if ds.Failed != 0 {
		t.Fatalf("%d webhook deliveries failed", ds.Failed)
	}
	t.Logf("%d webhooks delivered (%d posts, %d re-sent while the receiver was down) in %v", ds.Delivered, ds.Attempts, resent.Load(), time.Since(start))
	if resent.Load() == 0 {
		t.Error("no webhook met the killed receiver: the kill was not mid-delivery")
	}
	if ds.Delivered < 2000*int64(scale) {
		t.Fatalf("%d webhooks delivered, want ≥ %d", ds.Delivered, 2000*scale)
	}

	qdb, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "queue.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer qdb.Close()
	count := func(where string) int {
		var n int
		if err := qdb.QueryRowContext(ctx, "SELECT COUNT(*) FROM messages "+where).Scan(&n); err != nil {
			t.Log(err)
			return -1
		}
		return n
	}
	total := count("")
	deadline := time.Now().Add(150 * time.Second)
	wait := func(cond func() bool) bool {
		for time.Now().Before(deadline) {
			if cond() {
				return true
			}
			time.Sleep(10 * time.Millisecond)
		}
		return false
	}
	for run := 0; ; run++ {
		w := startHelper(t, fmt.Sprintf("worker %d", run), env("worker", chaosMarketoEnv+"="+srv.URL, chaosWorkerEnv+"=worker-"+strconv.Itoa(run))...)
		if run < 2 {
			// SIGKILL mid-batch: once the worker has settled a third of the
			// backlog, at a moment it holds locked messages.
			target := total * (2 - run) / 3
			// Held by this worker: locked now, and locked after it started
			// (a lock runs LockDuration from its receive), so not a lock
			// the previous, killed worker left behind.
			started := time.Now()
			heldByThisWorker := func() bool {
				since := started.Add(chaosQueueOptions.LockDuration)
				if now := time.Now(); now.After(since) {
					since = now
				}
				return count(fmt.Sprintf("WHERE lock_token IS NOT NULL AND visible_at > %d", since.UnixNano())) > 0
			}
			ok := wait(func() bool { n := count(""); return n >= 0 && n <= target && heldByThisWorker() })
			w.kill(t)
			kills++
			t.Logf("killed worker %d mid-batch with %d of %d messages left (%v)", run, count(""), total, time.Since(start))
			if !ok {
				t.Fatalf("run %d: the worker did not get below %d messages in time", run, target)
			}
			continue
		}
		ok := wait(func() bool { return count("") == 0 })
		t.Logf("drained after %v", time.Since(start))
		w.kill(t)
		if !ok {
			t.Fatalf("not drained: %d messages left", count(""))
		}
		break
	}
	recv.kill(t)

	checkSimOracle(t, dv, sim.Dump(), users, invalid)
	// The dead-letter queue holds exactly the accounts made invalid on
	// purpose, each once, with Marketo's reason.
	rows, err := qdb.QueryContext(ctx, "SELECT reason, description FROM dead")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	dead := 0
	want := map[string]bool{}
	for _, id := range invalid {
		want[id] = true
	}
	for rows.Next() {
		var reason, desc string
		if err := rows.Scan(&reason, &desc); err != nil {
			t.Fatal(err)
		}
		dead++
		ok := false
		for id := range want {
			if reason == syncer.ReasonRejected && strings.Contains(desc, "exceeds max length 255") && strings.Contains(desc, "account "+id) {
				delete(want, id)
				ok = true
			}
		}
		if !ok {
			t.Errorf("unexpected dead letter: %s: %s", reason, desc)
		}
	}
	for id := range want {
		t.Errorf("account %s (name over 255 characters) was not dead-lettered", id)
	}
	s := sim.Stats()
	t.Logf("%d webhooks, %d queue messages, %d SIGKILLs (receiver once, worker twice), %d Marketo calls, faults %v, %d dead letters, %v in all",
		ds.Delivered, total, kills, s.CountedCalls, s.Responses, dead, time.Since(start))
}

// checkSimOracle compares Marketo with the Dataverse simulator's final
// state, link by link, including every role name.
func checkSimOracle(t *testing.T, dv *dataversesim.Server, d marketosim.State, users, invalid []string) {
	t.Helper()
	str := func(v any) string {
		if v == nil {
			return ""
		}
		return fmt.Sprint(v)
	}
	diff := 0
	report := func(format string, args ...any) {
		diff++
		if diff <= 20 {
			t.Errorf(format, args...)
		}
	}
	row := func(entity, id string) map[string]any { r, _ := dv.Get(entity, id); return r }
	// Sales persons.
	gotSP := map[string]string{}
	for _, r := range d.SalesPersons {
		gotSP[str(r["externalSalesPersonId"])] = str(r["email"])
	}
	for _, u := range users {
		if want := str(row("systemuser", u)["internalemailaddress"]); gotSP[u] != want {
			report("sales person %s email %q, want %q", u, gotSP[u], want)
		}
	}
	if len(gotSP) != len(users) {
		report("%d sales persons, want %d", len(gotSP), len(users))
	}
	// Companies → sales person.
	gotCo := map[string]map[string]any{}
	for _, r := range d.Companies {
		gotCo[str(r["externalCompanyId"])] = r
	}
	var accounts []string
	for _, id := range dv.IDs("account") {
		if !slices.Contains(invalid, id) {
			accounts = append(accounts, id)
		}
	}
	for _, id := range accounts {
		a, c := row("account", id), gotCo[id]
		if c == nil {
			report("account %s missing", id)
			continue
		}
		if str(c["externalSalesPersonId"]) != refID(a["ownerid"]) || str(c["company"]) != str(a["name"]) {
			report("company %s = (%v, %v), want (%s, %v)", id, c["externalSalesPersonId"], c["company"], refID(a["ownerid"]), a["name"])
		}
	}
	if len(gotCo) != len(accounts) {
		report("%d companies, want %d (deleted accounts must go)", len(gotCo), len(accounts))
	}
	// Persons → company and owner; a qualified lead's person moved to its contact.
	gotP := map[string]map[string]any{}
	leadIDs := map[string]string{} // Marketo lead id → externalPersonId
	for _, r := range d.Leads {
		gotP[str(r["externalPersonId"])] = r
		leadIDs[str(r["id"])] = str(r["externalPersonId"])
	}
	wantP := 0
	for _, entity := range []string{"contact", "lead"} {
		for _, id := range dv.IDs(entity) {
			p, r := row(entity, id), gotP[id]
			if entity == "lead" && str(p["statecode"]) != "0" {
				if r != nil {
					report("qualified lead %s still carries its own GUID in Marketo", id)
				}
				continue
			}
			wantP++
			if r == nil {
				report("%s %s missing", entity, id)
				continue
			}
			company := refID(p["parentcustomerid"])
			if entity == "lead" {
				company = refID(p["parentaccountid"])
			}
			if str(r["externalSalesPersonId"]) != refID(p["ownerid"]) || str(r["externalCompanyId"]) != company || str(r["email"]) != str(p["emailaddress1"]) ||
				str(r["lastName"]) != str(p["lastname"]) || str(r["title"]) != str(p["jobtitle"]) {
				report("%s %s = (sp %v, co %v, %v, %v, %v), want (%s, %s, %v, %v, %v)", entity, id, r["externalSalesPersonId"], r["externalCompanyId"], r["email"], r["lastName"], r["title"],
					refID(p["ownerid"]), company, p["emailaddress1"], p["lastname"], p["jobtitle"])
			}
		}
	}
	if len(gotP) != wantP {
		report("%d persons, want %d", len(gotP), wantP)
	}
	// Opportunities → company and owner.
	gotO := map[string]map[string]any{}
	for _, r := range d.Opportunities {
		gotO[str(r["externalOpportunityId"])] = r
	}
	opps := dv.IDs("opportunity")
	for _, id := range opps {
		o, r := row("opportunity", id), gotO[id]
		if r == nil {
			report("opportunity %s missing", id)
			continue
		}
		amount := ""
		if v, ok := o["estimatedvalue"].(dataversesim.Money); ok {
			amount = fmt.Sprint(float64(v))
		}
		won := str(o["statecode"]) == "1"
		if str(r["externalCompanyId"]) != refID(o["parentaccountid"]) || str(r["externalSalesPersonId"]) != refID(o["ownerid"]) ||
			str(r["amount"]) != amount || str(r["isWon"]) != fmt.Sprint(won) {
			report("opportunity %s = (co %v, sp %v, amount %v, won %v), want (%s, %s, %s, %v)", id, r["externalCompanyId"], r["externalSalesPersonId"], r["amount"], r["isWon"],
				refID(o["parentaccountid"]), refID(o["ownerid"]), amount, won)
		}
	}
	if len(gotO) != len(opps) {
		report("%d opportunities, want %d", len(gotO), len(opps))
	}
	// Roles, by name.
	gotR := map[string]bool{}
	for _, r := range d.Roles {
		gotR[str(r["externalOpportunityId"])+"|"+leadIDs[str(r["leadId"])]+"|"+str(r["role"])] = true
	}
	wantR := map[string]bool{}
	for _, id := range dv.IDs("connection") {
		c := row("connection", id)
		r1, _ := c["record1id"].(dataversesim.Ref)
		r2, _ := c["record2id"].(dataversesim.Ref)
		if r1.LogicalName != "opportunity" || r2.LogicalName != "contact" || str(c["statecode"]) != "0" {
			continue
		}
		wantR[r1.ID+"|"+r2.ID+"|"+str(row("connectionrole", refID(c["record2roleid"]))["name"])] = true
	}
	for _, k := range slices.Sorted(maps.Keys(wantR)) {
		if !gotR[k] {
			report("role %s missing", k)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(gotR)) {
		if !wantR[k] {
			report("extra role %s", k)
		}
	}
	t.Logf("oracle: %d sales persons, %d companies, %d persons, %d opportunities, %d roles", len(gotSP), len(gotCo), len(gotP), len(gotO), len(gotR))
	if diff > 20 {
		t.Errorf("… %d differences in all", diff)
	}
}
