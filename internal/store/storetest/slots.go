package storetest

import (
	"sync"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/store"
)

// RunCallSlots is the conformance suite of the optional store.CallSlots
// port (the Marketo governor shared by processes). newStore returns a fresh
// store whose clock is clk.
func RunCallSlots(t *testing.T, newStore func(t *testing.T, clk *clock.Fake) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.CallSlots, clk *clock.Fake)
	}{
		{"WindowLimit", testSlotsWindow},
		{"ConcurrencyAndDeadHolder", testSlotsConcurrency},
		{"ReturnFreesUnused", testSlotsReturn},
		{"DayAndGroupLimits", testSlotsDay},
		{"Renew", testSlotsRenew},
		{"ConcurrentGrants", testSlotsConcurrentGrants},
		{"BadRequest", testSlotsBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := clock.NewFake(time.Date(2026, 3, 2, 15, 0, 0, 0, time.UTC))
			s := newStore(t, clk)
			cs, ok := s.(store.CallSlots)
			if !ok {
				t.Fatalf("%T does not implement store.CallSlots", s)
			}
			tc.fn(t, cs, clk)
		})
	}
}

func slotReq(calls, conc int) store.CallRequest {
	return store.CallRequest{Holder: "p1", Purpose: "sync", Day: "2026-03-02", Calls: calls, Concurrent: conc,
		TTL: 10 * time.Second, Hold: 21 * time.Second, WindowLimit: 5, ConcurrentLimit: 3}
}

func grant(t *testing.T, s store.CallSlots, req store.CallRequest) store.CallGrant {
	t.Helper()
	g, err := s.GrantCalls(ctxT(t), req)
	if err != nil {
		t.Fatalf("GrantCalls(%+v): %v", req, err)
	}
	return g
}

func usage(t *testing.T, s store.CallSlots, day string) store.CallUsage {
	t.Helper()
	u, err := s.CallUsage(ctxT(t), day)
	if err != nil {
		t.Fatalf("CallUsage(%s): %v", day, err)
	}
	return u
}

func testSlotsWindow(t *testing.T, s store.CallSlots, clk *clock.Fake) {
	g1 := grant(t, s, slotReq(3, 1))
	if g1.ID == 0 || g1.Calls != 3 || g1.Concurrent != 1 {
		t.Fatalf("first grant = %+v, want 3 calls 1 slot", g1)
	}
	if !g1.Until.Equal(clk.Now().Add(10 * time.Second)) {
		t.Errorf("Until = %v, want now+TTL %v", g1.Until, clk.Now().Add(10*time.Second))
	}
	g2 := grant(t, s, slotReq(3, 1))
	if g2.Calls != 2 {
		t.Fatalf("second grant = %+v, want the 2 left in the window", g2)
	}
	clk.Advance(time.Second)
	g3 := grant(t, s, slotReq(1, 1))
	if g3.ID != 0 || g3.Blocked != store.BlockedWindow {
		t.Fatalf("third grant = %+v, want blocked by the window", g3)
	}
	// g1 counts until its lease ends plus the hold.
	if want := g1.Until.Add(21 * time.Second); !g3.RetryAt.Equal(want) {
		t.Errorf("RetryAt = %v, want %v (g1's lease end + hold)", g3.RetryAt, want)
	}
	if u := usage(t, s, "2026-03-02"); u.InWindow != 5 || u.ByPurpose["sync"] != 5 || u.Reserved != 5 || u.Grants != 2 {
		t.Errorf("usage = %+v, want 5 in the window, 5 charged and reserved by 2 live grants", u)
	}
}

func testSlotsConcurrency(t *testing.T, s store.CallSlots, clk *clock.Fake) {
	req := slotReq(1, 3)
	req.WindowLimit = 100
	g1 := grant(t, s, req)
	if g1.Concurrent != 1 {
		t.Fatalf("grant of 1 call got %d slots, want 1 (never more slots than calls)", g1.Concurrent)
	}
	req.Calls = 10
	g2 := grant(t, s, req)
	if g2.Concurrent != 2 {
		t.Fatalf("second grant = %+v, want the 2 slots left", g2)
	}
	g3 := grant(t, s, req)
	if g3.ID != 0 || g3.Blocked != store.BlockedConcurrent || !g3.RetryAt.Equal(g1.Until) {
		t.Fatalf("third grant = %+v, want blocked by concurrency until %v", g3, g1.Until)
	}
	// The holders die: their slots come back when the leases end, not before.
	clk.Advance(10*time.Second - time.Millisecond)
	if g := grant(t, s, req); g.ID != 0 {
		t.Fatalf("grant before the leases end = %+v, want none", g)
	}
	clk.Advance(time.Millisecond)
	if g := grant(t, s, req); g.ID == 0 || g.Concurrent != 3 {
		t.Fatalf("grant after the leases end = %+v, want 3 slots", g)
	}
	// Their permits were charged in full: the store cannot know what was spent.
	if u := usage(t, s, "2026-03-02"); u.ByPurpose["sync"] != 21 {
		t.Errorf("charged %d, want 21 (1+10 dead, 10 live)", u.ByPurpose["sync"])
	}
}

