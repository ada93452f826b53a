package msibench

import (
	"context"
	"testing"
)

// TestRunSmall runs the bench on 3,000 persons: the full scan reads every
// person each cycle, the incremental design a fraction of that.
func TestRunSmall(t *testing.T) {
	r, err := Run(context.Background(), Options{Persons: 3000, Hours: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(r.String())
	if r.FullScanCallsPerCycle != 10 {
		t.Errorf("full scan: %d calls per cycle, want ⌈3000/300⌉ = 10", r.FullScanCallsPerCycle)
	}
	// 30 changes per hour: 4 cycles × (2 feed pages + 1 read by id); the
	// sweep's 125 persons an hour wait for a whole call of 300.
	if r.LeadReads != 4 || r.FeedPages != 8 || r.Written != 30 {
		t.Errorf("incremental: %+v; want 4 reads by id, 8 feed pages, 30 written", r)
	}
	if r.IncrementalCallsPerDay >= r.FullScanCallsPerDay/2 {
		t.Errorf("incremental %d calls/day is not well below the full scan's %d", r.IncrementalCallsPerDay, r.FullScanCallsPerDay)
	}
}
