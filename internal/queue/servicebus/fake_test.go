package servicebus

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sort"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus/admin"
	"github.com/Azure/go-amqp"
	"github.com/google/uuid"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/queue"
)

// fakeBroker is an in-memory Service Bus queue with its dead-letter
// sub-queue, behind the adapter's narrow api. It mirrors the semantics the
// adapter relies on: peek-lock with lock expiry on a fake clock, delivery
// counts (abandon and lock expiry), MaxDeliveryCount → dead-letter with
// MaxDeliveryCountExceeded, scheduled enqueue, duplicate detection by
// MessageID, settlement by lock token, lock-lost errors shaped like the SDK's,
// dead-letter reason and description as application properties, batches
// capped in bytes with the envelope counting the first message's properties
// again (as the SDK's batch does), single sends, partitioned queues rejecting
// batches of distinct ids, non-string AMQP message ids (MessageID stays ""
// as the SDK leaves it), the SDK's receive timing (it collects for ~20 ms
// after the first message), duplicate detection off (DuplicateWindow 0), and
// no concurrent ReceiveMessages on one receiver. TTL, sessions, deferral and
// the release of messages arriving on leftover credit are not modelled (the
// wire-level test broker covers the last).
type fakeBroker struct {
	clock *clock.Fake
	cfg   fakeConfig

	mu      sync.Mutex
	seq     int64
	active  []*fakeMsg // queue, sequence order (includes scheduled and locked)
	dead    []*fakeMsg // dead-letter sub-queue
	seen    map[string]time.Time
	changed chan struct{} // closed and replaced on every change

	// leftover is the link credit a queue receiver kept after its last
	// ReceiveMessages returned with fewer than it asked for. A message
	// sent meanwhile goes out on that credit and the SDK's releaser hands
	// it back (ReleaseMessage: no delivery counted); the fake counts the
	// release and leaves the message available, which is the net effect.
	leftover map[*fakeReceiver]int

	// faults are errors to return from the next calls of an operation.
	faults map[string][]error
	calls  map[string]int
}

type fakeConfig struct {
	LockDuration     time.Duration
	MaxDeliveryCount int
	DuplicateWindow  time.Duration // 0 disables duplicate detection
	MaxBatchBytes    uint64        // the link's max message size
	Partitioned      bool
	// Queue, when set, is what GetQueue answers; else it is derived from the above.
	Queue *admin.QueueProperties
}

// sbTimeAfterFirstMessage is how long the SDK's ReceiveMessages keeps
// collecting after the first message (receiver.go, v1.11).
const sbTimeAfterFirstMessage = 20 * time.Millisecond

type fakeMsg struct {
	msg         azservicebus.Message // as sent (properties copied)
	rawID       any                  // AMQP message-id when not a string
	props       map[string]any
	seq         int64
	enqueued    time.Time
	visibleAt   time.Time
	deliveries  uint32
	locked      bool
	lockToken   [16]byte
	lockedUntil time.Time
}

func newFakeBroker(clk *clock.Fake, cfg fakeConfig) *fakeBroker {
	if cfg.LockDuration == 0 {
		cfg.LockDuration = time.Minute
	}
	if cfg.MaxDeliveryCount == 0 {
		cfg.MaxDeliveryCount = 10
	}
	if cfg.MaxBatchBytes == 0 {
		cfg.MaxBatchBytes = DefaultMaxMessageBytes
	}
	return &fakeBroker{
		clock:    clk,
		cfg:      cfg,
		seen:     make(map[string]time.Time),
		changed:  make(chan struct{}),
		leftover: make(map[*fakeReceiver]int),
		faults:   make(map[string][]error),
		calls:    make(map[string]int),
	}
}

// api returns the adapter-facing api over this broker.
func (b *fakeBroker) api() api {
	return api{
		send:        &fakeSender{b: b},
		recv:        &fakeReceiver{b: b},
		deadLetters: &fakeReceiver{b: b, dlq: true},
		stats:       b,
		props:       b,
	}
}

