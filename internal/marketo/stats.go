package marketo

import (
	"errors"
	"sync"
	"time"

	"github.com/msisync/msisync/internal/marketo/marketotype"
	"github.com/prometheus/client_golang/prometheus"
)

// Stats counts a Client's calls.
type Stats struct {
	Calls         map[string]int // by endpoint, e.g. "sync leads", "query leads"
	Codes         map[string]int // responses by code: "ok", "606", "HTTP 502", "network"
	Retries       int            // repeated calls (throttled, transient, re-auth)
	IdentityCalls int
	// RecordsPerCall: records sent (sync, delete) or values asked for (query)
	// per object.
	RecordsPerCall map[marketotype.Object]RecordCount
}

// RecordCount is the number of calls and records for one object.
type RecordCount struct {
	Calls, Records int
}

// Mean is records per call.
func (r RecordCount) Mean() float64 {
	if r.Calls == 0 {
		return 0
	}
	return float64(r.Records) / float64(r.Calls)
}

type statsRecorder struct {
	mu sync.Mutex
	s  Stats
}

func newStatsRecorder() *statsRecorder {
	return &statsRecorder{s: Stats{Calls: map[string]int{}, Codes: map[string]int{},
		RecordsPerCall: map[marketotype.Object]RecordCount{}}}
}

func (r *statsRecorder) call(endpoint, code string) {
	r.mu.Lock()
	r.s.Calls[endpoint]++
	r.s.Codes[code]++
	r.mu.Unlock()
}

func (r *statsRecorder) retry(string) {
	r.mu.Lock()
	r.s.Retries++
	r.mu.Unlock()
}

func (r *statsRecorder) identity() {
	r.mu.Lock()
	r.s.IdentityCalls++
	r.mu.Unlock()
}

func (r *statsRecorder) records(obj marketotype.Object, n int) {
	r.mu.Lock()
	rc := r.s.RecordsPerCall[obj]
	rc.Calls++
	rc.Records += n
	r.s.RecordsPerCall[obj] = rc
	r.mu.Unlock()
}

// Stats returns a copy of the client's counters.
func (c *Client) Stats() Stats {
	c.stats.mu.Lock()
	defer c.stats.mu.Unlock()
	s := c.stats.s
	s.Calls = make(map[string]int, len(c.stats.s.Calls))
	for k, v := range c.stats.s.Calls {
		s.Calls[k] = v
	}
	s.Codes = make(map[string]int, len(c.stats.s.Codes))
	for k, v := range c.stats.s.Codes {
		s.Codes[k] = v
	}
	s.RecordsPerCall = make(map[marketotype.Object]RecordCount, len(c.stats.s.RecordsPerCall))
	for k, v := range c.stats.s.RecordsPerCall {
		s.RecordsPerCall[k] = v
	}
	return s
}

// metrics are the optional Prometheus series; a nil *metrics is a no-op.
type metrics struct {
	calls   *prometheus.CounterVec
	records *prometheus.HistogramVec
	wait    prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "msisync", Subsystem: "marketo", Name: "calls_total",
			Help: "Marketo REST calls by endpoint and response code.",
		}, []string{"endpoint", "code"}),
		records: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "msisync", Subsystem: "marketo", Name: "records_per_call",
			Help:    "Records sent per Marketo sync/delete call, or values per query call.",
			Buckets: []float64{1, 10, 50, 100, 200, 300},
		}, []string{"object"}),
		wait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "msisync", Subsystem: "marketo", Name: "governor_wait_seconds",
			Help:    "Time calls waited for the Marketo rate window and concurrency limit.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}),
	}
	for i, col := range []prometheus.Collector{m.calls, m.records, m.wait} {
		if err := reg.Register(col); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, err
			}
			switch i { // share the series of an earlier Client
			case 0:
				m.calls = are.ExistingCollector.(*prometheus.CounterVec)
			case 1:
				m.records = are.ExistingCollector.(*prometheus.HistogramVec)
			case 2:
				m.wait = are.ExistingCollector.(prometheus.Histogram)
			}
		}
	}
	return m, nil
}

func (m *metrics) call(endpoint, code string) {
	if m != nil {
		m.calls.WithLabelValues(endpoint, code).Inc()
	}
}

func (m *metrics) recordsPerCall(obj marketotype.Object, n int) {
	if m != nil {
		m.records.WithLabelValues(string(obj)).Observe(float64(n))
	}
}

func (m *metrics) observeWait(d time.Duration) {
	if m != nil {
		m.wait.Observe(d.Seconds())
	}
}
