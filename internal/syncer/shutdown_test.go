package syncer

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/marketo/marketotype"
	"github.com/msisync/msisync/internal/store"
	"github.com/msisync/msisync/internal/store/sqlitestore"
)

// Tests of issue 14: a rollout (SIGTERM) hands work over at once, and a
// record a dead worker locked is retried once, at the lock's expiry.

// lockEnv is newEnv on a real SQLite store (it has lock expiries) on the
// fake clock, with a controllable drain timer and record-lock renewal.
type lockEnv struct {
	*env
	sq    *sqlitestore.Store
	drain chan time.Time // fires the DrainTimeout wait
	renew chan chan time.Time
}

func newLockEnv(t *testing.T) *lockEnv {
	t.Helper()
	le := &lockEnv{drain: make(chan time.Time, 1), renew: make(chan chan time.Time, 16)}
	le.env = newEnv(t, func(c *Config) {
		clk := c.Clock
		sq, err := sqlitestore.Open(t.Context(), filepath.Join(t.TempDir(), "store.db"), sqlitestore.Options{Clock: clk, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sq.Close() })
		le.sq = sq
		c.Store = sq
		c.WorkerID = "w1"
		c.After = func(d time.Duration) <-chan time.Time {
			switch d {
			case 10 * time.Second: // DrainTimeout
				return le.drain
			case 5 * time.Second: // record lock renewal (RecordLockTTL/3)
				ch := make(chan time.Time, 1)
				le.renew <- ch
				return ch
			}
			return nil // message lock renewals: the fake queue's locks last 1 min
		}
	})
	return le
}

func (le *lockEnv) expiry(key string) (time.Time, bool) {
	le.t.Helper()
	got, err := le.sq.RecordLockExpiry(context.Background(), []string{key})
	if err != nil {
		le.t.Fatal(err)
	}
	t, ok := got[key]
	return t, ok
}

// runHeld starts Run with the one Marketo call held until release is
// closed; it returns once that call has begun.
func (le *lockEnv) runHeld(ctx context.Context, release chan struct{}) <-chan error {
	le.t.Helper()
	inSync := make(chan struct{})
	var once sync.Once
	le.mk.beforeSync = func() { once.Do(func() { close(inSync); <-release }) }
	hq := &hookQueue{fakeQueue: le.q}
	hq.onReceive = func(n int, _ time.Duration) {
		if n > 1 {
			<-ctx.Done() // one batch only; later receives wait for shutdown
		}
	}
	le.s.cfg.Queue = hq
	ran := make(chan error, 1)
	go func() { ran <- le.s.Run(ctx) }()
	select {
	case <-inSync:
	case <-time.After(10 * time.Second):
		le.t.Fatal("Marketo was not called")
	}
	return ran
}

func TestShutdownFinishesTheBatchAndReleasesItsRecordLocks(t *testing.T) {
	le := newLockEnv(t)
	le.send(userEv(userID, "a@example.com"))
	ctx, cancel := context.WithCancel(context.Background())
	release := make(chan struct{})
	ran := le.runHeld(ctx, release)
	key := "systemuser/" + userID
	if _, ok := le.expiry(key); !ok {
		t.Fatalf("record %s not locked while its batch runs", key)
	}
	cancel() // SIGTERM while the Marketo write is in flight
	close(release)
	if err := <-ran; err != context.Canceled {
		t.Fatalf("Run = %v, want context.Canceled (a clean drain)", err)
	}
	if n := le.q.pending(); n != 0 {
		t.Fatalf("%d messages left unsettled after a drained shutdown, want 0", n)
	}
	if exp, ok := le.expiry(key); ok {
		t.Fatalf("record lock kept until %v after a drained shutdown; a replacement would wait for it", exp)
	}
	if len(le.mk.salesPersons) != 1 {
		t.Fatalf("sales person not written: %v", le.mk.salesPersons)
	}
}

// stuckMarketo's Sync hangs until its context ends, as a call to an
// unresponsive Marketo does.
type stuckMarketo struct {
	*fakeMarketo
	called chan struct{}
}

func (m *stuckMarketo) Sync(ctx context.Context, _ marketotype.Object, _ marketotype.SyncRequest) ([]marketotype.Result, error) {
	close(m.called)
	<-ctx.Done()
	return nil, ctx.Err()
}

