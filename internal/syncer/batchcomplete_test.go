package syncer

import (
	"context"
	"sync"
	"testing"

	"github.com/msisync/msisync/internal/queue"
)

// batchQueue is the fake queue with queue.BatchCompleter, counting how
// completions arrive.
type batchQueue struct {
	*fakeQueue
	mu       sync.Mutex
	batches  [][]string // message ids of each CompleteAll
	singles  int        // Complete calls
	loseNext bool       // report the first delivery of the next CompleteAll as lost
}

func (q *batchQueue) Complete(ctx context.Context, d *queue.Delivery) error {
	q.mu.Lock()
	q.singles++
	q.mu.Unlock()
	return q.fakeQueue.Complete(ctx, d)
}

func (q *batchQueue) CompleteAll(ctx context.Context, ds []*queue.Delivery) []error {
	q.mu.Lock()
	ids := make([]string, len(ds))
	for i, d := range ds {
		ids[i] = d.ID
	}
	q.batches = append(q.batches, ids)
	lose := q.loseNext
	q.loseNext = false
	q.mu.Unlock()
	errs := make([]error, len(ds))
	for i, d := range ds {
		if lose && i == 0 {
			errs[i] = queue.ErrLockLost // left in the queue, as a real lost lock
			continue
		}
		errs[i] = q.fakeQueue.Complete(ctx, d)
	}
	return errs
}

// A queue that completes in batches gets a batch's completions in one call;
// dead letters still go one by one, and a completion the queue reports as
// lost leaves its message to be redelivered rather than failing the batch.
func TestBatchCompletionsGoInOneCall(t *testing.T) {
	var bq *batchQueue
	e := newEnv(t, func(c *Config) {
		bq = &batchQueue{fakeQueue: c.Queue.(*fakeQueue)}
		c.Queue = bq
	})
	e.mk.skipCode[accountID] = "1003" // the company is rejected: one dead letter
	e.send(userEv(userID, "ann@example.com"), accountEv(accountID, userID),
		userEv(gid("u", 2), "bob@example.com"), accountEv(gid("acc", 2), userID))
	bq.loseNext = true
	st, err := e.s.ProcessBatch(context.Background())
	if err != nil {
		t.Fatalf("ProcessBatch: %v (a lost completion must not fail the batch)", err)
	}
	if len(bq.batches) != 1 || len(bq.batches[0]) != 3 || bq.singles != 0 {
		t.Fatalf("completions: %d CompleteAll calls %v and %d Complete calls; want the 3 written messages in one CompleteAll", len(bq.batches), bq.batches, bq.singles)
	}
	if st.DeadLettered != 1 || len(e.q.deadLetters()) != 1 {
		t.Errorf("dead-lettered %d (queue holds %d), want the rejected company", st.DeadLettered, len(e.q.deadLetters()))
	}
	if n := e.q.pending(); n != 1 {
		t.Fatalf("%d messages left after the batch, want the one whose completion was lost", n)
	}
	e.clk.Advance(2 * e.q.lockFor()) // its lock expires: redelivered, and written again
	if st := e.drain(); st.Completed != 1 {
		t.Errorf("redelivery stats %+v, want the lost one completed", st)
	}
	if n := e.q.pending(); n != 0 {
		t.Errorf("%d messages left, want none", n)
	}
}
