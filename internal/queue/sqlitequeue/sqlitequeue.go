// Package sqlitequeue is msisync's default, embedded durable queue: one SQLite
// file (pure-Go driver, no cgo) with Service Bus semantics — peek-lock with
// renewal, delivery counts, dead-lettering, scheduled messages and duplicate
// detection by message id.
//
// Durability: the database runs in WAL mode. Every transaction that stores
// a message (Send, ReplayDead) commits with synchronous=FULL, so Send returns
// only after the WAL is fsynced: an acknowledged message survives a SIGKILL
// and a power loss. Transactions that only claim or settle messages commit
// with synchronous=NORMAL (no fsync): a power cut may undo the latest
// completions, which redelivers those messages — within the at-least-once
// contract — while the next FULL commit makes all earlier WAL frames durable.
// To keep fsyncs affordable every write goes through one writer goroutine
// that commits whatever requests are waiting in a single transaction (group
// commit).
//
// Several processes may share one file (a receiver and a worker started
// separately): SQLite's file locks serialise their writers (BEGIN IMMEDIATE
// with a busy timeout), and a receiver polls for messages another process
// sent.
package sqlitequeue

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/queue"
)

// Defaults, chosen to match Service Bus.
const (
	DefaultLockDuration     = 60 * time.Second
	DefaultMaxDeliveryCount = 10
	DefaultDuplicateWindow  = 10 * time.Minute
	DefaultMaxMessageBytes  = 1 << 20
	DefaultPollInterval     = 100 * time.Millisecond
	DefaultBusyTimeout      = 10 * time.Second
	// DefaultCommitWindow is no window: the writer commits at once whatever
	// has queued up, and what arrives during that commit's fsync is the next
	// group, so a batch grows with the load and a lone send waits for no one.
	DefaultCommitWindow = 0

	// maxIDLength is Service Bus' MessageId limit; the same limit here keeps
	// the adapters interchangeable.
	maxIDLength = 128
	// maxBatchMessages caps one group-commit transaction.
	maxBatchMessages = 2000
	maxBatchOps      = 2000
)

// Options configure Open. Zero values take the defaults.
type Options struct {
	LockDuration     time.Duration // default 60 s
	MaxDeliveryCount int           // default 10
	DuplicateWindow  time.Duration // default 10 min
	MaxMessageBytes  int           // default 1 MiB (id + body + properties)
	Clock            clock.Clock   // default clock.System
	Logger           *slog.Logger  // default discards
	// PollInterval is how often a waiting Receive looks for messages sent by
	// other processes (same-process sends wake it at once). Default 100 ms.
	PollInterval time.Duration
	// CommitWindow, when positive, makes the writer linger for more sends
	// before committing; it stops earlier at the first quiet gap of
	// CommitWindow/10. Default (0) and negative: no lingering; every request
	// that queued up while the previous commit was in flight goes into the
	// next transaction, so the group grows with the load without a fixed
	// delay (a fixed window only adds latency once commits are back to back).
	CommitWindow time.Duration
	// BusyTimeout is how long a write waits for another process' lock.
	// Default 10 s.
	BusyTimeout time.Duration
}

