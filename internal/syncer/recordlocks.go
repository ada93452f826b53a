package syncer

import (
	"context"
	"slices"
	"time"

	"github.com/msisync/msisync/internal/store"
)

// lockMargin is added to another worker's lock expiry so the one retry
// lands after the lock is free, not just before it.
const lockMargin = 250 * time.Millisecond

// lockedDelays says when to retry each record another worker holds: once,
// just after its lock expires. A live holder releases its locks when its
// batch ends, and a dead one's expire within RecordLockTTL, so polling every
// LockedDelay until then only burns queue operations (a spin of reschedules
// after a crash). Without a store.LockInspector, or when a lock has just
// gone, the retry comes after RecordLockTTL or LockedDelay.
func (b *batch) lockedDelays(ctx context.Context, keys []string) map[string]time.Duration {
	out := make(map[string]time.Duration, len(keys))
	if len(keys) == 0 {
		return out
	}
	cfg := b.s.cfg
	for _, k := range keys {
		out[k] = cfg.RecordLockTTL + lockMargin
	}
	li, ok := cfg.Store.(store.LockInspector)
	if !ok {
		return out
	}
	exp, err := li.RecordLockExpiry(ctx, keys)
	if err != nil {
		b.s.log.Warn("syncer: read record lock expiry", "records", len(keys), "err", err)
		return out
	}
	now := b.s.clk.Now()
	for _, k := range keys {
		d := cfg.LockedDelay // freed between LockRecords and now: retry soon
		if t, ok := exp[k]; ok {
			d = max(t.Sub(now)+lockMargin, cfg.LockedDelay)
		}
		out[k] = min(d, cfg.RecordLockTTL+lockMargin)
	}
	return out
}

// renewRecordLocks extends the batch's record locks every third of
// RecordLockTTL until ctx ends, so the TTL can be short (it bounds the wait
// after a crash) while a slow batch (throttled Marketo) keeps its records.
func (b *batch) renewRecordLocks(ctx context.Context) {
	ttl := b.s.cfg.RecordLockTTL
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.s.cfg.After(ttl / 3):
		}
		b.lockMu.Lock()
		// A batch may lock a key twice (the batch that detects the lead
		// strategy locks its emails for the probe and again for split):
		// the store re-locks it once, which is not a lost lock.
		b.locked = uniqKeys(b.locked)
		keys := b.locked
		// With a live lock lease one write renews every lock the worker
		// holds; otherwise each lock is renewed and checked.
		if len(keys) > 0 && ctx.Err() == nil && !b.renewLease(ctx, ttl) {
			got, err := b.s.cfg.Store.LockRecords(ctx, b.s.cfg.WorkerID, keys, ttl)
			switch {
			case err != nil && ctx.Err() == nil:
				b.s.log.Warn("syncer: renew record locks", "records", len(keys), "err", err)
			case err == nil && len(got) < len(keys):
				// Held past the TTL (the store was unreachable): another
				// worker may write these records now.
				b.s.log.Warn("syncer: record locks lost before renewal", "records", len(keys)-len(got))
			}
		}
		b.lockMu.Unlock()
	}
}

// renewLease extends the worker's lock lease when the store has one
// (store.LockLeaser) and reports whether it was still alive: then no lock of
// the batch can have been taken since the last renewal. Otherwise (the first
// renewal, a stall past the TTL, an error, no lease in the store) the caller
// renews and checks the locks one by one.
func (b *batch) renewLease(ctx context.Context, ttl time.Duration) bool {
	ll, ok := b.s.cfg.Store.(store.LockLeaser)
	if !ok {
		return false
	}
	alive, err := ll.RenewLockLease(ctx, b.s.cfg.WorkerID, ttl)
	if err != nil {
		if ctx.Err() == nil {
			b.s.log.Warn("syncer: renew lock lease", "err", err)
		}
		return false
	}
	return alive
}

// uniqKeys drops repeated keys in place, keeping the first of each.
func uniqKeys(keys []string) []string {
	seen := make(map[string]struct{}, len(keys))
	return slices.DeleteFunc(keys, func(k string) bool {
		if _, dup := seen[k]; dup {
			return true
		}
		seen[k] = struct{}{}
		return false
	})
}

// unlockRecords releases the batch's record locks. Holding lockMu across
// the store call keeps a renewal from re-taking a lock just released.
func (b *batch) unlockRecords(ctx context.Context) {
	b.lockMu.Lock()
	defer b.lockMu.Unlock()
	if len(b.locked) == 0 {
		return
	}
	if err := b.s.cfg.Store.UnlockRecords(ctx, b.s.cfg.WorkerID, b.locked); err != nil {
		b.s.log.Warn("syncer: unlock records", "err", err)
		return
	}
	b.locked = nil
}
