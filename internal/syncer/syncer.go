package syncer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/marketo/marketotype"
	"github.com/msisync/msisync/internal/queue"
	"github.com/msisync/msisync/internal/store"
)

// Queue is the part of the queue port the syncer uses.
type Queue interface {
	queue.Receiver
	queue.Sender
}

// RecordReader reads the current state of a Dataverse record (the Dataverse
// client satisfies it). It returns an error wrapping a not-found sentinel
// that IsNotFound recognises when the record is gone.
type RecordReader interface {
	Read(ctx context.Context, logicalName, id string, columns []string) (event.Attributes, error)
}

// Lead upsert strategies.
const (
	LeadAuto   = "auto"   // detect once whether lookupField=externalPersonId works
	LeadLookup = "lookup" // one createOrUpdate keyed on externalPersonId
	LeadSplit  = "split"  // query by externalPersonId, updateOnly by id, createOrUpdate by email
)

// Delete policies for leads and contacts.
const (
	DeleteKeep   = "keep"
	DeleteDelete = "delete"
)

// Dead-letter reasons set by the syncer (the description has the detail).
const (
	ReasonUndecodable       = "Undecodable"
	ReasonMissingDependency = "MissingDependency"
	ReasonMissingData       = "MissingData"
	ReasonRejected          = "MarketoRejected"
	ReasonGaveUp            = "RetriesExhausted"
)

// Store is what the syncer needs of msisync's state (store.Store has it):
// links, versions and connections to read, the record locks, a few meta
// keys written before a Marketo call, and Apply for a batch's bookkeeping.
// It also uses store.LockInspector and store.History when the store has them.
type Store interface {
	GetLinks(ctx context.Context, kind string, externalIDs []string) (map[string]store.Link, error)
	PutLinks(ctx context.Context, links []store.Link) error
	GetVersions(ctx context.Context, keys []string) (map[string]int64, error)
	PutVersions(ctx context.Context, versions map[string]int64) error
	GetConnections(ctx context.Context, ids []string) (map[string]store.Connection, error)
	ConnectionsByOpportunity(ctx context.Context, opportunityID string) ([]store.Connection, error)
	LockRecords(ctx context.Context, owner string, keys []string, ttl time.Duration) ([]string, error)
	UnlockRecords(ctx context.Context, owner string, keys []string) error
	GetMeta(ctx context.Context, key string) (string, bool, error)
	PutMeta(ctx context.Context, key, value string) error
	Apply(ctx context.Context, c *store.Changes) error
}

// Syncer consumes change events and writes them to Marketo.
type Syncer struct {
	cfg     Config
	log     *slog.Logger
	clk     clock.Clock
	metrics *metrics

	leadMu   sync.Mutex
	leadMode string // resolved lead strategy (lookup or split) once known

	roleMu    sync.Mutex
	roleCache map[string]roleCategory // connectionrole id → category read from Dataverse
	names     sync.Map                // refname meta key → cachedName (names.go)
}

// New checks the configuration and returns a Syncer.
func New(cfg Config) (*Syncer, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Syncer{cfg: cfg, log: cfg.Logger, clk: cfg.Clock, metrics: m, roleCache: map[string]roleCategory{}}
	if cfg.LeadStrategy != LeadAuto {
		s.leadMode = cfg.LeadStrategy
	}
	return s, nil
}

// Stats counts what one or more batches did.
type Stats struct {
	Received     int // messages received
	Completed    int // messages completed (written, or nothing to do)
	Skipped      int // completed without a write: own changes, ignored rows, stale versions
	Requeued     int // re-sent with a delay (attempt counted)
	Rescheduled  int // re-sent shortly because another worker held the record, or Marketo paused
	DeadLettered int
	// Written counts records Marketo accepted per object, Deleted per object.
	Written map[marketotype.Object]int
	Deleted map[marketotype.Object]int
	// Calls counts Marketo calls made by the syncer per object and operation
	// ("leads sync", "leads query", ...).
	Calls map[string]int
	// KeptPersons counts lead/contact deletes left in Marketo (policy keep).
	KeptPersons int
}