func (o Options) withDefaults() (Options, error) {
	checks := []struct {
		name string
		bad  bool
	}{
		{"LockDuration", o.LockDuration < 0},
		{"MaxDeliveryCount", o.MaxDeliveryCount < 0},
		{"DuplicateWindow", o.DuplicateWindow < 0},
		{"MaxMessageBytes", o.MaxMessageBytes < 0},
		{"PollInterval", o.PollInterval < 0},
		{"BusyTimeout", o.BusyTimeout < 0},
	}
	for _, c := range checks {
		if c.bad {
			return o, fmt.Errorf("sqlitequeue: option %s must not be negative", c.name)
		}
	}
	if o.LockDuration == 0 {
		o.LockDuration = DefaultLockDuration
	}
	if o.MaxDeliveryCount == 0 {
		o.MaxDeliveryCount = DefaultMaxDeliveryCount
	}
	if o.DuplicateWindow == 0 {
		o.DuplicateWindow = DefaultDuplicateWindow
	}
	if o.MaxMessageBytes == 0 {
		o.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if o.PollInterval == 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.BusyTimeout == 0 {
		o.BusyTimeout = DefaultBusyTimeout
	}
	if o.Clock == nil {
		o.Clock = clock.System{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o, nil
}

// ErrClosed is returned by calls on a closed Queue.
var ErrClosed = errors.New("sqlitequeue: queue is closed")

// Queue is the embedded queue. It is safe for concurrent use.
type Queue struct {
	db   *sql.DB
	path string
	opts Options
	log  *slog.Logger

	ops        chan *op
	closing    chan struct{}
	writerDone chan struct{}
	mu         sync.RWMutex // guards closed against inflight.Add
	closed     bool
	inflight   sync.WaitGroup

	sigMu sync.Mutex
	sig   chan struct{} // closed and replaced when messages may have become visible

	wconn     *sql.Conn    // the writer's connection
	syncFull  bool         // current PRAGMA synchronous of wconn; owned by the writer
	nextPrune time.Time    // owned by the writer goroutine
	commits   atomic.Int64 // transactions committed, for benchmarks

	ckpt checkpointer // WAL checkpoints, off the commit path (checkpoint.go)
}

var _ queue.Queue = (*Queue)(nil)

// schemaVersion is PRAGMA user_version of the current schema. Version 1
// kept the body in the messages row; version 2 moved it to bodies.
const schemaVersion = 2

// schema is the current schema, created on a new file. The body lives in its
// own table, written once by Send and deleted with the message: a claim,
// renewal or abandon rewrites only the small messages row, where with the
// body in that row each of them copied the whole body into the WAL again.
const schema = `
CREATE TABLE IF NOT EXISTS messages (
	seq            INTEGER PRIMARY KEY AUTOINCREMENT,
	id             TEXT    NOT NULL,
	props          TEXT    NOT NULL,
	entity         TEXT    NOT NULL,
	enqueued_at    INTEGER NOT NULL,
	visible_at     INTEGER NOT NULL, -- due time, or lock expiry while locked
	delivery_count INTEGER NOT NULL DEFAULT 0,
	lock_token     TEXT
);
CREATE INDEX IF NOT EXISTS messages_visible ON messages (visible_at, seq);
CREATE TABLE IF NOT EXISTS bodies (
	seq  INTEGER PRIMARY KEY, -- messages.seq
	body BLOB    NOT NULL
);
` + seenAndDeadSchema + `
PRAGMA user_version = 2;
`

// seenAndDeadSchema is the same in versions 1 and 2.
const seenAndDeadSchema = `
CREATE TABLE IF NOT EXISTS seen_ids (
	id         TEXT PRIMARY KEY,
	expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_ids_expiry ON seen_ids (expires_at);
CREATE TABLE IF NOT EXISTS dead (
	seq              INTEGER PRIMARY KEY AUTOINCREMENT,
	message_id       TEXT    NOT NULL,
	body             BLOB    NOT NULL,
	props            TEXT    NOT NULL,
	entity           TEXT    NOT NULL,
	reason           TEXT    NOT NULL,
	description      TEXT    NOT NULL,
	delivery_count   INTEGER NOT NULL,
	enqueued_at      INTEGER NOT NULL,
	first_failure_at INTEGER NOT NULL,
	dead_lettered_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_entity ON dead (entity);
`

// migrateV1 moves the bodies of a version-1 file out of its messages rows.
// It runs in the same transaction as the version check, so a crash leaves
// the file at version 1 or 2, never between. DROP COLUMN keeps the table
// (and its AUTOINCREMENT counter), so sequence numbers are never reused.
const migrateV1 = `
CREATE TABLE bodies (
	seq  INTEGER PRIMARY KEY,
	body BLOB    NOT NULL
);
INSERT INTO bodies (seq, body) SELECT seq, body FROM messages;
ALTER TABLE messages DROP COLUMN body;
PRAGMA user_version = 2;
`

// migrateHook, when set by a test, runs inside the migration's transaction
// just before it commits.
var migrateHook func()

// Open opens (creating if needed) the queue database at path.
func Open(ctx context.Context, path string, opts Options) (*Queue, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if path == "" {
		return nil, errors.New("sqlitequeue: open: path is empty")
	}
	if strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("sqlitequeue: open %q: path must not contain '?' or '#'", path)
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("sqlitequeue: open %q: %w", path, err)
		}
	}
	// Event data is personal data: the file is created 0600 whatever the
	// folder's mode, and SQLite gives its -wal and -shm files the same mode.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sqlitequeue: open %q: %w", path, err)
	}
	f.Close()
	// Writes begin IMMEDIATE so that a claim never upgrades a read lock and
	// fails with SQLITE_BUSY halfway; the busy timeout covers other processes.
	dsn := fmt.Sprintf("%s?_busy_timeout=%d&_journal_mode=WAL&_synchronous=FULL&_txlock=immediate",
		path, opts.BusyTimeout.Milliseconds())
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlitequeue: open %q: %w", path, err)
	}
	db.SetMaxOpenConns(5) // the writer's own connection plus readers
	db.SetMaxIdleConns(5)
	if err := initSchema(ctx, db); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlitequeue: open %q: %w", path, err)
	}
	q := &Queue{
		db:         db,
		path:       path,
		opts:       opts,
		log:        opts.Logger.With("queue", path),
		ops:        make(chan *op, 4096),
		closing:    make(chan struct{}),
		writerDone: make(chan struct{}),
		sig:        make(chan struct{}),
		syncFull:   true, // as the DSN sets it
	}
	// The writer keeps one connection so it can switch PRAGMA synchronous
	// per transaction.
	if q.wconn, err = db.Conn(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlitequeue: open %q: %w", path, err)
	}
	// Checkpoint the WAL every ~40 MB instead of every 4 MB: queue rows are
	// written and deleted soon after, so a larger interval copies each page
	// to the database file once instead of many times, and the commit path
	// (which runs the automatic checkpoint) pays for it 10× less often. The
	// WAL stays bounded: a checkpoint still runs at that size.
	if _, err := q.wconn.ExecContext(ctx, "PRAGMA wal_autocheckpoint = 10000"); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlitequeue: open %q: set wal_autocheckpoint: %w", path, err)
	}
	q.startCheckpointer()
	go q.writer()
	return q, nil
}

