package syncer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"time"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/store"
	"github.com/msisync/msisync/internal/syncer/mapping"
	"github.com/prometheus/client_golang/prometheus"
)

// Config configures a Syncer. Queue, Store and Marketo are required.
type Config struct {
	Queue   Queue
	Store   Store
	Marketo Marketo
	// Dataverse re-reads records (optional: nil when MSISYNC_DATAVERSE_URL is unset).
	Dataverse RecordReader
	// IsNotFound recognises the Dataverse client's not-found error
	// (errors.Is(err, dataverse.ErrNotFound)); nil treats every read error
	// as transient.
	IsNotFound func(error) bool
	// ParseNative parses a message posted by Dataverse's native Service Bus
	// integration (optional).
	ParseNative func(body []byte, props map[string]string) (*event.Event, error)
	Mapping     *mapping.Mapping // default mapping.Default()

	BatchSize int // records per Marketo call and messages per receive, 1..300 (default 300)
	// ReceiveMax is how many messages one batch takes (default 5 ×
	// BatchSize: a mixed batch then gives each of the five object types up to
	// BatchSize records per call). A backlog drains in fuller calls with more;
	// msisync's worker uses DefaultReceiveMax.
	ReceiveMax  int
	BatchWait   time.Duration // how long to wait to fill a batch after the first message
	IdleWait    time.Duration // how long one receive waits for a first message (default 1 s)
	Concurrency int           // batches in flight in Run (default 1)
	// CallConcurrency is how many Marketo calls of one kind (the chunks of
	// ≤ BatchSize of one object's writes, or of one lookup) a batch makes at
	// once (default 1). Set it to what the Marketo client's governor allows:
	// a backlog's calls then start together when the rate window frees
	// instead of one after another. Results are applied in chunk order
	// whatever order the calls end in.
	CallConcurrency int

	MaxAttempts int           // requeues before dead-lettering (default 8)
	RequeueBase time.Duration // first requeue delay (default 2 s)
	RequeueMax  time.Duration // delay cap (default 5 min)
	LockedDelay time.Duration // shortest delay for records another worker holds (default 1 s)
	// RecordLockTTL is a record lock's lifetime (default 15 s). Locks are
	// renewed every third of it while their batch runs, so it only bounds
	// the wait after a crash: a record a dead worker held is retried once, at
	// the lock's expiry (when the store is a store.LockInspector).
	RecordLockTTL time.Duration
	// DrainTimeout is how long Run lets in-flight batches finish and settle
	// after its context ends (default 10 s). What is still unsettled then is
	// abandoned, so a replacement worker receives it at once, and Run
	// returns an error saying how many messages it abandoned.
	DrainTimeout time.Duration

	// AnyConnectionRole syncs opportunity→contact connections of every role
	// category. By default (false) only Stakeholder-category roles (1000)
	// become Marketo opportunity roles; checking that needs Dataverse access
	// (see stakeholder in connections.go), without which every role is accepted.
	AnyConnectionRole bool

	LeadStrategy         string // auto (default), lookup or split
	DeletePolicy         string // keep (default) or delete
	AppUserID            string // integration's Dataverse application user (loop prevention)
	DefaultSalesPersonID string // systemuser GUID for team-owned records
	WorkerID             string // owner name of record locks (default "worker")

	Clock clock.Clock
	// After waits for a duration (default time.After): the lock-renewal
	// interval and the retry delay after a failed batch go through it, so
	// tests drive them with Clock.
	After      func(time.Duration) <-chan time.Time
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// OnBatch, when set, is called with the stats of every settled batch
	// (progress bars, benchmarks). It must not block for long.
	OnBatch func(Stats)
	// OnSettle, when set, gets what became of each settled message (record
	// history, sync lag); see history.go. It must not block for long.
	OnSettle func(ctx context.Context, settled []store.HistoryEntry)
}

// check fills in the defaults and rejects what cannot work.
func (c *Config) check() error {
	switch {
	case c.Queue == nil:
		return errors.New("syncer: Config.Queue is required")
	case c.Store == nil:
		return errors.New("syncer: Config.Store is required")
	case c.Marketo == nil:
		return errors.New("syncer: Config.Marketo is required")
	}
	if v := reflect.ValueOf(c.Dataverse); c.Dataverse != nil && v.Kind() == reflect.Pointer && v.IsNil() {
		c.Dataverse = nil // a nil *dataverse.Client: Dataverse is not configured
	}
	if c.BatchSize == 0 {
		c.BatchSize = 300
	}
	if c.BatchSize < 1 || c.BatchSize > 300 {
		return fmt.Errorf("syncer: BatchSize %d out of range 1..300", c.BatchSize)
	}
	if c.ReceiveMax <= 0 {
		c.ReceiveMax = 5 * c.BatchSize
	}
	if c.Mapping == nil {
		c.Mapping = mapping.Default()
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.IdleWait, time.Second)
	def(&c.RequeueBase, 2*time.Second)
	def(&c.RequeueMax, 5*time.Minute)
	def(&c.LockedDelay, time.Second)
	def(&c.RecordLockTTL, 15*time.Second)
	def(&c.DrainTimeout, 10*time.Second)
	if c.CallConcurrency <= 0 {
		c.CallConcurrency = 1
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 1
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 8
	}
	switch c.LeadStrategy {
	case "":
		c.LeadStrategy = LeadAuto
	case LeadAuto, LeadLookup, LeadSplit:
	default:
		return fmt.Errorf("syncer: LeadStrategy %q: want auto, lookup or split", c.LeadStrategy)
	}
	switch c.DeletePolicy {
	case "":
		c.DeletePolicy = DeleteKeep
	case DeleteKeep, DeleteDelete:
	default:
		return fmt.Errorf("syncer: DeletePolicy %q: want keep or delete", c.DeletePolicy)
	}
	if c.AppUserID != "" {
		if !event.IsGUID(c.AppUserID) {
			return fmt.Errorf("syncer: AppUserID %q is not a GUID", c.AppUserID)
		}
		c.AppUserID = event.NormalizeID(c.AppUserID)
	}
	if c.DefaultSalesPersonID != "" {
		if !event.IsGUID(c.DefaultSalesPersonID) {
			return fmt.Errorf("syncer: DefaultSalesPersonID %q is not a GUID", c.DefaultSalesPersonID)
		}
		c.DefaultSalesPersonID = event.NormalizeID(c.DefaultSalesPersonID)
	}
	if c.WorkerID == "" {
		c.WorkerID = "worker"
	}
	if c.Clock == nil {
		c.Clock = clock.System{}
	}
	if c.After == nil {
		c.After = time.After
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// DefaultReceiveMax is the ReceiveMax msisync's worker takes unless
// MSISYNC_RECEIVE_MAX says otherwise. Each batch ends every object type with
// a part-full call, and a record changed again after its batch is written
// again, so a backlog drains in fewer calls when a batch takes more of it:
// 30,000 mixed events cost 206 calls at 20 × 300, past the 200 that fit in
// two of Marketo's 20-second windows, and 196 at 50 × 300 (bench sync). A
// batch holds its messages in memory (about 10-20 KB each in flight), and
// while it waits for Marketo every message's lock is renewed: a local write
// the embedded queue commits with others, but a network round trip per
// message on Service Bus, which therefore takes 5 × BatchSize.
func DefaultReceiveMax(batchSize int, renewsPerMessage bool) int {
	if renewsPerMessage {
		return 5 * batchSize
	}
	return 50 * batchSize
}
