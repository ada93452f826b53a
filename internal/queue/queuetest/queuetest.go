// Package queuetest is the conformance suite every queue.Queue adapter passes.
//
// It asserts only behaviour Azure Service Bus also has (no strict FIFO, no
// exact timings), so the embedded queue and the Service Bus adapter are
// interchangeable behind the port.
package queuetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/queue"
)

// Config is what the suite wants the queue under test created with. Adapters
// must honour it (a real namespace needs a queue configured this way).
type Config struct {
	LockDuration     time.Duration
	MaxDeliveryCount int
	DuplicateWindow  time.Duration
}

// Harness is one fresh, empty queue for one subtest. The factory registers
// its own cleanup (closing the queue) with t.Cleanup.
type Harness struct {
	Queue queue.Queue
	// Advance moves the queue's clock forward by d: a clock.Fake for the
	// embedded queue and the Service Bus fake, a real sleep for a real
	// namespace.
	Advance func(d time.Duration)
	// Now, optional, is the queue's clock. When nil the suite learns the
	// queue's time from the EnqueuedAt of a probe message.
	Now func() time.Time
}

// DefaultConfig is the configuration Run asks for. The values are Service
// Bus' minimums or close to them, so that a run against a real namespace,
// where Advance sleeps, stays short.
var DefaultConfig = Config{
	LockDuration:     5 * time.Second,
	MaxDeliveryCount: 3,
	DuplicateWindow:  20 * time.Second,
}

const (
	// shortWait is how long a Receive waits when the suite expects nothing.
	shortWait = 100 * time.Millisecond
	// pollWait is how long each Receive waits while the suite expects messages.
	pollWait = 500 * time.Millisecond
	// patience bounds waiting for something that must happen.
	patience = 20 * time.Second
)

// Run runs the conformance suite. newHarness is called once per subtest and
// must return a fresh, empty queue created with cfg.
func Run(t *testing.T, newHarness func(t *testing.T, cfg Config) *Harness) {
	cases := []struct {
		name string
		fn   func(s *suite)
	}{
		{"SendReceive", testSendReceive},
		{"SendBatch", testSendBatch},
		{"ReceiveRespectsMax", testReceiveRespectsMax},
		{"ReceiveEmptyReturnsNothing", testReceiveEmpty},
		{"PeekLockHidesLockedMessage", testPeekLock},
		{"RenewExtendsLock", testRenew},
		{"CompleteRemoves", testComplete},
		{"AbandonRedelivers", testAbandon},
		{"LockExpiryRedelivers", testLockExpiry},
		{"ExpiredLockCannotSettle", testExpiredLockCannotSettle},
		{"CompleteAll", testCompleteAll},
		{"MaxDeliveryByAbandon", testMaxDeliveryAbandon},
		{"MaxDeliveryByLockExpiry", testMaxDeliveryExpiry},
		{"DeadLetterExplicit", testDeadLetterExplicit},
		{"DeadLetterFirstFailure", testDeadLetterFirstFailure},
		{"ScheduledSend", testScheduled},
		{"DuplicateDetection", testDuplicates},
		{"PropertiesRoundTrip", testProperties},
		{"TooLarge", testTooLarge},
		{"ConcurrentConsumers", testConcurrentConsumers},
		{"ListDeadFilters", testListDeadFilters},
		{"GetDeadNotFound", testGetDeadNotFound},
		{"ReplayDead", testReplayDead},
		{"PurgeDead", testPurgeDead},
		{"Ping", testPing},
		{"Counts", testCounts},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := DefaultConfig
			h := newHarness(t, cfg)
			if h == nil || h.Queue == nil || h.Advance == nil {
				t.Fatal("queuetest: newHarness must return a Harness with Queue and Advance set")
			}
			c.fn(&suite{t: t, h: h, q: h.Queue, cfg: cfg, prefix: randomPrefix(t)})
		})
	}
}

type suite struct {
	t      *testing.T
	h      *Harness
	q      queue.Queue
	cfg    Config
	prefix string
}

// randomPrefix keeps message ids unique across runs, so a real namespace's
// duplicate detection never drops a message from an earlier run.
func randomPrefix(t *testing.T) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("random prefix: %v", err)
	}
	return "qt-" + hex.EncodeToString(b)
}

func (s *suite) ctx() context.Context { return s.t.Context() }

func (s *suite) id(name string) string { return s.prefix + "-" + name }

func (s *suite) send(msgs ...queue.Message) {
	s.t.Helper()
	if err := s.q.Send(s.ctx(), msgs...); err != nil {
		s.t.Fatalf("Send(%d messages): %v", len(msgs), err)
	}
}

// receiveN receives until it holds exactly n deliveries; it fails on more,
// or when they do not arrive within patience.
func (s *suite) receiveN(n int) []*queue.Delivery {
	s.t.Helper()
	var got []*queue.Delivery
	deadline := time.Now().Add(patience)
	for len(got) < n {
		if time.Now().After(deadline) {
			s.t.Fatalf("received %d of %d messages within %v: %v", len(got), n, patience, ids(got))
		}
		ds, err := s.q.Receive(s.ctx(), n-len(got), pollWait)
		if err != nil {
			s.t.Fatalf("Receive: %v", err)
		}
		if len(ds) > n-len(got) {
			s.t.Fatalf("Receive(max=%d) returned %d messages", n-len(got), len(ds))
		}
		got = append(got, ds...)
	}
	return got
}