func initSchema(ctx context.Context, db *sql.DB) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("create schema: %w", err)
	}
	defer tx.Rollback()
	var version int
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if version > schemaVersion {
		return fmt.Errorf("schema version %d is newer than this msisync supports (%d): upgrade msisync", version, schemaVersion)
	}
	switch version {
	case 1:
		if _, err := tx.ExecContext(ctx, migrateV1); err != nil {
			return fmt.Errorf("migrate schema from version 1 to %d: %w", schemaVersion, err)
		}
		if migrateHook != nil {
			migrateHook()
		}
	case 0, schemaVersion:
		if _, err := tx.ExecContext(ctx, schema); err != nil {
			return fmt.Errorf("create schema: %w", err)
		}
	default:
		return fmt.Errorf("schema version %d is unknown to this msisync", version)
	}
	return tx.Commit()
}

// MaxMessageBytes is the largest id+body+properties Send accepts.
func (q *Queue) MaxMessageBytes() int { return q.opts.MaxMessageBytes }

// Ping checks that the database answers.
func (q *Queue) Ping(ctx context.Context) error {
	var n int
	if err := q.db.QueryRowContext(ctx, "SELECT count(*) FROM messages WHERE seq < 0").Scan(&n); err != nil {
		return fmt.Errorf("sqlitequeue: ping %q: %w", q.path, err)
	}
	return nil
}

// Close stops the writer after the requests in flight and closes the
// database. Calls after Close return ErrClosed.
func (q *Queue) Close() error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil
	}
	q.closed = true
	close(q.closing)
	q.mu.Unlock()
	q.inflight.Wait()
	close(q.ops)
	<-q.writerDone
	q.stopCheckpointer()
	q.wconn.Close()
	if err := q.db.Close(); err != nil {
		return fmt.Errorf("sqlitequeue: close %q: %w", q.path, err)
	}
	return nil
}

// signal returns a channel closed the next time messages may have become
// visible in this process.
func (q *Queue) signal() <-chan struct{} {
	q.sigMu.Lock()
	defer q.sigMu.Unlock()
	return q.sig
}

func (q *Queue) wake() {
	q.sigMu.Lock()
	close(q.sig)
	q.sig = make(chan struct{})
	q.sigMu.Unlock()
}

// row is a message row as stored.
type row struct {
	seq           int64
	id            string
	body          []byte
	props         string
	enqueuedAt    int64
	deliveryCount int
}

func (r row) properties() map[string]string { return decodeProps(r.props) }

func encodeProps(p map[string]string) (string, error) {
	if len(p) == 0 {
		return "{}", nil
	}
	b, err := json.Marshal(p)
	return string(b), err
}

func decodeProps(s string) map[string]string {
	var p map[string]string
	if err := json.Unmarshal([]byte(s), &p); err != nil || len(p) == 0 {
		return nil
	}
	return p
}

func nanos(t time.Time) int64 { return t.UnixNano() }

