package servicebus

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus"

	"github.com/msisync/msisync/internal/queue"
)

// peekPage is how many dead letters one PeekMessages call asks for.
const peekPage = 250

// receivePage is how many dead letters one ReceiveMessages call asks for
// during replay and purge.
const receivePage = 100

// ListDead lists dead letters matching f by peeking the dead-letter
// sub-queue (no locks taken). A dead letter's ID is its sequence number.
func (q *Queue) ListDead(ctx context.Context, f queue.Filter) ([]queue.DeadLetter, error) {
	var out []queue.DeadLetter
	err := q.eachDead(ctx, f, func(m *azservicebus.ReceivedMessage) bool {
		dl := toDeadLetter(m)
		if f.NoBody {
			dl.Body = nil
		}
		out = append(out, dl)
		return f.Limit <= 0 || len(out) < f.Limit
	})
	if err != nil {
		return nil, err
	}
	if out == nil {
		out = []queue.DeadLetter{}
	}
	return out, nil
}

// GetDead peeks one dead letter by its ID (sequence number).
func (q *Queue) GetDead(ctx context.Context, id string) (queue.DeadLetter, error) {
	seq, err := parseDeadID(id)
	if err != nil {
		return queue.DeadLetter{}, err
	}
	m, err := q.peekDead(ctx, seq)
	if err != nil {
		return queue.DeadLetter{}, err
	}
	if m == nil {
		return queue.DeadLetter{}, fmt.Errorf("servicebus: dead letter %s in queue %q: %w", id, q.queueName, queue.ErrNotFound)
	}
	return toDeadLetter(m), nil
}

func parseDeadID(id string) (int64, error) {
	seq, err := strconv.ParseInt(strings.TrimSpace(id), 10, 64)
	if err != nil || seq < 0 {
		return 0, fmt.Errorf("servicebus: dead letter %q (ids are sequence numbers): %w", id, queue.ErrNotFound)
	}
	return seq, nil
}