func TestShutdownPastTheDrainTimeoutAbandonsAndSaysSo(t *testing.T) {
	le := newLockEnv(t)
	stuck := &stuckMarketo{fakeMarketo: le.mk, called: make(chan struct{})}
	le.s.cfg.Marketo = stuck
	le.send(userEv(userID, "a@example.com"), userEv(gid("u", 2), "b@example.com"))
	ctx, cancel := context.WithCancel(context.Background())
	hq := &hookQueue{fakeQueue: le.q}
	hq.onReceive = func(n int, _ time.Duration) {
		if n > 1 {
			<-ctx.Done()
		}
	}
	le.s.cfg.Queue = hq
	ran := make(chan error, 1)
	go func() { ran <- le.s.Run(ctx) }()
	<-stuck.called
	cancel()
	le.drain <- le.clk.Now() // DrainTimeout passes with the write still in flight
	err := <-ran
	if err == nil || !strings.Contains(err.Error(), "abandoned 2 messages") {
		t.Fatalf("Run = %v, want an error saying it abandoned 2 messages", err)
	}
	// Handed back: a replacement receives them now, not after the lock.
	ds, rerr := le.q.Receive(context.Background(), 10, 0)
	if rerr != nil || len(ds) != 2 {
		t.Fatalf("replacement received %d messages (%v) at once, want 2", len(ds), rerr)
	}
	// The write may still land: the records stay locked, but only for the
	// short RecordLockTTL.
	exp, ok := le.expiry("systemuser/" + userID)
	if !ok || exp.Sub(le.clk.Now()) > 15*time.Second {
		t.Fatalf("record lock after a cut-short batch: %v (held %v), want held ≤ 15s", exp, ok)
	}
}

func TestRecordLockedByADeadWorkerIsRetriedOnceAtItsExpiry(t *testing.T) {
	le := newLockEnv(t)
	key := "systemuser/" + userID
	// A worker killed mid-batch left its lock (taken 3 s ago).
	le.clk.Advance(-3 * time.Second)
	if got, err := le.sq.LockRecords(context.Background(), "dead", []string{key}, 15*time.Second); err != nil || len(got) != 1 {
		t.Fatalf("lock: %v %v", got, err)
	}
	le.clk.Advance(3 * time.Second)
	expiry, _ := le.expiry(key)
	le.send(userEv(userID, "a@example.com"))
	var total Stats
	for i := 0; i < 60 && le.q.pending() > 0; i++ {
		st, err := le.s.ProcessBatch(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		total.Add(st)
		le.clk.Advance(time.Second) // a worker polling as fast as it can
	}
	if total.Completed != 1 || total.Rescheduled != 1 {
		t.Fatalf("stats %+v: want the message completed after exactly 1 reschedule", total)
	}
	var sched time.Time
	for _, m := range le.q.sent {
		if !m.ScheduledAt.IsZero() {
			sched = m.ScheduledAt
		}
	}
	if sched.Before(expiry) || sched.After(expiry.Add(time.Second)) {
		t.Fatalf("retry scheduled at %v, want just after the lock's expiry %v", sched, expiry)
	}
}

func TestRecordLocksAreShortAndRenewedWhileTheBatchRuns(t *testing.T) {
	le := newLockEnv(t)
	le.send(userEv(userID, "a@example.com"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	release := make(chan struct{})
	ran := le.runHeld(ctx, release)
	key := "systemuser/" + userID
	exp, _ := le.expiry(key)
	if d := exp.Sub(le.clk.Now()); d != 15*time.Second {
		t.Fatalf("record lock lasts %v, want 15s (short: it bounds the wait after a crash)", d)
	}
	for i := 0; i < 3; i++ { // 30 s of a slow Marketo call, twice the TTL
		w := <-le.renew
		le.clk.Advance(10 * time.Second)
		w <- le.clk.Now()
		deadline := time.Now().Add(10 * time.Second)
		for {
			exp, ok := le.expiry(key)
			if ok && exp.Equal(le.clk.Now().Add(15*time.Second)) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: lock expires %v (held %v), want renewed to %v", i, exp, ok, le.clk.Now().Add(15*time.Second))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	// Another worker cannot take it while it is renewed.
	if got, err := le.sq.LockRecords(context.Background(), "w2", []string{key}, 15*time.Second); err != nil || len(got) != 0 {
		t.Fatalf("w2 took %v (%v) of a lock being renewed", got, err)
	}
	close(release)
	cancel()
	if err := <-ran; err != context.Canceled {
		t.Fatalf("Run = %v", err)
	}
	var _ store.LockInspector = le.sq
}