func testSlotsReturn(t *testing.T, s store.CallSlots, clk *clock.Fake) {
	g := grant(t, s, slotReq(5, 2))
	if g.Calls != 5 {
		t.Fatalf("grant = %+v, want 5", g)
	}
	if err := s.ReturnCalls(ctxT(t), g.ID, 2); err != nil {
		t.Fatal(err)
	}
	g2 := grant(t, s, slotReq(5, 3))
	if g2.Calls != 3 || g2.Concurrent != 3 {
		t.Fatalf("grant after returning 3 unused = %+v, want 3 calls and 3 slots", g2)
	}
	if err := s.ReturnCalls(ctxT(t), g2.ID, 0); err != nil {
		t.Fatal(err)
	}
	// Returning twice changes nothing.
	if err := s.ReturnCalls(ctxT(t), g.ID, 0); err != nil {
		t.Fatal(err)
	}
	u := usage(t, s, "2026-03-02")
	if u.InWindow != 2 || u.InFlight != 0 || u.ByPurpose["sync"] != 2 || u.Reserved != 0 {
		t.Fatalf("usage = %+v, want 2 in the window, none in flight or reserved, 2 charged", u)
	}
	// The spent calls leave the window after the hold, and stay charged.
	clk.Advance(21*time.Second + time.Microsecond)
	u = usage(t, s, "2026-03-02")
	if u.InWindow != 0 || u.ByPurpose["sync"] != 2 {
		t.Fatalf("usage after the hold = %+v, want 0 in the window and 2 charged", u)
	}
}

func testSlotsDay(t *testing.T, s store.CallSlots, clk *clock.Fake) {
	req := slotReq(4, 1)
	req.WindowLimit, req.DayLimit = 100, 6
	req.Purpose, req.Group, req.GroupLimit = "msi", []string{"msi", "doctor"}, 3
	g := grant(t, s, req)
	if g.Calls != 3 {
		t.Fatalf("msi grant = %+v, want 3 (its group's limit)", g)
	}
	if err := s.ReturnCalls(ctxT(t), g.ID, 3); err != nil {
		t.Fatal(err)
	}
	req.Purpose = "doctor"
	if g := grant(t, s, req); g.ID != 0 || g.Blocked != store.BlockedGroup || !g.RetryAt.IsZero() {
		t.Fatalf("doctor grant = %+v, want blocked by the group limit", g)
	}
	sync := slotReq(10, 1)
	sync.WindowLimit, sync.DayLimit = 100, 6
	g = grant(t, s, sync)
	if g.Calls != 3 {
		t.Fatalf("sync grant = %+v, want the 3 left of the day", g)
	}
	if g := grant(t, s, sync); g.Blocked != store.BlockedDay {
		t.Fatalf("grant past the day limit = %+v, want blocked by the day", g)
	}
	// The next day starts at zero, and the folded usage of today stays.
	clk.Advance(time.Minute)
	sync.Day = "2026-03-03"
	if g := grant(t, s, sync); g.Calls != 6 {
		t.Fatalf("next day's grant = %+v, want 6", g)
	}
	if u := usage(t, s, "2026-03-02"); u.Total() != 6 || u.ByPurpose["msi"] != 3 || u.ByPurpose["sync"] != 3 {
		t.Fatalf("usage of the first day = %+v, want msi 3 + sync 3 (the unreturned grant in full)", u)
	}
}

func testSlotsRenew(t *testing.T, s store.CallSlots, clk *clock.Fake) {
	req := slotReq(1, 3)
	req.WindowLimit = 100
	req.Calls = 3
	g := grant(t, s, req)
	clk.Advance(8 * time.Second)
	ok, err := s.RenewCalls(ctxT(t), g.ID, 10*time.Second)
	if err != nil || !ok {
		t.Fatalf("RenewCalls = %v, %v; want true", ok, err)
	}
	clk.Advance(8 * time.Second) // past the first lease, inside the renewed one
	if g2 := grant(t, s, req); g2.ID != 0 || g2.Blocked != store.BlockedConcurrent {
		t.Fatalf("grant while the renewed lease holds the slots = %+v, want blocked", g2)
	}
	if err := s.ReturnCalls(ctxT(t), g.ID, 1); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.RenewCalls(ctxT(t), g.ID, 10*time.Second); err != nil || ok {
		t.Fatalf("RenewCalls of a returned grant = %v, %v; want false", ok, err)
	}
	if ok, err := s.RenewCalls(ctxT(t), 987654, 10*time.Second); err != nil || ok {
		t.Fatalf("RenewCalls of an unknown grant = %v, %v; want false", ok, err)
	}
}

func testSlotsConcurrentGrants(t *testing.T, s store.CallSlots, _ *clock.Fake) {
	req := slotReq(2, 1)
	req.WindowLimit, req.ConcurrentLimit = 15, 100
	var mu sync.Mutex
	total := 0
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 4; j++ {
				g, err := s.GrantCalls(ctxT(t), req)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				total += g.Calls
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if total != 15 {
		t.Fatalf("32 concurrent requests of 2 were granted %d calls in all, want exactly the window's 15", total)
	}
}

func testSlotsBadRequest(t *testing.T, s store.CallSlots, _ *clock.Fake) {
	for _, req := range []store.CallRequest{
		func() store.CallRequest { r := slotReq(0, 1); return r }(),
		func() store.CallRequest { r := slotReq(1, 1); r.TTL = 0; return r }(),
		func() store.CallRequest { r := slotReq(1, 1); r.Day = ""; return r }(),
		func() store.CallRequest { r := slotReq(1, 1); r.WindowLimit = 0; return r }(),
	} {
		if _, err := s.GrantCalls(ctxT(t), req); err == nil {
			t.Errorf("GrantCalls(%+v) = nil error, want one naming the bad field", req)
		}
	}
}