// peekDead returns the dead letter with sequence number seq, or nil.
func (q *Queue) peekDead(ctx context.Context, seq int64) (*azservicebus.ReceivedMessage, error) {
	var msgs []*azservicebus.ReceivedMessage
	err := q.do(ctx, "peek dead letter "+strconv.FormatInt(seq, 10), func() error {
		var err error
		msgs, err = peekSafely(ctx, q.api.deadLetters, 1, &azservicebus.PeekMessagesOptions{FromSequenceNumber: &seq})
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(msgs) == 0 || msgs[0].SequenceNumber == nil || *msgs[0].SequenceNumber != seq {
		return nil, nil
	}
	return msgs[0], nil
}

// eachDead peeks the dead letters matching f in sequence order and calls
// visit for each until it returns false.
func (q *Queue) eachDead(ctx context.Context, f queue.Filter, visit func(*azservicebus.ReceivedMessage) bool) error {
	if len(f.IDs) > 0 {
		done := make(map[int64]bool, len(f.IDs))
		for _, id := range f.IDs {
			seq, err := parseDeadID(id)
			if err != nil {
				return err
			}
			if done[seq] {
				continue
			}
			done[seq] = true
			m, err := q.peekDead(ctx, seq)
			if err != nil {
				return err
			}
			if m != nil && matches(m, f) && !visit(m) {
				return nil
			}
		}
		return nil
	}
	from := int64(1) // where the SDK's own peek iteration starts
	if f.After != "" {
		after, err := parseDeadID(f.After)
		if err != nil {
			return err
		}
		from = after + 1
	}
	for {
		var msgs []*azservicebus.ReceivedMessage
		err := q.do(ctx, "peek dead letters", func() error {
			var err error
			msgs, err = peekSafely(ctx, q.api.deadLetters, peekPage, &azservicebus.PeekMessagesOptions{FromSequenceNumber: &from})
			return err
		})
		if err != nil {
			return err
		}
		if len(msgs) == 0 {
			return nil
		}
		for _, m := range msgs {
			if m.SequenceNumber != nil && *m.SequenceNumber >= from {
				from = *m.SequenceNumber + 1
			}
			if matches(m, f) && !visit(m) {
				return nil
			}
		}
	}
}

// matches applies f's Entity, Reason and Since (IDs are handled by the caller).
func matches(m *azservicebus.ReceivedMessage, f queue.Filter) bool {
	if f.Entity != "" && propString(m.ApplicationProperties[queue.PropEntity]) != f.Entity {
		return false
	}
	if f.Reason != "" {
		want := strings.ToLower(f.Reason)
		if !strings.Contains(strings.ToLower(deref(m.DeadLetterReason)), want) &&
			!strings.Contains(strings.ToLower(deref(m.DeadLetterErrorDescription)), want) {
			return false
		}
	}
	if !f.Since.IsZero() && deadLetteredAt(m).Before(f.Since) {
		return false
	}
	return true
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// deadLetteredAt is when the message was dead-lettered as far as the
// adapter knows: Service Bus does not record it, so it is the time stamped
// by DeadLetter or by the last Abandon (which is what pushes a message over
// MaxDeliveryCount), else the enqueue time (a consumer that died holding it).
func deadLetteredAt(m *azservicebus.ReceivedMessage) time.Time {
	if t, ok := propTime(m.ApplicationProperties, propDeadAt); ok {
		return t
	}
	if t, ok := propTime(m.ApplicationProperties, propLastFailedAt); ok {
		return t
	}
	if m.EnqueuedTime != nil {
		return *m.EnqueuedTime
	}
	return time.Time{}
}

func toDeadLetter(m *azservicebus.ReceivedMessage) queue.DeadLetter {
	dl := queue.DeadLetter{
		MessageID:      messageID(m),
		Body:           m.Body,
		Properties:     stringProperties(m.ApplicationProperties),
		Reason:         deref(m.DeadLetterReason),
		Description:    deref(m.DeadLetterErrorDescription),
		DeliveryCount:  int(m.DeliveryCount),
		DeadLetteredAt: deadLetteredAt(m),
	}
	if m.SequenceNumber != nil {
		dl.ID = strconv.FormatInt(*m.SequenceNumber, 10)
	}
	if m.EnqueuedTime != nil {
		dl.EnqueuedAt = *m.EnqueuedTime
	}
	switch {
	case hasTime(m.ApplicationProperties, queue.PropFirstFailedAt):
		dl.FirstFailureAt, _ = propTime(m.ApplicationProperties, queue.PropFirstFailedAt)
	case hasTime(m.ApplicationProperties, propFirstFailedAt):
		dl.FirstFailureAt, _ = propTime(m.ApplicationProperties, propFirstFailedAt)
	default:
		dl.FirstFailureAt = dl.DeadLetteredAt
	}
	return dl
}

func hasTime(props map[string]any, key string) bool {
	_, ok := propTime(props, key)
	return ok
}

// ReplayDead sends a copy of each matching dead letter to the queue under a
// new message id (duplicate detection would drop the old one), then completes
// the dead-lettered original. Without transactions a crash between the two
// leaves both; the copy's id is derived from the original id and the replay
// count, so a replay run again within the duplicate detection window sends
// nothing twice.
func (q *Queue) ReplayDead(ctx context.Context, f queue.Filter) (int, error) {
	f.After, f.NoBody = "", false // listing options: a replay needs the bodies
	return q.drainDead(ctx, "replay", f, func(msgs []*azservicebus.ReceivedMessage) error {
		copies := make([]*azservicebus.Message, len(msgs))
		for i, m := range msgs {
			copies[i] = replayCopy(m)
		}
		return q.sendBatches(ctx, "replay dead letters", copies)
	})
}

// PurgeDead deletes the matching dead letters.
func (q *Queue) PurgeDead(ctx context.Context, f queue.Filter) (int, error) {
	f.After, f.NoBody = "", false // listing options: a replay needs the bodies
	return q.drainDead(ctx, "purge", f, nil)
}

// replayCopy is the message replay sends: same body and properties, a new
// MessageID, the first id in PropOriginalID and PropReplayCount plus one.
func replayCopy(m *azservicebus.ReceivedMessage) *azservicebus.Message {
	props := make(map[string]any, len(m.ApplicationProperties)+2)
	for k, v := range m.ApplicationProperties {
		if !adapterProps[k] {
			props[k] = v
		}
	}
	orig := propString(m.ApplicationProperties[queue.PropOriginalID])
	if orig == "" {
		orig = messageID(m)
	}
	n := propInt(m.ApplicationProperties, queue.PropReplayCount) + 1
	props[queue.PropOriginalID] = orig
	props[queue.PropReplayCount] = strconv.Itoa(n)
	// A replay is a fresh start: the requeue count starts again.
	delete(props, queue.PropAttempt)
	id := replayID(messageID(m), n)
	return &azservicebus.Message{
		MessageID:             &id,
		Body:                  m.Body,
		ApplicationProperties: props,
		ContentType:           m.ContentType,
		CorrelationID:         m.CorrelationID,
		Subject:               m.Subject,
	}
}

// replayID is the id of the n-th replay of the message with id: the same
// for every attempt at that replay (so duplicate detection drops a repeat),
// different from the id and from other replays. Ids stay within Service
// Bus's 128 characters.
func replayID(id string, n int) string {
	suffix := ".replay-" + strconv.Itoa(n)
	if len(id)+len(suffix) <= 128 {
		return id + suffix
	}
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:20]) + suffix
}

// drainDead receives the dead letters listed for f from the sub-queue, runs
// before (if any) on each received batch of them and completes them. Other
// dead letters received on the way stay locked until the end, so the next
// receive moves on, then are abandoned (Service Bus counts that as a
// delivery of the dead letter).
func (q *Queue) drainDead(ctx context.Context, op string, f queue.Filter, before func([]*azservicebus.ReceivedMessage) error) (int, error) {
	targets, err := q.ListDead(ctx, f)
	if err != nil {
		return 0, fmt.Errorf("servicebus: %s dead letters: %w", op, err)
	}
	if len(targets) == 0 {
		return 0, nil
	}
	want := make(map[int64]bool, len(targets))
	for _, t := range targets {
		seq, _ := strconv.ParseInt(t.ID, 10, 64)
		want[seq] = true
	}

	select {
	case q.dlqSlot <- struct{}{}:
	case <-ctx.Done():
		return 0, fmt.Errorf("servicebus: %s dead letters: %w", op, ctx.Err())
	}
	defer func() { <-q.dlqSlot }()

	var held []*azservicebus.ReceivedMessage
	defer func() {
		// Release what we skipped even if ctx is cancelled.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		for _, m := range held {
			if err := q.do(actx, "release dead letter", func() error {
				return q.api.deadLetters.AbandonMessage(actx, m, nil)
			}); err != nil && !errors.Is(err, queue.ErrLockLost) {
				q.log.Warn("servicebus: release skipped dead letter", "seq", deref64(m.SequenceNumber), "err", err)
			}
		}
	}()

	done := 0
	seen := make(map[int64]bool)
	for len(want) > 0 {
		var msgs []*azservicebus.ReceivedMessage
		rctx, cancel := context.WithTimeout(ctx, q.dlqWait)
		err := q.do(rctx, "receive dead letters", func() error {
			var err error
			msgs, err = receiveSafely(rctx, q.api.deadLetters, receivePage)
			return err
		})
		cancel()
		if err != nil {
			if ctx.Err() == nil && rctx.Err() != nil {
				break // nothing more arrived
			}
			return done, fmt.Errorf("servicebus: %s dead letters: %w", op, err)
		}
		if len(msgs) == 0 {
			break
		}
		fresh := false
		var batch []*azservicebus.ReceivedMessage
		for _, m := range msgs {
			seq := deref64(m.SequenceNumber)
			if !seen[seq] {
				fresh = true
				seen[seq] = true
			}
			if want[seq] {
				delete(want, seq)
				batch = append(batch, m)
				continue
			}
			held = append(held, m)
		}
		if len(batch) > 0 {
			if before != nil {
				if err := before(batch); err != nil {
					held = append(held, batch...)
					return done, fmt.Errorf("servicebus: %s dead letters: %w", op, err)
				}
			}
			for i, m := range batch {
				if err := q.do(ctx, fmt.Sprintf("complete dead letter %d", deref64(m.SequenceNumber)), func() error {
					return q.api.deadLetters.CompleteMessage(ctx, m, nil)
				}); err != nil {
					held = append(held, batch[i+1:]...)
					return done, fmt.Errorf("servicebus: %s dead letters: %w", op, err)
				}
				done++
			}
		}
		if !fresh {
			break // only messages whose locks ran out came back: the rest are gone
		}
	}
	if len(want) > 0 {
		q.log.Info("servicebus: some listed dead letters were gone before "+op, "missing", len(want))
	}
	return done, nil
}

func deref64(p *int64) int64 {
	if p == nil {
		return -1
	}
	return *p
}
