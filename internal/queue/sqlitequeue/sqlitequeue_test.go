package sqlitequeue

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/queue"
	"github.com/msisync/msisync/internal/queue/queuetest"
)

var start = time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC)

func openTest(t *testing.T, path string, opts Options) *Queue {
	t.Helper()
	q, err := Open(t.Context(), path, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := q.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return q
}

func TestConformance(t *testing.T) {
	queuetest.Run(t, func(t *testing.T, cfg queuetest.Config) *queuetest.Harness {
		fake := clock.NewFake(start)
		q := openTest(t, filepath.Join(t.TempDir(), "queue.db"), Options{
			LockDuration:     cfg.LockDuration,
			MaxDeliveryCount: cfg.MaxDeliveryCount,
			DuplicateWindow:  cfg.DuplicateWindow,
			MaxMessageBytes:  64 << 10,
			Clock:            fake,
			PollInterval:     10 * time.Millisecond,
		})
		// No Harness.Now: the suite learns the time from a probe message, as
		// it must against a real Service Bus namespace; this keeps that path
		// tested in CI.
		return &queuetest.Harness{Queue: q, Advance: fake.Advance}
	})
}

func TestOpenRejectsBadOptions(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name  string
		path  string
		opts  Options
		field string
	}{
		{"negative lock", filepath.Join(dir, "a.db"), Options{LockDuration: -time.Second}, "LockDuration"},
		{"negative max delivery", filepath.Join(dir, "a.db"), Options{MaxDeliveryCount: -1}, "MaxDeliveryCount"},
		{"negative window", filepath.Join(dir, "a.db"), Options{DuplicateWindow: -1}, "DuplicateWindow"},
		{"empty path", "", Options{}, "path"},
		{"query in path", filepath.Join(dir, "a.db?mode=ro"), Options{}, "'?'"},
	}
	for _, c := range cases {
		_, err := Open(t.Context(), c.path, c.opts)
		if err == nil || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%s: err = %v, want one naming %s", c.name, err, c.field)
		}
	}
}

func TestSendValidates(t *testing.T) {
	q := openTest(t, filepath.Join(t.TempDir(), "q.db"), Options{})
	ctx := t.Context()
	if err := q.Send(ctx, queue.Message{Body: []byte("x")}); err == nil || !strings.Contains(err.Error(), "ID is empty") {
		t.Errorf("empty id: err = %v", err)
	}
	if err := q.Send(ctx, queue.Message{ID: strings.Repeat("x", 129)}); err == nil || !strings.Contains(err.Error(), "129 characters") {
		t.Errorf("long id: err = %v", err)
	}
	// A batch with one bad message stores none of it.
	big := queue.Message{ID: "big", Body: make([]byte, DefaultMaxMessageBytes+1)}
	if err := q.Send(ctx, queue.Message{ID: "ok", Body: []byte("x")}, big); !errors.Is(err, queue.ErrTooLarge) {
		t.Errorf("batch with a large message: err = %v, want ErrTooLarge", err)
	}
	ds, err := q.Receive(ctx, 10, 0)
	if err != nil || len(ds) != 0 {
		t.Errorf("after a refused batch: received %d, %v; want nothing", len(ds), err)
	}
}

