package marketo

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/marketo/marketotype"
	"github.com/msisync/msisync/internal/store"
)

// SlotStore is the store the governor shares with every other msisync
// process of the installation (store.CallSlots: the SQLite store of one data
// folder, or PostgreSQL for replicas on several machines).
type SlotStore interface {
	GrantCalls(ctx context.Context, req store.CallRequest) (store.CallGrant, error)
	RenewCalls(ctx context.Context, id int64, ttl time.Duration) (bool, error)
	ReturnCalls(ctx context.Context, id int64, used int) error
	CallUsage(ctx context.Context, day string) (store.CallUsage, error)
}

// Defaults of the shared governor.
const (
	DefaultGrantTTL = 10 * time.Second // lease of a grant: a dead process's slots come back after this
	DefaultSkew     = time.Second      // clock difference tolerated between processes
	grantLinger     = 200 * time.Millisecond
)

// sharedGovernor keeps every process that shares a SlotStore inside one
// set of limits. A process asks the store for a grant of a few permits (and
// concurrent slots) per purpose, spends them without further round trips,
// and returns what it did not use. Windows are counted on the store, from
// each grant's end plus the window plus the clock skew, so a call the server
// stamps a little later than we do, or a replica whose clock runs a second
// ahead, never sees more calls in a window than the limit.
type sharedGovernor struct {
	slots      SlotStore
	holder     string
	clk        clock.Clock
	sleep      func(context.Context, time.Duration) error
	log        *slog.Logger
	limit      int
	window     time.Duration
	concurrent int
	budget     int
	batch      int
	ttl, skew  time.Duration
	prio       Priorities
	pause      func(p Purpose, reason string, paused bool)

	mu     sync.Mutex
	pools  map[Purpose]*grantPool
	paused map[Purpose]string // purpose → reason while paused
	bg     sync.WaitGroup     // returns and renewals in flight
}

// grantPool holds one purpose's grants. Fields are guarded by
// sharedGovernor.mu; req serialises store requests of the pool.
type grantPool struct {
	req     sync.Mutex
	grants  []*grant
	waiters int
	wake    chan struct{} // closed when a call ends or a grant arrives
}

// grant is a lease of permits and concurrent slots from the store.
type grant struct {
	id       int64
	left     int // permits not yet used
	conc     int // concurrent slots
	inflight int
	used     int
	deadline time.Time // local clock: no call starts after this
	idle     *time.Timer
	stop     chan struct{} // closed when detached: ends its renewals
}

func newSharedGovernor(slots SlotStore, holder string, clk clock.Clock, sleep func(context.Context, time.Duration) error,
	log *slog.Logger, limit int, window time.Duration, concurrent, budget, batch int, ttl, skew time.Duration, prio Priorities,
	pause func(Purpose, string, bool)) *sharedGovernor {
	return &sharedGovernor{slots: slots, holder: holder, clk: clk, sleep: sleep, log: log, limit: limit, window: window,
		concurrent: concurrent, budget: budget, batch: batch, ttl: ttl, skew: skew, prio: prio, pause: pause,
		pools: map[Purpose]*grantPool{}, paused: map[Purpose]string{}}
}

func (g *sharedGovernor) pool(p Purpose) *grantPool {
	pl := g.pools[p]
	if pl == nil {
		pl = &grantPool{wake: make(chan struct{})}
		g.pools[p] = pl
	}
	return pl
}

func (pl *grantPool) signal() {
	close(pl.wake)
	pl.wake = make(chan struct{})
}

// usable returns a grant with a free permit and slot. Called with g.mu held.
func (pl *grantPool) usable(now time.Time) *grant {
	for _, gr := range pl.grants {
		if gr.left > 0 && gr.inflight < gr.conc && now.Before(gr.deadline) {
			return gr
		}
	}
	return nil
}

// acquire waits for a permit of one of p's grants, asking the store for a
// new grant when none has room. release must be called when the response
// is read.
func (g *sharedGovernor) acquire(ctx context.Context, op string, p Purpose) (func(), time.Duration, error) {
	start := g.clk.Now()
	g.mu.Lock()
	pl := g.pool(p)
	pl.waiters++
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		pl.waiters--
		g.mu.Unlock()
	}()
	for {
		g.mu.Lock()
		now := g.clk.Now()
		g.reap(pl, now)
		if gr := pl.usable(now); gr != nil {
			gr.left--
			gr.inflight++
			gr.used++
			if gr.idle != nil {
				gr.idle.Stop()
				gr.idle = nil
			}
			g.mu.Unlock()
			var once sync.Once
			return func() { once.Do(func() { g.release(pl, gr) }) }, now.Sub(start), nil
		}
		wake := pl.wake
		g.mu.Unlock()
		retry, err := g.request(ctx, op, p, pl)
		if err != nil {
			return nil, 0, err
		}
		if retry > 0 {
			t := time.NewTimer(retry)
			select {
			case <-wake:
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil, 0, ctx.Err()
			}
			t.Stop()
		}
	}
}