// GetQueueRuntimeProperties counts as Service Bus does: locked messages are
// active, scheduled ones are not.
func (b *fakeBroker) GetQueueRuntimeProperties(ctx context.Context, name string, _ *admin.GetQueueRuntimePropertiesOptions) (*admin.GetQueueRuntimePropertiesResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enterLocked("GetQueueRuntimeProperties"); err != nil {
		return nil, err
	}
	now := b.clock.Now()
	b.expireLocked(now)
	var p admin.QueueRuntimeProperties
	for _, m := range b.active {
		if !m.locked && now.Before(m.visibleAt) {
			p.ScheduledMessageCount++
		} else {
			p.ActiveMessageCount++
		}
	}
	p.DeadLetterMessageCount = int32(len(b.dead))
	p.TotalMessageCount = int64(len(b.active) + len(b.dead))
	return &admin.GetQueueRuntimePropertiesResponse{QueueName: name, QueueRuntimeProperties: p}, nil
}

// Advance moves the clock and wakes waiting receivers (locks may have run
// out, scheduled messages may be due).
func (b *fakeBroker) Advance(d time.Duration) {
	b.clock.Advance(d)
	b.mu.Lock()
	b.broadcastLocked()
	b.mu.Unlock()
}

// fail makes the next len(errs) calls of op return errs in turn.
func (b *fakeBroker) fail(op string, errs ...error) {
	b.mu.Lock()
	b.faults[op] = append(b.faults[op], errs...)
	b.mu.Unlock()
}

func (b *fakeBroker) callCount(op string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.calls[op]
}

// enter records a call of op and returns an injected fault, if any. b.mu held.
func (b *fakeBroker) enterLocked(op string) error {
	b.calls[op]++
	if errs := b.faults[op]; len(errs) > 0 {
		b.faults[op] = errs[1:]
		return errs[0]
	}
	return nil
}

func (b *fakeBroker) broadcastLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}

func lockLost() error { return &azservicebus.Error{Code: azservicebus.CodeLockLost} }

// expireLocked releases locks that ran out, counting the delivery, and
// dead-letters messages that reached MaxDeliveryCount.
func (b *fakeBroker) expireLocked(now time.Time) {
	for _, m := range b.dead {
		if m.locked && !now.Before(m.lockedUntil) {
			m.locked = false
		}
	}
	var keep []*fakeMsg
	for _, m := range b.active {
		if m.locked && !now.Before(m.lockedUntil) {
			m.locked = false
			if int(m.deliveries) >= b.cfg.MaxDeliveryCount {
				b.deadLetterLocked(m, queue.ReasonMaxDelivery, maxDeliveryDescription(b.cfg.MaxDeliveryCount))
				continue
			}
		}
		keep = append(keep, m)
	}
	b.active = keep
}

func maxDeliveryDescription(n int) string {
	return fmt.Sprintf("Message could not be consumed after %d delivery attempts.", n)
}

// deadLetterLocked moves m (already removed from active by the caller) to
// the sub-queue; Service Bus stores reason and description as application
// properties, where the SDK reads them from.
func (b *fakeBroker) deadLetterLocked(m *fakeMsg, reason, desc string) {
	m.locked = false
	m.props[sbPropDeadLetterReason] = reason
	m.props[sbPropDeadLetterDescription] = desc
	b.dead = append(b.dead, m)
}

func (b *fakeBroker) list(dlq bool) *[]*fakeMsg {
	if dlq {
		return &b.dead
	}
	return &b.active
}

