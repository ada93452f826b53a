package syncer

import (
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/marketo/marketotype"
	"github.com/msisync/msisync/internal/queue"
	"github.com/msisync/msisync/internal/store"
)

// tombstone is the version stored for a deleted record: every later event
// about it is stale (Dataverse never reuses a GUID).
const tombstone = int64(math.MaxInt64)

// propRescheduled counts re-sends that did not count as an attempt
// (record locked by another worker, Marketo paused).
const propRescheduled = "msisync-rescheduled"

// propLastReason and propLastDesc carry the last definitive reason a
// message was requeued for (missing dependency, missing data).
const (
	propLastReason = "msisync-last-reason"
	propLastDesc   = "msisync-last-description"
)

// metaLookupField remembers whether Sync Leads accepts lookupField=externalPersonId.
const metaLookupField = "marketo.leads.lookupExternalPersonId"

// metaQualified marks a lead qualified into a contact: later lead events are
// ignored so the person that moved to the contact is not pulled back.
func metaQualified(leadID string) string { return "qualified/lead/" + leadID }

func kindOf(entity string) string {
	switch entity {
	case event.EntitySystemUser:
		return store.KindSalesPerson
	case event.EntityAccount:
		return store.KindCompany
	case event.EntityContact, event.EntityLead:
		return store.KindPerson
	case event.EntityOpportunity:
		return store.KindOpportunity
	case event.EntityConnection:
		return store.KindRole
	}
	return ""
}

var objectOf = map[string]marketotype.Object{
	store.KindSalesPerson: marketotype.SalesPersons,
	store.KindCompany:     marketotype.Companies,
	store.KindPerson:      marketotype.Leads,
	store.KindOpportunity: marketotype.Opportunities,
	store.KindRole:        marketotype.Roles,
}

// externalField is each kind's external-id field in Marketo.
var externalField = map[string]string{
	store.KindSalesPerson: "externalSalesPersonId",
	store.KindCompany:     "externalCompanyId",
	store.KindPerson:      "externalPersonId",
	store.KindOpportunity: "externalOpportunityId",
}

// systemColumns change on every update and never matter to Marketo.
var systemColumns = map[string]bool{
	"modifiedon": true, "modifiedby": true, "modifiedonbehalfby": true, "versionnumber": true,
	"fullname": true, "yomifullname": true, "timezoneruleversionnumber": true, "utcconversiontimezonecode": true,
}

// required lists the columns a record must carry to be created in Marketo
// when the event is an Update of a record not yet there.
var required = map[string][]string{
	event.EntitySystemUser:  {"internalemailaddress"},
	event.EntityAccount:     {"name", "ownerid"},
	event.EntityContact:     {"ownerid", "emailaddress1"},
	event.EntityLead:        {"ownerid", "emailaddress1"},
	event.EntityOpportunity: {"name", "ownerid"},
	event.EntityConnection:  {"record1id", "record2id", "record2roleid"},
}

type msg struct {
	d       *queue.Delivery
	ev      *event.Event
	attempt int
}

type action int

const (
	actRequeue    action = iota + 1 // delay grows with the attempt; dead-letter after MaxAttempts
	actReschedule                   // fixed delay, attempt not counted (locked, paused)
	actDead                         // dead-letter now
	actSkip                         // complete without writing
)

type failure struct {
	act          action
	delay        time.Duration // actReschedule
	reason, desc string        // dead-letter reason and description (when it comes to that)
}

type dep struct {
	kind, entity, id string
	why              string // "company of contact 9a1…"
}

func (d dep) String() string { return d.entity + " " + d.id + " (" + d.why + ")" }

type rec struct {
	entity, id, key, kind string
	msgs                  []*msg
	attrs                 event.Attributes
	formatted             map[string]string
	colVersion            map[string]int64 // version of the event that supplied each column
	version               int64
	full                  bool // Create or re-read: carries the whole record
	deleted               bool
	synthetic             bool // a dependency read from Dataverse, no message of its own
	fail                  *failure
	written               bool
	marketoID             string
	// rowVersion is the highest Dataverse RowVersion merged; stored under
	// store.RowVersionKey so that reconcile can tell same-second changes apart.
	rowVersion int64
}

func (r *rec) name() string { return r.entity + " " + r.id }

