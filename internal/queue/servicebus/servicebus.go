// Package servicebus is the Azure Service Bus adapter of the queue port
// (production mode). It talks to one queue and its dead-letter sub-queue with
// azservicebus in peek-lock mode; queue.DeadLetters runs on the sub-queue.
package servicebus

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus"
	"github.com/google/uuid"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/queue"
)

// DefaultQueueName is the queue used when Options.QueueName is empty; the
// compose file, Kubernetes manifests and Bicep template all create it.
const DefaultQueueName = "msisync"

// DefaultMaxMessageBytes is the Service Bus Standard tier limit per message,
// headers included.
const DefaultMaxMessageBytes = 256 * 1024

// headerReserve is kept free of the broker's limit for the message id, system
// properties and AMQP framing, which the port's body+properties size leaves out.
const headerReserve = 2 * 1024

// maxReceive is the SDK's upper bound for ReceiveMessages.
const maxReceive = 5000

// Properties this adapter adds when it abandons or dead-letters a delivery,
// so dead letters show first and last failure times even when the broker
// dead-letters them (max delivery count). They are stripped from what
// Receive, ListDead and replayed copies carry.
const (
	propFirstFailedAt = "msisync-sb-first-failed-at"
	propLastFailedAt  = "msisync-sb-last-failed-at"
	propDeadAt        = "msisync-sb-dead-lettered-at"
)

// Application properties Service Bus itself puts on dead-lettered messages.
const (
	sbPropDeadLetterReason      = "DeadLetterReason"
	sbPropDeadLetterDescription = "DeadLetterErrorDescription"
)

// Limits on what DeadLetter stores: reason and description travel as
// application properties of the dead-lettered message, so together with the
// failure-time properties they must fit the headerReserve kept free of
// MaxMessageBytes, or a message at the limit could not be dead-lettered.
const (
	maxReasonLen      = 256
	maxDescriptionLen = 1024
)

// sdkRetry bounds the SDK's own retries (its defaults are 3 retries from a
// 4 s base up to 120 s, which keeps a Receive or Send busy for minutes in an
// outage). The adapter adds no retry of its own on top: an outage surfaces
// within a few seconds and the caller's backoff takes over.
var sdkRetry = azservicebus.RetryOptions{MaxRetries: 2, RetryDelay: 500 * time.Millisecond, MaxRetryDelay: 4 * time.Second}

// defaultProbeWait bounds the health probe Receive runs after coming back
// empty, so that an unreachable broker is an error, not an idle queue.
const defaultProbeWait = 10 * time.Second

// probeEvery is how long an idle Receive trusts the last successful call
// before probing again.
const probeEvery = 30 * time.Second

// ErrUnauthorized is returned (wrapped) when Service Bus rejects the
// credentials. It is permanent: retrying does not help.
var ErrUnauthorized = errors.New("servicebus: unauthorized")

// ErrQueueNotFound is returned (wrapped) when the queue does not exist.
var ErrQueueNotFound = errors.New("servicebus: queue not found")

// Options configure New.
type Options struct {
	// Connection is a connection string (Endpoint=sb://…;SharedAccessKeyName=…)
	// or a namespace host name (<ns>.servicebus.windows.net, or just <ns>),
	// in which case azidentity's DefaultAzureCredential authenticates.
	// From MSISYNC_SERVICEBUS.
	Connection string
	// QueueName is the queue, from MSISYNC_SERVICEBUS_QUEUE. Default DefaultQueueName.
	QueueName string
	// MaxMessageBytes is the broker's per-message limit, headers included.
	// Default 256 KB (Standard tier); on Premium the queue's
	// MaxMessageSizeInKilobytes (1 MB by default, up to 100 MB), from
	// MSISYNC_SERVICEBUS_MAX_MESSAGE_BYTES.
	MaxMessageBytes int
	// SendSingly sends each message on its own instead of in batches. A
	// partitioned queue with duplicate detection rejects batches of
	// distinct message ids; CheckQueue finds out and turns this on.
	SendSingly bool
	// Logger gets retries and other notable events. Default slog.Default().
	Logger *slog.Logger
}

