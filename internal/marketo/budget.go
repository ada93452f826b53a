package marketo

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/msisync/msisync/internal/store"
)

// setupBudget builds the governor: shared through Config.Slots when set,
// local otherwise.
func (c *Client) setupBudget() error {
	cfg := &c.cfg
	cfg.Priorities.defaults()
	if p := cfg.Priorities; p.BackgroundShare > 1 || p.Reserve >= 0.5 || p.WindowHeadroom >= 1 {
		return fmt.Errorf("marketo: config: Priorities BackgroundShare %.2f (0..1], Reserve %.2f (0..0.5) or WindowHeadroom %.2f (0..1) out of range",
			p.BackgroundShare, p.Reserve, p.WindowHeadroom)
	}
	if cfg.GrantCalls < 0 || cfg.GrantTTL < 0 || cfg.Skew < 0 {
		return fmt.Errorf("marketo: config: GrantCalls %d, GrantTTL %v and Skew %v must not be negative", cfg.GrantCalls, cfg.GrantTTL, cfg.Skew)
	}
	if cfg.GrantCalls == 0 {
		cfg.GrantCalls = max(2, cfg.CallsPerWindow/10)
	}
	if cfg.GrantTTL == 0 {
		cfg.GrantTTL = DefaultGrantTTL
	}
	if cfg.Skew == 0 {
		cfg.Skew = DefaultSkew
	}
	if cfg.GrantTTL <= 2*cfg.Skew {
		return fmt.Errorf("marketo: config: GrantTTL %v must be more than twice Skew %v", cfg.GrantTTL, cfg.Skew)
	}
	if cfg.Holder == "" {
		host, _ := os.Hostname()
		cfg.Holder = fmt.Sprintf("%s/%d", host, os.Getpid())
	}
	if cfg.Slots != nil {
		c.shared = newSharedGovernor(cfg.Slots, cfg.Holder, cfg.Clock, cfg.Sleep, cfg.Logger, cfg.CallsPerWindow, cfg.Window,
			cfg.MaxConcurrent, cfg.DailyQuota, cfg.GrantCalls, cfg.GrantTTL, cfg.Skew, cfg.Priorities, c.onPause)
		return nil
	}
	c.gov = newGovernor(cfg.Clock, cfg.Sleep, cfg.CallsPerWindow, cfg.Window, cfg.MaxConcurrent, cfg.DailyQuota)
	c.gov.prio = cfg.Priorities
	c.gov.pause = c.onPause
	return nil
}

// Shared reports whether the governor is shared through a store.
func (c *Client) Shared() bool { return c.shared != nil }

// Close hands back the call permits this process holds in the shared
// governor, so other processes need not wait for their lease to end.
func (c *Client) Close() {
	if c.shared != nil {
		c.shared.close()
	}
}

// onPause logs and counts each step of the budget ladder.
func (c *Client) onPause(p Purpose, reason string, paused bool) {
	if paused {
		c.log.Warn("marketo: pausing calls for the rest of the quota day", "purpose", string(p), "reason", reason,
			"resume_at", NextQuotaReset(c.clk.Now()).Format(time.RFC3339))
	} else {
		c.log.Info("marketo: calls resume", "purpose", string(p))
	}
	c.bm.setPaused(p, paused)
}

// Budget is the day's Marketo call budget as the governor sees it.
type Budget struct {
	Shared  bool      `json:"shared"` // true: every process sharing the store counts here
	Day     string    `json:"day"`    // quota day (America/Chicago)
	ResetAt time.Time `json:"resetAt"`
	Quota   int       `json:"quota"` // daily budget; 0 = unlimited
	Used    int       `json:"used"`
	// Reserved is the part of Used that live grants hold and may hand back.
	Reserved int `json:"reserved"`
	// Remaining is Quota-Used (-1 when unlimited).
	Remaining int                `json:"remaining"`
	ByPurpose map[Purpose]int    `json:"byPurpose"`
	Limits    map[Purpose]int    `json:"limits,omitempty"` // calls of the day after which a purpose pauses
	Share     int                `json:"backgroundShare,omitempty"`
	Paused    map[Purpose]string `json:"paused,omitempty"` // this process's paused purposes and why

	WindowCalls     int `json:"windowCalls"` // calls counting in the rolling window now
	WindowLimit     int `json:"windowLimit"`
	InFlight        int `json:"inFlight"`
	ConcurrentLimit int `json:"concurrentLimit"`
}

