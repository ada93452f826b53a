package syncer

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/msisync/msisync/internal/queue"
	"github.com/msisync/msisync/internal/store"
)

// What becomes of a message (settle).
const (
	opComplete = iota
	opSkip
	opDead
	opRequeued
	opRescheduled
)

// op is one message's settlement.
type op struct {
	m            *msg
	kind         int
	reason, desc string
}

// settle completes, requeues or dead-letters every message. Settlements run
// concurrently so the queue can commit them in groups.
func (b *batch) settle(ctx context.Context) error {
	ops, resend := b.settlements()
	// Re-sends are durable before their originals are completed.
	if len(resend) > 0 {
		if err := b.s.cfg.Queue.Send(ctx, resend...); err != nil {
			return fmt.Errorf("syncer: requeue %d messages: %w", len(resend), err)
		}
	}
	done, errs := b.s.settleAll(ctx, ops, b.markSettled)
	var settled []store.HistoryEntry
	now := b.s.clk.Now()
	for i, o := range ops {
		if !done[i] {
			continue
		}
		switch o.kind {
		case opComplete:
			b.stats.Completed++
		case opSkip:
			b.stats.Completed++
			b.stats.Skipped++
		case opDead:
			b.stats.DeadLettered++
			b.s.log.Warn("syncer: dead-lettered", "message", o.m.d.ID, "reason", o.reason, "description", o.desc)
		case opRequeued:
			b.stats.Requeued++
		case opRescheduled:
			b.stats.Rescheduled++
		}
		settled = append(settled, historyEntry(o.m, [...]string{store.OutcomeSynced, store.OutcomeSkipped,
			store.OutcomeDeadLettered, store.OutcomeRequeued, store.OutcomeRescheduled}[o.kind], o.reason, o.desc, now))
	}
	b.s.reportSettled(ctx, settled)
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// settlements decides what becomes of each message: the records' failures
// (none: complete) and the attempts made, with the re-sends to queue.
func (b *batch) settlements() ([]op, []queue.Message) {
	var ops []op
	for _, m := range b.early {
		ops = append(ops, op{m: m, kind: opSkip})
	}
	var resend []queue.Message
	for _, k := range slices.Sorted(maps.Keys(b.recs)) {
		r := b.recs[k]
		for _, m := range r.msgs {
			f := r.fail
			switch {
			case f == nil:
				ops = append(ops, op{m: m, kind: opComplete})
			case f.act == actSkip:
				ops = append(ops, op{m: m, kind: opSkip})
			case f.act == actDead || (f.act == actRequeue && m.attempt+1 > b.s.cfg.MaxAttempts):
				reason, desc := f.reason, f.desc
				if f.act == actRequeue && reason == ReasonGaveUp {
					// A transient failure on the last attempt must not hide
					// why the message kept failing before (e.g. a missing
					// dependency).
					if r, d := m.d.Properties[propLastReason], m.d.Properties[propLastDesc]; r != "" {
						reason, desc = r, d
					} else {
						desc = fmt.Sprintf("gave up after %d attempts: %s", m.attempt+1, desc)
					}
				}
				ops = append(ops, op{m: m, kind: opDead, reason: reason, desc: desc})
			default:
				msg := resendMessage(&b.s.cfg, b.s.clk.Now(), m, f)
				resend = append(resend, msg)
				kind := opRescheduled
				if msg.Properties[queue.PropAttempt] != strconv.Itoa(m.attempt) {
					kind = opRequeued
				}
				ops = append(ops, op{m: m, kind: kind, reason: f.reason, desc: f.desc})
			}
		}
	}
	return ops, resend
}

// settleAll completes or dead-letters ops, ≤ 32 at once, and reports which
// were done; mark is called for each message settled or tried. A queue
// that completes many deliveries in one round trip (queue.BatchCompleter,
// the embedded queue) gets the completions in one call.
func (s *Syncer) settleAll(ctx context.Context, ops []op, mark func(*queue.Delivery)) ([]bool, []error) {
	done := make([]bool, len(ops))
	errs := make([]error, len(ops))
	outcome := func(i int, err error) {
		mark(ops[i].m.d)
		switch {
		case err == nil:
			done[i] = true
		case ctx.Err() != nil:
			errs[i] = ctx.Err()
		case errors.Is(err, queue.ErrLockLost):
			s.log.Warn("syncer: lock lost before settling; the message will be redelivered", "message", ops[i].m.d.ID)
		default:
			errs[i] = fmt.Errorf("syncer: settle %s: %w", ops[i].m.d.ID, err)
		}
	}
	rest := make([]int, 0, len(ops))
	if bc, ok := s.cfg.Queue.(queue.BatchCompleter); ok {
		var idx []int
		var ds []*queue.Delivery
		for i, o := range ops {
			if o.kind == opDead {
				rest = append(rest, i)
				continue
			}
			idx = append(idx, i)
			ds = append(ds, o.m.d)
		}
		if len(ds) > 0 {
			for j, err := range bc.CompleteAll(ctx, ds) {
				outcome(idx[j], err)
			}
		}
	} else {
		for i := range ops {
			rest = append(rest, i)
		}
	}
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for _, i := range rest {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			o := ops[i]
			var err error
			if o.kind == opDead {
				err = s.cfg.Queue.DeadLetter(ctx, o.m.d, o.reason, o.desc)
			} else {
				err = s.cfg.Queue.Complete(ctx, o.m.d)
			}
			outcome(i, err)
		}()
	}
	wg.Wait()
	return done, errs
}

