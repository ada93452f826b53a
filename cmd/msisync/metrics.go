package main

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/msisync/msisync/internal/queue"
)

// queueCountTimeout bounds one Counts call per scrape, so a slow broker
// cannot hold /metrics up.
const queueCountTimeout = 2 * time.Second

// registerQueueMetrics exports the queue's depth when the adapter can count
// its messages (queue.Counter); otherwise it does nothing.
func registerQueueMetrics(reg prometheus.Registerer, q queue.Queue, log *slog.Logger) error {
	c, ok := q.(queue.Counter)
	if !ok {
		return nil
	}
	return reg.Register(&queueCollector{
		counter: c,
		log:     log,
		desc: prometheus.NewDesc("msisync_queue_messages",
			"Messages in the queue by state: active (deliverable now), scheduled (due later), locked (delivered, not settled; absent when the queue cannot tell), dead (in the dead-letter queue).",
			[]string{"state"}, nil),
	})
}

// queueCollector asks the queue for its counts at each scrape.
type queueCollector struct {
	counter queue.Counter
	log     *slog.Logger
	desc    *prometheus.Desc
	failing atomic.Bool // logs a failure once per run of failures, not per scrape
}

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), queueCountTimeout)
	defer cancel()
	n, err := c.counter.Counts(ctx)
	if err != nil {
		// Leaving the series out (rather than failing the scrape) keeps every
		// other metric available, e.g. on Service Bus without Manage rights.
		if !c.failing.Swap(true) {
			c.log.Warn("cannot count queue messages; msisync_queue_messages is left out of /metrics until it works", "error", err)
		}
		return
	}
	if c.failing.Swap(false) {
		c.log.Info("counting queue messages works again")
	}
	gauge := func(state string, v int) {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(v), state)
	}
	gauge("active", n.Active)
	gauge("scheduled", n.Scheduled)
	if n.Locked >= 0 { // -1: unknown (Service Bus); a -1 gauge would mislead sums
		gauge("locked", n.Locked)
	}
	gauge("dead", n.Dead)
}