func (s *suite) receiveOne(wantID string) *queue.Delivery {
	s.t.Helper()
	d := s.receiveN(1)[0]
	if wantID != "" && d.ID != wantID {
		s.t.Fatalf("received message %q, want %q", d.ID, wantID)
	}
	return d
}

// expectNone asserts that nothing is receivable right now.
func (s *suite) expectNone(why string) {
	s.t.Helper()
	ds, err := s.q.Receive(s.ctx(), 10, shortWait)
	if err != nil {
		s.t.Fatalf("Receive (%s): %v", why, err)
	}
	if len(ds) > 0 {
		s.t.Fatalf("%s: received %v, want nothing", why, ids(ds))
	}
}

func (s *suite) complete(d *queue.Delivery) {
	s.t.Helper()
	if err := s.q.Complete(s.ctx(), d); err != nil {
		s.t.Fatalf("Complete(%s): %v", d.ID, err)
	}
}

func (s *suite) listDead(f queue.Filter) []queue.DeadLetter {
	s.t.Helper()
	dls, err := s.q.ListDead(s.ctx(), f)
	if err != nil {
		s.t.Fatalf("ListDead(%+v): %v", f, err)
	}
	return dls
}

// waitDead waits until the dead-letter queue holds exactly n messages (on
// Service Bus the move to the DLQ is asynchronous).
func (s *suite) waitDead(n int) []queue.DeadLetter {
	s.t.Helper()
	deadline := time.Now().Add(patience)
	for {
		dls := s.listDead(queue.Filter{})
		if len(dls) == n {
			return dls
		}
		if len(dls) > n || time.Now().After(deadline) {
			s.t.Fatalf("dead letters: got %d %v, want %d", len(dls), deadIDs(dls), n)
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-s.ctx().Done():
			s.t.Fatal(s.ctx().Err())
		}
	}
}

// now is the queue's current time.
func (s *suite) now() time.Time {
	s.t.Helper()
	if s.h.Now != nil {
		return s.h.Now()
	}
	id := s.id("clock-probe")
	s.send(queue.Message{ID: id, Body: []byte("probe")})
	d := s.receiveOne(id)
	s.complete(d)
	return d.EnqueuedAt
}

// deadLetter sends a message, receives it and dead-letters it explicitly.
// The queue must be otherwise empty.
func (s *suite) deadLetter(id string, props map[string]string, reason, desc string) {
	s.t.Helper()
	s.send(queue.Message{ID: id, Body: []byte("body of " + id), Properties: props})
	d := s.receiveOne(id)
	if err := s.q.DeadLetter(s.ctx(), d, reason, desc); err != nil {
		s.t.Fatalf("DeadLetter(%s): %v", id, err)
	}
}

func ids(ds []*queue.Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.ID
	}
	return out
}

func deadIDs(dls []queue.DeadLetter) []string {
	out := make([]string, len(dls))
	for i, d := range dls {
		out[i] = d.MessageID
	}
	sort.Strings(out)
	return out
}

func sorted(xs ...string) []string {
	out := slices.Clone(xs)
	sort.Strings(out)
	if out == nil {
		out = []string{}
	}
	return out
}

// checkProps asserts every property in want is present in got with the same
// value (adapters may add their own, as Service Bus adds DeadLetterReason).
func checkProps(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	for k, v := range want {
		gv, ok := got[k]
		if !ok {
			t.Errorf("%s: property %q missing (have %v)", what, k, got)
			continue
		}
		if gv != v {
			t.Errorf("%s: property %q = %q, want %q", what, k, gv, v)
		}
	}
}

func testSendReceive(s *suite) {
	id := s.id("a")
	props := map[string]string{"k": "v"}
	s.send(queue.Message{ID: id, Body: []byte("hello"), Properties: props})
	d := s.receiveOne(id)
	if string(d.Body) != "hello" {
		s.t.Errorf("Body = %q, want %q", d.Body, "hello")
	}
	checkProps(s.t, "received", d.Properties, props)
	if d.DeliveryCount != 1 {
		s.t.Errorf("DeliveryCount = %d, want 1", d.DeliveryCount)
	}
	if d.LockToken == "" {
		s.t.Error("LockToken is empty")
	}
	if d.EnqueuedAt.IsZero() {
		s.t.Error("EnqueuedAt is zero")
	}
	if !d.LockedUntil.After(d.EnqueuedAt) {
		s.t.Errorf("LockedUntil %v is not after EnqueuedAt %v", d.LockedUntil, d.EnqueuedAt)
	}
	s.complete(d)
	s.expectNone("after Complete")
}

func testSendBatch(s *suite) {
	const n = 25
	var msgs []queue.Message
	want := map[string]string{}
	for i := range n {
		id := s.id("b" + strconv.Itoa(i))
		body := fmt.Sprintf("body-%d", i)
		msgs = append(msgs, queue.Message{ID: id, Body: []byte(body)})
		want[id] = body
	}
	s.send(msgs...)
	got := s.receiveN(n)
	seen := map[string]bool{}
	for _, d := range got {
		body, ok := want[d.ID]
		if !ok {
			s.t.Errorf("received unexpected message %q", d.ID)
			continue
		}
		if seen[d.ID] {
			s.t.Errorf("received %q twice", d.ID)
		}
		seen[d.ID] = true
		if string(d.Body) != body {
			s.t.Errorf("message %q body = %q, want %q", d.ID, d.Body, body)
		}
		s.complete(d)
	}
	s.expectNone("after completing the batch")
}

