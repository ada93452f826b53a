package syncer_test

import (
	"bytes"
	"context"
	"database/sql"
	encjson "encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/marketo"
	"github.com/msisync/msisync/internal/marketo/marketosim"
	"github.com/msisync/msisync/internal/queue"
	"github.com/msisync/msisync/internal/queue/sqlitequeue"
	"github.com/msisync/msisync/internal/receiver"
	"github.com/msisync/msisync/internal/store/sqlitestore"
	"github.com/msisync/msisync/internal/syncer"
	"github.com/prometheus/client_golang/prometheus"
)

// history is a generated Dataverse history: the events, the final state
// (the oracle) and the events made invalid on purpose.
type history struct {
	rnd     *rand.Rand
	ver     int64
	base    time.Time
	events  []*event.Event
	users   []string
	team    string
	invalid map[string][2]string // record key of an invalid event → (reason, description)

	accounts map[string]*hAccount
	persons  map[string]*hPerson // contacts and leads
	opps     map[string]*hOpp
	conns    map[string]*hConn
	n        int
}

type hAccount struct {
	owner   string // systemuser id, or "" for the team
	name    string
	deleted bool
	lonely  bool
}

type hPerson struct {
	entity, owner, account, email, last, title string
	qualified                                  bool // lead qualified into a contact
	fromLead                                   string
}

type hOpp struct {
	owner, account, name string
	amount               int
	won, deleted         bool
}

type hConn struct {
	opp, contact, role string
	deleted            bool
}

var roles = []string{"Stakeholder", "Champion", "Decision Maker", "End User", "Economic Buyer", "Influencer", "Technical Buyer"}

func (h *history) id() string {
	h.n++
	x := h.rnd.Uint64()
	return fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", uint32(x), uint16(x>>32), h.n%4096, uint16(x>>48)%4096, h.n)
}

func (h *history) emit(entity, id, msg string, attrs event.Attributes) *event.Event {
	h.ver++
	ev := &event.Event{Schema: event.SchemaVersion, Source: event.SourceCustom, Entity: entity, RecordID: id, Message: msg,
		Attributes: attrs, Version: h.ver, OccurredAt: h.base.Add(time.Duration(h.ver) * time.Millisecond)}
	if msg == event.MessageDelete {
		ev.Version = 0
	}
	ev.ID = ev.DeriveID()
	h.events = append(h.events, ev)
	return ev
}

func (h *history) ownerRef(owner string) event.Value {
	if owner == "" {
		return event.Reference("team", h.team, "Sales team")
	}
	return event.Reference(event.EntitySystemUser, strings.ToUpper(owner), "")
}

func (h *history) pick(ids []string) string { return ids[h.rnd.IntN(len(ids))] }