// reap hands back grants that are spent or past their deadline and have
// no call in flight. Called with g.mu held.
func (g *sharedGovernor) reap(pl *grantPool, now time.Time) {
	kept := pl.grants[:0]
	for _, gr := range pl.grants {
		if gr.inflight == 0 && (gr.left == 0 || !now.Before(gr.deadline)) {
			g.detach(gr)
			continue
		}
		kept = append(kept, gr)
	}
	clear(pl.grants[len(kept):])
	pl.grants = kept
}

// request asks the store for one more grant for pl. It returns how long to
// wait before asking again when the window or concurrency is full, and a
// QuotaError when p is paused for the rest of the day.
func (g *sharedGovernor) request(ctx context.Context, op string, p Purpose, pl *grantPool) (time.Duration, error) {
	pl.req.Lock()
	defer pl.req.Unlock()
	g.mu.Lock()
	now := g.clk.Now()
	if pl.usable(now) != nil { // another goroutine got one meanwhile
		g.mu.Unlock()
		return 0, nil
	}
	want := min(max(pl.waiters, 1), g.concurrent)
	g.mu.Unlock()
	l := g.prio.limitsFor(p, g.budget, g.limit)
	req := store.CallRequest{Holder: g.holder, Purpose: string(p), Day: quotaDay(now),
		Calls: max(g.batch, want), Concurrent: want, TTL: g.ttl, Hold: g.window + g.skew,
		WindowLimit: l.window, ConcurrentLimit: g.concurrent, DayLimit: l.day, GroupLimit: l.group}
	if l.group > 0 {
		req.Group = backgroundGroup
	}
	gr, err := g.slots.GrantCalls(ctx, req)
	if err != nil {
		if ctx.Err() != nil {
			return 0, &marketotype.Error{Op: op, Err: ctx.Err()}
		}
		return 0, &marketotype.Error{Op: op + ": shared governor", Err: err}
	}
	switch gr.Blocked {
	case "":
		return 0, g.take(p, pl, gr, now)
	case store.BlockedDay, store.BlockedGroup:
		// Permits this process holds idle are charged until returned:
		// near the end of the budget, hand them back and ask once more.
		if g.returnIdle(ctx) > 0 {
			if gr, err = g.slots.GrantCalls(ctx, req); err != nil {
				return 0, &marketotype.Error{Op: op + ": shared governor", Err: err}
			}
			if gr.Blocked == "" || gr.Blocked == store.BlockedWindow || gr.Blocked == store.BlockedConcurrent {
				return 0, g.take(p, pl, gr, now)
			}
		}
		reason := "the day's budget left for " + string(p)
		if gr.Blocked == store.BlockedGroup {
			reason = "the background share of the day's budget"
		}
		g.mu.Lock()
		_, was := g.paused[p]
		g.paused[p] = reason
		g.mu.Unlock()
		if !was {
			g.pause(p, reason, true)
		}
		return 0, &QuotaError{Op: op, ResetAt: NextQuotaReset(now), Local: true, Purpose: p}
	}
	// Window or concurrency full: wait until the store says (a local call
	// ending wakes us sooner), but look again within a second since other
	// processes return grants early.
	d := time.Second
	if !gr.RetryAt.IsZero() {
		d = min(d, max(gr.RetryAt.Sub(now)+g.skew/10, 5*time.Millisecond))
	}
	return d, nil
}

// take adds a granted lease to pl (a blocked answer is a no-op: the
// caller loops and asks again).
func (g *sharedGovernor) take(p Purpose, pl *grantPool, gr store.CallGrant, now time.Time) error {
	if gr.ID == 0 {
		return nil
	}
	// The lease ends at Until on the store's clock, which may be up to
	// skew ahead of ours: stop starting calls a skew early.
	ng := &grant{id: gr.ID, left: gr.Calls, conc: gr.Concurrent, deadline: now.Add(g.ttl - g.skew),
		stop: make(chan struct{})}
	g.mu.Lock()
	pl.grants = append(pl.grants, ng)
	pl.signal()
	reason, was := g.paused[p]
	delete(g.paused, p)
	g.bg.Add(1)
	g.mu.Unlock()
	if was {
		g.pause(p, reason, false)
	}
	go g.renew(ng)
	return nil
}

