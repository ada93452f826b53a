package marketo

import (
	"context"
	"math"
	"net/http"
	"strings"
)

// Purpose says what a Marketo call is for. The daily quota is shared out by
// purpose: sync writes come first, background readers get a share.
type Purpose string

// The purposes, in the order the governor pauses them as the day's budget
// runs out (the last is paused last).
const (
	PurposeMSI      Purpose = "msi"      // MSI write-back reads (background)
	PurposeBackfill Purpose = "backfill" // backfill and reconcile (background)
	PurposeDoctor   Purpose = "doctor"   // doctor and instance checks (background)
	PurposeLookup   Purpose = "lookup"   // the syncer's dependency lookups
	PurposeSync     Purpose = "sync"     // sync writes and deletes
)

// Purposes lists every purpose.
var Purposes = []Purpose{PurposeSync, PurposeLookup, PurposeMSI, PurposeBackfill, PurposeDoctor}

// Background reports whether p is a background reader that shares
// Config.BackgroundShare of the daily quota and yields the window.
func (p Purpose) Background() bool {
	return p == PurposeMSI || p == PurposeBackfill || p == PurposeDoctor
}

func (p Purpose) valid() bool {
	for _, q := range Purposes {
		if p == q {
			return true
		}
	}
	return false
}

// backgroundGroup are the purposes charged to the background share.
var backgroundGroup = []string{string(PurposeMSI), string(PurposeBackfill), string(PurposeDoctor)}

type purposeKey struct{}

// WithPurpose returns a context whose Marketo calls are charged to p. The
// syncer sets none: its queries count as lookups and its writes as sync.
func WithPurpose(ctx context.Context, p Purpose) context.Context {
	return context.WithValue(ctx, purposeKey{}, p)
}

// PurposeOf is the purpose set on ctx, if any.
func PurposeOf(ctx context.Context) (Purpose, bool) {
	p, ok := ctx.Value(purposeKey{}).(Purpose)
	return p, ok && p.valid()
}

// purposeOf is the purpose a call is charged to: the context's, else a
// read is a lookup and a write a sync write.
func purposeOf(ctx context.Context, k call) Purpose {
	if p, ok := PurposeOf(ctx); ok {
		return p
	}
	if k.method == http.MethodGet || strings.HasPrefix(k.endpoint, "query") || strings.HasPrefix(k.endpoint, "describe") {
		return PurposeLookup
	}
	return PurposeSync
}

// Priorities are the budget rules: how much of the day and of the window
// each purpose may use. The zero value means the defaults.
type Priorities struct {
	// BackgroundShare is the fraction of the daily budget the background
	// readers (MSI, backfill, doctor) may use together; default 0.2.
	BackgroundShare float64
	// Reserve is the fraction at the end of the day only sync writes may
	// spend; default 0.05. Lookups, backfill and doctor stop at 1-Reserve,
	// the MSI write-back at 1-2×Reserve, so it pauses first.
	Reserve float64
	// WindowHeadroom is the fraction of the rolling window background
	// readers leave to sync writes and lookups; default 0.25.
	WindowHeadroom float64
}

func (p *Priorities) defaults() {
	if p.BackgroundShare <= 0 {
		p.BackgroundShare = 0.2
	}
	if p.Reserve <= 0 {
		p.Reserve = 0.05
	}
	if p.WindowHeadroom <= 0 {
		p.WindowHeadroom = 0.25
	}
}

// limits are the budget limits of one purpose; 0 = none.
type limits struct {
	day, group, window int
}

// limitsFor applies the priorities to a daily budget (0 = unlimited) and a
// window limit.
func (p Priorities) limitsFor(pur Purpose, budget, window int) limits {
	l := limits{window: window}
	if pur.Background() {
		l.window = max(1, window-int(float64(window)*p.WindowHeadroom))
	}
	if budget <= 0 {
		return l
	}
	// Rounded up, so a tiny test budget still lets each purpose call.
	frac := func(f float64) int { return max(1, int(math.Ceil(float64(budget)*f-1e-9))) }
	switch pur {
	case PurposeSync:
		l.day = budget
	case PurposeMSI:
		l.day = frac(1 - 2*p.Reserve)
		l.group = frac(p.BackgroundShare)
	case PurposeBackfill, PurposeDoctor:
		l.day = frac(1 - p.Reserve)
		l.group = frac(p.BackgroundShare)
	default:
		l.day = frac(1 - p.Reserve)
	}
	return l
}