// received builds what the SDK hands out for m.
func (b *fakeBroker) received(m *fakeMsg, withLock bool) *azservicebus.ReceivedMessage {
	rm := &azservicebus.ReceivedMessage{
		MessageID: deref(m.msg.MessageID),
		RawAMQPMessage: &azservicebus.AMQPAnnotatedMessage{
			Properties: &azservicebus.AMQPAnnotatedMessageProperties{MessageID: m.msg.MessageID},
		},
		Body:          append([]byte(nil), m.msg.Body...),
		ContentType:   m.msg.ContentType,
		CorrelationID: m.msg.CorrelationID,
		Subject:       m.msg.Subject,
		DeliveryCount: m.deliveries,
	}
	if len(m.props) > 0 {
		rm.ApplicationProperties = maps.Clone(m.props)
		if v, ok := m.props[sbPropDeadLetterReason].(string); ok {
			rm.DeadLetterReason = &v
		}
		if v, ok := m.props[sbPropDeadLetterDescription].(string); ok {
			rm.DeadLetterErrorDescription = &v
		}
	}
	if m.rawID != nil {
		rm.MessageID = "" // the SDK fills it only for string ids
		rm.RawAMQPMessage.Properties.MessageID = m.rawID
	}
	seq, enq := m.seq, m.enqueued
	rm.SequenceNumber, rm.EnqueuedTime = &seq, &enq
	if m.msg.ScheduledEnqueueTime != nil {
		t := *m.msg.ScheduledEnqueueTime
		rm.ScheduledEnqueueTime = &t
		if b.clock.Now().Before(t) {
			rm.State = azservicebus.MessageStateScheduled
		}
	}
	if withLock {
		rm.LockToken = m.lockToken
		lu := m.lockedUntil
		rm.LockedUntil = &lu
	}
	return rm
}

// --- sender ---

type fakeSender struct{ b *fakeBroker }

type fakeBatch struct {
	max   uint64
	size  uint64
	msgs  []*azservicebus.Message
	owner *fakeBroker
}

// fakeSize approximates the AMQP encoding: body, id, properties and a fixed
// header allowance.
func fakeSize(m *azservicebus.Message) uint64 {
	n := len(m.Body) + len(deref(m.MessageID)) + 64
	for k, v := range m.ApplicationProperties {
		n += len(k) + len(propString(v)) + 8
	}
	return uint64(n)
}

// fakePropsSize is what a message's application properties add.
func fakePropsSize(m *azservicebus.Message) uint64 {
	n := 0
	for k, v := range m.ApplicationProperties {
		n += len(k) + len(propString(v)) + 8
	}
	return uint64(n)
}

func (fb *fakeBatch) AddMessage(m *azservicebus.Message, _ *azservicebus.AddMessageOptions) error {
	sz := fakeSize(m)
	if len(fb.msgs) == 0 {
		// The SDK's envelope copies the first message's properties.
		sz += fakePropsSize(m) + 32
	}
	if fb.size+sz > fb.max {
		return azservicebus.ErrMessageTooLarge
	}
	fb.size += sz
	fb.msgs = append(fb.msgs, m)
	return nil
}

func (fb *fakeBatch) NumMessages() int32 { return int32(len(fb.msgs)) }
func (fb *fakeBatch) NumBytes() uint64   { return fb.size }

func (s *fakeSender) NewMessageBatch(ctx context.Context, _ *azservicebus.MessageBatchOptions) (messageBatch, error) {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	if err := s.b.enterLocked("NewMessageBatch"); err != nil {
		return nil, err
	}
	return &fakeBatch{max: s.b.cfg.MaxBatchBytes, owner: s.b}, nil
}

