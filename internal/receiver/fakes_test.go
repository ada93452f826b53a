package receiver

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/msisync/msisync/internal/queue"
)

// recorder is an in-memory queue.Sender that records what it was sent.
type recorder struct {
	mu        sync.Mutex
	sent      []queue.Message
	deadlines []time.Time
	err       error                       // returned by every Send when set
	reject    func(m queue.Message) error // per-message failure
}

func (r *recorder) Send(ctx context.Context, msgs ...queue.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if dl, ok := ctx.Deadline(); ok {
		r.deadlines = append(r.deadlines, dl)
	}
	if r.err != nil {
		return r.err
	}
	for _, m := range msgs {
		if r.reject != nil {
			if err := r.reject(m); err != nil {
				return err
			}
		}
	}
	r.sent = append(r.sent, msgs...)
	return nil
}

func (r *recorder) messages() []queue.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]queue.Message(nil), r.sent...)
}

// fakeDLQ is an in-memory queue.DeadLetters that records the filters it got.
type fakeDLQ struct {
	mu      sync.Mutex
	items   []queue.DeadLetter
	calls   []string
	filters []queue.Filter
	err     error
}

func (d *fakeDLQ) record(op string, f queue.Filter) {
	d.calls = append(d.calls, op)
	d.filters = append(d.filters, f)
}

func (d *fakeDLQ) match(f queue.Filter) []queue.DeadLetter {
	var out []queue.DeadLetter
	for _, it := range d.items {
		if len(f.IDs) > 0 && !contains(f.IDs, it.ID) {
			continue
		}
		if f.Entity != "" && it.Properties[queue.PropEntity] != f.Entity {
			continue
		}
		if f.Reason != "" && !strings.Contains(strings.ToLower(it.Reason+" "+it.Description), strings.ToLower(f.Reason)) {
			continue
		}
		if !f.Since.IsZero() && it.DeadLetteredAt.Before(f.Since) {
			continue
		}
		out = append(out, it)
		if f.Limit > 0 && len(out) == f.Limit {
			break
		}
	}
	return out
}

func (d *fakeDLQ) ListDead(_ context.Context, f queue.Filter) ([]queue.DeadLetter, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.record("list", f)
	if d.err != nil {
		return nil, d.err
	}
	return d.match(f), nil
}

func (d *fakeDLQ) GetDead(_ context.Context, id string) (queue.DeadLetter, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.record("get", queue.Filter{IDs: []string{id}})
	for _, it := range d.items {
		if it.ID == id {
			return it, nil
		}
	}
	return queue.DeadLetter{}, queue.ErrNotFound
}

func (d *fakeDLQ) remove(f queue.Filter) int {
	m := d.match(f)
	var keep []queue.DeadLetter
	for _, it := range d.items {
		found := false
		for _, x := range m {
			found = found || x.ID == it.ID
		}
		if !found {
			keep = append(keep, it)
		}
	}
	d.items = keep
	return len(m)
}

func (d *fakeDLQ) ReplayDead(_ context.Context, f queue.Filter) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.record("replay", f)
	return d.remove(f), nil
}

func (d *fakeDLQ) PurgeDead(_ context.Context, f queue.Filter) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.record("purge", f)
	return d.remove(f), nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
