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

	mu    sync.Mutex
	slots []*slot // calls in the window, oldest first
	day   string
	used  int
	wake  chan struct{} // closed when a slot completes
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
		sem: make(chan struct{}, concurrent), budget: budget, wake: make(chan struct{})}
}

// acquire waits for a concurrency slot and room in the window, and charges
// the daily budget. release must be called when the response is read.
func (g *governor) acquire(ctx context.Context, op string) (release func(), wait time.Duration, err error) {
	start := g.clk.Now()
	select {
	case g.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	}
	for {
		g.mu.Lock()
		now := g.clk.Now()
		if g.budget > 0 {
			if d := quotaDay(now); d != g.day {
				g.day, g.used = d, 0
			}
			if g.used >= g.budget {
				g.mu.Unlock()
				<-g.sem
				return nil, 0, &QuotaError{Op: op, ResetAt: NextQuotaReset(now), Local: true}
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
		if len(g.slots) < g.limit {
			s := &slot{t: now}
			g.slots = append(g.slots, s)
			g.used++
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