// Queue is the Service Bus adapter; it implements queue.Queue.
type Queue struct {
	api       api
	queueName string
	maxBytes  int
	log       *slog.Logger
	clock     clock.Clock

	// The SDK refuses concurrent ReceiveMessages on one Receiver, so calls
	// take these one-slot semaphores (channels, to honour deadlines).
	recvSlot chan struct{}
	dlqSlot  chan struct{}

	mu     sync.Mutex
	locked map[string]heldMessage // lock token → message, for settlement
	lastOK time.Time              // last call the broker answered (wall clock)
	single bool                   // send each message on its own (partitioned queue)

	// dlqWait bounds each receive on the dead-letter sub-queue during replay
	// and purge, which stop when it returns nothing.
	dlqWait time.Duration
	// probeWait bounds the probe after an empty Receive.
	probeWait time.Duration
}

var _ queue.Queue = (*Queue)(nil)

// heldMessage is a received message and its lock expiry as last known; the
// expiry is kept apart because the SDK rewrites msg.LockedUntil on renewal,
// outside q.mu.
type heldMessage struct {
	msg   *azservicebus.ReceivedMessage
	until time.Time
}

// New connects to the queue named in opts. The SDK connects lazily: call
// Ping to find out whether the namespace and queue are reachable.
func New(ctx context.Context, opts Options) (*Queue, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	client, err := newClient(opts.Connection)
	if err != nil {
		return nil, err
	}
	opts.QueueName, err = queueFromEntityPath(opts.Connection, opts.QueueName)
	if err != nil {
		_ = client.Close(ctx)
		return nil, err
	}
	a, err := sdkAPI(client, opts.QueueName)
	if err != nil {
		_ = client.Close(ctx)
		return nil, fmt.Errorf("servicebus: open queue %q: %w", opts.QueueName, err)
	}
	// Counts needs the management API; without it the queue still works.
	if ac, err := newAdminClient(opts.Connection); err != nil {
		a.statsErr = err
	} else {
		a.stats, a.props = ac, ac
	}
	return newWithAPI(a, opts), nil
}

func (o *Options) validate() error {
	if strings.TrimSpace(o.Connection) == "" {
		return errors.New("servicebus: MSISYNC_SERVICEBUS is empty: set a connection string or a namespace host name")
	}
	o.QueueName = strings.TrimSpace(o.QueueName)
	if o.QueueName == "" && entityPath(o.Connection) == "" {
		o.QueueName = DefaultQueueName
	}
	if o.QueueName != "" && (strings.ContainsAny(o.QueueName, " ;$?#") || len(o.QueueName) > 260) {
		return fmt.Errorf("servicebus: MSISYNC_SERVICEBUS_QUEUE %q is not a valid queue name", o.QueueName)
	}
	if o.MaxMessageBytes < 0 || (o.MaxMessageBytes > 0 && o.MaxMessageBytes <= headerReserve) {
		return fmt.Errorf("servicebus: MaxMessageBytes %d is invalid: want 0 (default %d) or more than %d", o.MaxMessageBytes, DefaultMaxMessageBytes, headerReserve)
	}
	return nil
}

// newClient builds the SDK client from a connection string or, for a host
// name, from DefaultAzureCredential. Errors never echo the setting: a
// connection string holds a key.
func newClient(conn string) (*azservicebus.Client, error) {
	conn = strings.TrimSpace(conn)
	copts := &azservicebus.ClientOptions{ApplicationID: "msisync", RetryOptions: sdkRetry}
	if isConnectionString(conn) {
		c, err := azservicebus.NewClientFromConnectionString(conn, copts)
		if err != nil {
			return nil, fmt.Errorf("servicebus: MSISYNC_SERVICEBUS is not a valid connection string: %w", err)
		}
		return c, nil
	}
	host, err := namespaceHost(conn)
	if err != nil {
		return nil, err
	}
	cred, err := azidentity.NewDefaultAzureCredential(nil)
	if err != nil {
		return nil, fmt.Errorf("servicebus: MSISYNC_SERVICEBUS is a host name (%s) but no Azure credential is available: %w", host, err)
	}
	c, err := azservicebus.NewClient(host, cred, copts)
	if err != nil {
		return nil, fmt.Errorf("servicebus: client for namespace %s: %w", host, err)
	}
	return c, nil
}