// Add adds o to s (totals over batches, e.g. in OnBatch).
func (s *Stats) Add(o Stats) {
	s.Received += o.Received
	s.Completed += o.Completed
	s.Skipped += o.Skipped
	s.Requeued += o.Requeued
	s.Rescheduled += o.Rescheduled
	s.DeadLettered += o.DeadLettered
	s.KeptPersons += o.KeptPersons
	for k, v := range o.Written {
		if s.Written == nil {
			s.Written = map[marketotype.Object]int{}
		}
		s.Written[k] += v
	}
	for k, v := range o.Deleted {
		if s.Deleted == nil {
			s.Deleted = map[marketotype.Object]int{}
		}
		s.Deleted[k] += v
	}
	for k, v := range o.Calls {
		if s.Calls == nil {
			s.Calls = map[string]int{}
		}
		s.Calls[k] += v
	}
}

// Run processes batches until ctx is done. Each of Concurrency loops
// settles a batch's messages while it processes the next one.
//
// When ctx ends, Run stops receiving and gives the batches in flight
// DrainTimeout to finish and settle: their record locks are then released,
// so a replacement worker (a rollout) continues at once. Messages still
// unsettled at the deadline, and messages received as ctx ended, are
// abandoned; Run then returns an error saying how many (a shutdown that
// dropped work is not a clean one). Records of a batch cut short keep their
// locks until RecordLockTTL, since one of its Marketo writes may still land.
func (s *Syncer) Run(ctx context.Context) error {
	// Batches run on work, which outlives ctx by at most DrainTimeout.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	finished := make(chan struct{})
	go func() {
		select {
		case <-finished:
			return
		case <-ctx.Done():
		}
		select {
		case <-finished:
		case <-s.cfg.After(s.cfg.DrainTimeout):
			cancelWork()
		}
	}()
	var abandoned atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < s.cfg.Concurrency; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.loop(ctx, work, &abandoned)
		}()
	}
	wg.Wait()
	close(finished)
	if n := abandoned.Load(); n > 0 {
		if work.Err() != nil {
			s.log.Warn("syncer: shutdown cut the batch in flight short; its messages are redelivered", "abandoned", n, "drainTimeout", s.cfg.DrainTimeout)
			return fmt.Errorf("syncer: shutdown: batch not finished within %s (DrainTimeout): abandoned %d messages", s.cfg.DrainTimeout, n)
		}
		// Received just as the stop began: handed back untouched.
		s.log.Info("syncer: shutdown handed back messages it had not started", "abandoned", n)
	}
	return ctx.Err()
}

func (s *Syncer) loop(ctx, work context.Context, abandoned *atomic.Int64) {
	failures := 0
	var settling chan struct{} // closed when the previous batch is settled
	defer func() {
		if settling != nil {
			<-settling
		}
	}()
	for ctx.Err() == nil {
		ds, err := s.receive(ctx)
		if ctx.Err() != nil {
			// Received as the shutdown began: hand them back now rather
			// than hold them until their locks expire.
			abandoned.Add(int64(s.abandon(work, ds)))
			break
		}
		var b *batch
		var stop func()
		if err == nil && len(ds) > 0 {
			b, stop = s.start(ds)
			err = b.process(work)
		}
		if settling != nil {
			<-settling
			settling = nil
		}
		if b != nil && err != nil {
			// Nothing to settle: the failure is logged once, below. Cut
			// short by the drain deadline: hand the messages back.
			stop()
			if work.Err() != nil {
				abandoned.Add(int64(s.abandon(work, b.unsettled())))
			}
			s.finish(b)
		} else if b != nil {
			done := make(chan struct{})
			settling = done
			go func() {
				defer close(done)
				serr := b.settle(work)
				stop()
				if work.Err() != nil {
					abandoned.Add(int64(s.abandon(work, b.unsettled())))
				}
				s.finish(b)
				if serr != nil && work.Err() == nil {
					s.log.Error("syncer: batch failed", "err", serr)
				}
			}()
		}
		if err == nil || ctx.Err() != nil {
			failures = 0
			continue
		}
		failures++
		delay := min(time.Duration(1<<min(failures, 6))*100*time.Millisecond, 5*time.Second)
		s.log.Error("syncer: batch failed", "err", err, "retryIn", delay)
		select {
		case <-ctx.Done():
		case <-s.cfg.After(delay):
		}
	}
}