// returnIdle hands back, synchronously, every grant of this process with
// no call in flight, and reports how many it returned.
func (g *sharedGovernor) returnIdle(ctx context.Context) int {
	type ret struct {
		id   int64
		used int
	}
	var rets []ret
	g.mu.Lock()
	for _, pl := range g.pools {
		kept := pl.grants[:0]
		for _, gr := range pl.grants {
			if gr.inflight == 0 && gr.stop != nil {
				close(gr.stop)
				gr.stop = nil
				if gr.idle != nil {
					gr.idle.Stop()
					gr.idle = nil
				}
				rets = append(rets, ret{gr.id, gr.used})
				continue
			}
			kept = append(kept, gr)
		}
		clear(pl.grants[len(kept):])
		pl.grants = kept
	}
	g.mu.Unlock()
	for _, r := range rets {
		if err := g.slots.ReturnCalls(ctx, r.id, r.used); err != nil {
			g.log.Warn("marketo: return call grant to the shared governor (it expires on its own)", "grant", r.id, "err", err)
		}
	}
	return len(rets)
}

// release ends one call of gr.
func (g *sharedGovernor) release(pl *grantPool, gr *grant) {
	g.mu.Lock()
	defer g.mu.Unlock()
	gr.inflight--
	pl.signal()
	if gr.inflight > 0 {
		return
	}
	if gr.left == 0 || !g.clk.Now().Before(gr.deadline) {
		g.reap(pl, g.clk.Now())
		return
	}
	if pl.waiters > 0 {
		return
	}
	// Idle with permits left: keep them briefly for the next call, then
	// hand them back so other processes can use them.
	if gr.idle != nil {
		gr.idle.Stop()
	}
	gr.idle = time.AfterFunc(grantLinger, func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		if gr.inflight == 0 && gr.stop != nil && pl.waiters == 0 {
			gr.left = 0
			g.reap(pl, g.clk.Now())
		}
	})
}

// detach hands gr back to the store in the background. Called with g.mu
// held and gr idle; the caller drops it from its pool.
func (g *sharedGovernor) detach(gr *grant) {
	if gr.stop == nil {
		return
	}
	close(gr.stop)
	gr.stop = nil
	if gr.idle != nil {
		gr.idle.Stop()
		gr.idle = nil
	}
	id, used := gr.id, gr.used
	g.bg.Add(1)
	go func() {
		defer g.bg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := g.slots.ReturnCalls(ctx, id, used); err != nil {
			g.log.Warn("marketo: return call grant to the shared governor (it expires on its own)", "grant", id, "err", err)
		}
	}()
}

// renew keeps gr's lease alive until it is detached, so a call longer
// than the lease keeps its concurrent slot.
func (g *sharedGovernor) renew(gr *grant) {
	defer g.bg.Done()
	g.mu.Lock()
	stop := gr.stop
	g.mu.Unlock()
	if stop == nil {
		return
	}
	t := time.NewTicker(g.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		start := g.clk.Now()
		ctx, cancel := context.WithTimeout(context.Background(), g.ttl/3)
		ok, err := g.slots.RenewCalls(ctx, gr.id, g.ttl)
		cancel()
		g.mu.Lock()
		switch {
		case err != nil:
			g.log.Warn("marketo: renew call grant", "grant", gr.id, "err", err)
		case !ok: // gone from the store: start no more calls on it
			gr.deadline = start
		default:
			gr.deadline = start.Add(g.ttl - g.skew)
		}
		g.mu.Unlock()
	}
}

// close returns every idle grant and waits for the store calls.
func (g *sharedGovernor) close() {
	g.mu.Lock()
	for _, pl := range g.pools {
		for _, gr := range pl.grants {
			if gr.inflight == 0 {
				gr.left = 0
			}
		}
		g.reap(pl, g.clk.Now())
	}
	g.mu.Unlock()
	g.bg.Wait()
}

// usage reads the day's shared usage.
func (g *sharedGovernor) usage(ctx context.Context, day string) (store.CallUsage, error) {
	u, err := g.slots.CallUsage(ctx, day)
	if err != nil {
		return u, fmt.Errorf("marketo: read shared call usage of %s: %w", day, err)
	}
	return u, nil
}

// pausedNow lists the purposes paused for the day.
func (g *sharedGovernor) pausedNow() map[Purpose]string {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[Purpose]string, len(g.paused))
	for k, v := range g.paused {
		out[k] = v
	}
	return out
}