func isConnectionString(s string) bool {
	return strings.Contains(strings.ToLower(s), "endpoint=")
}

// entityPath is the EntityPath of a connection string (a policy scoped to
// one queue has one), or "".
func entityPath(conn string) string {
	if !isConnectionString(conn) {
		return ""
	}
	for _, part := range strings.Split(conn, ";") {
		k, v, ok := strings.Cut(part, "=")
		if ok && strings.EqualFold(strings.TrimSpace(k), "EntityPath") {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// queueFromEntityPath resolves the queue name when the connection string
// names an entity: it is the queue unless MSISYNC_SERVICEBUS_QUEUE names
// another, which the SDK would not reach with an entity-scoped key.
func queueFromEntityPath(conn, queueName string) (string, error) {
	ep := entityPath(conn)
	switch {
	case ep == "":
		if queueName == "" {
			return DefaultQueueName, nil
		}
		return queueName, nil
	case queueName == "" || queueName == ep:
		return ep, nil
	}
	return "", fmt.Errorf("servicebus: MSISYNC_SERVICEBUS has EntityPath=%s but MSISYNC_SERVICEBUS_QUEUE is %q: "+
		"unset MSISYNC_SERVICEBUS_QUEUE or make them the same (a key scoped to one queue cannot reach another)", ep, queueName)
}

// namespaceHost turns "sb://ns.servicebus.windows.net/", "ns.servicebus.windows.net"
// or "ns" into "ns.servicebus.windows.net".
func namespaceHost(s string) (string, error) {
	h := s
	for _, p := range []string{"sb://", "amqps://", "https://"} {
		h = strings.TrimPrefix(h, p)
	}
	h = strings.TrimSuffix(h, "/")
	if h == "" || strings.ContainsAny(h, " ;=/?#@") {
		return "", errors.New("servicebus: MSISYNC_SERVICEBUS is neither a connection string (Endpoint=sb://…) nor a namespace host name (<ns>.servicebus.windows.net)")
	}
	if !strings.Contains(h, ".") {
		h += ".servicebus.windows.net"
	}
	return h, nil
}

// newWithAPI builds the adapter on a (possibly fake) api.
func newWithAPI(a api, opts Options) *Queue {
	lg := opts.Logger
	if lg == nil {
		lg = slog.Default()
	}
	if opts.QueueName == "" {
		opts.QueueName = DefaultQueueName
	}
	maxBytes := opts.MaxMessageBytes
	if maxBytes == 0 {
		maxBytes = DefaultMaxMessageBytes
	}
	return &Queue{
		api:       a,
		queueName: opts.QueueName,
		maxBytes:  maxBytes,
		log:       lg.With("queue", opts.QueueName),
		clock:     clock.System{},
		recvSlot:  make(chan struct{}, 1),
		dlqSlot:   make(chan struct{}, 1),
		locked:    make(map[string]heldMessage),
		single:    opts.SendSingly,
		dlqWait:   5 * time.Second,
		probeWait: defaultProbeWait,
	}
}

// MaxMessageBytes is the largest body plus properties Send takes: the broker
// limit less room for headers.
func (q *Queue) MaxMessageBytes() int { return q.maxBytes - headerReserve }

// Ping peeks one message, which needs a working connection, valid
// credentials and an existing queue.
func (q *Queue) Ping(ctx context.Context) error {
	from := int64(1) // where the SDK's own peek iteration starts
	err := q.do(ctx, "ping", func() error {
		_, err := peekSafely(ctx, q.api.recv, 1, &azservicebus.PeekMessagesOptions{FromSequenceNumber: &from})
		return err
	})
	if err == nil {
		q.markOK()
	}
	return err
}

// Close closes the sender, the receivers and the client.
func (q *Queue) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if q.api.close != nil {
		if err := q.api.close(ctx); err != nil {
			return fmt.Errorf("servicebus: close queue %q: %w", q.queueName, err)
		}
		return nil
	}
	return errors.Join(q.api.send.Close(ctx), q.api.recv.Close(ctx), q.api.deadLetters.Close(ctx))
}

// Send enqueues msgs in as few SDK batches as fit. A message whose body and
// properties exceed MaxMessageBytes fails the whole call with queue.ErrTooLarge
// before anything is sent. If a later batch fails, earlier ones are already
// queued; sending all of them again is safe, as duplicate detection drops the
// repeats. For the same reason a requeue (a scheduled re-send of a received
// message) needs a new ID: within the window the old one is dropped silently.
func (q *Queue) Send(ctx context.Context, msgs ...queue.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	out := make([]*azservicebus.Message, len(msgs))
	for i := range msgs {
		m := &msgs[i]
		if m.ID == "" {
			return fmt.Errorf("servicebus: send message %d of %d: ID is required", i+1, len(msgs))
		}
		if len(m.ID) > 128 {
			return fmt.Errorf("servicebus: send message %q: ID is %d characters, Service Bus allows 128", m.ID, len(m.ID))
		}
		if n := m.Size(); n > q.MaxMessageBytes() {
			return fmt.Errorf("servicebus: send message %q: %d bytes of body and properties, limit %d: %w", m.ID, n, q.MaxMessageBytes(), queue.ErrTooLarge)
		}
		out[i] = toSBMessage(m, q.clock.Now())
	}
	return q.sendBatches(ctx, "send", out)
}

func toSBMessage(m *queue.Message, now time.Time) *azservicebus.Message {
	id := m.ID
	out := &azservicebus.Message{MessageID: &id, Body: m.Body}
	if len(m.Properties) > 0 {
		out.ApplicationProperties = make(map[string]any, len(m.Properties))
		for k, v := range m.Properties {
			out.ApplicationProperties[k] = v
		}
	}
	if !m.ScheduledAt.IsZero() && m.ScheduledAt.After(now) {
		t := m.ScheduledAt.UTC()
		out.ScheduledEnqueueTime = &t
	}
	return out
}

// sendBatches fills SDK batches up to the link's limit and sends each one.
// A message that does not fit an empty batch goes on its own: the batch
// envelope copies the first message's application properties, so they count
// twice in a batch but once in a single send. On a partitioned queue
// (q.single) every message goes on its own. When a send fails after others
// went through, the error says how many did: sending all again is safe, as
// duplicate detection drops the repeats.
func (q *Queue) sendBatches(ctx context.Context, op string, msgs []*azservicebus.Message) error {
	sent := 0
	fail := func(err error) error {
		if sent == 0 {
			return err
		}
		return &PartialSendError{Sent: sent, Total: len(msgs), Err: err}
	}
	single := func(m *azservicebus.Message) error {
		if err := q.do(ctx, fmt.Sprintf("%s message %q", op, *m.MessageID), func() error {
			return q.api.send.SendMessage(ctx, m, nil)
		}); err != nil {
			return fail(err)
		}
		sent++
		return nil
	}
	if q.single {
		for _, m := range msgs {
			if err := single(m); err != nil {
				return err
			}
		}
		return nil
	}
	var batch messageBatch
	newBatch := func() error {
		return q.do(ctx, op+": new batch", func() error {
			b, err := q.api.send.NewMessageBatch(ctx, nil)
			batch = b
			return err
		})
	}
	flush := func() error {
		if batch == nil || batch.NumMessages() == 0 {
			return nil
		}
		n := batch.NumMessages()
		if err := q.do(ctx, fmt.Sprintf("%s: batch of %d", op, n), func() error {
			return q.api.send.SendMessageBatch(ctx, batch, nil)
		}); err != nil {
			return fail(err)
		}
		sent += int(n)
		batch = nil
		return nil
	}
	for _, m := range msgs {
		if batch == nil {
			if err := newBatch(); err != nil {
				return fail(err)
			}
		}
		err := batch.AddMessage(m, nil)
		if errors.Is(err, azservicebus.ErrMessageTooLarge) && batch.NumMessages() > 0 {
			if err := flush(); err != nil {
				return err
			}
			if err := newBatch(); err != nil {
				return fail(err)
			}
			err = batch.AddMessage(m, nil)
		}
		if errors.Is(err, azservicebus.ErrMessageTooLarge) {
			// Too large with its properties twice (envelope and message):
			// alone it needs them once.
			batch = nil
			if err := single(m); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return fail(fmt.Errorf("servicebus: %s message %q: add to batch: %w", op, *m.MessageID, err))
		}
	}
	return flush()
}

// PartialSendError is a Send that failed after Sent of Total messages had
// been queued. Err is the failure (it may wrap queue.ErrTooLarge).
type PartialSendError struct {
	Sent, Total int
	Err         error
}

func (e *PartialSendError) Error() string {
	return fmt.Sprintf("%v (%d of %d messages were queued before the failure; sending all again is safe: duplicate detection drops the repeats)", e.Err, e.Sent, e.Total)
}

func (e *PartialSendError) Unwrap() error { return e.Err }

// Receive waits up to maxWait for messages and returns up to max of them,
// each locked for the queue's lock duration.
func (q *Queue) Receive(ctx context.Context, max int, maxWait time.Duration) ([]*queue.Delivery, error) {
	if max <= 0 {
		return nil, fmt.Errorf("servicebus: receive: max must be at least 1, got %d", max)
	}
	if max > maxReceive {
		max = maxReceive
	}
	if maxWait <= 0 {
		maxWait = time.Millisecond
	}
	wctx, cancel := context.WithTimeout(ctx, maxWait)
	defer cancel()
	select {
	case q.recvSlot <- struct{}{}:
	case <-wctx.Done():
		if ctx.Err() != nil {
			return nil, fmt.Errorf("servicebus: receive: %w", ctx.Err())
		}
		return []*queue.Delivery{}, nil
	}
	defer func() { <-q.recvSlot }()

	var msgs []*azservicebus.ReceivedMessage
	err := q.do(wctx, "receive", func() error {
		var err error
		msgs, err = receiveSafely(wctx, q.api.recv, max)
		return err
	})
	if err != nil && (ctx.Err() != nil || wctx.Err() == nil) {
		return nil, err
	}
	if len(msgs) == 0 {
		// The SDK answers "nothing" both for an idle queue and while it
		// reconnects (its retry loop ends in the deadline, a failed link
		// in an empty result): a probe tells the two apart.
		if err := q.probe(ctx); err != nil {
			return nil, err
		}
		return []*queue.Delivery{}, nil
	}
	q.markOK()
	now := q.clock.Now()
	out := make([]*queue.Delivery, 0, len(msgs))
	q.mu.Lock()
	defer q.mu.Unlock()
	// Forget messages whose lock has run out: settling them fails anyway,
	// and the token alone is enough to ask the broker.
	for tok, h := range q.locked {
		if h.until.Before(now) {
			delete(q.locked, tok)
		}
	}
	for _, m := range msgs {
		d := toDelivery(m)
		q.locked[d.LockToken] = heldMessage{msg: m, until: d.LockedUntil}
		out = append(out, d)
	}
	return out, nil
}

// markOK records that the broker just answered.
func (q *Queue) markOK() {
	q.mu.Lock()
	q.lastOK = time.Now()
	q.mu.Unlock()
}

// probe checks the broker answers a peek within probeWait, unless it
// answered something within probeEvery.
func (q *Queue) probe(ctx context.Context) error {
	q.mu.Lock()
	recent := !q.lastOK.IsZero() && time.Since(q.lastOK) < probeEvery
	q.mu.Unlock()
	if recent {
		return nil
	}
	pctx, cancel := context.WithTimeout(ctx, q.probeWait)
	defer cancel()
	if err := q.Ping(pctx); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("servicebus: receive: %w", ctx.Err())
		}
		return fmt.Errorf("servicebus: receive on queue %q: nothing arrived and the broker did not answer a probe within %v: %w", q.queueName, q.probeWait, err)
	}
	return nil
}