func testReceiveRespectsMax(s *suite) {
	const n, max = 10, 3
	var msgs []queue.Message
	for i := range n {
		msgs = append(msgs, queue.Message{ID: s.id("m" + strconv.Itoa(i)), Body: []byte("x")})
	}
	s.send(msgs...)
	seen := map[string]bool{}
	deadline := time.Now().Add(patience)
	for len(seen) < n {
		if time.Now().After(deadline) {
			s.t.Fatalf("received %d of %d messages", len(seen), n)
		}
		ds, err := s.q.Receive(s.ctx(), max, pollWait)
		if err != nil {
			s.t.Fatalf("Receive: %v", err)
		}
		if len(ds) > max {
			s.t.Fatalf("Receive(max=%d) returned %d messages", max, len(ds))
		}
		for _, d := range ds {
			if seen[d.ID] {
				s.t.Fatalf("message %q received twice", d.ID)
			}
			seen[d.ID] = true
			s.complete(d)
		}
	}
}

func testReceiveEmpty(s *suite) {
	ds, err := s.q.Receive(s.ctx(), 5, shortWait)
	if err != nil {
		s.t.Fatalf("Receive on an empty queue: %v", err)
	}
	if len(ds) != 0 {
		s.t.Fatalf("Receive on an empty queue returned %v", ids(ds))
	}
}

func testPeekLock(s *suite) {
	id := s.id("locked")
	s.send(queue.Message{ID: id, Body: []byte("x")})
	d := s.receiveOne(id)
	s.expectNone("while the only message is locked")
	s.complete(d)
}

func testRenew(s *suite) {
	id := s.id("renew")
	s.send(queue.Message{ID: id, Body: []byte("x")})
	d := s.receiveOne(id)
	orig := d.LockedUntil
	step := s.cfg.LockDuration * 3 / 5
	s.h.Advance(step)
	if err := s.q.Renew(s.ctx(), d); err != nil {
		s.t.Fatalf("Renew: %v", err)
	}
	if !d.LockedUntil.After(orig) {
		s.t.Fatalf("Renew: LockedUntil %v not after the original %v", d.LockedUntil, orig)
	}
	s.h.Advance(step) // now past the original expiry, inside the renewed lock
	s.expectNone("renewed lock past the original expiry")
	s.complete(d)
	s.expectNone("after Complete")
}

func testComplete(s *suite) {
	id := s.id("done")
	s.send(queue.Message{ID: id, Body: []byte("x")})
	d := s.receiveOne(id)
	s.complete(d)
	s.h.Advance(s.cfg.LockDuration + time.Second)
	s.expectNone("completed message after its lock would have expired")
}

func testAbandon(s *suite) {
	id := s.id("abandon")
	s.send(queue.Message{ID: id, Body: []byte("again"), Properties: map[string]string{"p": "1"}})
	d1 := s.receiveOne(id)
	if err := s.q.Abandon(s.ctx(), d1); err != nil {
		s.t.Fatalf("Abandon: %v", err)
	}
	d2 := s.receiveOne(id)
	if d2.DeliveryCount != d1.DeliveryCount+1 {
		s.t.Errorf("DeliveryCount after Abandon = %d, want %d", d2.DeliveryCount, d1.DeliveryCount+1)
	}
	if string(d2.Body) != "again" {
		s.t.Errorf("redelivered Body = %q", d2.Body)
	}
	checkProps(s.t, "redelivered", d2.Properties, map[string]string{"p": "1"})
	s.complete(d2)
	s.expectNone("after Complete")
}

func testLockExpiry(s *suite) {
	id := s.id("expiry")
	s.send(queue.Message{ID: id, Body: []byte("x")})
	d1 := s.receiveOne(id)
	s.h.Advance(s.cfg.LockDuration + time.Second) // the consumer died
	d2 := s.receiveOne(id)
	if d2.DeliveryCount != 2 {
		s.t.Errorf("DeliveryCount after lock expiry = %d, want 2", d2.DeliveryCount)
	}
	if err := s.q.Complete(s.ctx(), d1); !errors.Is(err, queue.ErrLockLost) {
		s.t.Errorf("Complete with the stale delivery: err = %v, want ErrLockLost", err)
	}
	if err := s.q.Renew(s.ctx(), d1); !errors.Is(err, queue.ErrLockLost) {
		s.t.Errorf("Renew with the stale delivery: err = %v, want ErrLockLost", err)
	}
	if err := s.q.Abandon(s.ctx(), d1); !errors.Is(err, queue.ErrLockLost) {
		s.t.Errorf("Abandon with the stale delivery: err = %v, want ErrLockLost", err)
	}
	if err := s.q.DeadLetter(s.ctx(), d1, "r", "d"); !errors.Is(err, queue.ErrLockLost) {
		s.t.Errorf("DeadLetter with the stale delivery: err = %v, want ErrLockLost", err)
	}
	s.complete(d2) // the current holder is unaffected by the stale settlements
	s.expectNone("after Complete")
	if dls := s.listDead(queue.Filter{}); len(dls) != 0 {
		s.t.Errorf("stale DeadLetter dead-lettered %v", deadIDs(dls))
	}
}

