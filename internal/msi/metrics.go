package msi

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	marketoCalls prometheus.Counter
	written      prometheus.Counter
	missing      prometheus.Counter
	failed       prometheus.Counter
	cycles       *prometheus.CounterVec
	duration     prometheus.Histogram
	// Incremental cycles.
	activities prometheus.Counter
	swept      prometheus.Counter
	tokenLost  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		marketoCalls: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "msisync_msi_marketo_calls_total", Help: "Marketo Get Leads calls made by the MSI write-back."}),
		written: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "msisync_msi_persons_written_total", Help: "Dataverse leads and contacts updated with new MSI values."}),
		missing: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "msisync_msi_persons_missing_total", Help: "MSI writes answered 404 (the Dataverse row is gone)."}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "msisync_msi_write_failures_total", Help: "MSI person writes that failed and will be retried next cycle."}),
		cycles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "msisync_msi_cycles_total", Help: "MSI write-back cycles by outcome (ok, skipped, error)."}, []string{"outcome"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "msisync_msi_cycle_duration_seconds", Help: "Duration of MSI write-back cycles that ran.",
			Buckets: prometheus.ExponentialBuckets(0.1, 2, 14)}),
		activities: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "msisync_msi_activities_total", Help: "Marketo activities (Interesting Moment, Change Score, MSI Data Value Changes) the MSI write-back read."}),
		swept: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "msisync_msi_swept_persons_total", Help: "Synced persons the MSI write-back's rolling sweep read."}),
		tokenLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "msisync_msi_token_lost_total", Help: "Cycles whose activity paging token was missing or rejected (they sweep everyone)."}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.marketoCalls, m.written, m.missing, m.failed, m.cycles, m.duration, m.activities, m.swept, m.tokenLost} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				continue // a second Writer in one process (tests, --once inside serve) shares the counters' names
			}
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) observe(r Report, err error) {
	switch {
	case err != nil:
		m.cycles.WithLabelValues("error").Inc()
	case r.Skipped:
		m.cycles.WithLabelValues("skipped").Inc()
		return
	default:
		m.cycles.WithLabelValues("ok").Inc()
	}
	m.duration.Observe(r.Duration.Seconds())
	m.activities.Add(float64(r.Activities))
	m.swept.Add(float64(r.Swept))
	if r.TokenLost {
		m.tokenLost.Inc()
	}
}
