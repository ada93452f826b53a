package sqlitestore

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/clock"
)

// Worker processes each lease their record locks under a name of their own;
// a new lease forgets those of processes gone for more than an hour, so the
// leases table does not grow with every restart.
func TestLockLeasesOfGoneWorkersAreForgotten(t *testing.T) {
	clk := clock.NewFake(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), "store.db"), Options{Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	count := func() int {
		var n int
		if err := s.r.QueryRow(`SELECT count(*) FROM leases WHERE name LIKE 'record-locks/%'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for _, w := range []string{"host-aaaaaa", "host-bbbbbb"} {
		if _, err := s.RenewLockLease(t.Context(), w, 15*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.AcquireLease(t.Context(), "msi-writeback", "host-aaaaaa", time.Second); err != nil {
		t.Fatal(err)
	}
	clk.Advance(30 * time.Minute)
	if _, err := s.RenewLockLease(t.Context(), "host-cccccc", 15*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 3 {
		t.Fatalf("%d lock leases after 30 minutes, want 3 (none gone for an hour yet)", n)
	}
	clk.Advance(time.Hour + time.Minute) // host-cccccc's lease ended 61 minutes ago
	if _, err := s.RenewLockLease(t.Context(), "host-dddddd", 15*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 1 {
		t.Errorf("%d lock leases after 91 minutes, want only the new one", n)
	}
	var n int
	if err := s.r.QueryRow(`SELECT count(*) FROM leases WHERE name = 'msi-writeback'`).Scan(&n); err != nil || n != 1 {
		t.Errorf("the MSI lease was touched: %d rows, err %v", n, err)
	}
}