func keysOf[T any](m map[string]T, ok func(T) bool) []string {
	var out []string
	for k, v := range m {
		if ok(v) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// generate builds a history of about scale×2,700 events.
func generate(seed uint64, scale int) *history {
	h := &history{rnd: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), base: time.Date(2026, 10, 1, 8, 0, 0, 0, time.UTC),
		invalid: map[string][2]string{}, accounts: map[string]*hAccount{}, persons: map[string]*hPerson{}, opps: map[string]*hOpp{}, conns: map[string]*hConn{}}
	h.team = h.id()
	for i := 0; i < 8; i++ {
		u := h.id()
		h.users = append(h.users, u)
		h.emit(event.EntitySystemUser, u, event.MessageCreate, event.Attributes{
			"internalemailaddress": event.String(fmt.Sprintf("rep%d@example.com", i)), "firstname": event.String("Rep"), "lastname": event.String(fmt.Sprint(i))})
	}
	owner := func() string {
		if h.rnd.IntN(10) == 0 {
			return "" // team-owned
		}
		return h.pick(h.users)
	}
	for i := 0; i < 120*scale; i++ {
		a := &hAccount{owner: owner(), name: fmt.Sprintf("Account %d", i), lonely: i%24 == 0}
		id := h.id()
		h.accounts[id] = a
		h.emit(event.EntityAccount, id, event.MessageCreate, event.Attributes{"name": event.String(a.name), "ownerid": h.ownerRef(a.owner)})
	}
	usable := keysOf(h.accounts, func(a *hAccount) bool { return !a.lonely })
	newPerson := func(entity string, account string) (string, *hPerson) {
		id := h.id()
		p := &hPerson{entity: entity, owner: owner(), account: account, email: fmt.Sprintf("p%d@example.com", h.n), last: fmt.Sprintf("Last%d", h.n)}
		h.persons[id] = p
		attrs := event.Attributes{"emailaddress1": event.String(p.email), "lastname": event.String(p.last), "ownerid": h.ownerRef(p.owner)}
		if entity == event.EntityContact && account != "" {
			attrs["parentcustomerid"] = event.Reference(event.EntityAccount, account, "")
		}
		if entity == event.EntityLead {
			attrs["companyname"] = event.String("Prospect Inc")
		}
		h.emit(entity, id, event.MessageCreate, attrs)
		return id, p
	}
	for i := 0; i < 500*scale; i++ {
		acc := ""
		if i%5 != 0 {
			acc = h.pick(usable)
		}
		newPerson(event.EntityContact, acc)
	}
	for i := 0; i < 150*scale; i++ {
		newPerson(event.EntityLead, "")
	}
	for i := 0; i < 200*scale; i++ {
		o := &hOpp{owner: owner(), account: h.pick(usable), name: fmt.Sprintf("Deal %d", i), amount: 1000 * (1 + h.rnd.IntN(90))}
		id := h.id()
		h.opps[id] = o
		h.emit(event.EntityOpportunity, id, event.MessageCreate, event.Attributes{"name": event.String(o.name), "ownerid": h.ownerRef(o.owner),
			"parentaccountid": event.Reference(event.EntityAccount, o.account, ""), "estimatedvalue": event.Money(json(o.amount)), "statecode": event.Option(0)})
	}
	contacts := keysOf(h.persons, func(p *hPerson) bool { return p.entity == event.EntityContact })
	opps := keysOf(h.opps, func(*hOpp) bool { return true })
	connAttrs := func(r1e, r1, r2e, r2, role string) event.Attributes {
		return event.Attributes{"record1id": event.Reference(r1e, r1, ""), "record2id": event.Reference(r2e, r2, ""),
			"record2roleid": event.Reference("connectionrole", fmt.Sprintf("00000000-0000-4000-8000-%012d", slices.Index(roles, role)), role)}
	}
	for i := 0; i < 400*scale; i++ {
		c := &hConn{opp: h.pick(opps), contact: h.pick(contacts), role: roles[h.rnd.IntN(len(roles))]}
		dup := false
		for _, x := range h.conns {
			if x.opp == c.opp && x.contact == c.contact && x.role == c.role {
				dup = true
			}
		}
		if dup {
			continue
		}
		id, recip := h.id(), h.id()
		h.conns[id] = c
		h.emit(event.EntityConnection, id, event.MessageCreate, connAttrs(event.EntityOpportunity, c.opp, event.EntityContact, c.contact, c.role))
		// The reciprocal row Dataverse creates: ignored by the syncer.
		h.emit(event.EntityConnection, recip, event.MessageCreate, connAttrs(event.EntityContact, c.contact, event.EntityOpportunity, c.opp, c.role))
	}
	// Partial updates, owner changes, role changes.
	for i := 0; i < 600*scale; i++ {
		switch h.rnd.IntN(6) {
		case 0, 1:
			id := h.pick(contacts)
			p := h.persons[id]
			if h.rnd.IntN(2) == 0 {
				p.title = fmt.Sprintf("Title %d", i)
				h.emit(event.EntityContact, id, event.MessageUpdate, event.Attributes{"jobtitle": event.String(p.title)})
			} else {
				p.last = fmt.Sprintf("Renamed%d", i)
				h.emit(event.EntityContact, id, event.MessageUpdate, event.Attributes{"lastname": event.String(p.last)})
			}
		case 2:
			id := h.pick(usable)
			a := h.accounts[id]
			a.name = fmt.Sprintf("Account %s v%d", id[:4], i)
			h.emit(event.EntityAccount, id, event.MessageUpdate, event.Attributes{"name": event.String(a.name)})
		case 3:
			id := h.pick(opps)
			o := h.opps[id]
			if h.rnd.IntN(3) == 0 {
				o.won = true
				h.emit(event.EntityOpportunity, id, event.MessageUpdate, event.Attributes{"statecode": event.Option(1), "statuscode": event.Option(3)})
			} else {
				o.amount += 500
				h.emit(event.EntityOpportunity, id, event.MessageUpdate, event.Attributes{"estimatedvalue": event.Money(json(o.amount))})
			}
		case 4:
			// Assign: owner change of an account, contact or opportunity.
			u := h.pick(h.users)
			switch h.rnd.IntN(3) {
			case 0:
				id := h.pick(usable)
				h.accounts[id].owner = u
				h.emit(event.EntityAccount, id, event.MessageAssign, event.Attributes{"ownerid": h.ownerRef(u)})
			case 1:
				id := h.pick(contacts)
				h.persons[id].owner = u
				h.emit(event.EntityContact, id, event.MessageAssign, event.Attributes{"ownerid": h.ownerRef(u)})
			default:
				id := h.pick(opps)
				h.opps[id].owner = u
				h.emit(event.EntityOpportunity, id, event.MessageAssign, event.Attributes{"ownerid": h.ownerRef(u)})
			}
		case 5:
			ids := keysOf(h.conns, func(c *hConn) bool { return true })
			id := h.pick(ids)
			c := h.conns[id]
			role := roles[h.rnd.IntN(len(roles))]
			clash := false
			for k, x := range h.conns {
				if k != id && x.opp == c.opp && x.contact == c.contact && x.role == role {
					clash = true
				}
			}
			if clash || role == c.role {
				continue
			}
			c.role = role
			h.emit(event.EntityConnection, id, event.MessageUpdate, event.Attributes{
				"record2roleid": event.Reference("connectionrole", fmt.Sprintf("00000000-0000-4000-8000-%012d", slices.Index(roles, role)), role)})
		}
	}
	// Lead qualification: the lead becomes a contact carrying originatingleadid.
	leads := keysOf(h.persons, func(p *hPerson) bool { return p.entity == event.EntityLead })
	for _, lid := range leads[:30*scale] {
		l := h.persons[lid]
		l.qualified = true
		cid := h.id()
		c := &hPerson{entity: event.EntityContact, owner: l.owner, account: h.pick(usable), email: l.email, last: l.last, fromLead: lid}
		h.persons[cid] = c
		ev := h.emit(event.EntityContact, cid, event.MessageCreate, event.Attributes{"emailaddress1": event.String(c.email), "lastname": event.String(c.last),
			"ownerid": h.ownerRef(c.owner), "parentcustomerid": event.Reference(event.EntityAccount, c.account, ""),
			"originatingleadid": event.Reference(event.EntityLead, lid, "")})
		ev.ParentMessage = event.MessageQualifyLead
		ev.ID = ev.DeriveID()
		h.emit(event.EntityLead, lid, event.MessageUpdate, event.Attributes{"statecode": event.Option(1), "statuscode": event.Option(3)})
	}
	// Deletes: connections, opportunities (with their connections), lonely accounts.
	for _, id := range keysOf(h.conns, func(*hConn) bool { return true }) {
		if h.rnd.IntN(10) == 0 {
			h.conns[id].deleted = true
			h.emit(event.EntityConnection, id, event.MessageDelete, nil)
		}
	}
	for _, id := range opps {
		if h.rnd.IntN(30) != 0 {
			continue
		}
		h.opps[id].deleted = true
		for _, cid := range keysOf(h.conns, func(c *hConn) bool { return c.opp == id && !c.deleted }) {
			h.conns[cid].deleted = true
			h.emit(event.EntityConnection, cid, event.MessageDelete, nil) // cascade
		}
		h.emit(event.EntityOpportunity, id, event.MessageDelete, nil)
	}
	for _, id := range keysOf(h.accounts, func(a *hAccount) bool { return a.lonely }) {
		if h.rnd.IntN(2) == 0 {
			h.accounts[id].deleted = true
			h.emit(event.EntityAccount, id, event.MessageDelete, nil)
		}
	}
	// Invalid on purpose.
	for i := 0; i < 3; i++ {
		ghost, cid := h.id(), h.id()
		ev := h.emit(event.EntityContact, cid, event.MessageCreate, event.Attributes{"emailaddress1": event.String(fmt.Sprintf("orphan%d@example.com", i)),
			"ownerid": h.ownerRef(h.users[0]), "parentcustomerid": event.Reference(event.EntityAccount, ghost, "")})
		h.invalid[ev.Key()] = [2]string{syncer.ReasonMissingDependency, "missing dependency: account " + ghost + " (company of contact " + cid + ")"}
	}
	for i := 0; i < 3; i++ {
		cid := h.id()
		ev := h.emit(event.EntityContact, cid, event.MessageUpdate, event.Attributes{"jobtitle": event.String("CFO")})
		h.invalid[ev.Key()] = [2]string{syncer.ReasonMissingData, "update of contact " + cid + " carries only jobtitle and the record is not in Marketo yet (missing ownerid, emailaddress1): register a post image on the Dataverse Update step or set MSISYNC_DATAVERSE_URL so the worker can re-read it"}
	}
	for i := 0; i < 2; i++ {
		aid := h.id()
		ev := h.emit(event.EntityAccount, aid, event.MessageCreate, event.Attributes{"name": event.String(strings.Repeat("X", 300)), "ownerid": h.ownerRef(h.users[1])})
		h.invalid[ev.Key()] = [2]string{syncer.ReasonRejected, "marketo 1003: Value for field 'company' exceeds max length 255 (companies account " + aid + ")"}
	}
	return h
}

func json(n int) jsonNumber { return jsonNumber(fmt.Sprint(n)) }

type jsonNumber = encjson.Number

// envelope renders an event as the simple envelope /webhooks/events takes.
func envelope(ev *event.Event) []byte {
	attrs := map[string]any{}
	for k, v := range ev.Attributes {
		switch v.Kind {
		case event.KindRef:
			attrs[k] = map[string]any{"logicalName": v.Ref.LogicalName, "id": v.Ref.ID, "name": v.Ref.Name}
		case event.KindNumber, event.KindOption, event.KindMoney:
			attrs[k] = v.Num
		case event.KindNull:
			attrs[k] = nil
		default:
			attrs[k] = v.Text()
		}
	}
	env := map[string]any{"entity": ev.Entity, "id": ev.RecordID, "message": ev.Message, "attributes": attrs}
	if ev.Version > 0 {
		env["version"] = ev.Version
	}
	b, err := encjson.Marshal(env)
	if err != nil {
		panic(err)
	}
	return b
}

// deliveries shuffles the events and duplicates about 10% of them.
func (h *history) deliveries() []*event.Event {
	out := slices.Clone(h.events)
	for _, ev := range h.events {
		if h.rnd.IntN(10) == 0 {
			out = append(out, ev)
		}
	}
	h.rnd.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// countingQueue tracks messages not yet settled, so the test waits for the
// drain by condition rather than by time.
type countingQueue struct {
	*sqlitequeue.Queue
	mu      sync.Mutex
	seen    map[string]bool
	open    map[string]bool
	settled int
}

func (q *countingQueue) Send(ctx context.Context, msgs ...queue.Message) error {
	if err := q.Queue.Send(ctx, msgs...); err != nil {
		return err
	}
	q.mu.Lock()
	for _, m := range msgs {
		if !q.seen[m.ID] {
			q.seen[m.ID], q.open[m.ID] = true, true
		}
	}
	q.mu.Unlock()
	return nil
}

func (q *countingQueue) done(d *queue.Delivery) {
	q.mu.Lock()
	if q.open[d.ID] {
		delete(q.open, d.ID)
		q.settled++
	}
	q.mu.Unlock()
}

func (q *countingQueue) Complete(ctx context.Context, d *queue.Delivery) error {
	err := q.Queue.Complete(ctx, d)
	if err == nil {
		q.done(d)
	}
	return err
}

func (q *countingQueue) DeadLetter(ctx context.Context, d *queue.Delivery, reason, desc string) error {
	err := q.Queue.DeadLetter(ctx, d, reason, desc)
	if err == nil {
		q.done(d)
	}
	return err
}

func (q *countingQueue) counts() (open, settled int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.open), q.settled
}

func TestChaos(t *testing.T) {
	// Scale 1 is about 2,500 events (CI, with -race, well inside 2 minutes);
	// MSISYNC_CHAOS_SCALE=4 runs about 10,000.
	scale := 1
	if v, err := strconv.Atoi(os.Getenv("MSISYNC_CHAOS_SCALE")); err == nil && v > 0 {
		scale = v
	}
	seed := uint64(20261129)
	if v, err := strconv.ParseUint(os.Getenv("MSISYNC_CHAOS_SEED"), 10, 64); err == nil {
		seed = v
	}
	h := generate(seed, scale)
	if len(h.events) < 2000 {
		t.Fatalf("history has %d events, want ≥ 2,000", len(h.events))
	}
	ctx := context.Background()
	// MSISYNC_CHAOS_LOOKUP=1 runs against a Marketo that accepts
	// lookupField=externalPersonId (the lookup strategy instead of split).
	sim := marketosim.New(marketosim.Options{ClientID: "id", ClientSecret: "secret", CallsPerWindow: 1000, Window: time.Second, Seed: 7,
		LookupExternalPersonID: os.Getenv("MSISYNC_CHAOS_LOOKUP") == "1"})
	srv := httptest.NewServer(sim)
	defer srv.Close()
	dir := t.TempDir()
	sq, err := sqlitequeue.Open(ctx, filepath.Join(dir, "queue.db"), sqlitequeue.Options{LockDuration: 3 * time.Second, MaxDeliveryCount: 100, PollInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer sq.Close()
	qdb, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "queue.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer qdb.Close()
	q := &countingQueue{Queue: sq, seen: map[string]bool{}, open: map[string]bool{}}
	st, err := sqlitestore.Open(ctx, filepath.Join(dir, "store.db"), sqlitestore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	mk, err := marketo.New(marketo.Config{BaseURL: srv.URL, ClientID: "id", ClientSecret: "secret", CallsPerWindow: 100, Window: time.Second, MaxConcurrent: 10,
		InitialBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, MaxRetries: 4, Logger: slog.New(slog.DiscardHandler),
		HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}

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

	newWorker := func(n int) *syncer.Syncer {
		s, err := syncer.New(syncer.Config{Queue: q, Store: st, Marketo: mk, DefaultSalesPersonID: h.users[0], WorkerID: fmt.Sprintf("worker-%d", n),
			IdleWait: 50 * time.Millisecond, BatchWait: 20 * time.Millisecond, ReceiveMax: 300, MaxAttempts: 12, RequeueBase: 100 * time.Millisecond, RequeueMax: time.Second,
			LockedDelay: 200 * time.Millisecond, RecordLockTTL: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	// Deliver the whole history first, through the HTTP receiver (the simple
	// envelope), so which events end up dead-lettered does not depend on how
	// fast delivery is compared with the requeue bound; the worker then
	// drains the backlog and is killed twice.
	recv, err := receiver.New(receiver.Config{Keys: []string{"chaos-key"}, Queue: q, MaxMessageBytes: sq.MaxMessageBytes(),
		Logger: slog.New(slog.DiscardHandler), Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	rsrv := httptest.NewServer(recv)
	defer rsrv.Close()
	deliveries := h.deliveries()
	post := make(chan *event.Event)
	var postWG sync.WaitGroup
	for i := 0; i < 8; i++ {
		postWG.Add(1)
		go func() {
			defer postWG.Done()
			for ev := range post {
				req, _ := http.NewRequest(http.MethodPost, rsrv.URL+receiver.RouteEvents, bytes.NewReader(envelope(ev)))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set(receiver.DefaultHeader, "chaos-key")
				resp, err := rsrv.Client().Do(req)
				if err != nil {
					t.Error(err)
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode/100 != 2 {
					t.Errorf("POST %s %s: %d %s", ev.Entity, ev.RecordID, resp.StatusCode, body)
				}
			}
		}()
	}
	for _, ev := range deliveries {
		post <- ev
	}
	close(post)
	postWG.Wait()
	if t.Failed() {
		t.FailNow()
	}

	deadline := time.Now().Add(110 * time.Second)
	wait := func(cond func() bool) bool {
		for time.Now().Before(deadline) {
			if cond() {
				return true
			}
			time.Sleep(20 * time.Millisecond)
		}
		return false
	}
	total := len(h.events)
	start := time.Now()
	for run := 0; ; run++ {
		wctx, cancel := context.WithCancel(ctx)
		w := newWorker(run)
		done := make(chan error, 1)
		go func() { done <- w.Run(wctx) }()
		if run < 2 {
			// Kill mid-run: no in-flight message is completed.
			target := total * (run + 1) / 3
			ok := wait(func() bool { _, settled := q.counts(); return settled >= target })
			cancel()
			<-done
			t.Logf("killed worker %d after %v", run, time.Since(start))
			if !ok {
				t.Fatalf("run %d: fewer than %d messages settled in time", run, target)
			}
			continue
		}
		// The queue file is the truth: a Complete cut short by a kill may
		// have committed even though it returned an error.
		ok := wait(func() bool {
			var n int
			if err := qdb.QueryRowContext(ctx, "SELECT COUNT(*) FROM messages").Scan(&n); err != nil {
				t.Log(err)
				return false
			}
			return n == 0
		})
		t.Logf("drained after %v", time.Since(start))
		cancel()
		<-done
		if !ok {
			open, settled := q.counts()
			t.Fatalf("not drained: %d open, %d settled", open, settled)
		}
		break
	}

	checkOracle(t, h, sim.Dump(), h.users[0])

	dead, err := sq.ListDead(ctx, queue.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][2]string{}
	for _, d := range dead {
		ev, err := event.Decode(d.Body)
		if err != nil {
			t.Errorf("dead letter %s: %v", d.MessageID, err)
			continue
		}
		if prev, dup := got[ev.Key()]; dup {
			t.Errorf("event for %s dead-lettered twice: %q and %q", ev.Key(), prev, [2]string{d.Reason, d.Description})
		}
		got[ev.Key()] = [2]string{d.Reason, d.Description}
	}
	for key, want := range h.invalid {
		if got[key] != want {
			t.Errorf("dead letter for %s = %q, want %q", key, got[key], want)
		}
	}
	for key, g := range got {
		if _, ok := h.invalid[key]; !ok {
			t.Errorf("unexpected dead letter for %s: %q", key, g)
		}
	}
	s := sim.Stats()
	t.Logf("%d events (%d deliveries), %d calls, faults %v, dead letters %d", len(h.events), len(deliveries), s.CountedCalls, s.Responses, len(dead))
}

// checkOracle compares Marketo with the final Dataverse state, link by link.
func checkOracle(t *testing.T, h *history, d marketosim.State, defaultSP string) {
	t.Helper()
	sp := func(owner string) string {
		if owner == "" {
			return defaultSP
		}
		return owner
	}
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
	// Sales persons.
	gotSP := map[string]string{}
	for _, r := range d.SalesPersons {
		gotSP[str(r["externalSalesPersonId"])] = str(r["email"])
	}
	for i, u := range h.users {
		if want := fmt.Sprintf("rep%d@example.com", i); gotSP[u] != want {
			report("sales person %s email %q, want %q", u, gotSP[u], want)
		}
	}
	if len(gotSP) != len(h.users) {
		report("%d sales persons, want %d", len(gotSP), len(h.users))
	}
	// Companies → sales person.
	gotCo := map[string]map[string]any{}
	for _, r := range d.Companies {
		gotCo[str(r["externalCompanyId"])] = r
	}
	wantCo := 0
	for id, a := range h.accounts {
		c := gotCo[id]
		if a.deleted {
			if c != nil {
				report("deleted account %s still a company", id)
			}
			continue
		}
		wantCo++
		if c == nil {
			report("account %s missing", id)
			continue
		}
		if str(c["externalSalesPersonId"]) != sp(a.owner) || str(c["company"]) != a.name {
			report("company %s = (%v, %v), want (%s, %s)", id, c["externalSalesPersonId"], c["company"], sp(a.owner), a.name)
		}
	}
	if len(gotCo) != wantCo {
		report("%d companies, want %d", len(gotCo), wantCo)
	}
	// Persons → company and owner.
	gotP := map[string]map[string]any{}
	leadIDs := map[string]string{} // Marketo lead id → externalPersonId
	for _, r := range d.Leads {
		gotP[str(r["externalPersonId"])] = r
		leadIDs[str(r["id"])] = str(r["externalPersonId"])
	}
	wantP := 0
	for id, p := range h.persons {
		r := gotP[id]
		if p.qualified {
			if r != nil {
				report("qualified lead %s still carries its own GUID in Marketo", id)
			}
			continue
		}
		wantP++
		if r == nil {
			report("%s %s missing", p.entity, id)
			continue
		}
		if str(r["externalSalesPersonId"]) != sp(p.owner) || str(r["externalCompanyId"]) != p.account || str(r["email"]) != p.email ||
			str(r["lastName"]) != p.last || str(r["title"]) != p.title {
			report("%s %s = (sp %v, co %v, %v, %v, %v), want (%s, %s, %s, %s, %s)", p.entity, id, r["externalSalesPersonId"], r["externalCompanyId"], r["email"], r["lastName"], r["title"],
				sp(p.owner), p.account, p.email, p.last, p.title)
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
	wantO := 0
	for id, o := range h.opps {
		r := gotO[id]
		if o.deleted {
			if r != nil {
				report("deleted opportunity %s still in Marketo", id)
			}
			continue
		}
		wantO++
		if r == nil {
			report("opportunity %s missing", id)
			continue
		}
		if str(r["externalCompanyId"]) != o.account || str(r["externalSalesPersonId"]) != sp(o.owner) || str(r["amount"]) != fmt.Sprint(o.amount) ||
			str(r["isWon"]) != fmt.Sprint(o.won) {
			report("opportunity %s = (co %v, sp %v, amount %v, won %v), want (%s, %s, %d, %v)", id, r["externalCompanyId"], r["externalSalesPersonId"], r["amount"], r["isWon"],
				o.account, sp(o.owner), o.amount, o.won)
		}
	}
	if len(gotO) != wantO {
		report("%d opportunities, want %d", len(gotO), wantO)
	}
	// Roles.
	gotR := map[string]bool{}
	for _, r := range d.Roles {
		gotR[str(r["externalOpportunityId"])+"|"+leadIDs[str(r["leadId"])]+"|"+str(r["role"])] = true
	}
	wantR := map[string]bool{}
	for _, c := range h.conns {
		if !c.deleted {
			wantR[c.opp+"|"+c.contact+"|"+c.role] = true
		}
	}
	for k := range wantR {
		if !gotR[k] {
			report("role %s missing", k)
		}
	}
	for k := range gotR {
		if !wantR[k] {
			report("extra role %s", k)
		}
	}
	t.Logf("oracle: %d sales persons, %d companies, %d persons, %d opportunities, %d roles", len(gotSP), len(gotCo), len(gotP), len(gotO), len(gotR))
	if diff > 20 {
		t.Errorf("… %d differences in all", diff)
	}
}
