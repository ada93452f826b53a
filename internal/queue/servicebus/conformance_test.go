package servicebus

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/queue"
	"github.com/msisync/msisync/internal/queue/queuetest"
)

var testStart = time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC)

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newFakeQueue returns the adapter on a fresh fake broker.
func newFakeQueue(t testing.TB, cfg fakeConfig) (*Queue, *fakeBroker) {
	t.Helper()
	clk := clock.NewFake(testStart)
	b := newFakeBroker(clk, cfg)
	q := newWithAPI(b.api(), Options{QueueName: "msisync-test", Logger: discardLogger()})
	q.clock = clk
	q.dlqWait = 50 * time.Millisecond
	t.Cleanup(func() {
		if err := q.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return q, b
}

func TestConformanceFake(t *testing.T) {
	queuetest.Run(t, func(t *testing.T, cfg queuetest.Config) *queuetest.Harness {
		q, b := newFakeQueue(t, fakeConfig{
			LockDuration:     cfg.LockDuration,
			MaxDeliveryCount: cfg.MaxDeliveryCount,
			DuplicateWindow:  cfg.DuplicateWindow,
		})
		return &queuetest.Harness{Queue: q, Advance: b.Advance, Now: b.clock.Now}
	})
}

// TestConformanceServiceBus runs the suite against a real namespace or the
// emulator. The queue must exist with the suite's settings (5 s lock, max
// delivery 3, duplicate detection with a 20 s window): the emulator's
// deployments/servicebus/Config.json has it as msisync-test; on a real
// namespace the test runs Setup first (needs Manage rights).
func TestConformanceServiceBus(t *testing.T) {
	conn := os.Getenv("MSISYNC_TEST_SERVICEBUS")
	if conn == "" {
		t.Skip("MSISYNC_TEST_SERVICEBUS is not set: set it to a Service Bus (or emulator) connection string to run the conformance suite against it")
	}
	name := os.Getenv("MSISYNC_TEST_SERVICEBUS_QUEUE")
	if name == "" {
		name = "msisync-test"
	}
	setupDone := false
	var unreachable error
	queuetest.Run(t, func(t *testing.T, cfg queuetest.Config) *queuetest.Harness {
		ctx := t.Context()
		if unreachable != nil {
			t.Fatal(unreachable)
		}
		if !setupDone {
			setupDone = true
			want := QueueSettings{
				LockDuration:             cfg.LockDuration,
				MaxDeliveryCount:         cfg.MaxDeliveryCount,
				DuplicateDetectionWindow: cfg.DuplicateWindow,
				DeadLetterOnExpiry:       true,
				DefaultTTL:               time.Hour,
			}
			plan, err := Setup(ctx, conn, name, want, false)
			if err != nil {
				t.Logf("queue setup skipped (%v); assuming %q is configured as the suite wants", err, name)
			} else {
				t.Logf("queue setup: %s", plan)
			}
		}
		q, err := New(ctx, Options{Connection: conn, QueueName: name, Logger: discardLogger()})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		t.Cleanup(func() { _ = q.Close() })
		// Receive hides a namespace it cannot reach behind "nothing arrived"
		// (the SDK keeps reconnecting within maxWait), so check first.
		const pingWait = 30 * time.Second
		pctx, cancel := context.WithTimeout(ctx, pingWait)
		defer cancel()
		if err := q.Ping(pctx); err != nil {
			unreachable = fmt.Errorf("Service Bus in MSISYNC_TEST_SERVICEBUS, queue %q, did not answer within %v "+
				"(emulator running? `docker compose ps`; queue in Config.json?): %w", name, pingWait, err)
			t.Fatal(unreachable)
		}
		drain(t, q)
		return &queuetest.Harness{Queue: q, Advance: func(d time.Duration) { time.Sleep(d) }}
	})
}

// drain empties the queue and its dead-letter sub-queue left by earlier
// subtests, so each subtest starts from an empty queue.
func drain(t *testing.T, q *Queue) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	for {
		ds, err := q.Receive(ctx, 100, 500*time.Millisecond)
		if err != nil {
			t.Fatalf("drain: %v", err)
		}
		if len(ds) == 0 {
			break
		}
		for _, d := range ds {
			_ = q.Complete(ctx, d)
		}
	}
	if _, err := q.PurgeDead(ctx, queue.Filter{}); err != nil {
		t.Fatalf("drain dead letters: %v", err)
	}
}
