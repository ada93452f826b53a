package marketo_test

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/marketo"
	"github.com/msisync/msisync/internal/marketo/marketosim"
	"github.com/msisync/msisync/internal/marketo/marketotype"
	"github.com/msisync/msisync/internal/store/sqlitestore"
)

// skewed is a wall clock off by a fixed amount, as a replica without good
// NTP would be.
type skewed time.Duration

func (s skewed) Now() time.Time { return time.Now().Add(time.Duration(s)) }

// TestSharedGovernorClockSkew: two replicas whose clocks are 1 s apart
// (0.5 s ahead and 0.5 s behind the simulator's) share one store, each
// stamping rows with its own clock; under a backlog the simulator never
// sees more than the limit in a window, and answers no 606. (With the
// margin at 1 ns it often does: the test can fail.)
func TestSharedGovernorClockSkew(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for two windows")
	}
	window := govWindow()
	sim := marketosim.New(marketosim.Options{ClientID: "gov", ClientSecret: "gov-secret",
		CallsPerWindow: govLimit, Window: window, MaxConcurrent: govConcurrent})
	srv := newServer(t, sim)
	sim.SetLatency(20 * time.Millisecond)
	path := filepath.Join(t.TempDir(), "store.db")
	ctx, cancel := context.WithTimeout(context.Background(), 2*window)
	defer cancel()
	var wg sync.WaitGroup
	var fails atomic.Int64
	for i, off := range []time.Duration{time.Second / 2, -time.Second / 2} {
		st, err := sqlitestore.Open(context.Background(), path, sqlitestore.Options{Clock: skewed(off), Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		c, err := marketo.New(marketo.Config{BaseURL: srv, ClientID: "gov", ClientSecret: "gov-secret",
			CallsPerWindow: govLimit, MaxConcurrent: govConcurrent, Window: window, Slots: st, Holder: string(rune('a' + i)),
			Clock: skewed(off), GrantTTL: govTTL, Logger: slog.New(slog.DiscardHandler), MaxRetries: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for j := 0; j < 3; j++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					if _, err := c.Describe(ctx, marketotype.Companies); err != nil && ctx.Err() == nil {
						fails.Add(1)
						t.Errorf("call: %v", err)
					}
				}
			}()
		}
	}
	wg.Wait()
	st := sim.Stats()
	log := sim.CallLog()
	maxWin := marketosim.MaxInWindow(log, window)
	t.Logf("clocks +0.5 s and -0.5 s: %d calls, max %d in any %v window (limit %d), 606=%d 615=%d", len(log), maxWin, window, govLimit,
		st.Throttled606, st.Throttled615)
	if maxWin > govLimit || st.Throttled606 != 0 || st.Throttled615 != 0 {
		t.Errorf("max %d calls in a window (limit %d), %d × 606, %d × 615", maxWin, govLimit, st.Throttled606, st.Throttled615)
	}
	if len(log) <= govLimit {
		t.Errorf("only %d calls in two windows", len(log))
	}
}

func newServer(t *testing.T, sim *marketosim.Server) string {
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	return srv.URL
}