func testExpiredLockCannotSettle(s *suite) {
	id := s.id("late")
	s.send(queue.Message{ID: id, Body: []byte("x")})
	d := s.receiveOne(id)
	s.h.Advance(s.cfg.LockDuration + time.Second)
	if err := s.q.Complete(s.ctx(), d); !errors.Is(err, queue.ErrLockLost) {
		s.t.Fatalf("Complete after the lock expired: err = %v, want ErrLockLost", err)
	}
	d2 := s.receiveOne(id) // still there: the late Complete did not remove it
	if d2.DeliveryCount != 2 {
		s.t.Errorf("DeliveryCount = %d, want 2", d2.DeliveryCount)
	}
	s.complete(d2)
}

// testCompleteAll: a queue.BatchCompleter completes the deliveries it still
// holds and reports a stale one (its lock expired and was taken again) as
// lost, leaving the current holder's lock alone.
func testCompleteAll(s *suite) {
	bc, ok := s.q.(queue.BatchCompleter)
	if !ok {
		s.t.Skip("the queue completes one delivery per call (no queue.BatchCompleter)")
	}
	if errs := bc.CompleteAll(s.ctx(), nil); len(errs) != 0 {
		s.t.Fatalf("CompleteAll(nil) = %v, want no errors", errs)
	}
	x := s.id("x")
	s.send(queue.Message{ID: x, Body: []byte("x")})
	stale := s.receiveOne(x)
	s.h.Advance(s.cfg.LockDuration + time.Second) // its consumer died
	current := s.receiveOne(x)
	a, c := s.id("a"), s.id("c")
	s.send(queue.Message{ID: a, Body: []byte("a")}, queue.Message{ID: c, Body: []byte("c")})
	got := s.receiveN(2)
	errs := bc.CompleteAll(s.ctx(), []*queue.Delivery{got[0], stale, got[1]})
	if len(errs) != 3 || errs[0] != nil || !errors.Is(errs[1], queue.ErrLockLost) || errs[2] != nil {
		s.t.Fatalf("CompleteAll(a, stale x, c) = %v, want [nil, ErrLockLost, nil]", errs)
	}
	// The stale completion did not take x from its current holder.
	if err := s.q.Renew(s.ctx(), current); err != nil {
		s.t.Fatalf("Renew of x's current delivery after the stale CompleteAll: %v", err)
	}
	if errs := bc.CompleteAll(s.ctx(), []*queue.Delivery{current}); errs[0] != nil {
		s.t.Fatalf("CompleteAll(current x) = %v", errs)
	}
	if errs := bc.CompleteAll(s.ctx(), []*queue.Delivery{current}); !errors.Is(errs[0], queue.ErrLockLost) {
		s.t.Errorf("CompleteAll of a completed delivery = %v, want ErrLockLost", errs[0])
	}
	s.h.Advance(s.cfg.LockDuration + time.Second)
	s.expectNone("after CompleteAll, locks expired")
	if dls := s.listDead(queue.Filter{}); len(dls) != 0 {
		s.t.Errorf("CompleteAll dead-lettered %v", deadIDs(dls))
	}
}

func testMaxDeliveryAbandon(s *suite) {
	id := s.id("poison")
	props := map[string]string{queue.PropEntity: "contact"}
	s.send(queue.Message{ID: id, Body: []byte("poison"), Properties: props})
	for i := 1; i <= s.cfg.MaxDeliveryCount; i++ {
		d := s.receiveOne(id)
		if d.DeliveryCount != i {
			s.t.Fatalf("delivery %d: DeliveryCount = %d", i, d.DeliveryCount)
		}
		if err := s.q.Abandon(s.ctx(), d); err != nil {
			s.t.Fatalf("Abandon #%d: %v", i, err)
		}
	}
	s.expectNone("after MaxDeliveryCount abandons")
	dl := s.waitDead(1)[0]
	if dl.Reason != queue.ReasonMaxDelivery {
		s.t.Errorf("Reason = %q, want %q", dl.Reason, queue.ReasonMaxDelivery)
	}
	if dl.MessageID != id || string(dl.Body) != "poison" {
		s.t.Errorf("dead letter = %q %q, want %q %q", dl.MessageID, dl.Body, id, "poison")
	}
	if dl.DeliveryCount < s.cfg.MaxDeliveryCount {
		s.t.Errorf("DeliveryCount = %d, want >= %d", dl.DeliveryCount, s.cfg.MaxDeliveryCount)
	}
	checkProps(s.t, "dead letter", dl.Properties, props)
}

func testMaxDeliveryExpiry(s *suite) {
	id := s.id("crashes-consumer")
	s.send(queue.Message{ID: id, Body: []byte("x")})
	for i := 1; i <= s.cfg.MaxDeliveryCount; i++ {
		d := s.receiveOne(id)
		if d.DeliveryCount != i {
			s.t.Fatalf("delivery %d: DeliveryCount = %d", i, d.DeliveryCount)
		}
		s.h.Advance(s.cfg.LockDuration + time.Second)
	}
	s.expectNone("after MaxDeliveryCount lock expiries")
	dl := s.waitDead(1)[0]
	if dl.Reason != queue.ReasonMaxDelivery || dl.MessageID != id {
		s.t.Errorf("dead letter = %q reason %q, want %q reason %q", dl.MessageID, dl.Reason, id, queue.ReasonMaxDelivery)
	}
}

