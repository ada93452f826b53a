package store

import (
	"context"
	"fmt"
	"time"
)

// CallSlots is an optional port of a store that several msisync processes
// share: it keeps Marketo's per-instance limits (calls per rolling window,
// concurrent calls, the daily quota) for all of them. A process asks for a
// grant of a few call permits and a few concurrent slots under a short
// lease, spends them locally, and returns what it used; a process that dies
// holding a grant frees its concurrency when the lease ends and its window
// share a window later. Adapters implement it with their own tables; the
// conformance suite is storetest.RunCallSlots.
type CallSlots interface {
	// GrantCalls grants between 1 and req.Calls permits (and 1..Concurrent
	// slots) when every limit of req leaves room, atomically across
	// processes; otherwise it grants nothing and says which limit blocked.
	GrantCalls(ctx context.Context, req CallRequest) (CallGrant, error)
	// RenewCalls extends a live grant's lease to now+ttl (a call may run
	// longer than the lease). It returns false when the grant is gone.
	RenewCalls(ctx context.Context, id int64, ttl time.Duration) (bool, error)
	// ReturnCalls ends a grant: used of its permits were spent (the rest go
	// back to the window and the day), its concurrent slots are freed, and
	// the used calls keep counting in the window for its hold time.
	ReturnCalls(ctx context.Context, id int64, used int) error
	// CallUsage reports the calls charged to day by purpose (live grants
	// count in full until returned) and the window and concurrency in use now.
	CallUsage(ctx context.Context, day string) (CallUsage, error)
}

// CallRequest asks for a grant. Limits of 0 mean none.
type CallRequest struct {
	Holder  string // process id, for operators
	Purpose string // what the calls are for, e.g. "sync", "msi"
	Day     string // the quota day the calls are charged to
	// Calls and Concurrent are what the process wants (each ≥ 1).
	Calls, Concurrent int
	TTL               time.Duration // lease of the grant (> 0)
	// Hold is how long a spent call keeps counting in the window after its
	// grant is returned or its lease ends: the window plus the clock skew
	// allowed between processes.
	Hold time.Duration

	WindowLimit     int // calls counting in the window, this grant included (> 0)
	ConcurrentLimit int // concurrent slots of live grants, this grant included (> 0)
	DayLimit        int // calls charged to Day, all purposes, this grant included
	GroupLimit      int // calls charged to Day by the purposes in Group
	Group           []string
}

// Blocked reasons of a CallGrant.
const (
	BlockedWindow     = "window"
	BlockedConcurrent = "concurrent"
	BlockedDay        = "day"
	BlockedGroup      = "group"
)

// CallGrant is the answer to a CallRequest. ID is 0 when nothing was granted.
type CallGrant struct {
	ID         int64
	Calls      int
	Concurrent int
	Until      time.Time // lease end, on the store's clock
	Blocked    string    // one of the Blocked constants when ID is 0
	// RetryAt is when a grant blocked by the window or concurrency may
	// succeed (store clock); zero for day and group limits.
	RetryAt time.Time
}

// CallUsage is a snapshot of the shared limits.
type CallUsage struct {
	Day       string
	ByPurpose map[string]int // calls charged to Day
	InWindow  int            // calls counting in the rolling window now
	InFlight  int            // concurrent slots held by live grants
	Grants    int            // live grants
	// Reserved is the permits of live grants, charged in ByPurpose in full
	// until they are returned with what was really used.
	Reserved int
}

// Total is the calls charged to the day, all purposes.
func (u CallUsage) Total() int {
	n := 0
	for _, v := range u.ByPurpose {
		n += v
	}
	return n
}

// Check says what is wrong with a request, for every adapter alike.
func (req CallRequest) Check() error {
	switch {
	case req.Calls < 1 || req.Concurrent < 1:
		return fmt.Errorf("Calls %d and Concurrent %d must be at least 1", req.Calls, req.Concurrent)
	case req.TTL <= 0 || req.Hold < 0:
		return fmt.Errorf("TTL %v must be positive and Hold %v not negative", req.TTL, req.Hold)
	case req.WindowLimit < 1 || req.ConcurrentLimit < 1:
		return fmt.Errorf("WindowLimit %d and ConcurrentLimit %d must be at least 1", req.WindowLimit, req.ConcurrentLimit)
	case req.Day == "":
		return fmt.Errorf("Day is required")
	}
	return nil
}

// FitCalls sizes a grant for adapters: given what counts now, the permits
// and slots req may have, or the limit that leaves no room.
func FitCalls(req CallRequest, inWindow, inFlight, day, group int) (calls, concurrent int, blocked string) {
	calls = req.Calls
	if req.DayLimit > 0 {
		if calls = min(calls, req.DayLimit-day); calls < 1 {
			return 0, 0, BlockedDay
		}
	}
	if req.GroupLimit > 0 {
		if calls = min(calls, req.GroupLimit-group); calls < 1 {
			return 0, 0, BlockedGroup
		}
	}
	if calls = min(calls, req.WindowLimit-inWindow); calls < 1 {
		return 0, 0, BlockedWindow
	}
	concurrent = min(req.Concurrent, req.ConcurrentLimit-inFlight, calls)
	if concurrent < 1 {
		return 0, 0, BlockedConcurrent
	}
	return calls, concurrent, ""
}