// resendMessage is the re-send of m after failure f, scheduled at now
// plus its delay.
func resendMessage(cfg *Config, now time.Time, m *msg, f *failure) queue.Message {
	attempt, delay := m.attempt, f.delay
	props := maps.Clone(m.d.Properties)
	if props == nil {
		props = map[string]string{}
	}
	resched, _ := strconv.Atoi(props[propRescheduled])
	if f.act == actRequeue {
		delay = cfg.RequeueBase << min(m.attempt, 20)
		delay = min(delay, cfg.RequeueMax)
		attempt++
	} else {
		resched++
		props[propRescheduled] = strconv.Itoa(resched)
	}
	props[queue.PropAttempt] = strconv.Itoa(attempt)
	if f.act == actRequeue && f.reason != ReasonGaveUp && f.reason != "" {
		props[propLastReason], props[propLastDesc] = f.reason, f.desc
	}
	if f.act == actRequeue && props[queue.PropFirstFailedAt] == "" {
		props[queue.PropFirstFailedAt] = now.UTC().Format(time.RFC3339)
	}
	if m.ev != nil {
		props[queue.PropEntity], props[queue.PropRecordID], props[queue.PropMessage] = m.ev.Entity, m.ev.RecordID, m.ev.Message
	}
	base, _, _ := strings.Cut(m.d.ID, "~")
	return queue.Message{
		// A new id per attempt (or duplicate detection would drop it), but a
		// deterministic one: if this delivery is handled twice (lock lost),
		// the second re-send is a duplicate and is dropped.
		ID:          fmt.Sprintf("%s~%d.%d", base, attempt, resched),
		Body:        m.d.Body,
		Properties:  props,
		ScheduledAt: now.Add(delay),
	}
}

func (b *batch) deadLetter(ctx context.Context, m *msg, reason, desc string) error {
	err := b.s.cfg.Queue.DeadLetter(ctx, m.d, reason, desc)
	b.markSettled(m.d)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, queue.ErrLockLost) {
			return nil
		}
		return fmt.Errorf("syncer: dead-letter %s: %w", m.d.ID, err)
	}
	b.s.log.Warn("syncer: dead-lettered", "message", m.d.ID, "reason", reason, "description", desc)
	b.stats.DeadLettered++
	return nil
}

func (b *batch) markSettled(d *queue.Delivery) {
	b.mu.Lock()
	b.settled[d] = true
	b.mu.Unlock()
}
