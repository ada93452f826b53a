package syncer

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	messages *prometheus.CounterVec
	records  *prometheus.CounterVec
	batch    prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "msisync_syncer_messages_total",
			Help: "Messages settled by the syncer, by outcome.",
		}, []string{"outcome"}),
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "msisync_syncer_records_total",
			Help: "Records written to or deleted from Marketo, by object and operation.",
		}, []string{"object", "op"}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "msisync_syncer_batch_seconds",
			Help:    "Time to process one batch.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
		}),
	}
	if reg == nil {
		return m, nil
	}
	// A second Syncer on the same registry (several workers in one process)
	// shares the series already registered.
	register := func(c prometheus.Collector) (prometheus.Collector, error) {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return are.ExistingCollector, nil
			}
			return nil, fmt.Errorf("syncer: register metrics: %w", err)
		}
		return c, nil
	}
	c, err := register(m.messages)
	if err != nil {
		return nil, err
	}
	m.messages = c.(*prometheus.CounterVec)
	if c, err = register(m.records); err != nil {
		return nil, err
	}
	m.records = c.(*prometheus.CounterVec)
	if c, err = register(m.batch); err != nil {
		return nil, err
	}
	m.batch = c.(prometheus.Histogram)
	return m, nil
}

func (m *metrics) observe(st Stats, d time.Duration) {
	m.messages.WithLabelValues("completed").Add(float64(st.Completed))
	m.messages.WithLabelValues("skipped").Add(float64(st.Skipped))
	m.messages.WithLabelValues("requeued").Add(float64(st.Requeued))
	m.messages.WithLabelValues("rescheduled").Add(float64(st.Rescheduled))
	m.messages.WithLabelValues("deadlettered").Add(float64(st.DeadLettered))
	for o, n := range st.Written {
		m.records.WithLabelValues(string(o), "write").Add(float64(n))
	}
	for o, n := range st.Deleted {
		m.records.WithLabelValues(string(o), "delete").Add(float64(n))
	}
	m.batch.Observe(d.Seconds())
}