// Budget reports today's usage: from the shared store, or from this process.
func (c *Client) Budget(ctx context.Context) (Budget, error) {
	now := c.clk.Now()
	if c.shared != nil {
		u, err := c.shared.usage(ctx, quotaDay(now))
		if err != nil {
			return Budget{}, err
		}
		b := budgetOf(c.cfg, u, now, true)
		b.Paused = c.shared.pausedNow()
		return b, nil
	}
	day, by, inWindow, inFlight := c.gov.snapshot()
	u := store.CallUsage{Day: day, ByPurpose: map[string]int{}, InWindow: inWindow, InFlight: inFlight}
	for k, v := range by {
		u.ByPurpose[string(k)] = v
	}
	b := budgetOf(c.cfg, u, now, false)
	c.gov.mu.Lock()
	b.Paused = make(map[Purpose]string, len(c.gov.paused))
	for k, v := range c.gov.paused {
		b.Paused[k] = v
	}
	c.gov.mu.Unlock()
	return b, nil
}

// ReadBudget reads the shared budget from slots for the limits of cfg (only
// the limit fields are used), e.g. for `msisync budget` without a client.
func ReadBudget(ctx context.Context, slots SlotStore, cfg Config, now time.Time) (Budget, error) {
	if cfg.CallsPerWindow == 0 {
		cfg.CallsPerWindow = 50
	}
	if cfg.MaxConcurrent == 0 {
		cfg.MaxConcurrent = 5
	}
	cfg.Priorities.defaults()
	u, err := slots.CallUsage(ctx, quotaDay(now))
	if err != nil {
		return Budget{}, fmt.Errorf("marketo: read shared call usage: %w", err)
	}
	return budgetOf(cfg, u, now, true), nil
}

func budgetOf(cfg Config, u store.CallUsage, now time.Time, shared bool) Budget {
	b := Budget{Shared: shared, Day: quotaDay(now), ResetAt: NextQuotaReset(now), Quota: cfg.DailyQuota,
		ByPurpose: map[Purpose]int{}, WindowCalls: u.InWindow, WindowLimit: cfg.CallsPerWindow,
		InFlight: u.InFlight, ConcurrentLimit: cfg.MaxConcurrent, Remaining: -1, Reserved: u.Reserved}
	for k, v := range u.ByPurpose {
		b.ByPurpose[Purpose(k)] = v
		b.Used += v
	}
	if cfg.DailyQuota > 0 {
		b.Remaining = max(0, cfg.DailyQuota-b.Used)
		b.Limits = map[Purpose]int{}
		for _, p := range Purposes {
			l := cfg.Priorities.limitsFor(p, cfg.DailyQuota, cfg.CallsPerWindow)
			b.Limits[p] = l.day
			if l.group > 0 {
				b.Share = l.group
			}
		}
	}
	return b
}

// String is the budget as `msisync budget` prints it.
func (b Budget) String() string {
	mode := "this process only (no shared store)"
	if b.Shared {
		mode = "shared by every process on the store"
	}
	quota := "unlimited"
	if b.Quota > 0 {
		quota = fmt.Sprintf("%d (remaining %d)", b.Quota, b.Remaining)
	}
	used := fmt.Sprint(b.Used)
	if b.Reserved > 0 {
		used += fmt.Sprintf(" (of which %d reserved by live grants, returned when unused)", b.Reserved)
	}
	s := fmt.Sprintf("Marketo budget for %s (%s)\nquota:    %s, resets %s\nused:     %s\n", b.Day, mode, quota,
		b.ResetAt.Format(time.RFC3339), used)
	ps := append([]Purpose(nil), Purposes...)
	sort.SliceStable(ps, func(i, j int) bool { return b.ByPurpose[ps[i]] > b.ByPurpose[ps[j]] })
	for _, p := range ps {
		lim := ""
		if l, ok := b.Limits[p]; ok {
			lim = fmt.Sprintf("  (pauses at %d of the day)", l)
		}
		if why, ok := b.Paused[p]; ok {
			lim += "  PAUSED: " + why
		}
		s += fmt.Sprintf("  %-9s %d%s\n", p, b.ByPurpose[p], lim)
	}
	if b.Share > 0 {
		s += fmt.Sprintf("background share (msi+backfill+doctor): %d\n", b.Share)
	}
	s += fmt.Sprintf("window:   %d of %d calls in the rolling window, %d of %d concurrent\n", b.WindowCalls, b.WindowLimit,
		b.InFlight, b.ConcurrentLimit)
	return s
}