// receiveSafely calls ReceiveMessages and turns a panic inside the SDK into
// an error: v1.11 asserts a message's DeadLetterReason property is a string,
// and another producer may have set it to anything.
func receiveSafely(ctx context.Context, r receiver, max int) (msgs []*azservicebus.ReceivedMessage, err error) {
	defer func() {
		if p := recover(); p != nil {
			msgs, err = nil, fmt.Errorf("the Service Bus SDK panicked decoding a received message "+
				"(a DeadLetterReason application property that is not a string?): %v", p)
		}
	}()
	return r.ReceiveMessages(ctx, max, nil)
}

// peekSafely is PeekMessages with receiveSafely's recovery.
func peekSafely(ctx context.Context, r receiver, max int, opts *azservicebus.PeekMessagesOptions) (msgs []*azservicebus.ReceivedMessage, err error) {
	defer func() {
		if p := recover(); p != nil {
			msgs, err = nil, fmt.Errorf("the Service Bus SDK panicked decoding a peeked message "+
				"(a DeadLetterReason application property that is not a string?): %v", p)
		}
	}()
	return r.PeekMessages(ctx, max, opts)
}

// messageID is m's id as text. The SDK fills MessageID only when the AMQP
// message-id is a string; other producers may send a ulong, a UUID or
// binary. Without an id a requeue or replay would reuse one constant id and
// duplicate detection would drop all but the first.
func messageID(m *azservicebus.ReceivedMessage) string {
	if m.MessageID != "" {
		return m.MessageID
	}
	if raw := m.RawAMQPMessage; raw != nil && raw.Properties != nil && raw.Properties.MessageID != nil {
		switch v := raw.Properties.MessageID.(type) {
		case []byte:
			return "bin-" + hex.EncodeToString(v)
		case [16]byte:
			return uuid.UUID(v).String()
		default:
			if s := propString(v); s != "" {
				return s
			}
		}
	}
	if m.SequenceNumber != nil {
		return "sb-seq-" + strconv.FormatInt(*m.SequenceNumber, 10)
	}
	return ""
}

