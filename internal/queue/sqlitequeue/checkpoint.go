package sqlitequeue

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
)

// WAL checkpoints copy committed pages from the WAL into the database file
// and fsync it. SQLite runs them automatically inside the COMMIT that crosses
// wal_autocheckpoint, which puts a multi-millisecond stall in front of every
// request waiting on that commit. Here a goroutine on another connection runs
// PASSIVE checkpoints instead (they never block the writer: WAL lets one
// writer and one checkpointer work at once), woken by the writer every few
// commits. A checkpoint that races the writer may not finish, and the WAL
// only restarts from its beginning after one that did; the writer's own
// automatic checkpoint at 10,000 pages stays as that backstop, and it then
// finds most pages already copied, so the commit that runs it pays for the
// remainder and one fsync of the database file instead of the whole copy.
// (Checkpointing on the writer whenever it found no request waiting was
// tried and dropped: at a steady 1,000 req/s the writer is "idle" after
// nearly every commit, and the checkpoint then delays the next requests.)
//
// Durability does not change: a commit is durable once its WAL frames are
// synced (synchronous=FULL), whoever checkpoints them later.

const (
	// checkpointEveryCommits and checkpointEveryMessages wake the
	// checkpointer; with ~8 KB messages 1,000 messages are ~4,000 pages of
	// the 10,000 the automatic checkpoint waits for. Queue rows are deleted
	// soon after they are written, so checkpointing much more often would
	// copy the same pages to the database file again and again.
	checkpointEveryCommits  = 256
	checkpointEveryMessages = 1000
)

type checkpointer struct {
	wake     chan struct{}
	done     chan struct{}
	stop     chan struct{}
	commits  int // since the last wake; owned by the writer
	messages int
	idleDue  bool  // the writer should checkpoint when idle; owned by the writer
	runs     int64 // checkpoints run, for tests

	mu       sync.Mutex
	prepared map[string]*sql.Stmt // owned by the writer
}

func (q *Queue) startCheckpointer() {
	q.ckpt.wake = make(chan struct{}, 1)
	q.ckpt.done = make(chan struct{})
	q.ckpt.stop = make(chan struct{})
	go q.checkpointLoop()
}

func (q *Queue) stopCheckpointer() {
	close(q.ckpt.stop)
	<-q.ckpt.done
	q.ckpt.mu.Lock()
	defer q.ckpt.mu.Unlock()
	for _, s := range q.ckpt.prepared {
		s.Close()
	}
	q.ckpt.prepared = nil
}

func (q *Queue) checkpointLoop() {
	defer close(q.ckpt.done)
	for {
		select {
		case <-q.ckpt.stop:
			return
		case <-q.ckpt.wake:
		}
		if _, err := q.db.ExecContext(context.Background(), "PRAGMA wal_checkpoint(PASSIVE)"); err != nil {
			q.log.Debug("background WAL checkpoint failed; the writer's automatic one remains", "error", err)
			continue
		}
		q.ckpt.mu.Lock()
		q.ckpt.runs++
		q.ckpt.mu.Unlock()
	}
}

// committed counts a committed batch and wakes the checkpointer when due.
// Called by the writer only.
func (q *Queue) committed(batch []*op) {
	c := &q.ckpt
	c.commits++
	for _, o := range batch {
		c.messages += o.n
	}
	if c.commits < checkpointEveryCommits && c.messages < checkpointEveryMessages {
		return
	}
	c.commits, c.messages = 0, 0
	select {
	case c.wake <- struct{}{}:
	default: // one is pending or running: it will see these pages too
	}
}

// prepared returns the writer's statement for query, prepared once.
func (q *Queue) prepared(query string) (*sql.Stmt, error) {
	q.ckpt.mu.Lock()
	defer q.ckpt.mu.Unlock()
	if s, ok := q.ckpt.prepared[query]; ok {
		return s, nil
	}
	s, err := q.db.PrepareContext(context.Background(), query)
	if err != nil {
		return nil, fmt.Errorf("prepare: %w", err)
	}
	if q.ckpt.prepared == nil {
		q.ckpt.prepared = map[string]*sql.Stmt{}
	}
	q.ckpt.prepared[query] = s
	return s, nil
}

func (q *Queue) checkpointRuns() int64 {
	q.ckpt.mu.Lock()
	defer q.ckpt.mu.Unlock()
	return q.ckpt.runs
}
