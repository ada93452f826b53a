package sqlitequeue

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// op is one write request for the writer goroutine. run executes inside a
// transaction shared with other requests; it returns an error only for a
// database failure (domain outcomes such as a lost lock are captured by the
// closure), and it may run twice: once in a group, once alone if the group
// failed.
type op struct {
	run     func(w *wtx) error
	send    bool // sends wait CommitWindow for company; settlements do not
	durable bool // stores messages: commit with synchronous=FULL
	// settleAlways: once queued, wait for the outcome even if ctx ends
	// (claims, whose results must reach the caller).
	settleAlways bool
	n            int  // messages, for the batch cap
	wake         bool // may make messages visible: wake waiting receivers after commit
	done         chan error
}

// wtx is the writer's transaction. Its statements are prepared once per
// queue (prepared) and bound to each transaction, so a commit does not pay
// for parsing SQL again.
type wtx struct {
	tx    *sql.Tx
	now   time.Time
	q     *Queue
	stmts map[string]*sql.Stmt
}

func (w *wtx) stmt(query string) (*sql.Stmt, error) {
	if s, ok := w.stmts[query]; ok {
		return s, nil
	}
	parent, err := w.q.prepared(query)
	if err != nil {
		return nil, err
	}
	// The statement is prepared on the pool; database/sql keeps one
	// preparation per connection, so on the writer's connection this
	// re-prepares only the first time.
	s := w.tx.Stmt(parent)
	w.stmts[query] = s
	return s, nil
}

func (w *wtx) exec(query string, args ...any) (sql.Result, error) {
	s, err := w.stmt(query)
	if err != nil {
		return nil, err
	}
	return s.Exec(args...)
}

func (w *wtx) query(query string, args ...any) (*sql.Rows, error) {
	s, err := w.stmt(query)
	if err != nil {
		return nil, err
	}
	return s.Query(args...)
}

func (w *wtx) queryRow(query string, args ...any) *sql.Row {
	s, err := w.stmt(query)
	if err != nil {
		// Row carries no error of its own; a failing QueryRow on the tx
		// reports the same preparation error through Scan.
		return w.tx.QueryRow(query, args...)
	}
	return s.QueryRow(args...)
}

// submit hands o to the writer and waits for its commit. If ctx ends first
// the write may still happen (the caller cannot know), as with any network
// queue.
func (q *Queue) submit(ctx context.Context, o *op) error {
	q.mu.RLock()
	if q.closed {
		q.mu.RUnlock()
		return ErrClosed
	}
	q.inflight.Add(1)
	q.mu.RUnlock()
	defer q.inflight.Done()

	o.done = make(chan error, 1)
	select {
	case q.ops <- o:
	case <-ctx.Done():
		return ctx.Err()
	}
	if o.settleAlways {
		return <-o.done // bounded by one transaction and the busy timeout
	}
	select {
	case err := <-o.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// writer is the single goroutine that writes: it gathers waiting requests
// into one transaction so that N concurrent sends cost one fsync.
func (q *Queue) writer() {
	defer close(q.writerDone)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for first := range q.ops {
		batch := []*op{first}
		n := first.n
		var deadline time.Time
		if first.send && q.opts.CommitWindow > 0 {
			deadline = time.Now().Add(q.opts.CommitWindow)
		}
	collect:
		for n < maxBatchMessages && len(batch) < maxBatchOps {
			select {
			case o, ok := <-q.ops:
				if !ok {
					break collect
				}
				batch, n = append(batch, o), n+o.n
				continue
			default:
			}
			// Linger while sends keep arriving: stop at the first quiet gap
			// or at the window's end, whichever comes first.
			wait := min(time.Until(deadline), q.opts.CommitWindow/10)
			if wait <= 0 {
				break
			}
			timer.Reset(wait)
			select {
			case o, ok := <-q.ops:
				timer.Stop()
				if !ok {
					break collect
				}
				batch, n = append(batch, o), n+o.n
			case <-timer.C:
				break collect
			}
		}
		q.commit(batch)
	}
}

func (q *Queue) commit(batch []*op) {
	err := q.runTx(batch)
	if err != nil && len(batch) > 1 {
		// One bad request must not fail its neighbours: retry each alone.
		q.log.Warn("group commit failed; retrying requests one by one", "requests", len(batch), "error", err)
		for _, o := range batch {
			err := q.runTx([]*op{o})
			if err == nil && o.wake {
				q.wake()
			}
			o.done <- err
		}
		return
	}
	wake := false
	for _, o := range batch {
		wake = wake || o.wake
		o.done <- err
	}
	if err == nil && wake {
		q.wake()
	}
}

func (q *Queue) runTx(batch []*op) (err error) {
	ctx := context.Background() // the batch serves many callers; none may cancel it
	durable := false
	for _, o := range batch {
		durable = durable || o.durable
	}
	if durable != q.syncFull {
		mode := "NORMAL"
		if durable {
			mode = "FULL"
		}
		if _, err := q.wconn.ExecContext(ctx, "PRAGMA synchronous = "+mode); err != nil {
			return fmt.Errorf("set synchronous %s: %w", mode, err)
		}
		q.syncFull = durable
	}
	tx, err := q.wconn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	w := &wtx{tx: tx, now: q.opts.Clock.Now(), q: q, stmts: map[string]*sql.Stmt{}}
	for _, o := range batch {
		if err := o.run(w); err != nil {
			return err
		}
	}
	if !w.now.Before(q.nextPrune) {
		if _, err := w.exec(`DELETE FROM seen_ids WHERE expires_at <= ?`, nanos(w.now)); err != nil {
			return fmt.Errorf("prune seen ids: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	q.commits.Add(1)
	q.committed(batch)
	if !w.now.Before(q.nextPrune) {
		q.nextPrune = w.now.Add(min(q.opts.DuplicateWindow/2, time.Minute))
	}
	return nil
}