func (s *fakeSender) SendMessageBatch(ctx context.Context, batch messageBatch, _ *azservicebus.SendMessageBatchOptions) error {
	fb, ok := batch.(*fakeBatch)
	if !ok || fb.owner != s.b {
		return errors.New("batch was not made by this sender")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	b := s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enterLocked("SendMessageBatch"); err != nil {
		return err
	}
	if b.cfg.Partitioned && b.cfg.DuplicateWindow > 0 {
		for _, m := range fb.msgs[1:] {
			if deref(m.MessageID) != deref(fb.msgs[0].MessageID) {
				return &amqp.Error{Condition: amqp.ErrCondNotAllowed, Description: "Batching brokered messages with distinct MessageId is not supported for entities that have duplicate detection enabled."}
			}
		}
	}
	b.enqueueLocked(fb.msgs, nil)
	return nil
}

// SendMessage sends one message without an envelope: its properties count once.
func (s *fakeSender) SendMessage(ctx context.Context, m *azservicebus.Message, _ *azservicebus.SendMessageOptions) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b := s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enterLocked("SendMessage"); err != nil {
		return err
	}
	if fakeSize(m) > b.cfg.MaxBatchBytes {
		return &amqp.Error{Condition: amqp.ErrCondMessageSizeExceeded, Description: "The received message exceeds the limit currently allowed on the link."}
	}
	b.enqueueLocked([]*azservicebus.Message{m}, nil)
	return nil
}

// enqueueLocked queues msgs (rawIDs[i], when given, is message i's
// non-string AMQP id). b.mu held.
func (b *fakeBroker) enqueueLocked(msgs []*azservicebus.Message, rawIDs []any) {
	now := b.clock.Now()
	for i, m := range msgs {
		id := deref(m.MessageID)
		if rawIDs != nil && rawIDs[i] != nil {
			id = fmt.Sprintf("%T:%v", rawIDs[i], rawIDs[i])
		}
		if b.cfg.DuplicateWindow > 0 {
			if at, ok := b.seen[id]; ok && now.Sub(at) < b.cfg.DuplicateWindow {
				continue // accepted and dropped, as Service Bus does
			}
			b.seen[id] = now
		}
		b.seq++
		fm := &fakeMsg{msg: *m, props: maps.Clone(m.ApplicationProperties), seq: b.seq, enqueued: now, visibleAt: now}
		if fm.props == nil {
			fm.props = map[string]any{}
		}
		fm.msg.Body = append([]byte(nil), m.Body...)
		if rawIDs != nil {
			fm.rawID = rawIDs[i]
		}
		if m.ScheduledEnqueueTime != nil && m.ScheduledEnqueueTime.After(now) {
			fm.visibleAt = *m.ScheduledEnqueueTime
		}
		b.active = append(b.active, fm)
		if !now.Before(fm.visibleAt) {
			b.releaseOnLeftoverCreditLocked()
		}
	}
	b.broadcastLocked()
}

// releaseOnLeftoverCreditLocked models a new message reaching an idle
// receiver's leftover credit: delivered, released by the SDK at once.
func (b *fakeBroker) releaseOnLeftoverCreditLocked() {
	for r, n := range b.leftover {
		if n <= 0 {
			continue
		}
		r.mu.Lock()
		busy := r.receiving
		r.mu.Unlock()
		if busy {
			continue
		}
		b.leftover[r] = n - 1
		b.calls["ReleaseMessage"]++
		return
	}
}

func (s *fakeSender) Close(context.Context) error { return nil }

// --- receivers ---

type fakeReceiver struct {
	b          *fakeBroker
	dlq        bool
	mu         sync.Mutex
	receiving  bool
	lastPeeked int64
}