func testDeadLetterExplicit(s *suite) {
	id := s.id("bad")
	props := map[string]string{queue.PropEntity: "account", queue.PropRecordID: "r-1", "note": "ünïcode"}
	body := []byte{0, 1, 2, 'j', 's', 'o', 'n', 255}
	s.send(queue.Message{ID: id, Body: body, Properties: props})
	d := s.receiveOne(id)
	if err := s.q.DeadLetter(s.ctx(), d, "MarketoRejected", "1003: field Email is invalid"); err != nil {
		s.t.Fatalf("DeadLetter: %v", err)
	}
	s.expectNone("after DeadLetter")
	dl := s.waitDead(1)[0]
	check := func(what string, dl queue.DeadLetter) {
		s.t.Helper()
		if dl.ID == "" {
			s.t.Errorf("%s: ID is empty", what)
		}
		if dl.MessageID != id {
			s.t.Errorf("%s: MessageID = %q, want %q", what, dl.MessageID, id)
		}
		if dl.Reason != "MarketoRejected" || dl.Description != "1003: field Email is invalid" {
			s.t.Errorf("%s: reason/description = %q/%q", what, dl.Reason, dl.Description)
		}
		if !bytes.Equal(dl.Body, body) {
			s.t.Errorf("%s: Body = %v, want %v", what, dl.Body, body)
		}
		checkProps(s.t, what, dl.Properties, props)
		if dl.DeliveryCount != 1 {
			s.t.Errorf("%s: DeliveryCount = %d, want 1", what, dl.DeliveryCount)
		}
		if dl.EnqueuedAt.IsZero() || dl.DeadLetteredAt.IsZero() || dl.FirstFailureAt.IsZero() {
			s.t.Errorf("%s: times enqueued %v first failure %v dead-lettered %v; none may be zero",
				what, dl.EnqueuedAt, dl.FirstFailureAt, dl.DeadLetteredAt)
		}
		if dl.DeadLetteredAt.Before(dl.EnqueuedAt) {
			s.t.Errorf("%s: DeadLetteredAt %v before EnqueuedAt %v", what, dl.DeadLetteredAt, dl.EnqueuedAt)
		}
	}
	check("ListDead", dl)
	got, err := s.q.GetDead(s.ctx(), dl.ID)
	if err != nil {
		s.t.Fatalf("GetDead(%s): %v", dl.ID, err)
	}
	check("GetDead", got)
}

// testDeadLetterFirstFailure: the first failure time travels in
// PropFirstFailedAt across requeues and is what the DLQ shows.
func testDeadLetterFirstFailure(s *suite) {
	first := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	id := s.id("requeued")
	s.deadLetter(id, map[string]string{queue.PropFirstFailedAt: first.Format(time.RFC3339)}, "Gave up", "after requeues")
	dl := s.waitDead(1)[0]
	if !dl.FirstFailureAt.Equal(first) {
		s.t.Errorf("FirstFailureAt = %v, want %v (from %s)", dl.FirstFailureAt, first, queue.PropFirstFailedAt)
	}
}

func testScheduled(s *suite) {
	now := s.now()
	later, past := s.id("later"), s.id("past")
	delay := 2 * s.cfg.LockDuration
	s.send(
		queue.Message{ID: later, Body: []byte("later"), ScheduledAt: now.Add(delay)},
		queue.Message{ID: past, Body: []byte("past"), ScheduledAt: now.Add(-time.Minute)},
	)
	s.complete(s.receiveOne(past)) // a past ScheduledAt is due at once
	s.expectNone("scheduled message before its time")
	s.h.Advance(delay / 2)
	s.expectNone("scheduled message halfway to its time")
	s.h.Advance(delay/2 + time.Second)
	d := s.receiveOne(later)
	if string(d.Body) != "later" || d.DeliveryCount != 1 {
		s.t.Errorf("scheduled delivery body %q count %d", d.Body, d.DeliveryCount)
	}
	s.complete(d)
}

func testDuplicates(s *suite) {
	id := s.id("dup")
	s.send(queue.Message{ID: id, Body: []byte("first")})
	s.send(queue.Message{ID: id, Body: []byte("second")})
	d := s.receiveOne(id)
	if string(d.Body) != "first" {
		s.t.Errorf("Body = %q, want the first send", d.Body)
	}
	s.expectNone("duplicate inside the window")
	s.complete(d)
	s.send(queue.Message{ID: id, Body: []byte("third")}) // completed, still inside the window
	s.expectNone("duplicate of a completed message inside the window")

	inBatch := s.id("dup-batch")
	s.send(queue.Message{ID: inBatch, Body: []byte("one")}, queue.Message{ID: inBatch, Body: []byte("two")})
	s.complete(s.receiveOne(inBatch))
	s.expectNone("duplicate inside one batch")

	s.h.Advance(s.cfg.DuplicateWindow + 5*time.Second)
	s.send(queue.Message{ID: id, Body: []byte("fourth")})
	d = s.receiveOne(id)
	if string(d.Body) != "fourth" {
		s.t.Errorf("Body after the window = %q, want %q", d.Body, "fourth")
	}
	s.complete(d)
}

