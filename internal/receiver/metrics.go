package receiver

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/msisync/msisync/internal/event"
)

// Event outcomes (label "outcome" of msisync_receiver_events_total).
const (
	OutcomeQueued   = "queued"   // sent to the queue in full
	OutcomeReduced  = "reduced"  // sent in reduced form (too large for the queue)
	OutcomeIgnored  = "ignored"  // an entity or message msisync does not sync
	OutcomeRejected = "rejected" // bad input (4xx)
	OutcomeFailed   = "failed"   // the queue did not take it (503)
)

type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	events   *prometheus.CounterVec
	enqueue  prometheus.Histogram
	// suppressed counts request log lines left out by the noise limiter.
	suppressed prometheus.Counter

	// Label children resolved once: WithLabelValues hashes the labels and
	// takes the vector's lock on every call, for every request.
	eventChildren    sync.Map // eventKey → prometheus.Counter
	requestChildren  sync.Map // requestKey → prometheus.Counter
	durationChildren sync.Map // route → prometheus.Observer
}

type eventKey struct{ source, entity, message, outcome string }

type requestKey struct {
	route string
	code  int
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "msisync_receiver_requests_total",
			Help: "HTTP requests by route pattern and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "msisync_receiver_request_duration_seconds",
			Help:    "HTTP request duration by route pattern.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"route"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "msisync_receiver_events_total",
			Help: "Change events received, by source, entity, message and outcome (queued, reduced, ignored, rejected, failed). Entities and messages msisync does not sync are counted as \"other\".",
		}, []string{"source", "entity", "message", "outcome"}),
		enqueue: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "msisync_receiver_enqueue_duration_seconds",
			Help:    "Time for the queue to durably accept one event (Send).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
	}
	var err error
	m.requests, err = register(reg, m.requests)
	if err != nil {
		return nil, err
	}
	m.duration, err = register(reg, m.duration)
	if err != nil {
		return nil, err
	}
	m.events, err = register(reg, m.events)
	if err != nil {
		return nil, err
	}
	m.enqueue, err = register(reg, m.enqueue)
	if err != nil {
		return nil, err
	}
	m.suppressed, err = register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "msisync_receiver_logs_suppressed_total",
		Help: "Request log lines left out by the rate limit on unauthenticated and unmatched requests (401, 403, 404, 405).",
	}))
	if err != nil {
		return nil, err
	}
	return m, nil
}

// register adds c to reg, or returns the collector already there (a second
// receiver on the same registry shares the metrics).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, err
	}
	return c, nil
}

// eventLabels bounds label cardinality: anything msisync does not sync is "other".
func eventLabels(e *event.Event) (entity, message string) {
	entity, message = "other", "other"
	if e == nil {
		return "", ""
	}
	if event.IsSyncedEntity(e.Entity) {
		entity = e.Entity
	}
	if event.IsSyncedMessage(e.Message) {
		message = e.Message
	}
	return entity, message
}

func (m *metrics) event(source string, e *event.Event, outcome string) {
	entity, message := eventLabels(e)
	k := eventKey{source, entity, message, outcome}
	c, ok := m.eventChildren.Load(k)
	if !ok {
		c, _ = m.eventChildren.LoadOrStore(k, m.events.WithLabelValues(source, entity, message, outcome))
	}
	c.(prometheus.Counter).Inc()
}

// request counts and times one request. Routes are chi patterns and codes
// are the handful we answer, so the caches stay small.
func (m *metrics) request(route string, code int, seconds float64) {
	k := requestKey{route, code}
	c, ok := m.requestChildren.Load(k)
	if !ok {
		c, _ = m.requestChildren.LoadOrStore(k, m.requests.WithLabelValues(route, statusLabel(code)))
	}
	c.(prometheus.Counter).Inc()
	o, ok := m.durationChildren.Load(route)
	if !ok {
		o, _ = m.durationChildren.LoadOrStore(route, m.duration.WithLabelValues(route))
	}
	o.(prometheus.Observer).Observe(seconds)
}