func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

type pending struct {
	msg   queue.Message
	props string
}

// Send enqueues msgs atomically and returns once they are durable. A message
// whose id was sent within the duplicate window is dropped silently.
func (q *Queue) Send(ctx context.Context, msgs ...queue.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	rows := make([]pending, len(msgs))
	for i, m := range msgs {
		if m.ID == "" {
			return fmt.Errorf("sqlitequeue: send message %d: ID is empty", i)
		}
		if len(m.ID) > maxIDLength {
			return fmt.Errorf("sqlitequeue: send message %d: ID is %d characters, limit is %d", i, len(m.ID), maxIDLength)
		}
		if size := m.Size(); size > q.opts.MaxMessageBytes {
			return fmt.Errorf("sqlitequeue: send message %q: %d bytes, limit is %d: %w", m.ID, size, q.opts.MaxMessageBytes, queue.ErrTooLarge)
		}
		p, err := encodeProps(m.Properties)
		if err != nil {
			return fmt.Errorf("sqlitequeue: send message %q: encode properties: %w", m.ID, err)
		}
		rows[i] = pending{msg: m, props: p}
	}
	o := &op{send: true, durable: true, n: len(rows), wake: true, run: func(w *wtx) error { return q.insert(w, rows) }}
	if err := q.submit(ctx, o); err != nil {
		return fmt.Errorf("sqlitequeue: send %d messages (first %q): %w", len(msgs), msgs[0].ID, err)
	}
	return nil
}