func testProperties(s *suite) {
	id := s.id("props")
	props := map[string]string{
		queue.PropEntity:   "contact",
		queue.PropRecordID: "0f8fad5b-d9cb-469f-a165-70867728950e",
		queue.PropMessage:  "Update",
		queue.PropAttempt:  "3",
		"empty":            "",
		"unicode":          "Zoë – 東京 🚀",
		"spaces and=signs": "a=b; c",
	}
	body := make([]byte, 256)
	for i := range body {
		body[i] = byte(i)
	}
	s.send(queue.Message{ID: id, Body: body, Properties: props})
	d := s.receiveOne(id)
	checkProps(s.t, "received", d.Properties, props)
	if !bytes.Equal(d.Body, body) {
		s.t.Errorf("binary body did not round-trip")
	}
	if err := s.q.Abandon(s.ctx(), d); err != nil {
		s.t.Fatalf("Abandon: %v", err)
	}
	d = s.receiveOne(id)
	checkProps(s.t, "redelivered", d.Properties, props)
	s.complete(d)
}

func testTooLarge(s *suite) {
	limit := s.q.MaxMessageBytes()
	if limit <= 0 {
		s.t.Fatalf("MaxMessageBytes() = %d, want > 0", limit)
	}
	if limit > 16<<20 {
		s.t.Skipf("MaxMessageBytes() = %d: too large to test cheaply", limit)
	}
	id := s.id("huge")
	err := s.q.Send(s.ctx(), queue.Message{ID: id, Body: make([]byte, limit+1)})
	if !errors.Is(err, queue.ErrTooLarge) {
		s.t.Fatalf("Send of %d bytes: err = %v, want ErrTooLarge", limit+1, err)
	}
	s.expectNone("after a refused send")

	// The limit is body plus properties, as the port documents: a message
	// of exactly the limit is taken whole.
	fits := queue.Message{ID: s.id("fits"), Properties: map[string]string{"k": "v"}, Body: make([]byte, limit-2)}
	if n := fits.Size(); n != limit {
		s.t.Fatalf("Size() = %d, want %d (body %d + property 2)", n, limit, len(fits.Body))
	}
	s.send(fits)
	d := s.receiveOne(fits.ID)
	if len(d.Body) != limit-2 {
		s.t.Errorf("received a body of %d bytes, sent %d", len(d.Body), limit-2)
	}
	s.complete(d)
}