func toDelivery(m *azservicebus.ReceivedMessage) *queue.Delivery {
	d := &queue.Delivery{
		Message: queue.Message{
			ID:         messageID(m),
			Body:       m.Body,
			Properties: stringProperties(m.ApplicationProperties),
		},
		DeliveryCount: int(m.DeliveryCount),
		LockToken:     uuid.UUID(m.LockToken).String(),
	}
	if m.ScheduledEnqueueTime != nil {
		d.ScheduledAt = *m.ScheduledEnqueueTime
	}
	if m.EnqueuedTime != nil {
		d.EnqueuedAt = *m.EnqueuedTime
	}
	if m.LockedUntil != nil {
		d.LockedUntil = *m.LockedUntil
	}
	if m.SequenceNumber != nil {
		d.SequenceNumber = *m.SequenceNumber
	}
	return d
}

// message finds the received message for d's lock, or builds a token-only
// one (the SDK settles by lock token since v1.10), e.g. after a restart.
func (q *Queue) message(d *queue.Delivery) (*azservicebus.ReceivedMessage, error) {
	if d == nil {
		return nil, errors.New("delivery is nil")
	}
	q.mu.Lock()
	h, ok := q.locked[d.LockToken]
	q.mu.Unlock()
	if ok {
		return h.msg, nil
	}
	tok, err := uuid.Parse(d.LockToken)
	if err != nil {
		return nil, fmt.Errorf("lock token %q is not a Service Bus lock token", d.LockToken)
	}
	return &azservicebus.ReceivedMessage{LockToken: tok, MessageID: d.ID}, nil
}

