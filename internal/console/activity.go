package console

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/store"
)

// Activity keeps the last hour of what this process saw, in memory: events
// received and synced per minute (sampled from its own Prometheus counters,
// so it needs no hook in the receiver) and the sync lag of recent events
// (from the syncer's OnSettle). It also exports the lag as the
// msisync_sync_lag_seconds histogram, for the alert rules.
type Activity struct {
	clk      clock.Clock
	gatherer prometheus.Gatherer
	lagHist  prometheus.Histogram

	mu        sync.Mutex
	minutes   [60]minute
	lastRecv  float64
	lastSync  float64
	lags      []lagSample // newest last, at most maxLags, within the hour
	instance  *InstanceStatus
	lastFetch time.Time
}

type minute struct {
	start            int64 // unix minute
	received, synced float64
}

type lagSample struct {
	at  time.Time
	lag time.Duration
}

const (
	maxLags        = 10000
	sampleInterval = 5 * time.Second
)

// InstanceStatus is the result of the start-up Marketo instance check.
type InstanceStatus struct {
	OK     bool
	Detail string
	At     time.Time
}

// NewActivity returns an Activity reading g; reg gets the lag histogram
// (both may be nil).
func NewActivity(clk clock.Clock, g prometheus.Gatherer, reg prometheus.Registerer) (*Activity, error) {
	if clk == nil {
		clk = clock.System{}
	}
	a := &Activity{clk: clk, gatherer: g, lagHist: prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "msisync_sync_lag_seconds",
		Help:    "Time from an event entering the queue to the syncer settling it as synced (written to Marketo).",
		Buckets: []float64{.1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600},
	})}
	if reg != nil {
		if err := reg.Register(a.lagHist); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// Run samples the counters until ctx ends.
func (a *Activity) Run(ctx context.Context) {
	t := time.NewTicker(sampleInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.Sample()
		}
	}
}

// Sample reads the received and synced counters and adds what they grew by
// since the last sample to the current minute.
func (a *Activity) Sample() {
	if a.gatherer == nil {
		return
	}
	mfs, err := a.gatherer.Gather()
	if err != nil && len(mfs) == 0 {
		return
	}
	var recv, synced, skipped float64
	for _, mf := range mfs {
		switch mf.GetName() {
		case "msisync_receiver_events_total":
			for _, m := range mf.GetMetric() {
				if o := label(m, "outcome"); o == "queued" || o == "reduced" {
					recv += m.GetCounter().GetValue()
				}
			}
		case "msisync_syncer_messages_total":
			for _, m := range mf.GetMetric() {
				switch label(m, "outcome") {
				case "completed":
					synced += m.GetCounter().GetValue()
				case "skipped":
					skipped += m.GetCounter().GetValue()
				}
			}
		}
	}
	synced -= skipped
	a.mu.Lock()
	defer a.mu.Unlock()
	m := a.minuteLocked(a.clk.Now())
	m.received += max(0, recv-a.lastRecv)
	m.synced += max(0, synced-a.lastSync)
	a.lastRecv, a.lastSync = recv, synced
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func (a *Activity) minuteLocked(t time.Time) *minute {
	u := t.Unix() / 60
	m := &a.minutes[u%60]
	if m.start != u {
		*m = minute{start: u}
	}
	return m
}

// Settled takes the syncer's settled messages (wire it to syncer's OnSettle).
func (a *Activity) Settled(_ context.Context, entries []store.HistoryEntry) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, e := range entries {
		if e.Outcome != store.OutcomeSynced || e.ReceivedAt.IsZero() {
			continue
		}
		lag := max(0, e.At.Sub(e.ReceivedAt))
		a.lagHist.Observe(lag.Seconds())
		a.lags = append(a.lags, lagSample{at: e.At, lag: lag})
	}
	if n := len(a.lags) - maxLags; n > 0 {
		a.lags = slices.Delete(a.lags, 0, n)
	}
}

// SetInstanceCheck records the result of the Marketo instance check.
func (a *Activity) SetInstanceCheck(err error) {
	st := &InstanceStatus{OK: err == nil, At: a.clk.Now()}
	if err != nil {
		st.Detail = err.Error()
	}
	a.mu.Lock()
	a.instance = st
	a.mu.Unlock()
}

// Point is one minute of the series.
type Point struct {
	Start            time.Time
	Received, Synced int
}

// Lag is the sync lag over the last hour.
type Lag struct {
	Count    int
	P50, P95 time.Duration
}

// Snapshot is what the overview shows.
type Snapshot struct {
	Series   []Point // the last 60 minutes, oldest first
	Lag      Lag
	Instance *InstanceStatus
	// Totals over the hour.
	Received, Synced int
}

// Snapshot returns the last hour.
func (a *Activity) Snapshot() Snapshot {
	now := a.clk.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	var s Snapshot
	cur := now.Unix() / 60
	for u := cur - 59; u <= cur; u++ {
		p := Point{Start: time.Unix(u*60, 0).UTC()}
		if m := a.minutes[u%60]; m.start == u {
			p.Received, p.Synced = int(m.received), int(m.synced)
		}
		s.Received += p.Received
		s.Synced += p.Synced
		s.Series = append(s.Series, p)
	}
	hour := now.Add(-time.Hour)
	i := 0
	for i < len(a.lags) && a.lags[i].at.Before(hour) {
		i++
	}
	a.lags = a.lags[i:]
	if n := len(a.lags); n > 0 {
		ls := make([]time.Duration, n)
		for j, l := range a.lags {
			ls[j] = l.lag
		}
		slices.Sort(ls)
		s.Lag = Lag{Count: n, P50: ls[(n-1)*50/100], P95: ls[(n-1)*95/100]}
	}
	if a.instance != nil {
		c := *a.instance
		s.Instance = &c
	}
	return s
}