func testConcurrentConsumers(s *suite) {
	const n, consumers, batch = 200, 2, 7
	var msgs []queue.Message
	for i := range n {
		msgs = append(msgs, queue.Message{ID: s.id("c" + strconv.Itoa(i)), Body: []byte(strconv.Itoa(i))})
		if len(msgs) == 50 {
			s.send(msgs...)
			msgs = nil
		}
	}
	ctx, cancel := context.WithTimeout(s.ctx(), patience)
	defer cancel()
	var (
		mu        sync.Mutex
		holder    = map[string]int{} // message id -> consumer holding its lock
		completed = map[string]int{}
		done      atomic.Int64
		wg        sync.WaitGroup
	)
	for c := 1; c <= consumers; c++ {
		wg.Go(func() {
			for done.Load() < n && ctx.Err() == nil {
				ds, err := s.q.Receive(ctx, batch, pollWait)
				if err != nil {
					if ctx.Err() == nil {
						s.t.Errorf("consumer %d: Receive: %v", c, err)
					}
					return
				}
				for _, d := range ds {
					mu.Lock()
					if other, ok := holder[d.ID]; ok {
						s.t.Errorf("consumer %d received %q while consumer %d holds its lock", c, d.ID, other)
					}
					holder[d.ID] = c
					mu.Unlock()
					if err := s.q.Complete(ctx, d); err != nil {
						s.t.Errorf("consumer %d: Complete(%s): %v", c, d.ID, err)
						return
					}
					mu.Lock()
					delete(holder, d.ID)
					completed[d.ID]++
					mu.Unlock()
					done.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if len(completed) != n {
		s.t.Errorf("completed %d distinct messages, want %d", len(completed), n)
	}
	for id, k := range completed {
		if k != 1 {
			s.t.Errorf("message %q completed %d times", id, k)
		}
	}
	s.expectNone("after all were completed")
}

func testListDeadFilters(s *suite) {
	a, b, c := s.id("a"), s.id("b"), s.id("c")
	s.deadLetter(a, map[string]string{queue.PropEntity: "contact"}, "MarketoRejected", "field Email is invalid")
	s.h.Advance(time.Second)
	s.deadLetter(b, map[string]string{queue.PropEntity: "account"}, "PermanentError", "Marketo 1003: lead not found")
	s.h.Advance(time.Second)
	s.deadLetter(c, map[string]string{queue.PropEntity: "contact"}, "Throttled", "daily quota")
	all := s.waitDead(3)
	byMsg := map[string]queue.DeadLetter{}
	for _, dl := range all {
		byMsg[dl.MessageID] = dl
	}
	if len(byMsg) != 3 {
		s.t.Fatalf("dead letters %v, want %v", deadIDs(all), sorted(a, b, c))
	}
	if !byMsg[b].DeadLetteredAt.After(byMsg[a].DeadLetteredAt) {
		s.t.Fatalf("DeadLetteredAt of the later dead letter %v is not after %v", byMsg[b].DeadLetteredAt, byMsg[a].DeadLetteredAt)
	}
	cases := []struct {
		name string
		f    queue.Filter
		want []string
	}{
		{"all", queue.Filter{}, sorted(a, b, c)},
		{"entity", queue.Filter{Entity: "contact"}, sorted(a, c)},
		{"entity none", queue.Filter{Entity: "lead"}, sorted()},
		{"reason in description, case", queue.Filter{Reason: "EMAIL"}, sorted(a)},
		{"reason in reason, case", queue.Filter{Reason: "permanent"}, sorted(b)},
		{"reason in either", queue.Filter{Reason: "marketo"}, sorted(a, b)},
		{"since", queue.Filter{Since: byMsg[b].DeadLetteredAt}, sorted(b, c)},
		{"ids", queue.Filter{IDs: []string{byMsg[a].ID, byMsg[c].ID}}, sorted(a, c)},
		{"entity and reason", queue.Filter{Entity: "contact", Reason: "quota"}, sorted(c)},
	}
	for _, tc := range cases {
		got := deadIDs(s.listDead(tc.f))
		if !slices.Equal(got, tc.want) {
			s.t.Errorf("ListDead %s %+v = %v, want %v", tc.name, tc.f, got, tc.want)
		}
	}
	limited := s.listDead(queue.Filter{Limit: 2})
	if len(limited) != 2 {
		s.t.Errorf("ListDead Limit 2 returned %d", len(limited))
	}
	for _, dl := range limited {
		if _, ok := byMsg[dl.MessageID]; !ok {
			s.t.Errorf("ListDead Limit 2 returned unknown %q", dl.MessageID)
		}
	}
	if got := deadIDs(s.listDead(queue.Filter{Entity: "contact", Limit: 1})); len(got) != 1 || (got[0] != a && got[0] != c) {
		s.t.Errorf("ListDead entity contact limit 1 = %v, want one of %v", got, sorted(a, c))
	}
	// Paging: pages of one, each after the last id of the previous, list
	// every dead letter once; NoBody pages carry no bodies.
	var paged []queue.DeadLetter
	after := ""
	for i := 0; i < 10; i++ {
		page := s.listDead(queue.Filter{Limit: 1, After: after, NoBody: true})
		if len(page) == 0 {
			break
		}
		if len(page[0].Body) != 0 {
			s.t.Errorf("ListDead NoBody returned a body for %s", page[0].MessageID)
		}
		paged = append(paged, page...)
		after = page[len(page)-1].ID
	}
	if got := deadIDs(paged); !slices.Equal(got, sorted(a, b, c)) {
		s.t.Errorf("ListDead pages of 1 = %v, want %v", got, sorted(a, b, c))
	}
	if got := deadIDs(s.listDead(queue.Filter{Entity: "contact", After: byMsg[a].ID})); !slices.Equal(got, sorted(c)) {
		s.t.Errorf("ListDead entity contact after %s = %v, want %v", byMsg[a].ID, got, sorted(c))
	}
}

func testGetDeadNotFound(s *suite) {
	if _, err := s.q.GetDead(s.ctx(), "no-such-dead-letter"); !errors.Is(err, queue.ErrNotFound) {
		s.t.Errorf("GetDead(unknown): err = %v, want ErrNotFound", err)
	}
	id := s.id("gone")
	s.deadLetter(id, nil, "r", "d")
	dl := s.waitDead(1)[0]
	if n, err := s.q.PurgeDead(s.ctx(), queue.Filter{IDs: []string{dl.ID}}); err != nil || n != 1 {
		s.t.Fatalf("PurgeDead: %d, %v; want 1", n, err)
	}
	if _, err := s.q.GetDead(s.ctx(), dl.ID); !errors.Is(err, queue.ErrNotFound) {
		s.t.Errorf("GetDead(purged %s): err = %v, want ErrNotFound", dl.ID, err)
	}
}

func testReplayDead(s *suite) {
	orig := s.id("replay")
	props := map[string]string{queue.PropEntity: "contact", "keep": "yes", queue.PropAttempt: "8"}
	s.deadLetter(orig, props, "Broken", "fixed by the operator")
	dl := s.waitDead(1)[0]

	if n, err := s.q.ReplayDead(s.ctx(), queue.Filter{Entity: "account"}); err != nil || n != 0 {
		s.t.Fatalf("ReplayDead(no match) = %d, %v; want 0", n, err)
	}
	n, err := s.q.ReplayDead(s.ctx(), queue.Filter{IDs: []string{dl.ID}})
	if err != nil || n != 1 {
		s.t.Fatalf("ReplayDead = %d, %v; want 1", n, err)
	}
	s.waitDead(0)
	if _, err := s.q.GetDead(s.ctx(), dl.ID); !errors.Is(err, queue.ErrNotFound) {
		s.t.Errorf("GetDead(replayed): err = %v, want ErrNotFound", err)
	}
	r1 := s.receiveN(1)[0]
	if r1.ID == orig {
		s.t.Fatalf("replayed copy kept the message id %q (duplicate detection would drop it)", orig)
	}
	if string(r1.Body) != "body of "+orig || r1.DeliveryCount != 1 {
		s.t.Errorf("replayed copy body %q count %d", r1.Body, r1.DeliveryCount)
	}
	checkProps(s.t, "first replay", r1.Properties, map[string]string{
		queue.PropEntity: "contact", "keep": "yes", queue.PropOriginalID: orig, queue.PropReplayCount: "1",
	})
	if a, ok := r1.Properties[queue.PropAttempt]; ok {
		s.t.Errorf("replayed copy kept requeue count %s=%q: it would be dead-lettered at its first retry", queue.PropAttempt, a)
	}

	// It fails again and is replayed again: the count rises, the original id stays.
	if err := s.q.DeadLetter(s.ctx(), r1, "Broken", "again"); err != nil {
		s.t.Fatalf("DeadLetter(replayed copy): %v", err)
	}
	dl2 := s.waitDead(1)[0]
	checkProps(s.t, "dead replayed copy", dl2.Properties, map[string]string{queue.PropOriginalID: orig})
	if n, err := s.q.ReplayDead(s.ctx(), queue.Filter{}); err != nil || n != 1 {
		s.t.Fatalf("second ReplayDead = %d, %v; want 1", n, err)
	}
	r2 := s.receiveN(1)[0]
	if r2.ID == orig || r2.ID == r1.ID {
		s.t.Errorf("second replay id %q reuses an earlier id (%q, %q)", r2.ID, orig, r1.ID)
	}
	checkProps(s.t, "second replay", r2.Properties, map[string]string{
		queue.PropEntity: "contact", "keep": "yes", queue.PropOriginalID: orig, queue.PropReplayCount: "2",
	})
	s.complete(r2)
	s.expectNone("after completing the replayed copy")
	s.waitDead(0)
}

func testPurgeDead(s *suite) {
	a, b, c := s.id("a"), s.id("b"), s.id("c")
	s.deadLetter(a, map[string]string{queue.PropEntity: "contact"}, "r", "d")
	s.deadLetter(b, map[string]string{queue.PropEntity: "account"}, "r", "d")
	s.deadLetter(c, map[string]string{queue.PropEntity: "contact"}, "r", "d")
	s.waitDead(3)
	live := s.id("live")
	s.send(queue.Message{ID: live, Body: []byte("x")})

	if n, err := s.q.PurgeDead(s.ctx(), queue.Filter{Entity: "contact"}); err != nil || n != 2 {
		s.t.Fatalf("PurgeDead(entity contact) = %d, %v; want 2", n, err)
	}
	left := s.listDead(queue.Filter{})
	if got := deadIDs(left); !slices.Equal(got, sorted(b)) {
		s.t.Fatalf("after purge: %v, want %v", got, sorted(b))
	}
	if n, err := s.q.PurgeDead(s.ctx(), queue.Filter{IDs: []string{left[0].ID}}); err != nil || n != 1 {
		s.t.Fatalf("PurgeDead(ids) = %d, %v; want 1", n, err)
	}
	if n, err := s.q.PurgeDead(s.ctx(), queue.Filter{}); err != nil || n != 0 {
		s.t.Fatalf("PurgeDead(empty DLQ) = %d, %v; want 0", n, err)
	}
	s.complete(s.receiveOne(live)) // purging dead letters leaves the main queue alone
}

func testPing(s *suite) {
	if err := s.q.Ping(s.ctx()); err != nil {
		s.t.Fatalf("Ping: %v", err)
	}
	if s.q.MaxMessageBytes() <= 0 {
		s.t.Fatalf("MaxMessageBytes() = %d, want > 0", s.q.MaxMessageBytes())
	}
}

// testCounts runs only for adapters that implement queue.Counter. Counts may
// lag (Service Bus updates them asynchronously), so it polls until they match.
func testCounts(s *suite) {
	counter, ok := s.q.(queue.Counter)
	if !ok {
		s.t.Skip("queue does not implement queue.Counter")
	}
	now := s.now()
	s.send(
		queue.Message{ID: s.id("c1"), Body: []byte("1")},
		queue.Message{ID: s.id("c2"), Body: []byte("2")},
		queue.Message{ID: s.id("c3"), Body: []byte("3")},
		queue.Message{ID: s.id("later"), Body: []byte("later"), ScheduledAt: now.Add(time.Hour)},
	)
	s.receiveOne("") // stays locked
	d := s.receiveOne("")
	if err := s.q.DeadLetter(s.ctx(), d, "Counted", "dead-lettered by the counts test"); err != nil {
		s.t.Fatalf("DeadLetter(%s): %v", d.ID, err)
	}
	want := queue.Counts{Active: 1, Scheduled: 1, Locked: 1, Dead: 1}
	// An adapter that cannot see locks reports Locked -1 and counts the
	// locked message as active.
	unknownLocks := queue.Counts{Active: 2, Scheduled: 1, Locked: -1, Dead: 1}
	deadline := time.Now().Add(patience)
	for {
		got, err := counter.Counts(s.ctx())
		if err != nil {
			s.t.Fatalf("Counts: %v", err)
		}
		if got == want || got == unknownLocks {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("Counts = %+v, want %+v (or %+v when locks are unknown)", got, want, unknownLocks)
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-s.ctx().Done():
			s.t.Fatal(s.ctx().Err())
		}
	}
}
