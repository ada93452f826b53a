// Package queue defines the queue port msisync's receiver and syncer use, and
// the dead-letter operations operators use. Adapters live in sub-packages
// (sqlitequeue, servicebus); queuetest is the conformance suite they all pass.
package queue

import (
	"context"
	"errors"
	"time"
)

// Reasons a message is dead-lettered by the queue itself.
const (
	ReasonMaxDelivery = "MaxDeliveryCountExceeded"
	ReasonTTLExpired  = "TTLExpiredException"
)

// Application properties msisync sets on messages.
const (
	PropEntity        = "msisync-entity"
	PropRecordID      = "msisync-record"
	PropMessage       = "msisync-message"
	PropAttempt       = "msisync-attempt"         // requeue count carried across scheduled re-sends
	PropOriginalID    = "msisync-original-id"     // set on replayed copies
	PropReplayCount   = "msisync-replay-count"    // set on replayed copies
	PropFirstFailedAt = "msisync-first-failed-at" // RFC 3339, carried across requeues
)

// Message is what a producer sends.
type Message struct {
	// ID is the message id used for duplicate detection. Required.
	ID         string
	Body       []byte
	Properties map[string]string
	// ScheduledAt, when in the future, delays delivery until then.
	ScheduledAt time.Time
}

// Size is what MaxMessageBytes limits: the body plus the names and values
// of the properties.
func (m *Message) Size() int {
	n := len(m.Body)
	for k, v := range m.Properties {
		n += len(k) + len(v)
	}
	return n
}

// Delivery is a received message, locked for this consumer until LockedUntil.
type Delivery struct {
	Message
	// DeliveryCount is 1 on the first delivery.
	DeliveryCount int
	EnqueuedAt    time.Time
	LockedUntil   time.Time
	// LockToken identifies this lock; the adapter owns its meaning.
	LockToken string
	// SequenceNumber is the adapter's id for the message (for logs).
	SequenceNumber int64
}

// ErrLockLost is returned when settling or renewing a delivery whose lock
// expired (another consumer may have it now).
var ErrLockLost = errors.New("queue: message lock lost")

// BatchCompleter is implemented by a queue that completes many deliveries
// in one round trip (the embedded queue: one transaction, two statements),
// which a consumer settling a large batch uses instead of a Complete per
// delivery. errs[i] is nil when ds[i] was completed, wraps ErrLockLost when
// its lock was lost, and otherwise says why it was not completed; a
// delivery not completed stays in the queue.
type BatchCompleter interface {
	CompleteAll(ctx context.Context, ds []*Delivery) (errs []error)
}

// ErrDuplicate is never returned by Send (duplicates are dropped silently, as
// on Service Bus); adapters may use it internally.
var ErrDuplicate = errors.New("queue: duplicate message id")

// ErrTooLarge is returned by Send for a message over the adapter's size limit.
var ErrTooLarge = errors.New("queue: message too large")

// ErrNotFound is returned for a dead letter that does not exist.
var ErrNotFound = errors.New("queue: not found")

// Sender enqueues messages. A message whose ID was sent within the duplicate
// detection window is dropped without error. Send returns only when the
// messages are durable.
type Sender interface {
	Send(ctx context.Context, msgs ...Message) error
}

// Receiver is the consumer side of a queue.
type Receiver interface {
	// Receive waits up to maxWait for at least one message, then returns up
	// to max messages that are available right now, each locked. It returns an
	// empty slice (no error) when nothing arrived in time.
	Receive(ctx context.Context, max int, maxWait time.Duration) ([]*Delivery, error)
	// Renew extends the lock of a delivery; it updates d.LockedUntil.
	Renew(ctx context.Context, d *Delivery) error
	// Complete removes a delivered message.
	Complete(ctx context.Context, d *Delivery) error
	// Abandon releases the lock; the message is redelivered with its delivery
	// count incremented, or dead-lettered with ReasonMaxDelivery when it
	// reaches the maximum.
	Abandon(ctx context.Context, d *Delivery) error
	// DeadLetter moves a delivered message to the dead-letter queue.
	DeadLetter(ctx context.Context, d *Delivery, reason, description string) error
}

// Queue is the full port: what serve wires.
type Queue interface {
	Sender
	Receiver
	DeadLetters
	// MaxMessageBytes is the largest body+properties the queue takes.
	MaxMessageBytes() int
	// Ping reports whether the queue is reachable (readiness).
	Ping(ctx context.Context) error
	Close() error
}

// DeadLetter is one message in the dead-letter queue.
type DeadLetter struct {
	ID             string            `json:"id"` // the adapter's id for this dead letter (use with Get/Replay/Purge)
	MessageID      string            `json:"messageId"`
	Body           []byte            `json:"-"`
	Properties     map[string]string `json:"properties,omitempty"`
	Reason         string            `json:"reason"`
	Description    string            `json:"description"`
	DeliveryCount  int               `json:"deliveryCount"`
	EnqueuedAt     time.Time         `json:"enqueuedAt"`
	FirstFailureAt time.Time         `json:"firstFailureAt"`
	DeadLetteredAt time.Time         `json:"deadLetteredAt"`
}

// Filter selects dead letters. Zero values match everything.
type Filter struct {
	IDs    []string  // dead-letter ids
	Entity string    // PropEntity equals
	Reason string    // reason or description contains (case-insensitive)
	Since  time.Time // dead-lettered at or after
	Limit  int       // at most this many (0 = no limit)
	// After pages a listing: only dead letters listed after the one with
	// this id (pass the last id of the previous page; lists are in id
	// order). ListDead only: ReplayDead and PurgeDead ignore it.
	After string
	// NoBody lets ListDead leave Body empty, for listings that show only
	// the metadata (a page then does not hold every event in memory).
	// ReplayDead and PurgeDead ignore it.
	NoBody bool
}

// DeadLetters are the operator's operations on the dead-letter queue.
type DeadLetters interface {
	ListDead(ctx context.Context, f Filter) ([]DeadLetter, error)
	GetDead(ctx context.Context, id string) (DeadLetter, error)
	// ReplayDead sends a copy of each matching dead letter to the main queue
	// under a new message id (keeping the original id and a replay count in
	// properties), then removes the dead letter. It returns how many it replayed.
	ReplayDead(ctx context.Context, f Filter) (int, error)
	// PurgeDead deletes matching dead letters and returns how many.
	PurgeDead(ctx context.Context, f Filter) (int, error)
}

// Counts is how many messages a queue holds, by state.
type Counts struct {
	// Active messages are deliverable now (including ones whose lock ran out).
	Active int
	// Scheduled messages become deliverable later.
	Scheduled int
	// Locked messages were delivered and are not settled yet. -1 means the
	// adapter cannot tell them apart; they are then counted in Active.
	Locked int
	// Dead messages are in the dead-letter queue.
	Dead int
}

// Counter is implemented by queues that can report their depth (for
// metrics). It is separate from Queue so adapters may leave it out.
type Counter interface {
	Counts(ctx context.Context) (Counts, error)
}
