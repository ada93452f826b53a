package syncer

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/store/sqlitestore"
)

// syncBuffer is a bytes.Buffer safe for the renewal goroutine's logger.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The batch that detects the lead strategy locks its persons' emails twice
// (for the probe and again for split); the bench logged "record locks lost
// before renewal records=2970" for them though no other worker existed.
// A key named twice is one lock; only a lock another worker took is lost.
func TestRenewalReportsOnlyLocksAnotherWorkerTook(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	sq, err := sqlitestore.Open(t.Context(), filepath.Join(t.TempDir(), "store.db"), sqlitestore.Options{Clock: clk, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sq.Close() })
	ticks := make(chan chan time.Time, 4)
	var logs syncBuffer
	s, err := New(Config{Queue: newFakeQueue(clk), Store: sq, Marketo: newFakeMarketo(), Clock: clk, WorkerID: "w1",
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		After: func(d time.Duration) <-chan time.Time {
			ch := make(chan time.Time, 1)
			ticks <- ch
			return ch
		}})
	if err != nil {
		t.Fatal(err)
	}
	b := newBatch(s, nil)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	defer func() { cancel(); <-done }()
	keys := []string{"contact/c1", "email/a@example.com", "email/b@example.com"}
	if got, err := sq.LockRecords(ctx, "w1", keys, s.cfg.RecordLockTTL); err != nil || len(got) != 3 {
		t.Fatalf("LockRecords = %v, %v", got, err)
	}
	b.locked = append(keys, "email/a@example.com", "email/b@example.com")
	go func() { defer close(done); b.renewRecordLocks(ctx) }()

	// Round 1: every key is still ours.
	first := <-ticks
	first <- clk.Now()
	next := <-ticks
	if strings.Contains(logs.String(), "lost") {
		t.Fatalf("a key locked twice was reported lost:\n%s", logs.String())
	}
	// Round 2: w1 was stalled past the TTL and w2 took one email.
	clk.Advance(2 * s.cfg.RecordLockTTL)
	if got, err := sq.LockRecords(ctx, "w2", []string{"email/b@example.com"}, s.cfg.RecordLockTTL); err != nil || len(got) != 1 {
		t.Fatalf("w2 LockRecords = %v, %v", got, err)
	}
	next <- clk.Now()
	<-ticks
	if out := logs.String(); !strings.Contains(out, "record locks lost before renewal") || !strings.Contains(out, "records=1") {
		t.Fatalf("want one lost lock reported, got:\n%s", out)
	}
}

// countingStore counts LockRecords calls on a real store.
type countingStore struct {
	*sqlitestore.Store
	mu    sync.Mutex
	locks int
}

func (c *countingStore) LockRecords(ctx context.Context, owner string, keys []string, ttl time.Duration) ([]string, error) {
	c.mu.Lock()
	c.locks++
	c.mu.Unlock()
	return c.Store.LockRecords(ctx, owner, keys, ttl)
}

func (c *countingStore) lockCalls() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.locks
}

// With a store that keeps a lock lease per worker, a batch waiting on
// Marketo renews its locks with one write: the first renewal checks every
// lock (LockRecords) and starts the lease, later ones only extend the lease,
// and the lease keeps the records from another worker past their own expiry.
func TestRenewalExtendsTheLockLeaseInOneWrite(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	sq, err := sqlitestore.Open(t.Context(), filepath.Join(t.TempDir(), "store.db"), sqlitestore.Options{Clock: clk, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sq.Close() })
	st := &countingStore{Store: sq}
	ticks := make(chan chan time.Time, 4)
	s, err := New(Config{Queue: newFakeQueue(clk), Store: st, Marketo: newFakeMarketo(), Clock: clk, WorkerID: "w1",
		Logger: slog.New(slog.DiscardHandler),
		After: func(d time.Duration) <-chan time.Time {
			ch := make(chan time.Time, 1)
			ticks <- ch
			return ch
		}})
	if err != nil {
		t.Fatal(err)
	}
	ttl := s.cfg.RecordLockTTL
	keys := []string{"contact/c1", "contact/c2", "account/a1"}
	if got, err := sq.LockRecords(t.Context(), "w1", keys, ttl); err != nil || len(got) != 3 {
		t.Fatalf("LockRecords = %v, %v", got, err)
	}
	b := newBatch(s, nil)
	b.locked = append([]string(nil), keys...)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	defer func() { cancel(); <-done }()
	go func() { defer close(done); b.renewRecordLocks(ctx) }()

	// The loop asks for a timer (ticks), renews when it fires, then asks
	// again: taking the next request means the renewal is done.
	ch := <-ticks
	renew := func() {
		t.Helper()
		clk.Advance(ttl / 3)
		ch <- clk.Now()
		ch = <-ticks
	}
	renew()
	if n := st.lockCalls(); n != 1 {
		t.Fatalf("first renewal: %d LockRecords calls, want 1 (no lease yet: every lock is checked)", n)
	}
	for range 3 {
		renew()
	}
	if n := st.lockCalls(); n != 1 {
		t.Errorf("after three more renewals: %d LockRecords calls, want still 1 (the lease was extended)", n)
	}
	// 20 s after the locks were taken their own expiry (15 s) has passed;
	// the lease keeps them.
	if got, err := sq.LockRecords(t.Context(), "w2", keys, ttl); err != nil || len(got) != 0 {
		t.Errorf("w2 took %v (err %v) while w1's lease was renewed", got, err)
	}
}