func (q *Queue) insert(w *wtx, rows []pending) error {
	now := nanos(w.now)
	expires := nanos(w.now.Add(q.opts.DuplicateWindow))
	for _, r := range rows {
		// The upsert changes nothing when the id is still inside its window:
		// that is a duplicate, dropped as Service Bus drops it.
		res, err := w.exec(`INSERT INTO seen_ids (id, expires_at) VALUES (?, ?)
			ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at WHERE seen_ids.expires_at <= ?`,
			r.msg.ID, expires, now)
		if err != nil {
			return fmt.Errorf("record id %q: %w", r.msg.ID, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("record id %q: %w", r.msg.ID, err)
		} else if n == 0 {
			q.log.Debug("duplicate message dropped", "id", r.msg.ID)
			continue
		}
		visible := now
		if r.msg.ScheduledAt.After(w.now) {
			visible = nanos(r.msg.ScheduledAt)
		}
		body := r.msg.Body
		if body == nil {
			body = []byte{}
		}
		if _, err := w.exec(`INSERT INTO messages (id, props, entity, enqueued_at, visible_at) VALUES (?, ?, ?, ?, ?)`,
			r.msg.ID, r.props, r.msg.Properties[queue.PropEntity], now, visible); err != nil {
			return fmt.Errorf("insert message %q: %w", r.msg.ID, err)
		}
		if _, err := w.exec(`INSERT INTO bodies (seq, body) VALUES (last_insert_rowid(), ?)`, body); err != nil {
			return fmt.Errorf("insert body of message %q: %w", r.msg.ID, err)
		}
	}
	return nil
}

// Receive waits up to maxWait for messages and returns up to max of them,
// each locked for LockDuration.
func (q *Queue) Receive(ctx context.Context, max int, maxWait time.Duration) ([]*queue.Delivery, error) {
	if max < 1 {
		return nil, fmt.Errorf("sqlitequeue: receive: max must be at least 1, got %d", max)
	}
	deadline := time.NewTimer(max0(maxWait))
	defer deadline.Stop()
	poll := time.NewTicker(q.opts.PollInterval)
	defer poll.Stop()
	for {
		sig := q.signal() // taken before looking, so a send in between still wakes us
		ds, err := q.tryClaim(ctx, max)
		if err != nil || len(ds) > 0 {
			return ds, err
		}
		if maxWait <= 0 {
			return nil, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("sqlitequeue: receive: %w", ctx.Err())
		case <-q.closing:
			return nil, ErrClosed
		case <-deadline.C:
			return nil, nil
		case <-sig:
		case <-poll.C:
		}
	}
}

func max0(d time.Duration) time.Duration {
	if d < 0 {
		return 0
	}
	return d
}

// tryClaim locks up to max due messages. A read-only look first keeps idle
// polling from taking the write lock.
func (q *Queue) tryClaim(ctx context.Context, max int) ([]*queue.Delivery, error) {
	var due bool
	err := q.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM messages WHERE visible_at <= ?)`,
		nanos(q.opts.Clock.Now())).Scan(&due)
	if err != nil {
		return nil, fmt.Errorf("sqlitequeue: receive: %w", err)
	}
	if !due {
		return nil, nil
	}
	var out []*queue.Delivery
	o := &op{settleAlways: true, run: func(w *wtx) error {
		out = nil
		if ctx.Err() != nil {
			return nil // the caller left: lock nothing it would never see
		}
		var err error
		out, err = q.claim(w, max)
		return err
	}}
	if err := q.submit(ctx, o); err != nil {
		return nil, fmt.Errorf("sqlitequeue: receive: %w", err)
	}
	// Locked messages are returned even if ctx ended meanwhile, as Service
	// Bus does, rather than left locked with nobody holding them.
	return out, nil
}

func (q *Queue) claim(w *wtx, max int) ([]*queue.Delivery, error) {
	rows, err := w.query(`SELECT m.seq, m.id, b.body, m.props, m.enqueued_at, m.delivery_count
		FROM messages m JOIN bodies b ON b.seq = m.seq
		WHERE m.visible_at <= ? ORDER BY m.visible_at, m.seq LIMIT ?`, nanos(w.now), max)
	if err != nil {
		return nil, fmt.Errorf("select due messages: %w", err)
	}
	var due []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.seq, &r.id, &r.body, &r.props, &r.enqueuedAt, &r.deliveryCount); err != nil {
			rows.Close()
			return nil, fmt.Errorf("scan message: %w", err)
		}
		due = append(due, r)
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	lockedUntil := w.now.Add(q.opts.LockDuration)
	out := make([]*queue.Delivery, 0, len(due))
	for _, r := range due {
		if r.deliveryCount >= q.opts.MaxDeliveryCount {
			// Its last lock expired: the consumer died on the final attempt.
			desc := fmt.Sprintf("lock expired on delivery %d of %d", r.deliveryCount, q.opts.MaxDeliveryCount)
			if err := q.moveToDead(w, r, queue.ReasonMaxDelivery, desc); err != nil {
				return nil, err
			}
			continue
		}
		token := uuid.NewString()
		if _, err := w.exec(`UPDATE messages SET delivery_count = delivery_count + 1, lock_token = ?, visible_at = ? WHERE seq = ?`,
			token, nanos(lockedUntil), r.seq); err != nil {
			return nil, fmt.Errorf("lock message %q: %w", r.id, err)
		}
		out = append(out, &queue.Delivery{
			Message: queue.Message{
				ID:         r.id,
				Body:       r.body,
				Properties: r.properties(),
			},
			DeliveryCount:  r.deliveryCount + 1,
			EnqueuedAt:     fromNanos(r.enqueuedAt),
			LockedUntil:    lockedUntil,
			LockToken:      token,
			SequenceNumber: r.seq,
		})
	}
	return out, nil
}

// lockedRow returns d's row if d still holds its lock.
func (q *Queue) lockedRow(w *wtx, d *queue.Delivery) (row, bool, error) {
	r := row{seq: d.SequenceNumber}
	err := w.queryRow(`SELECT id, props, enqueued_at, delivery_count FROM messages
		WHERE seq = ? AND lock_token = ? AND visible_at > ?`, d.SequenceNumber, d.LockToken, nanos(w.now)).
		Scan(&r.id, &r.props, &r.enqueuedAt, &r.deliveryCount)
	if errors.Is(err, sql.ErrNoRows) {
		return r, false, nil
	}
	if err != nil {
		return r, false, fmt.Errorf("select locked message %q: %w", d.ID, err)
	}
	return r, true, nil
}

func (q *Queue) moveToDead(w *wtx, r row, reason, desc string) error {
	first := fromNanos(r.enqueuedAt)
	if s := r.properties()[queue.PropFirstFailedAt]; s != "" {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			first = t
		}
	}
	// INSERT … SELECT copies the body inside SQLite, not through Go.
	if _, err := w.exec(`INSERT INTO dead (message_id, body, props, entity, reason, description, delivery_count,
		enqueued_at, first_failure_at, dead_lettered_at)
		SELECT m.id, b.body, m.props, m.entity, ?, ?, m.delivery_count, m.enqueued_at, ?, ?
		FROM messages m JOIN bodies b ON b.seq = m.seq WHERE m.seq = ?`,
		reason, desc, nanos(first), nanos(w.now), r.seq); err != nil {
		return fmt.Errorf("dead-letter message %q: %w", r.id, err)
	}
	if err := q.delete(w, r.seq); err != nil {
		return fmt.Errorf("dead-letter message %q: %w", r.id, err)
	}
	q.log.Info("message dead-lettered", "id", r.id, "reason", reason, "deliveryCount", r.deliveryCount)
	return nil
}

// settle runs fn on d's row inside the writer if d still holds its lock,
// and returns queue.ErrLockLost otherwise.
func (q *Queue) settle(ctx context.Context, what string, d *queue.Delivery, wake bool, fn func(w *wtx, r row) error) error {
	if d == nil {
		return fmt.Errorf("sqlitequeue: %s: delivery is nil", what)
	}
	var lost bool
	o := &op{wake: wake, run: func(w *wtx) error {
		r, ok, err := q.lockedRow(w, d)
		lost = !ok
		if err != nil || !ok {
			return err
		}
		return fn(w, r)
	}}
	if err := q.submit(ctx, o); err != nil {
		return fmt.Errorf("sqlitequeue: %s message %q: %w", what, d.ID, err)
	}
	if lost {
		return fmt.Errorf("sqlitequeue: %s message %q: %w", what, d.ID, queue.ErrLockLost)
	}
	return nil
}

// Renew extends d's lock by LockDuration from now and updates d.LockedUntil.
func (q *Queue) Renew(ctx context.Context, d *queue.Delivery) error {
	var until time.Time
	err := q.settle(ctx, "renew lock of", d, false, func(w *wtx, r row) error {
		until = w.now.Add(q.opts.LockDuration)
		_, err := w.exec(`UPDATE messages SET visible_at = ? WHERE seq = ?`, nanos(until), r.seq)
		return err
	})
	if err == nil {
		d.LockedUntil = until
	}
	return err
}

// Complete removes d.
func (q *Queue) Complete(ctx context.Context, d *queue.Delivery) error {
	return q.settle(ctx, "complete", d, false, func(w *wtx, r row) error {
		return q.delete(w, r.seq)
	})
}

// completeChunk bounds one CompleteAll transaction.
const completeChunk = 1000

// CompleteAll removes the deliveries still locked by their tokens, up to
// completeChunk in one transaction of two statements (queue.BatchCompleter);
// a delivery whose lock expired or was taken over is left and reported
// with queue.ErrLockLost, as Complete reports it.
func (q *Queue) CompleteAll(ctx context.Context, ds []*queue.Delivery) []error {
	errs := make([]error, len(ds))
	for start := 0; start < len(ds); start += completeChunk {
		chunk := ds[start:min(start+completeChunk, len(ds))]
		keys := make([]any, 0, len(chunk))
		for _, d := range chunk {
			if d != nil {
				keys = append(keys, []any{d.SequenceNumber, d.LockToken})
			}
		}
		arg, err := json.Marshal(keys)
		done := map[int64]bool{}
		if err == nil {
			err = q.submit(ctx, &op{run: func(w *wtx) error {
				clear(done)
				rows, err := w.query(`DELETE FROM messages WHERE visible_at > ? AND (seq, lock_token) IN
					(SELECT value->>0, value->>1 FROM json_each(?)) RETURNING seq`, nanos(w.now), string(arg))
				if err != nil {
					return err
				}
				var seqs []int64
				for rows.Next() {
					var seq int64
					if err := rows.Scan(&seq); err != nil {
						rows.Close()
						return err
					}
					seqs = append(seqs, seq)
				}
				if err := errors.Join(rows.Err(), rows.Close()); err != nil {
					return err
				}
				if len(seqs) == 0 {
					return nil
				}
				js, _ := json.Marshal(seqs)
				if _, err := w.exec(`DELETE FROM bodies WHERE seq IN (SELECT value FROM json_each(?))`, string(js)); err != nil {
					return err
				}
				for _, seq := range seqs {
					done[seq] = true
				}
				return nil
			}})
		}
		for i, d := range chunk {
			switch {
			case d == nil:
				errs[start+i] = errors.New("sqlitequeue: complete: delivery is nil")
			case err != nil:
				errs[start+i] = fmt.Errorf("sqlitequeue: complete message %q: %w", d.ID, err)
			case !done[d.SequenceNumber]:
				errs[start+i] = fmt.Errorf("sqlitequeue: complete message %q: %w", d.ID, queue.ErrLockLost)
			}
		}
	}
	return errs
}

// delete removes message seq and its body.
func (q *Queue) delete(w *wtx, seq int64) error {
	if _, err := w.exec(`DELETE FROM messages WHERE seq = ?`, seq); err != nil {
		return err
	}
	_, err := w.exec(`DELETE FROM bodies WHERE seq = ?`, seq)
	return err
}

// Abandon releases d for redelivery, or dead-letters it once it has been
// delivered MaxDeliveryCount times.
func (q *Queue) Abandon(ctx context.Context, d *queue.Delivery) error {
	return q.settle(ctx, "abandon", d, true, func(w *wtx, r row) error {
		if r.deliveryCount >= q.opts.MaxDeliveryCount {
			desc := fmt.Sprintf("abandoned on delivery %d of %d", r.deliveryCount, q.opts.MaxDeliveryCount)
			return q.moveToDead(w, r, queue.ReasonMaxDelivery, desc)
		}
		_, err := w.exec(`UPDATE messages SET lock_token = NULL, visible_at = ? WHERE seq = ?`, nanos(w.now), r.seq)
		return err
	})
}

// DeadLetter moves d to the dead-letter table.
func (q *Queue) DeadLetter(ctx context.Context, d *queue.Delivery, reason, description string) error {
	return q.settle(ctx, "dead-letter", d, false, func(w *wtx, r row) error {
		return q.moveToDead(w, r, reason, description)
	})
}

// querier is what selectDead needs: the pool or the writer's transaction.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func selectDead(ctx context.Context, db querier, f queue.Filter) ([]queue.DeadLetter, error) {
	var where []string
	var args []any
	if len(f.IDs) > 0 {
		var marks []string
		for _, id := range f.IDs {
			seq, err := strconv.ParseInt(id, 10, 64)
			if err != nil {
				continue // not one of ours, so it matches nothing
			}
			marks = append(marks, "?")
			args = append(args, seq)
		}
		if len(marks) == 0 {
			return nil, nil
		}
		where = append(where, "seq IN ("+strings.Join(marks, ",")+")")
	}
	if f.Entity != "" {
		where = append(where, "entity = ?")
		args = append(args, f.Entity)
	}
	if !f.Since.IsZero() {
		where = append(where, "dead_lettered_at >= ?")
		args = append(args, nanos(f.Since))
	}
	if f.After != "" {
		after, err := strconv.ParseInt(f.After, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("after %q: not a dead-letter id", f.After)
		}
		where = append(where, "seq > ?")
		args = append(args, after)
	}
	body := "body"
	if f.NoBody {
		body = "x''" // listings show metadata only
	}
	query := `SELECT seq, message_id, ` + body + `, props, reason, description, delivery_count, enqueued_at,
		first_failure_at, dead_lettered_at FROM dead`
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY seq"
	if f.Limit > 0 && f.Reason == "" {
		query += " LIMIT " + strconv.Itoa(f.Limit) // Reason is matched in Go, below
	}
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	// Reason matching is done here rather than in SQL because SQLite's
	// lower() folds ASCII only.
	reason := strings.ToLower(f.Reason)
	var out []queue.DeadLetter
	for rows.Next() {
		var (
			dl                       queue.DeadLetter
			seq                      int64
			props                    string
			enq, first, deadLettered int64
		)
		if err := rows.Scan(&seq, &dl.MessageID, &dl.Body, &props, &dl.Reason, &dl.Description, &dl.DeliveryCount,
			&enq, &first, &deadLettered); err != nil {
			return nil, err
		}
		if reason != "" && !strings.Contains(strings.ToLower(dl.Reason+"\n"+dl.Description), reason) {
			continue
		}
		dl.ID = strconv.FormatInt(seq, 10)
		dl.Properties = decodeProps(props)
		dl.EnqueuedAt, dl.FirstFailureAt, dl.DeadLetteredAt = fromNanos(enq), fromNanos(first), fromNanos(deadLettered)
		out = append(out, dl)
		if f.Limit > 0 && len(out) >= f.Limit {
			break
		}
	}
	return out, rows.Err()
}

// ListDead returns the dead letters matching f, oldest first.
func (q *Queue) ListDead(ctx context.Context, f queue.Filter) ([]queue.DeadLetter, error) {
	dls, err := selectDead(ctx, q.db, f)
	if err != nil {
		return nil, fmt.Errorf("sqlitequeue: list dead letters: %w", err)
	}
	return dls, nil
}

// GetDead returns one dead letter by its id, or queue.ErrNotFound.
func (q *Queue) GetDead(ctx context.Context, id string) (queue.DeadLetter, error) {
	dls, err := selectDead(ctx, q.db, queue.Filter{IDs: []string{id}})
	if err != nil {
		return queue.DeadLetter{}, fmt.Errorf("sqlitequeue: get dead letter %q: %w", id, err)
	}
	if len(dls) == 0 {
		return queue.DeadLetter{}, fmt.Errorf("sqlitequeue: get dead letter %q: %w", id, queue.ErrNotFound)
	}
	return dls[0], nil
}

// ReplayDead moves each matching dead letter back to the queue under a new
// message id, in one transaction (so, unlike on Service Bus, exactly once).
func (q *Queue) ReplayDead(ctx context.Context, f queue.Filter) (int, error) {
	f.After, f.NoBody = "", false // listing options: a replay needs the bodies
	var n int
	o := &op{wake: true, durable: true, run: func(w *wtx) error {
		n = 0
		dls, err := selectDead(context.Background(), w.tx, f)
		if err != nil {
			return err
		}
		for _, dl := range dls {
			props := make(map[string]string, len(dl.Properties)+2)
			for k, v := range dl.Properties {
				props[k] = v
			}
			if props[queue.PropOriginalID] == "" {
				props[queue.PropOriginalID] = dl.MessageID
			}
			count, _ := strconv.Atoi(props[queue.PropReplayCount])
			props[queue.PropReplayCount] = strconv.Itoa(count + 1)
			// A replay is a fresh start (the operator fixed the cause): the
			// requeue count starts again, or the copy would be dead-lettered
			// at its first transient failure.
			delete(props, queue.PropAttempt)
			p, err := encodeProps(props)
			if err != nil {
				return err
			}
			msg := queue.Message{ID: uuid.NewString(), Body: dl.Body, Properties: props}
			if err := q.insert(w, []pending{{msg: msg, props: p}}); err != nil {
				return err
			}
			if _, err := w.exec(`DELETE FROM dead WHERE seq = ?`, deadSeq(dl)); err != nil {
				return fmt.Errorf("delete dead letter %s: %w", dl.ID, err)
			}
			n++
		}
		return nil
	}}
	if err := q.submit(ctx, o); err != nil {
		return 0, fmt.Errorf("sqlitequeue: replay dead letters: %w", err)
	}
	return n, nil
}

// PurgeDead deletes the matching dead letters.
func (q *Queue) PurgeDead(ctx context.Context, f queue.Filter) (int, error) {
	f.After, f.NoBody = "", false // listing options: a replay needs the bodies
	var n int
	o := &op{run: func(w *wtx) error {
		n = 0
		dls, err := selectDead(context.Background(), w.tx, f)
		if err != nil {
			return err
		}
		for _, dl := range dls {
			if _, err := w.exec(`DELETE FROM dead WHERE seq = ?`, deadSeq(dl)); err != nil {
				return fmt.Errorf("delete dead letter %s: %w", dl.ID, err)
			}
			n++
		}
		return nil
	}}
	if err := q.submit(ctx, o); err != nil {
		return 0, fmt.Errorf("sqlitequeue: purge dead letters: %w", err)
	}
	return n, nil
}

// deadSeq is the row key behind a DeadLetter.ID selectDead produced.
func deadSeq(dl queue.DeadLetter) int64 {
	seq, _ := strconv.ParseInt(dl.ID, 10, 64)
	return seq
}

var _ queue.Counter = (*Queue)(nil)

// Counts reports the queue's depth by state. It reads through the pool in
// one statement (one consistent snapshot) and never takes the write lock, so
// scraping metrics does not slow the writer.
func (q *Queue) Counts(ctx context.Context) (queue.Counts, error) {
	var c queue.Counts
	now := nanos(q.opts.Clock.Now())
	// A row is locked while it has a token and its lock has not run out;
	// visible_at is the due time otherwise (see the schema).
	err := q.db.QueryRowContext(ctx, `SELECT
		coalesce(sum(visible_at <= ?1), 0),
		coalesce(sum(visible_at > ?1 AND lock_token IS NULL), 0),
		coalesce(sum(visible_at > ?1 AND lock_token IS NOT NULL), 0),
		(SELECT count(*) FROM dead)
		FROM messages`, now).Scan(&c.Active, &c.Scheduled, &c.Locked, &c.Dead)
	if err != nil {
		return queue.Counts{}, fmt.Errorf("sqlitequeue: count messages in %q: %w", q.path, err)
	}
	return c, nil
}