func (q *Queue) forget(d *queue.Delivery) {
	q.mu.Lock()
	delete(q.locked, d.LockToken)
	q.mu.Unlock()
}

// settle runs a settlement call for d; the lock is gone afterwards whatever
// the outcome, except on a transient failure.
func (q *Queue) settle(ctx context.Context, op string, d *queue.Delivery, call func(m *azservicebus.ReceivedMessage) error) error {
	m, err := q.message(d)
	if err != nil {
		return fmt.Errorf("servicebus: %s: %w", op, err)
	}
	err = q.do(ctx, fmt.Sprintf("%s message %q", op, d.ID), func() error { return call(m) })
	if err == nil || errors.Is(err, queue.ErrLockLost) {
		q.forget(d)
	}
	return err
}

// Renew extends d's lock and updates d.LockedUntil.
func (q *Queue) Renew(ctx context.Context, d *queue.Delivery) error {
	m, err := q.message(d)
	if err != nil {
		return fmt.Errorf("servicebus: renew lock: %w", err)
	}
	err = q.do(ctx, fmt.Sprintf("renew lock of message %q", d.ID), func() error {
		return q.api.recv.RenewMessageLock(ctx, m, nil)
	})
	if err != nil {
		if errors.Is(err, queue.ErrLockLost) {
			q.forget(d)
		}
		return err
	}
	if m.LockedUntil != nil {
		d.LockedUntil = *m.LockedUntil
	}
	q.mu.Lock()
	if h, ok := q.locked[d.LockToken]; ok {
		h.until = d.LockedUntil
		q.locked[d.LockToken] = h
	}
	q.mu.Unlock()
	return nil
}

