package reconcile

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	findings    *prometheus.CounterVec
	enqueued    *prometheus.CounterVec
	requests    *prometheus.CounterVec
	tokenResets *prometheus.CounterVec
	cycles      *prometheus.CounterVec
	duration    prometheus.Histogram
	lastSuccess prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		findings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "msisync_reconcile_rows_total",
			Help: "Rows and deletions reconcile read, by table and finding: missed, new, deleted (changes webhooks did not deliver), unsure and own (re-sent), applied, baseline, ignored, unknown, invalid."},
			[]string{"entity", "finding"}),
		enqueued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "msisync_reconcile_enqueued_total", Help: "Events reconcile enqueued, by table."}, []string{"entity"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "msisync_reconcile_dataverse_requests_total", Help: "Dataverse list requests reconcile made, by table."}, []string{"entity"}),
		tokenResets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "msisync_reconcile_token_resets_total", Help: "Delta tokens Dataverse refused (expired), by table."}, []string{"entity"}),
		cycles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "msisync_reconcile_cycles_total", Help: "Reconcile cycles by outcome (ok, skipped, error)."}, []string{"outcome"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "msisync_reconcile_cycle_duration_seconds", Help: "Duration of reconcile cycles that ran.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 14)}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "msisync_reconcile_last_success_timestamp_seconds", Help: "When the last reconcile cycle without errors ended (Unix seconds)."}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.findings, err = register(reg, m.findings); err != nil {
		return nil, err
	}
	if m.enqueued, err = register(reg, m.enqueued); err != nil {
		return nil, err
	}
	if m.requests, err = register(reg, m.requests); err != nil {
		return nil, err
	}
	if m.tokenResets, err = register(reg, m.tokenResets); err != nil {
		return nil, err
	}
	if m.cycles, err = register(reg, m.cycles); err != nil {
		return nil, err
	}
	if m.duration, err = register(reg, m.duration); err != nil {
		return nil, err
	}
	if m.lastSuccess, err = register(reg, m.lastSuccess); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c, or returns the collector already registered under
// its name (a second Reconciler in one process counts into the same series).
func register[T prometheus.Collector](reg prometheus.Registerer, c T) (T, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(T); ok {
				return existing, nil
			}
		}
		return c, err
	}
	return c, nil
}

func (m *metrics) observeTable(t TableReport) {
	for finding, n := range map[string]int{"missed": t.Missed, "new": t.New, "deleted": t.Deleted, "applied": t.Applied,
		"baseline": t.Baseline, "unsure": t.Unsure, "own": t.Own, "ignored": t.Ignored, "unknown": t.Unknown, "invalid": t.Invalid} {
		if n > 0 {
			m.findings.WithLabelValues(t.Entity, finding).Add(float64(n))
		}
	}
	m.enqueued.WithLabelValues(t.Entity).Add(float64(t.Enqueued))
	m.requests.WithLabelValues(t.Entity).Add(float64(t.Requests))
}