func (r *fakeReceiver) ReceiveMessages(ctx context.Context, maxMessages int, _ *azservicebus.ReceiveMessagesOptions) ([]*azservicebus.ReceivedMessage, error) {
	if maxMessages <= 0 || maxMessages > maxReceive {
		return nil, fmt.Errorf("maxMessages %d out of range", maxMessages)
	}
	r.mu.Lock()
	if r.receiving {
		r.mu.Unlock()
		return nil, errors.New("receiver is already receiving messages. ReceiveMessages() cannot be called concurrently")
	}
	r.receiving = true
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.receiving = false
		r.mu.Unlock()
	}()

	b := r.b
	for {
		b.mu.Lock()
		if err := b.enterLocked(r.op("ReceiveMessages")); err != nil {
			b.mu.Unlock()
			return nil, err
		}
		now := b.clock.Now()
		b.expireLocked(now)
		var out []*azservicebus.ReceivedMessage
		for _, m := range *b.list(r.dlq) {
			if m.locked || now.Before(m.visibleAt) {
				continue
			}
			m.locked = true
			m.lockToken = uuid.New()
			m.lockedUntil = now.Add(b.cfg.LockDuration)
			if !r.dlq {
				m.deliveries++
			}
			out = append(out, b.received(m, true))
			if len(out) == maxMessages {
				break
			}
		}
		ch := b.changed
		b.mu.Unlock()
		if len(out) > 0 {
			if len(out) < maxMessages {
				// The SDK keeps collecting for a moment after the first
				// message; a caller cannot count on one call getting all.
				t := time.NewTimer(sbTimeAfterFirstMessage)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
				}
				b.mu.Lock()
				now := b.clock.Now()
				for _, m := range *b.list(r.dlq) {
					if len(out) == maxMessages {
						break
					}
					if m.locked || now.Before(m.visibleAt) {
						continue
					}
					m.locked = true
					m.lockToken = uuid.New()
					m.lockedUntil = now.Add(b.cfg.LockDuration)
					if !r.dlq {
						m.deliveries++
					}
					out = append(out, b.received(m, true))
				}
				b.mu.Unlock()
			}
			if !r.dlq {
				b.mu.Lock()
				b.leftover[r] = max(b.leftover[r], maxMessages) - len(out)
				b.mu.Unlock()
			}
			return out, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-ch:
		}
	}
}

func (r *fakeReceiver) op(name string) string {
	if r.dlq {
		return "dlq." + name
	}
	return name
}

func (r *fakeReceiver) PeekMessages(ctx context.Context, maxMessageCount int, options *azservicebus.PeekMessagesOptions) ([]*azservicebus.ReceivedMessage, error) {
	b := r.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enterLocked(r.op("PeekMessages")); err != nil {
		return nil, err
	}
	b.expireLocked(b.clock.Now())
	from := r.lastPeeked + 1
	explicit := options != nil && options.FromSequenceNumber != nil
	if explicit {
		from = *options.FromSequenceNumber
	}
	msgs := append([]*fakeMsg(nil), *b.list(r.dlq)...)
	sort.Slice(msgs, func(i, j int) bool { return msgs[i].seq < msgs[j].seq })
	var out []*azservicebus.ReceivedMessage
	for _, m := range msgs {
		if m.seq < from {
			continue
		}
		out = append(out, b.received(m, false))
		if len(out) == maxMessageCount {
			break
		}
	}
	if len(out) > 0 && !explicit {
		r.lastPeeked = *out[len(out)-1].SequenceNumber
	}
	return out, nil
}

// lockedLocked finds the message holding token's lock on this receiver's
// entity, after expiring locks that ran out.
func (r *fakeReceiver) lockedLocked(token [16]byte) (*fakeMsg, int) {
	b := r.b
	b.expireLocked(b.clock.Now())
	for i, m := range *b.list(r.dlq) {
		if m.locked && m.lockToken == token {
			return m, i
		}
	}
	return nil, -1
}

func (r *fakeReceiver) settle(op string, msg *azservicebus.ReceivedMessage, f func(m *fakeMsg, i int) error) error {
	b := r.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enterLocked(r.op(op)); err != nil {
		return err
	}
	m, i := r.lockedLocked(msg.LockToken)
	if m == nil {
		return lockLost()
	}
	err := f(m, i)
	b.broadcastLocked()
	return err
}

func (r *fakeReceiver) remove(i int) {
	l := r.b.list(r.dlq)
	*l = append((*l)[:i:i], (*l)[i+1:]...)
}