type batch struct {
	s       *Syncer
	ds      []*queue.Delivery
	stats   Stats
	started time.Time

	mu      sync.Mutex
	settled map[*queue.Delivery]bool

	recs   map[string]*rec // by key
	early  []*msg          // skipped before grouping
	links  map[string]map[string]store.Link
	absent map[string]map[string]bool
	lockMu sync.Mutex // guards locked; held across lock renewals and the unlock
	locked []string
	// plan is what the batch writes, in which order (plan.go); the
	// resolver finds what it depends on.
	plan     *plan
	resolver resolver
	// writers write each kind in MSI's order (write.go); roles is also
	// the retire stage and knows the batch's connections.
	writers map[string]writer
	roles   *roleWriter
	deleter *deleter
	merger  *merger
	// mk makes the batch's Marketo write calls (paused on quota and
	// configuration errors).
	mk marketoCalls
	// changes collects every store change the batch makes (links,
	// versions, connections, meta); save applies them in one transaction.
	changes store.Changes
}

func newBatch(s *Syncer, ds []*queue.Delivery) *batch {
	b := &batch{s: s, ds: ds, settled: map[*queue.Delivery]bool{}, recs: map[string]*rec{},
		links: map[string]map[string]store.Link{}, absent: map[string]map[string]bool{},
		stats: Stats{Written: map[marketotype.Object]int{}, Deleted: map[marketotype.Object]int{}, Calls: map[string]int{}}}
	for _, k := range stages {
		b.links[k] = map[string]store.Link{}
		b.absent[k] = map[string]bool{}
	}
	b.mk = marketoCalls{s: s, stats: &b.stats}
	b.resolver = resolver{b}
	b.roles = newRoleWriter(b)
	b.deleter = &deleter{b: b, roles: b.roles}
	b.merger = newMerger(b)
	b.writers = map[string]writer{
		store.KindSalesPerson: objectWriter{b, store.KindSalesPerson},
		store.KindCompany:     objectWriter{b, store.KindCompany},
		store.KindPerson:      newPersonWriter(b),
		store.KindOpportunity: objectWriter{b, store.KindOpportunity},
		store.KindRole:        b.roles,
	}
	return b
}

func (b *batch) unsettled() []*queue.Delivery {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []*queue.Delivery
	for _, d := range b.ds {
		if !b.settled[d] {
			out = append(out, d)
		}
	}
	return out
}

// process does everything but settling the messages: decode, coalesce,
// lock, load, plan, resolve, write, retire, delete and save (the batch's
// one store transaction); doc.go draws the stages. Record locks are
// released at the end, since what the store says is now what Marketo has.
func (b *batch) process(ctx context.Context) error {
	b.stats.Received = len(b.ds)
	var msgs []*msg
	for _, d := range b.ds {
		m, err := b.s.decode(d)
		if err != nil {
			b.s.log.Warn("syncer: undecodable message", "message", d.ID, "err", err)
			if err := b.deadLetter(ctx, &msg{d: d}, ReasonUndecodable, err.Error()); err != nil {
				return err
			}
			continue
		}
		if b.s.ignore(m) {
			b.early = append(b.early, m)
			continue
		}
		msgs = append(msgs, m)
	}
	if err := b.group(ctx, msgs); err != nil {
		return err
	}
	defer func() {
		// When the batch was cut short (shutdown, kill), a Marketo write may
		// still be in flight: keep the record locks until their TTL so no
		// other worker writes those records before it lands.
		if ctx.Err() == nil {
			b.unlockRecords(ctx)
		}
	}()
	planned := func(context.Context) error {
		b.plan = newPlan(b.recs, b.roles.conns, b.s.cfg.DefaultSalesPersonID)
		return nil
	}
	steps := []func(context.Context) error{b.lock, b.loadLinks, b.merger.find, b.prepare, planned, b.resolver.run, b.write, b.roles.retire, b.merger.unlink, b.deleter.run, b.merger.settle, b.save}
	for _, step := range steps {
		if err := step(ctx); err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

// lock takes the per-record locks; records another worker holds are
// rescheduled shortly.
func (b *batch) lock(ctx context.Context) error {
	if len(b.recs) == 0 {
		return nil
	}
	keys := slices.Sorted(maps.Keys(b.recs))
	b.lockMu.Lock()
	got, err := b.s.cfg.Store.LockRecords(ctx, b.s.cfg.WorkerID, keys, b.s.cfg.RecordLockTTL)
	if err == nil {
		b.locked = got
	}
	b.lockMu.Unlock()
	if err != nil {
		return fmt.Errorf("syncer: lock records: %w", err)
	}
	have := map[string]bool{}
	for _, k := range got {
		have[k] = true
	}
	var held []string
	for _, k := range keys {
		if !have[k] {
			held = append(held, k)
		}
	}
	delays := b.lockedDelays(ctx, held)
	for _, k := range held {
		b.recs[k].fail = &failure{act: actReschedule, delay: delays[k]}
	}
	return nil
}