// budgetMetrics are the budget's Prometheus series; nil is a no-op.
type budgetMetrics struct {
	calls  *prometheus.CounterVec
	paused *prometheus.GaugeVec
	pauses *prometheus.CounterVec
}

func newBudgetMetrics(reg prometheus.Registerer, c *Client) (*budgetMetrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &budgetMetrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "msisync", Subsystem: "marketo",
			Name: "purpose_calls_total", Help: "Marketo REST calls this process made, by purpose (sync, lookup, msi, backfill, doctor)."},
			[]string{"purpose"}),
		paused: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "msisync", Subsystem: "marketo",
			Name: "budget_paused", Help: "1 while calls of a purpose are paused for the rest of the quota day."}, []string{"purpose"}),
		pauses: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "msisync", Subsystem: "marketo",
			Name: "budget_pauses_total", Help: "Times calls of a purpose were paused for the rest of the quota day."}, []string{"purpose"}),
	}
	cols := []prometheus.Collector{m.calls, m.paused, m.pauses, &budgetCollector{c: c}}
	for i, col := range cols {
		if err := reg.Register(col); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, err
			}
			switch i { // share the series of an earlier Client; its collector reports the budget
			case 0:
				m.calls = are.ExistingCollector.(*prometheus.CounterVec)
			case 1:
				m.paused = are.ExistingCollector.(*prometheus.GaugeVec)
			case 2:
				m.pauses = are.ExistingCollector.(*prometheus.CounterVec)
			}
		}
	}
	for _, p := range Purposes {
		m.paused.WithLabelValues(string(p))
	}
	return m, nil
}

func (m *budgetMetrics) call(p Purpose) {
	if m != nil {
		m.calls.WithLabelValues(string(p)).Inc()
	}
}

func (m *budgetMetrics) setPaused(p Purpose, paused bool) {
	if m == nil {
		return
	}
	if paused {
		m.paused.WithLabelValues(string(p)).Set(1)
		m.pauses.WithLabelValues(string(p)).Inc()
	} else {
		m.paused.WithLabelValues(string(p)).Set(0)
	}
}

var (
	descToday = prometheus.NewDesc("msisync_marketo_budget_calls_today", "Marketo calls charged to the quota day, by purpose (all processes when shared).",
		[]string{"purpose"}, nil)
	descRemaining = prometheus.NewDesc("msisync_marketo_budget_remaining", "Calls left of the daily budget (absent when unlimited).", nil, nil)
	descWindow    = prometheus.NewDesc("msisync_marketo_budget_window_calls", "Calls counting in the rolling 20 s window now.", nil, nil)
	descReset     = prometheus.NewDesc("msisync_marketo_budget_reset_timestamp_seconds", "When the daily quota resets (Unix time).", nil, nil)
)

// budgetCollector reads the budget at scrape time (a short store query when
// shared); a failing read drops these series from the scrape.
type budgetCollector struct{ c *Client }

func (b *budgetCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descToday
	ch <- descRemaining
	ch <- descWindow
	ch <- descReset
}

func (b *budgetCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	bud, err := b.c.Budget(ctx)
	if err != nil {
		return
	}
	for _, p := range Purposes {
		ch <- prometheus.MustNewConstMetric(descToday, prometheus.GaugeValue, float64(bud.ByPurpose[p]), string(p))
	}
	if bud.Quota > 0 {
		ch <- prometheus.MustNewConstMetric(descRemaining, prometheus.GaugeValue, float64(bud.Remaining))
	}
	ch <- prometheus.MustNewConstMetric(descWindow, prometheus.GaugeValue, float64(bud.WindowCalls))
	ch <- prometheus.MustNewConstMetric(descReset, prometheus.GaugeValue, float64(bud.ResetAt.Unix()))
}
