package receiver

import (
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/msisync/msisync/internal/clock"
)

// Bounds on what a request can make the receiver write: a path or header
// value is cut to these many bytes in logs and problem bodies, so a 1 MB
// path costs a few hundred bytes of log, not a megabyte.
const (
	maxLoggedPath   = 256
	maxLoggedHeader = 128
)

// clip cuts s to at most n bytes on a rune boundary and says how much it
// left out.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…(" + strconv.Itoa(len(s)-cut) + " more bytes)"
}

// Logs of requests nobody authenticated or routed (401, 403, 404, 405) are
// rate-limited: a flood of them (a scanner, a misconfigured client) would
// otherwise write a line each. msisync_receiver_logs_suppressed_total counts
// the lines left out, and the next line written says how many.
const (
	noiseBurst = 20          // lines written at once before the limit bites
	noiseEvery = time.Second // then one line per this interval
)

// noiseLimiter is a token bucket on the clock.
type noiseLimiter struct {
	clk        clock.Clock
	mu         sync.Mutex
	tokens     float64
	last       time.Time
	suppressed int
}

func newNoiseLimiter(clk clock.Clock) *noiseLimiter {
	return &noiseLimiter{clk: clk, tokens: noiseBurst, last: clk.Now()}
}

// allow reports whether to write a line now, and how many were suppressed
// since the last line written.
func (l *noiseLimiter) allow() (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.clk.Now()
	if d := now.Sub(l.last); d > 0 {
		l.tokens = min(noiseBurst, l.tokens+float64(d)/float64(noiseEvery))
		l.last = now
	}
	if l.tokens < 1 {
		l.suppressed++
		return false, 0
	}
	l.tokens--
	n := l.suppressed
	l.suppressed = 0
	return true, n
}

// noisy reports whether a response status is of a request nobody
// authenticated or routed.
func noisy(status int) bool {
	switch status {
	case 401, 403, 404, 405:
		return true
	}
	return false
}