func TestReceiveWakesOnSend(t *testing.T) {
	// A receiver waiting with a long maxWait and a long poll interval gets a
	// message sent from the same process promptly: the in-process signal.
	q := openTest(t, filepath.Join(t.TempDir(), "q.db"), Options{PollInterval: time.Hour})
	ctx := t.Context()
	got := make(chan []*queue.Delivery, 1)
	errc := make(chan error, 1)
	started := make(chan struct{})
	go func() {
		close(started)
		ds, err := q.Receive(ctx, 1, time.Hour)
		errc <- err
		got <- ds
	}()
	<-started
	if err := q.Send(ctx, queue.Message{ID: "wake", Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		ds := <-got
		if err != nil || len(ds) != 1 || ds[0].ID != "wake" {
			t.Fatalf("Receive = %v, %v", ds, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waiting Receive was not woken by Send")
	}
}

func TestReceiveHonoursContext(t *testing.T) {
	q := openTest(t, filepath.Join(t.TempDir(), "q.db"), Options{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := q.Receive(ctx, 1, time.Hour)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Receive with a cancelled context: err = %v", err)
	}
}

func TestClosedQueue(t *testing.T) {
	q, err := Open(t.Context(), filepath.Join(t.TempDir(), "q.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := q.Send(t.Context(), queue.Message{ID: "late"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Close: err = %v, want ErrClosed", err)
	}
}

func TestSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	ctx := t.Context()
	fake := clock.NewFake(start)
	opts := Options{Clock: fake, LockDuration: time.Minute}
	q, err := Open(ctx, path, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Send(ctx, queue.Message{ID: "keep", Body: []byte("b"), Properties: map[string]string{queue.PropEntity: "lead"}}); err != nil {
		t.Fatal(err)
	}
	ds, err := q.Receive(ctx, 1, 0)
	if err != nil || len(ds) != 1 {
		t.Fatalf("Receive = %d, %v", len(ds), err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	// The lock outlives the process that held it, then expires.
	q2 := openTest(t, path, opts)
	if ds, err := q2.Receive(ctx, 1, 0); err != nil || len(ds) != 0 {
		t.Fatalf("locked message after reopen: %d, %v", len(ds), err)
	}
	fake.Advance(time.Minute + time.Second)
	ds, err = q2.Receive(ctx, 1, 0)
	if err != nil || len(ds) != 1 || ds[0].ID != "keep" || ds[0].DeliveryCount != 2 || ds[0].Properties[queue.PropEntity] != "lead" {
		t.Fatalf("after lock expiry and reopen: %+v, %v", ds, err)
	}
	// Duplicate detection state persists too.
	if err := q2.Send(ctx, queue.Message{ID: "keep", Body: []byte("again")}); err != nil {
		t.Fatal(err)
	}
	if err := q2.Complete(ctx, ds[0]); err != nil {
		t.Fatal(err)
	}
	if ds, _ := q2.Receive(ctx, 1, 0); len(ds) != 0 {
		t.Fatalf("duplicate accepted after reopen: %v", ds[0].ID)
	}
}

// TestTwoInstancesShareFile is the receiver and worker as separate
// processes: two Queue values on one file, each sending and receiving; every
// message is delivered to exactly one of them.
func TestTwoInstancesShareFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "shared.db")
	opts := Options{PollInterval: 5 * time.Millisecond, BusyTimeout: 20 * time.Second}
	a := openTest(t, path, opts)
	b := openTest(t, path, opts)
	ctx := t.Context()
	const n = 300
	sendErr := make(chan error, 2)
	for i, q := range []*Queue{a, b} {
		go func() {
			for j := range n / 2 {
				id := "p" + strconv.Itoa(i) + "-" + strconv.Itoa(j)
				if err := q.Send(ctx, queue.Message{ID: id, Body: []byte(id)}); err != nil {
					sendErr <- err
					return
				}
			}
			sendErr <- nil
		}()
	}
	type result struct {
		ids []string
		err error
	}
	results := make(chan result, 2)
	remaining := make(chan struct{})
	var counted = make(chan int, 2*n)
	for _, q := range []*Queue{b, a} {
		go func() {
			var r result
			for {
				select {
				case <-remaining:
					results <- r
					return
				default:
				}
				ds, err := q.Receive(ctx, 10, 20*time.Millisecond)
				if err != nil {
					r.err = err
					results <- r
					return
				}
				for _, d := range ds {
					if err := q.Complete(ctx, d); err != nil {
						r.err = err
						results <- r
						return
					}
					r.ids = append(r.ids, d.ID)
					counted <- 1
				}
			}
		}()
	}
	for range 2 {
		if err := <-sendErr; err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	deadline := time.After(20 * time.Second)
	for got := 0; got < n; {
		select {
		case <-counted:
			got++
		case <-deadline:
			t.Fatalf("completed %d of %d messages", got, n)
		}
	}
	close(remaining)
	seen := map[string]int{}
	perInstance := []int{}
	for range 2 {
		r := <-results
		if r.err != nil {
			t.Fatalf("consumer: %v", r.err)
		}
		perInstance = append(perInstance, len(r.ids))
		for _, id := range r.ids {
			seen[id]++
		}
	}
	if len(seen) != n {
		t.Fatalf("distinct messages completed = %d, want %d", len(seen), n)
	}
	for id, k := range seen {
		if k != 1 {
			t.Errorf("message %s completed %d times", id, k)
		}
	}
	t.Logf("completed per instance: %v", perInstance)
}

func TestDeadLetterTimes(t *testing.T) {
	fake := clock.NewFake(start)
	q := openTest(t, filepath.Join(t.TempDir(), "q.db"), Options{Clock: fake, MaxDeliveryCount: 2})
	ctx := t.Context()
	if err := q.Send(ctx, queue.Message{ID: "m", Body: []byte("b")}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		fake.Advance(time.Minute)
		ds, err := q.Receive(ctx, 1, 0)
		if err != nil || len(ds) != 1 {
			t.Fatalf("Receive: %d, %v", len(ds), err)
		}
		if err := q.Abandon(ctx, ds[0]); err != nil {
			t.Fatal(err)
		}
	}
	dls, err := q.ListDead(ctx, queue.Filter{})
	if err != nil || len(dls) != 1 {
		t.Fatalf("ListDead: %d, %v", len(dls), err)
	}
	dl := dls[0]
	if !dl.EnqueuedAt.Equal(start) || !dl.FirstFailureAt.Equal(start) || !dl.DeadLetteredAt.Equal(start.Add(2*time.Minute)) {
		t.Errorf("times: enqueued %v first %v dead %v", dl.EnqueuedAt, dl.FirstFailureAt, dl.DeadLetteredAt)
	}
	if dl.DeliveryCount != 2 || !strings.Contains(dl.Description, "delivery 2 of 2") {
		t.Errorf("count %d description %q", dl.DeliveryCount, dl.Description)
	}
}

func TestSeenIDsArePruned(t *testing.T) {
	fake := clock.NewFake(start)
	q := openTest(t, filepath.Join(t.TempDir(), "q.db"), Options{Clock: fake, DuplicateWindow: time.Minute})
	ctx := t.Context()
	seen := func() int {
		t.Helper()
		var n int
		if err := q.db.QueryRowContext(ctx, "SELECT count(*) FROM seen_ids").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for i := range 3 {
		if err := q.Send(ctx, queue.Message{ID: "old" + strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if n := seen(); n != 3 {
		t.Fatalf("seen ids = %d, want 3", n)
	}
	fake.Advance(2 * time.Minute)
	if err := q.Send(ctx, queue.Message{ID: "new"}); err != nil {
		t.Fatal(err)
	}
	if n := seen(); n != 1 {
		t.Fatalf("seen ids after the window = %d, want 1 (expired ids pruned)", n)
	}
}

// TestGroupCommit: sends that queue up while the writer is busy are
// committed together, in one transaction.
func TestGroupCommit(t *testing.T) {
	q := openTest(t, filepath.Join(t.TempDir(), "q.db"), Options{CommitWindow: -1})
	ctx := t.Context()
	release := make(chan struct{})
	blocked := make(chan struct{})
	blocker := &op{run: func(*wtx) error {
		close(blocked)
		<-release
		return nil
	}}
	blockerDone := make(chan error, 1)
	go func() { blockerDone <- q.submit(ctx, blocker) }()
	<-blocked // the writer is inside the blocker's transaction
	before := q.commits.Load()

	const senders = 20
	errs := make(chan error, senders)
	for i := range senders {
		go func() { errs <- q.Send(ctx, queue.Message{ID: "g" + strconv.Itoa(i), Body: []byte("x")}) }()
	}
	for deadline := time.Now().Add(10 * time.Second); len(q.ops) < senders; {
		if time.Now().After(deadline) {
			t.Fatalf("only %d sends queued", len(q.ops))
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	if err := <-blockerDone; err != nil {
		t.Fatal(err)
	}
	for range senders {
		if err := <-errs; err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	if c := q.commits.Load() - before; c != 2 {
		t.Errorf("commits = %d, want 2 (the blocker, then all %d sends together)", c, senders)
	}
	ds, err := q.Receive(ctx, 100, 0)
	if err != nil || len(ds) != senders {
		t.Fatalf("received %d, %v; want %d", len(ds), err, senders)
	}
}

// TestGroupCommitIsolatesFailures: a request that fails inside a group does
// not fail the sends committed with it.
func TestGroupCommitIsolatesFailures(t *testing.T) {
	q := openTest(t, filepath.Join(t.TempDir(), "q.db"), Options{CommitWindow: -1})
	ctx := t.Context()
	release, blocked := make(chan struct{}), make(chan struct{})
	go q.submit(ctx, &op{run: func(*wtx) error { close(blocked); <-release; return nil }})
	<-blocked

	const senders = 5
	errs := make(chan error, senders)
	bad := make(chan error, 1)
	go func() {
		bad <- q.submit(ctx, &op{run: func(w *wtx) error {
			_, err := w.exec("INSERT INTO no_such_table VALUES (1)")
			return err
		}})
	}()
	for i := range senders {
		go func() { errs <- q.Send(ctx, queue.Message{ID: "ok" + strconv.Itoa(i)}) }()
	}
	for deadline := time.Now().Add(10 * time.Second); len(q.ops) < senders+1; {
		if time.Now().After(deadline) {
			t.Fatalf("only %d requests queued", len(q.ops))
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	if err := <-bad; err == nil || !strings.Contains(err.Error(), "no_such_table") {
		t.Fatalf("failing request: err = %v", err)
	}
	for range senders {
		if err := <-errs; err != nil {
			t.Fatalf("Send grouped with a failing request: %v", err)
		}
	}
	ds, err := q.Receive(ctx, 100, 0)
	if err != nil || len(ds) != senders {
		t.Fatalf("received %d, %v; want %d", len(ds), err, senders)
	}
}

// TestIdleReceiveDoesNotWrite: waiting on an empty queue polls with reads
// only, so idle receivers never take the write lock from other processes.
func TestIdleReceiveDoesNotWrite(t *testing.T) {
	fake := clock.NewFake(start)
	q := openTest(t, filepath.Join(t.TempDir(), "q.db"), Options{Clock: fake, PollInterval: time.Millisecond})
	ctx := t.Context()
	// A scheduled message is in the table but not due: still nothing to claim.
	if err := q.Send(ctx, queue.Message{ID: "later", ScheduledAt: start.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	before := q.commits.Load()
	ds, err := q.Receive(ctx, 10, 50*time.Millisecond)
	if err != nil || len(ds) != 0 {
		t.Fatalf("Receive = %d, %v; want nothing", len(ds), err)
	}
	if c := q.commits.Load() - before; c != 0 {
		t.Errorf("an idle Receive committed %d transactions, want 0", c)
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	q, err := Open(t.Context(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q.db.ExecContext(t.Context(), "PRAGMA user_version = "+strconv.Itoa(schemaVersion+1)); err != nil {
		t.Fatal(err)
	}
	q.Close()
	if _, err := Open(t.Context(), path, Options{}); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("schema version %d", schemaVersion+1)) {
		t.Fatalf("Open of a newer schema: err = %v", err)
	}
}
