// Package store defines msisync's state port: which Dataverse records are in
// Marketo and under which Marketo id, the last applied version per record,
// stakeholder connections, the MSI values last written back, leases, record
// locks for several workers, and small checkpoints. Adapters live in
// sub-packages (sqlitestore, pgstore); storetest is the conformance suite.
package store

import (
	"context"
	"errors"
	"time"
)

// Marketo object kinds, used as Link.Kind.
const (
	KindSalesPerson = "salesperson"
	KindCompany     = "company"
	KindPerson      = "person"
	KindOpportunity = "opportunity"
	KindRole        = "role"
)

// ErrNotFound is returned when a single requested row does not exist.
var ErrNotFound = errors.New("store: not found")

// Link records that a Dataverse record exists in Marketo.
type Link struct {
	Kind       string // one of the Kind constants
	ExternalID string // lower-case Dataverse GUID (for roles: the connection id)
	MarketoID  string // Marketo id (integer ids as decimal text) or marketoGUID
	// Entity is the Dataverse logical name (lead or contact for persons).
	Entity string
	// Email is the person's or sales person's email as last synced.
	Email     string
	UpdatedAt time.Time
}

// Connection is a stakeholder connection as last synced to Marketo: a Delete
// event carries only the connection id, so this is how we find the role.
type Connection struct {
	ID            string // connection GUID (the master row)
	OpportunityID string
	PersonID      string // contact GUID
	Role          string
	UpdatedAt     time.Time
}

// RowVersionKey is the Versions key under which the syncer keeps the highest
// Dataverse RowVersion (versionnumber) it applied for a record key
// ("entity/id"): modifiedon has whole seconds, so two changes within one
// second share it, while RowVersion tells them apart (reconcile compares it).
func RowVersionKey(recordKey string) string { return recordKey + "@rv" }

// Store is the full state port.
type Store interface {
	// Links by external id. Missing ids are absent from the map.
	GetLinks(ctx context.Context, kind string, externalIDs []string) (map[string]Link, error)
	PutLinks(ctx context.Context, links []Link) error
	DeleteLinks(ctx context.Context, kind string, externalIDs []string) error
	// ListLinks pages through links of a kind in external-id order, starting
	// after the given id ("" for the beginning).
	ListLinks(ctx context.Context, kind string, after string, limit int) ([]Link, error)
	CountLinks(ctx context.Context, kind string) (int, error)

	// Versions are the last applied version per record key ("entity/id").
	GetVersions(ctx context.Context, keys []string) (map[string]int64, error)
	// PutVersions stores versions, never lowering one already stored.
	PutVersions(ctx context.Context, versions map[string]int64) error

	GetConnections(ctx context.Context, ids []string) (map[string]Connection, error)
	PutConnections(ctx context.Context, conns []Connection) error
	DeleteConnections(ctx context.Context, ids []string) error
	// ConnectionsByOpportunity lists the connections of an opportunity.
	ConnectionsByOpportunity(ctx context.Context, opportunityID string) ([]Connection, error)

	// MSI values last written to Dataverse, per person external id.
	GetMSIValues(ctx context.Context, personIDs []string) (map[string]map[string]string, error)
	PutMSIValues(ctx context.Context, values map[string]map[string]string) error

	// AcquireLease takes or renews the named lease for holder until now+ttl.
	// It returns false when another holder has an unexpired lease.
	AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error)
	ReleaseLease(ctx context.Context, name, holder string) error

	// LockRecords takes short per-record locks for owner (a worker) so that
	// two workers never write the same record at once. It returns the keys it
	// locked; keys held by another owner with an unexpired lock are left out.
	LockRecords(ctx context.Context, owner string, keys []string, ttl time.Duration) ([]string, error)
	UnlockRecords(ctx context.Context, owner string, keys []string) error

	// Meta is a small key/value table for checkpoints and detected settings.
	GetMeta(ctx context.Context, key string) (string, bool, error)
	PutMeta(ctx context.Context, key, value string) error

	// Apply saves a batch's changes in one transaction: all of them or, on
	// error or crash, none. Link and connection deletes and puts are the
	// net effect Changes holds; versions never go down.
	Apply(ctx context.Context, c *Changes) error

	Ping(ctx context.Context) error
	Close() error
}

// LockLeaser is implemented by stores in which an owner's record locks also
// last as long as the owner's lock lease: RenewLockLease extends that lease
// to now+ttl in one row, however many records the owner holds, so a worker
// waiting on Marketo renews a batch of 15,000 locks with one write. It
// reports whether a live lease was extended; false means none was alive (the
// first renewal, or the owner stalled past its ttl), and then the caller
// checks its locks with LockRecords, which the lease does not replace. A
// lock ends when both its own expiry and its owner's lease have passed.
type LockLeaser interface {
	RenewLockLease(ctx context.Context, owner string, ttl time.Duration) (bool, error)
}

// LockInspector is implemented by stores that can tell when another owner's
// record lock ends, so a worker that finds a record locked retries once, at
// the expiry, instead of polling. It is separate from Store so other stores
// (and test fakes) may leave it out.
type LockInspector interface {
	// RecordLockExpiry returns, for each key locked now (by any owner), when
	// its lock expires. Free and expired keys are left out.
	RecordLockExpiry(ctx context.Context, keys []string) (map[string]time.Time, error)
}