// Complete removes d from the queue.
func (q *Queue) Complete(ctx context.Context, d *queue.Delivery) error {
	return q.settle(ctx, "complete", d, func(m *azservicebus.ReceivedMessage) error {
		return q.api.recv.CompleteMessage(ctx, m, nil)
	})
}

// Abandon releases d for redelivery; Service Bus counts the delivery and
// dead-letters the message at the queue's MaxDeliveryCount. The failure
// times ride along as properties for the dead-letter listing.
func (q *Queue) Abandon(ctx context.Context, d *queue.Delivery) error {
	return q.settle(ctx, "abandon", d, func(m *azservicebus.ReceivedMessage) error {
		return q.api.recv.AbandonMessage(ctx, m, &azservicebus.AbandonMessageOptions{PropertiesToModify: q.failureProps(m, false)})
	})
}

// DeadLetter moves d to the dead-letter sub-queue with reason and description.
func (q *Queue) DeadLetter(ctx context.Context, d *queue.Delivery, reason, description string) error {
	reason = truncate(reason, maxReasonLen)
	description = truncate(description, maxDescriptionLen)
	return q.settle(ctx, "dead-letter", d, func(m *azservicebus.ReceivedMessage) error {
		return q.api.recv.DeadLetterMessage(ctx, m, &azservicebus.DeadLetterOptions{
			Reason:             &reason,
			ErrorDescription:   &description,
			PropertiesToModify: q.failureProps(m, true),
		})
	})
}

// failureProps stamps the failure times on a message being abandoned or
// dead-lettered. The first failure is only known for messages this process
// received (a token-only message has no properties to look at).
func (q *Queue) failureProps(m *azservicebus.ReceivedMessage, dead bool) map[string]any {
	now := q.clock.Now().UTC().Format(time.RFC3339Nano)
	mod := map[string]any{propLastFailedAt: now}
	if dead {
		mod[propDeadAt] = now
	}
	if m.ApplicationProperties != nil || m.SequenceNumber != nil {
		if _, ok := m.ApplicationProperties[propFirstFailedAt]; !ok {
			mod[propFirstFailedAt] = now
		}
	}
	return mod
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Cut on a rune boundary.
	for n > 0 && n < len(s) && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}