// abandon hands deliveries back to the queue (shutdown) and returns how many
// it released. It runs after work may have ended, so it has a short context
// of its own.
func (s *Syncer) abandon(work context.Context, ds []*queue.Delivery) int {
	if len(ds) == 0 {
		return 0
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(work), 5*time.Second)
	defer cancel()
	n := 0
	for _, d := range ds {
		if err := s.cfg.Queue.Abandon(ctx, d); err != nil {
			if !errors.Is(err, queue.ErrLockLost) {
				s.log.Warn("syncer: abandon on shutdown", "message", d.ID, "err", err)
			}
			continue
		}
		n++
	}
	return n
}

// start begins a batch: its locks are renewed until stop is called.
func (s *Syncer) start(ds []*queue.Delivery) (*batch, func()) {
	b := newBatch(s, ds)
	b.started = s.clk.Now()
	renewCtx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.renewLoop(renewCtx, b.unsettled) }()
	wg.Add(1)
	go func() { defer wg.Done(); b.renewRecordLocks(renewCtx) }()
	return b, func() { cancel(); wg.Wait() }
}

func (s *Syncer) finish(b *batch) {
	s.metrics.observe(b.stats, s.clk.Now().Sub(b.started))
	if s.cfg.OnBatch != nil {
		s.cfg.OnBatch(b.stats)
	}
}

// ProcessBatch receives one batch (waiting up to IdleWait for a first
// message), processes and settles it, and returns what it did.
func (s *Syncer) ProcessBatch(ctx context.Context) (Stats, error) {
	ds, err := s.receive(ctx)
	if err != nil {
		return Stats{}, err
	}
	if len(ds) == 0 {
		return Stats{}, nil
	}
	b, stop := s.start(ds)
	err = b.process(ctx)
	if err == nil {
		err = b.settle(ctx)
	}
	stop()
	s.finish(b)
	return b.stats, err
}

func (s *Syncer) receive(ctx context.Context) ([]*queue.Delivery, error) {
	ds, err := s.cfg.Queue.Receive(ctx, s.cfg.ReceiveMax, s.cfg.IdleWait)
	if err != nil {
		return nil, fmt.Errorf("syncer: receive: %w", err)
	}
	if len(ds) == 0 || s.cfg.BatchWait <= 0 {
		return ds, nil
	}
	// Fill the batch for a short while: fewer, fuller Marketo calls.
	deadline := s.clk.Now().Add(s.cfg.BatchWait)
	for len(ds) < s.cfg.ReceiveMax {
		left := deadline.Sub(s.clk.Now())
		if left <= 0 {
			break
		}
		more, err := s.cfg.Queue.Receive(ctx, s.cfg.ReceiveMax-len(ds), left)
		if err != nil {
			if ctx.Err() != nil {
				return ds, ctx.Err() // the caller abandons what it holds
			}
			break // process what we have; the next receive reports the problem
		}
		if len(more) == 0 {
			break
		}
		ds = append(ds, more...)
	}
	return ds, nil
}

// renewLoop renews the locks of in-flight deliveries at half their remaining
// lock time, so a long batch (throttled Marketo) does not lose them.
func (s *Syncer) renewLoop(ctx context.Context, inFlight func() []*queue.Delivery) {
	for {
		ds := inFlight()
		if len(ds) == 0 {
			return
		}
		interval := time.Duration(1<<62) - 1
		now := s.clk.Now()
		for _, d := range ds {
			if left := d.LockedUntil.Sub(now) / 2; left < interval {
				interval = left
			}
		}
		interval = max(interval, 200*time.Millisecond)
		select {
		case <-ctx.Done():
			return
		case <-s.cfg.After(interval):
		}
		// Renew concurrently so the queue can commit the renewals in groups;
		// only messages still unsettled now.
		sem := make(chan struct{}, 16)
		var wg sync.WaitGroup
		for _, d := range inFlight() {
			if ctx.Err() != nil {
				break
			}
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				if err := s.cfg.Queue.Renew(ctx, d); err != nil && ctx.Err() == nil && !errors.Is(err, queue.ErrLockLost) {
					s.log.Warn("syncer: renew lock", "message", d.ID, "err", err)
				}
			}()
		}
		wg.Wait()
	}
}
