package syncer

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/marketo/marketotype"
)

// With CallConcurrency 3 the calls of one object's writes go to Marketo
// together (a backlog's calls start when the rate window frees, not one
// after another), and every record still gets its own call's result: the
// calls end in reverse order and one company is rejected.
func TestCallsOfOneKindGoTogetherAndResultsMapBack(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.BatchSize = 2; c.CallConcurrency = 3; c.ReceiveMax = 100 })
	var accounts []string
	evs := []*event.Event{userEv(userID, "ann@example.com")}
	for i := range 10 {
		id := fmt.Sprintf("%08x-0000-4000-8000-0000000000aa", i+1)
		accounts = append(accounts, id)
		evs = append(evs, accountEv(id, userID))
	}
	rejected := accounts[6]
	e.mk.skipCode[rejected] = "1003"
	e.send(evs...)

	// The first three company calls wait until all three are in Marketo at
	// once, then end last first; a sequential writer never gets past the
	// first of them.
	var (
		mu      sync.Mutex
		arrived int
		all     = make(chan struct{})
		ended   [4]chan struct{} // ended[n] closes when company call n (1..3) returns
		order   []int
	)
	for n := range ended {
		ended[n] = make(chan struct{})
	}
	e.mk.onSync = func(obj marketotype.Object, in []marketotype.Record) {
		if obj != marketotype.Companies {
			return
		}
		mu.Lock()
		arrived++
		n := arrived
		if n == 3 {
			close(all)
		}
		mu.Unlock()
		if n > 3 {
			return
		}
		select {
		case <-all:
		case <-time.After(10 * time.Second): // a sequential writer never sends the second call
			t.Errorf("company call %d: the other calls did not come while it was in flight", n)
			close(ended[n])
			return
		}
		// Reverse order: call 3 ends first, call 1 last.
		if n < 3 {
			<-ended[n+1]
		}
		mu.Lock()
		order = append(order, n)
		mu.Unlock()
		close(ended[n])
	}
	st := e.drain()
	if !slices.Equal(order, []int{3, 2, 1}) {
		t.Errorf("the first three company calls ended in order %v, want [3 2 1]", order)
	}
	if got := e.mk.callCount("companies sync"); got != 5 {
		t.Fatalf("%d company calls, want 5 (10 companies, 2 per call)", got)
	}
	if st.Completed != 10 || st.DeadLettered != 1 {
		t.Fatalf("stats %+v: want the user and 9 companies completed, the rejected company dead-lettered", st)
	}
	for _, id := range accounts {
		c := e.mk.companies[id]
		if id == rejected {
			if c != nil {
				t.Errorf("rejected company %s is in Marketo", id)
			}
			continue
		}
		if c == nil || c["company"] != "Acme "+id[:4] {
			t.Errorf("company %s = %v", id, c)
		}
	}
	if dl := e.q.deadLetters(); len(dl) != 1 || !strings.Contains(dl[0].Description, "1003") || !strings.Contains(dl[0].Description, rejected) {
		t.Errorf("dead letters %+v, want only company %s", dl, rejected)
	}
}
