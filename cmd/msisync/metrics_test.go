package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"maps"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/msisync/msisync/internal/queue"
)

// countingQueue is a queue.Queue whose Counts answers from fields; the
// embedded interface is nil because the collector calls nothing else.
type countingQueue struct {
	queue.Queue
	counts queue.Counts
	err    error
}

func (q *countingQueue) Counts(context.Context) (queue.Counts, error) { return q.counts, q.err }

// queueGauges scrapes reg and returns msisync_queue_messages by state.
func queueGauges(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "msisync_queue_messages" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "state" {
					got[l.GetValue()] = m.GetGauge().GetValue()
				}
			}
		}
	}
	return got
}

func TestQueueMetrics(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	q := &countingQueue{counts: queue.Counts{Active: 4, Scheduled: 3, Locked: 2, Dead: 1}}
	reg := prometheus.NewRegistry()
	if err := registerQueueMetrics(reg, q, log); err != nil {
		t.Fatalf("registerQueueMetrics: %v", err)
	}
	want := map[string]float64{"active": 4, "scheduled": 3, "locked": 2, "dead": 1}
	if got := queueGauges(t, reg); !maps.Equal(got, want) {
		t.Errorf("gauges = %v, want %v", got, want)
	}

	// Unknown locks (Service Bus) leave the locked series out.
	q.counts = queue.Counts{Active: 7, Scheduled: 0, Locked: -1, Dead: 2}
	want = map[string]float64{"active": 7, "scheduled": 0, "dead": 2}
	if got := queueGauges(t, reg); !maps.Equal(got, want) {
		t.Errorf("gauges with unknown locks = %v, want %v", got, want)
	}

	// A failing count drops the series but not the scrape.
	q.err = errors.New("403 from the management API")
	if got := queueGauges(t, reg); len(got) != 0 {
		t.Errorf("gauges while Counts fails = %v, want none", got)
	}
	q.err = nil
	if got := queueGauges(t, reg); got["active"] != 7 {
		t.Errorf("gauges after Counts recovered = %v, want active 7", got)
	}
}

func TestQueueMetricsSkipsQueuesWithoutCounts(t *testing.T) {
	reg := prometheus.NewRegistry()
	var q queue.Queue = struct{ queue.Queue }{} // no Counts method
	if err := registerQueueMetrics(reg, q, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("registerQueueMetrics: %v", err)
	}
	if got := queueGauges(t, reg); len(got) != 0 {
		t.Errorf("gauges = %v, want none for a queue without Counts", got)
	}
}