func (r *fakeReceiver) CompleteMessage(ctx context.Context, msg *azservicebus.ReceivedMessage, _ *azservicebus.CompleteMessageOptions) error {
	return r.settle("CompleteMessage", msg, func(m *fakeMsg, i int) error {
		r.remove(i)
		return nil
	})
}

func (r *fakeReceiver) AbandonMessage(ctx context.Context, msg *azservicebus.ReceivedMessage, options *azservicebus.AbandonMessageOptions) error {
	return r.settle("AbandonMessage", msg, func(m *fakeMsg, i int) error {
		m.locked = false
		if options != nil {
			maps.Copy(m.props, options.PropertiesToModify)
		}
		if r.dlq {
			m.deliveries++ // counted, but nothing dead-letters from the sub-queue
			return nil
		}
		if int(m.deliveries) >= r.b.cfg.MaxDeliveryCount {
			r.remove(i)
			r.b.deadLetterLocked(m, queue.ReasonMaxDelivery, maxDeliveryDescription(r.b.cfg.MaxDeliveryCount))
		}
		return nil
	})
}

func (r *fakeReceiver) DeadLetterMessage(ctx context.Context, msg *azservicebus.ReceivedMessage, options *azservicebus.DeadLetterOptions) error {
	return r.settle("DeadLetterMessage", msg, func(m *fakeMsg, i int) error {
		if r.dlq {
			return errors.New("cannot dead-letter a message in the dead-letter queue")
		}
		var reason, desc string
		if options != nil {
			reason, desc = deref(options.Reason), deref(options.ErrorDescription)
			maps.Copy(m.props, options.PropertiesToModify)
		}
		r.remove(i)
		r.b.deadLetterLocked(m, reason, desc)
		return nil
	})
}

func (r *fakeReceiver) RenewMessageLock(ctx context.Context, msg *azservicebus.ReceivedMessage, _ *azservicebus.RenewMessageLockOptions) error {
	return r.settle("RenewMessageLock", msg, func(m *fakeMsg, i int) error {
		m.lockedUntil = r.b.clock.Now().Add(r.b.cfg.LockDuration)
		lu := m.lockedUntil
		msg.LockedUntil = &lu // the SDK updates the message in place
		return nil
	})
}

func (r *fakeReceiver) Close(context.Context) error { return nil }

// sendRawID enqueues a message whose AMQP message-id is not a string (a
// ulong, UUID or binary id from another producer).
func (b *fakeBroker) sendRawID(id any, body []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.enqueueLocked([]*azservicebus.Message{{Body: body}}, []any{id})
}

// GetQueue answers the queue's properties from the configuration.
func (b *fakeBroker) GetQueue(ctx context.Context, name string, _ *admin.GetQueueOptions) (*admin.GetQueueResponse, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.enterLocked("GetQueue"); err != nil {
		return nil, err
	}
	if b.cfg.Queue != nil {
		return &admin.GetQueueResponse{QueueName: name, QueueProperties: *b.cfg.Queue}, nil
	}
	p := admin.QueueProperties{
		LockDuration:               ptr(isoDuration(b.cfg.LockDuration)),
		MaxDeliveryCount:           ptr(int32(b.cfg.MaxDeliveryCount)),
		RequiresDuplicateDetection: ptr(b.cfg.DuplicateWindow > 0),
		EnablePartitioning:         ptr(b.cfg.Partitioned),
		RequiresSession:            ptr(false),
	}
	return &admin.GetQueueResponse{QueueName: name, QueueProperties: p}, nil
}

// sendRaw enqueues an SDK message as another producer would (e.g.
// Dataverse's native integration), bypassing the adapter.
func (b *fakeBroker) sendRaw(m *azservicebus.Message) error {
	s := &fakeSender{b: b}
	batch, err := s.NewMessageBatch(context.Background(), nil)
	if err != nil {
		return err
	}
	if err := batch.AddMessage(m, nil); err != nil {
		return err
	}
	return s.SendMessageBatch(context.Background(), batch, nil)
}
