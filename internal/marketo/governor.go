package marketo

import (
	"context"
	"sync"
	"time"

	"github.com/msisync/msisync/internal/clock"
)

// governor keeps one Client inside Marketo's limits: a rolling window of
// calls (what Marketo enforces, unlike a token bucket), a concurrency
// semaphore and a daily budget. Identity calls do not pass through it.
type governor struct {
	clk    clock.Clock
	sleep  func(context.Context, time.Duration) error
	limit  int
	window time.Duration
	sem    chan struct{}
	budget int // 0 = unlimited
	prio   Priorities
	pause  func(p Purpose, reason string, paused bool) // nil: no reports

	mu     sync.Mutex
	slots  []*slot // calls in the window, oldest first
	day    string
	used   int
	usedBy map[Purpose]int    // today's calls by purpose
	paused map[Purpose]string // purposes paused for the day
	wake   chan struct{}      // closed when a slot completes
}

// slot is one call in the window. While in flight it always counts; once
// done it counts until its completion time plus the window. Marketo stamps
// a call on arrival, which is no later than our completion, so counting from
// completion never lets two calls the server sees as within one window
// exceed the limit.
type slot struct {
	t    time.Time
	done bool
}

func newGovernor(clk clock.Clock, sleep func(context.Context, time.Duration) error, limit int, window time.Duration, concurrent, budget int) *governor {
	return &governor{clk: clk, sleep: sleep, limit: limit, window: window,
		sem: make(chan struct{}, concurrent), budget: budget, wake: make(chan struct{}),
		usedBy: map[Purpose]int{}, paused: map[Purpose]string{}}
}

// acquire waits for a concurrency slot and room in the window, and charges
// the daily budget. release must be called when the response is read.
func (g *governor) acquire(ctx context.Context, op string) (release func(), wait time.Duration, err error) {
	return g.acquireFor(ctx, op, PurposeSync)
}

// acquireFor is acquire for a call of purpose p: the priorities decide how
// much of the day and of the window p may use.
func (g *governor) acquireFor(ctx context.Context, op string, p Purpose) (release func(), wait time.Duration, err error) {
	l := g.prio.limitsFor(p, g.budget, g.limit)
	start := g.clk.Now()
	select {
	case g.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	}
	for {
		g.mu.Lock()
		now := g.clk.Now()
		if d := quotaDay(now); d != g.day {
			g.day, g.used = d, 0
			clear(g.usedBy)
			for q, reason := range g.paused {
				g.report(q, reason, false)
			}
			clear(g.paused)
		}
		if g.budget > 0 {
			bg := g.usedBy[PurposeMSI] + g.usedBy[PurposeBackfill] + g.usedBy[PurposeDoctor]
			if g.used >= l.day || (l.group > 0 && bg >= l.group) {
				if _, was := g.paused[p]; !was {
					reason := "the day's budget left for " + string(p)
					if g.used < l.day {
						reason = "the background share of the day's budget"
					}
					g.paused[p] = reason
					g.report(p, reason, true)
				}
				g.mu.Unlock()
				<-g.sem
				return nil, 0, &QuotaError{Op: op, ResetAt: NextQuotaReset(now), Local: true, Purpose: p}
			}
		}
		cut := now.Add(-g.window)
		kept := g.slots[:0]
		for _, s := range g.slots {
			if !s.done || s.t.After(cut) {
				kept = append(kept, s)
			}
		}
		g.slots = kept
		if len(g.slots) < l.window {
			s := &slot{t: now}
			g.slots = append(g.slots, s)
			g.used++
			g.usedBy[p]++
			g.mu.Unlock()
			var once sync.Once
			return func() {
				once.Do(func() {
					g.mu.Lock()
					s.t, s.done = g.clk.Now(), true
					close(g.wake)
					g.wake = make(chan struct{})
					g.mu.Unlock()
					<-g.sem
				})
			}, now.Sub(start), nil
		}
		// Wait until the oldest completed call leaves the window, or until
		// an in-flight one completes (then recompute).
		var d time.Duration
		if first, ok := g.earliestExpiry(); ok {
			if d = first.Add(g.window).Sub(now); d <= 0 {
				d = time.Millisecond
			}
		}
		wake := g.wake
		g.mu.Unlock()
		if d == 0 {
			select {
			case <-wake:
				continue
			case <-ctx.Done():
				<-g.sem
				return nil, 0, ctx.Err()
			}
		}
		if err := g.sleep(ctx, d); err != nil {
			<-g.sem
			return nil, 0, err
		}
	}
}

// report tells the pause hook, outside no lock it needs.
func (g *governor) report(p Purpose, reason string, paused bool) {
	if g.pause != nil {
		g.pause(p, reason, paused)
	}
}

// snapshot is today's usage as the shared store reports it.
func (g *governor) snapshot() (day string, byPurpose map[Purpose]int, inWindow, inFlight int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.clk.Now()
	byPurpose = map[Purpose]int{}
	if g.day == quotaDay(now) {
		for k, v := range g.usedBy {
			byPurpose[k] = v
		}
	}
	cut := now.Add(-g.window)
	for _, s := range g.slots {
		if !s.done || s.t.After(cut) {
			inWindow++
		}
		if !s.done {
			inFlight++
		}
	}
	return quotaDay(now), byPurpose, inWindow, inFlight
}

// earliestExpiry is the completion time of the call that leaves the window
// first. Called with g.mu held.
func (g *governor) earliestExpiry() (time.Time, bool) {
	var best time.Time
	found := false
	for _, s := range g.slots {
		if s.done && (!found || s.t.Before(best)) {
			best, found = s.t, true
		}
	}
	return best, found
}

// defaultSleep waits d on a real timer, honouring ctx.
func defaultSleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
