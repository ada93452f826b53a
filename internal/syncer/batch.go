package syncer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/msisync/msisync/internal/event"
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

// stages is MSI's mandated write order.
var stages = []string{store.KindSalesPerson, store.KindCompany, store.KindPerson, store.KindOpportunity, store.KindRole}

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

var objectOf = map[string]Object{
	store.KindSalesPerson: SalesPersons,
	store.KindCompany:     Companies,
	store.KindPerson:      Leads,
	store.KindOpportunity: Opportunities,
	store.KindRole:        Roles,
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
	deps                  []dep
	fail                  *failure
	written               bool
	marketoID             string
	// connections
	conn    *store.Connection
	oldConn *store.Connection
	retire  int // retireDeactivate or retireDrop: delete the role, do not write it
	// persons: Marketo id the record is updated by (split strategy, qualification)
	byID      string
	staleLink bool   // byID was not found in Marketo
	noCompany bool   // leave company fields out (the person is linked to a company: 1021)
	movedFrom string // lead GUID whose Marketo person this contact takes over

	// rowVersion is the highest Dataverse RowVersion merged; stored under
	// store.RowVersionKey so that reconcile can tell same-second changes apart.
	rowVersion int64

	// merges (merges.go): merged into another record by Dataverse, retired
	// like a Delete; mergedInto is the master whose Merge event named it.
	mergedAway bool
	mergedInto *rec
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
	paused bool // Marketo quota/config: stop calling for this batch
	// oppConns caches Store.ConnectionsByOpportunity for roleHeld.
	oppConns map[string][]store.Connection
	// byEmail caches the Marketo persons found by email (persons.go).
	byEmail map[string][]emailPerson
	// changes collects every store change the batch makes (links,
	// versions, connections, meta); save applies them in one transaction.
	changes store.Changes
}

func newBatch(s *Syncer, ds []*queue.Delivery) *batch {
	b := &batch{s: s, ds: ds, settled: map[*queue.Delivery]bool{}, recs: map[string]*rec{},
		links: map[string]map[string]store.Link{}, absent: map[string]map[string]bool{},
		stats: Stats{Written: map[Object]int{}, Deleted: map[Object]int{}, Calls: map[string]int{}}}
	for _, k := range stages {
		b.links[k] = map[string]store.Link{}
		b.absent[k] = map[string]bool{}
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
// lock, resolve, write and save (the batch's one store transaction). Record locks are released at the end,
// since what the store says is now what Marketo has.
func (b *batch) process(ctx context.Context) error {
	b.stats.Received = len(b.ds)
	var msgs []*msg
	for _, d := range b.ds {
		m, err := b.decode(d)
		if err != nil {
			b.s.log.Warn("syncer: undecodable message", "message", d.ID, "err", err)
			if err := b.deadLetter(ctx, &msg{d: d}, ReasonUndecodable, err.Error()); err != nil {
				return err
			}
			continue
		}
		if b.ignore(m) {
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
	steps := []func(context.Context) error{b.lock, b.loadLinks, b.merges, b.prepare, b.resolve, b.write, b.retire, b.unlinkMerged, b.deletes, b.settleMerged, b.save}
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

// decode reads our envelope, or Dataverse's native Service Bus message.
func (b *batch) decode(d *queue.Delivery) (*msg, error) {
	m := &msg{d: d}
	if a, err := strconv.Atoi(d.Properties[queue.PropAttempt]); err == nil {
		m.attempt = a
	}
	native := false
	for k := range d.Properties {
		if strings.HasPrefix(k, "http://schemas.microsoft.com/xrm/2011/Claims/") {
			native = true
			break
		}
	}
	var err error
	if native && b.s.cfg.ParseNative != nil {
		m.ev, err = b.s.cfg.ParseNative(d.Body, d.Properties)
	} else {
		m.ev, err = event.Decode(d.Body)
		if err != nil && b.s.cfg.ParseNative != nil {
			if ev, nerr := b.s.cfg.ParseNative(d.Body, d.Properties); nerr == nil {
				m.ev, err = ev, nil
			}
		}
	}
	if err != nil {
		return nil, err
	}
	if m.ev == nil {
		return nil, errors.New("decode: empty event")
	}
	m.ev.RecordID = event.NormalizeID(m.ev.RecordID)
	return m, nil
}

// ignore reports whether the event needs no write: not ours to sync, made
// by msisync itself, or touching only MSI write-back columns.
func (b *batch) ignore(m *msg) bool {
	ev := m.ev
	app := b.s.cfg.AppUserID
	switch {
	case !event.IsSyncedEntity(ev.Entity) || !event.IsSyncedMessage(ev.Message):
		return true
	case ev.Message == event.MessageQualifyLead:
		return true // the new contact's Create (with originatingleadid) carries the change
	case app != "" && (event.NormalizeID(ev.UserID) == app || event.NormalizeID(ev.InitiatingUserID) == app):
		return true
	case ev.Message == event.MessageUpdate && !ev.Truncated && len(ev.Attributes) > 0:
		idCol := ev.Entity + "id"
		for c := range ev.Attributes {
			if systemColumns[c] || c == idCol || b.s.cfg.Mapping.IsWriteBack(c) {
				continue
			}
			return false
		}
		return true
	}
	return false
}

func sortVersion(m *msg) int64 {
	if m.ev.Message == event.MessageDelete && m.ev.Version == 0 {
		return tombstone // a Delete carries no modifiedon but is the last word
	}
	return m.ev.Version
}

// group coalesces messages per record and drops stale versions.
func (b *batch) group(ctx context.Context, msgs []*msg) error {
	for _, m := range msgs {
		key := m.ev.Entity + "/" + m.ev.RecordID
		r := b.recs[key]
		if r == nil {
			r = &rec{entity: m.ev.Entity, id: m.ev.RecordID, key: key, kind: kindOf(m.ev.Entity)}
			b.recs[key] = r
		}
		r.msgs = append(r.msgs, m)
	}
	if len(b.recs) == 0 {
		return nil
	}
	// Versions per record (tombstones) and per column: an Update carries only
	// the columns it changed, so an older Update arriving late must still
	// apply the columns no newer event has written.
	var keys []string
	for key, r := range b.recs {
		keys = append(keys, key)
		for _, m := range r.msgs {
			for c := range m.ev.Attributes {
				keys = append(keys, key+"#"+c)
			}
			// Image columns too: a late event's post image is an older
			// state and must not overwrite columns a newer event wrote.
			for _, imgs := range []map[string]event.Attributes{m.ev.PreImages, m.ev.PostImages} {
				for _, img := range imgs {
					for c := range img {
						if _, ok := m.ev.Attributes[c]; !ok {
							keys = append(keys, key+"#"+c)
						}
					}
				}
			}
		}
	}
	versions, err := b.s.cfg.Store.GetVersions(ctx, keys)
	if err != nil {
		return fmt.Errorf("syncer: get versions: %w", err)
	}
	for key, r := range b.recs {
		slices.SortStableFunc(r.msgs, func(x, y *msg) int {
			return cmp.Or(cmp.Compare(sortVersion(x), sortVersion(y)),
				cmp.Compare(x.ev.RowVersion, y.ev.RowVersion),
				x.ev.OccurredAt.Compare(y.ev.OccurredAt),
				x.d.EnqueuedAt.Compare(y.d.EnqueuedAt),
				cmp.Compare(x.d.SequenceNumber, y.d.SequenceNumber))
		})
		if versions[key] == tombstone {
			b.early = append(b.early, r.msgs...) // deleted: every event is stale
			delete(b.recs, key)
			continue
		}
		if !b.merge(r, versions) {
			b.early = append(b.early, r.msgs...) // every column already newer in Marketo
			delete(b.recs, key)
		}
	}
	return nil
}

// merge folds the messages (in version order) into the record's state,
// leaving out columns a newer applied event already wrote. It reports
// whether anything is left to do.
func (b *batch) merge(r *rec, stored map[string]int64) bool {
	r.attrs, r.formatted, r.colVersion = event.Attributes{}, map[string]string{}, map[string]int64{}
	start := 0
	for i, m := range r.msgs {
		if m.ev.Message == event.MessageDelete {
			start = i + 1
		}
	}
	r.deleted = start == len(r.msgs)
	if r.deleted {
		return true
	}
	work := false
	for _, m := range r.msgs[start:] {
		ev := m.ev
		v := ev.Version
		set := func(attrs event.Attributes, target bool) {
			for c, val := range attrs {
				if v > 0 && v < stored[r.key+"#"+c] {
					continue
				}
				cur, have := r.attrs[c]
				val, apply := overlay(cur, have, val, ev, c, target)
				if !apply {
					continue
				}
				if _, ok := ev.Formatted[c]; !ok && have && !sameScalar(cur, val) {
					delete(r.formatted, c) // an older event's label describes the older value
				}
				r.attrs[c] = val
				r.colVersion[c] = max(r.colVersion[c], v)
			}
		}
		for _, img := range ev.PreImages {
			set(img, false)
		}
		for _, img := range ev.PostImages {
			set(img, false)
		}
		set(ev.Attributes, true)
		maps.Copy(r.formatted, ev.Formatted)
		r.version = max(r.version, v)
		r.rowVersion = max(r.rowVersion, ev.RowVersion)
		if ev.Truncated || len(ev.Attributes) == 0 || fresh(ev, r, stored) {
			work = true
		}
		if ev.Message == event.MessageCreate && !ev.Truncated {
			r.full = true
		}
	}
	return work
}

// fresh reports whether the event supplies at least one column not stale.
func fresh(ev *event.Event, r *rec, stored map[string]int64) bool {
	for c := range ev.Attributes {
		if ev.Version == 0 || ev.Version >= stored[r.key+"#"+c] {
			return true
		}
	}
	return false
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

func (b *batch) live(kind string) []*rec {
	var out []*rec
	for _, k := range slices.Sorted(maps.Keys(b.recs)) {
		r := b.recs[k]
		if r.kind == kind && r.fail == nil && !r.written {
			out = append(out, r)
		}
	}
	return out
}

// loadLinks reads the store links of every record in the batch, and the
// stored connections of connection records.
func (b *batch) loadLinks(ctx context.Context) error {
	byKind := map[string][]string{}
	var connIDs []string
	for _, r := range b.recs {
		byKind[r.kind] = append(byKind[r.kind], r.id)
		if r.entity == event.EntityConnection {
			connIDs = append(connIDs, r.id)
		}
	}
	for kind, ids := range byKind {
		if err := b.storeLinks(ctx, kind, ids); err != nil {
			return err
		}
	}
	if len(connIDs) > 0 {
		conns, err := b.s.cfg.Store.GetConnections(ctx, connIDs)
		if err != nil {
			return fmt.Errorf("syncer: get connections: %w", err)
		}
		for id, c := range conns {
			c := c
			b.recs[event.EntityConnection+"/"+id].oldConn = &c
		}
	}
	return nil
}

func (b *batch) storeLinks(ctx context.Context, kind string, ids []string) error {
	var want []string
	for _, id := range ids {
		if _, ok := b.links[kind][id]; ok {
			continue
		}
		// Not saved yet: the batch's own changes speak for the id.
		if l, put, ok := b.changes.Link(kind, id); ok {
			if put {
				b.links[kind][id] = l
			}
			continue
		}
		want = append(want, id)
	}
	if len(want) == 0 {
		return nil
	}
	got, err := b.s.cfg.Store.GetLinks(ctx, kind, want)
	if err != nil {
		return fmt.Errorf("syncer: get %s links: %w", kind, err)
	}
	maps.Copy(b.links[kind], got)
	return nil
}

// prepare interprets connections, applies lead qualification markers and
// re-reads records whose events do not carry enough to write them.
func (b *batch) prepare(ctx context.Context) error {
	for _, k := range slices.Sorted(maps.Keys(b.recs)) {
		r := b.recs[k]
		if r.fail != nil || r.deleted {
			continue
		}
		if r.entity == event.EntityLead {
			if _, ok, err := b.s.cfg.Store.GetMeta(ctx, metaQualified(r.id)); err != nil {
				return fmt.Errorf("syncer: get meta: %w", err)
			} else if ok {
				r.fail = &failure{act: actSkip}
				continue
			}
		}
		truncated := false
		for _, m := range r.msgs {
			truncated = truncated || m.ev.Truncated
		}
		_, linked := b.links[r.kind][r.id]
		var missing []string
		if !r.full && !linked {
			for _, c := range required[r.entity] {
				if _, ok := r.attrs[c]; !ok {
					missing = append(missing, c)
				}
			}
			if r.entity == event.EntityConnection && r.oldConn != nil {
				missing = nil // the stored connection knows the opportunity, contact and role
			}
		}
		if truncated || len(missing) > 0 {
			if err := b.reread(ctx, r, truncated, missing); err != nil {
				return err
			}
			if r.fail != nil {
				continue
			}
		}
		if err := b.nameRefs(ctx, r); err != nil {
			return err
		}
		if r.fail != nil {
			continue
		}
		if r.entity == event.EntityConnection {
			b.interpretConnection(r)
			if r.fail == nil {
				if err := b.classifyConnection(ctx, r); err != nil {
					return err
				}
			}
		}
	}
	// In-batch qualification: a lead whose contact is in this batch is not written.
	for _, r := range b.recs {
		if r.entity != event.EntityContact || r.deleted || r.fail != nil {
			continue
		}
		if ref, ok := refOf(r.attrs, "originatingleadid"); ok && ref.LogicalName == event.EntityLead {
			if lr := b.recs[event.EntityLead+"/"+ref.ID]; lr != nil && lr.fail == nil && !lr.deleted {
				lr.fail = &failure{act: actSkip}
			}
		}
	}
	return nil
}

func (b *batch) reread(ctx context.Context, r *rec, truncated bool, missing []string) error {
	dv := b.s.cfg.Dataverse
	if dv == nil {
		desc := fmt.Sprintf("update of %s carries only %s and the record is not in Marketo yet (missing %s): register a post image on the Dataverse Update step or set MSISYNC_DATAVERSE_URL so the worker can re-read it",
			r.name(), changedColumns(r), strings.Join(missing, ", "))
		if truncated {
			desc = fmt.Sprintf("event for %s was truncated (over 256 KB) and Dataverse access is not configured: set MSISYNC_DATAVERSE_URL so the worker can re-read it", r.name())
		}
		r.fail = &failure{act: actRequeue, reason: ReasonMissingData, desc: desc}
		return nil
	}
	attrs, err := dv.Read(ctx, r.entity, r.id, b.s.cfg.Mapping.Columns(r.entity))
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if b.s.cfg.IsNotFound != nil && b.s.cfg.IsNotFound(err) {
			// Gone from Dataverse: its Delete event will do the rest.
			r.fail = &failure{act: actSkip}
			return nil
		}
		r.fail = &failure{act: actRequeue, reason: ReasonGaveUp, desc: fmt.Sprintf("re-read %s from Dataverse: %v", r.name(), err)}
		return nil
	}
	maps.Copy(r.attrs, attrs)
	r.full = true
	if t, ok := attrs["modifiedon"]; ok {
		if tv, ok := t.TimeValue(); ok {
			r.version = max(r.version, tv.UnixMilli())
			for c := range attrs {
				r.colVersion[c] = r.version
			}
		}
	}
	return nil
}

func changedColumns(r *rec) string {
	var cols []string
	for c := range r.attrs {
		if !systemColumns[c] && c != r.entity+"id" {
			cols = append(cols, c)
		}
	}
	slices.Sort(cols)
	if len(cols) == 0 {
		return "no columns"
	}
	return strings.Join(cols, ", ")
}

// interpretConnection keeps opportunity→contact stakeholder rows and drops
// every other connection (including the reciprocal contact→opportunity row).
func (b *batch) interpretConnection(r *rec) {
	c := store.Connection{ID: r.id}
	if r.oldConn != nil {
		c = *r.oldConn
	}
	r1, ok1 := refOf(r.attrs, "record1id")
	r2, ok2 := refOf(r.attrs, "record2id")
	if ok1 || ok2 {
		if !ok1 || !ok2 || r1.LogicalName != event.EntityOpportunity || r2.LogicalName != event.EntityContact {
			r.fail = &failure{act: actSkip}
			return
		}
		c.OpportunityID, c.PersonID = r1.ID, r2.ID
	}
	if v, ok := r.attrs["ismaster"]; ok && v.Kind == event.KindBool && !v.Bool && !ok1 {
		r.fail = &failure{act: actSkip}
		return
	}
	if role, ok := b.s.cfg.Mapping.Apply(event.EntityConnection, r.attrs, r.formatted)["role"].(string); ok && role != "" {
		c.Role = role
	}
	if c.OpportunityID == "" || c.PersonID == "" || c.Role == "" {
		r.fail = &failure{act: actSkip}
		return
	}
	r.conn = &c
}

func refOf(attrs event.Attributes, col string) (event.Ref, bool) {
	v, ok := attrs[col]
	if !ok {
		return event.Ref{}, false
	}
	ref, ok := v.Reference()
	if !ok || ref.ID == "" {
		return event.Ref{}, false
	}
	ref.ID = event.NormalizeID(ref.ID)
	return ref, true
}

// deps lists what a record needs in Marketo before it can be written.
func (b *batch) deps(r *rec) []dep {
	var out []dep
	owner := func() {
		ref, ok := refOf(r.attrs, "ownerid")
		if !ok {
			return
		}
		id := ref.ID
		if ref.LogicalName != event.EntitySystemUser {
			id = b.s.cfg.DefaultSalesPersonID // team-owned
		}
		if id != "" {
			out = append(out, dep{store.KindSalesPerson, event.EntitySystemUser, id, "owner of " + r.name()})
		}
	}
	company := func(cols ...string) {
		for _, c := range cols {
			if ref, ok := refOf(r.attrs, c); ok && ref.LogicalName == event.EntityAccount {
				out = append(out, dep{store.KindCompany, event.EntityAccount, ref.ID, "company of " + r.name()})
				return
			}
		}
	}
	switch r.entity {
	case event.EntityAccount:
		owner()
	case event.EntityContact:
		owner()
		company("parentcustomerid")
	case event.EntityLead:
		owner()
		company("parentaccountid")
	case event.EntityOpportunity:
		owner()
		company("parentaccountid", "customerid")
	case event.EntityConnection:
		if r.conn != nil && r.retire == 0 {
			out = append(out,
				dep{store.KindOpportunity, event.EntityOpportunity, r.conn.OpportunityID, "opportunity of connection " + r.id},
				dep{store.KindPerson, event.EntityContact, r.conn.PersonID, "contact of connection " + r.id})
		}
	}
	return out
}

// resolve finds every dependency, latest stage first so that a dependency
// read from Dataverse gets its own dependencies resolved too.
func (b *batch) resolve(ctx context.Context) error {
	for i := len(stages) - 1; i >= 1; i-- {
		recs := b.live(stages[i])
		need := map[string]map[string]string{} // kind → id → entity
		for _, r := range recs {
			r.deps = b.deps(r)
			for _, d := range r.deps {
				if dr := b.recs[d.entity+"/"+d.id]; dr != nil && !dr.deleted {
					continue // written earlier in this batch
				}
				if need[d.kind] == nil {
					need[d.kind] = map[string]string{}
				}
				need[d.kind][d.id] = d.entity
			}
		}
		queryErr := map[string]error{}
		for kind, ids := range need {
			if err := b.lookup(ctx, kind, ids); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				queryErr[kind] = err
			}
		}
		// Dependencies nowhere to be found: read them from Dataverse.
		var reads []dep
		for _, r := range recs {
			for _, d := range r.deps {
				if _, ok := b.links[d.kind][d.id]; ok || queryErr[d.kind] != nil {
					continue
				}
				if dr := b.recs[d.entity+"/"+d.id]; dr != nil {
					continue
				}
				reads = append(reads, d)
			}
		}
		if err := b.readDeps(ctx, reads); err != nil {
			return err
		}
		for _, r := range recs {
			for _, d := range r.deps {
				if _, ok := b.links[d.kind][d.id]; ok {
					continue
				}
				if dr := b.recs[d.entity+"/"+d.id]; dr != nil && !dr.deleted && dr.fail == nil {
					continue
				}
				if err := queryErr[d.kind]; err != nil {
					r.fail = b.callFailure(err, "look up "+d.String())
					break
				}
				r.fail = &failure{act: actRequeue, reason: ReasonMissingDependency, desc: "missing dependency: " + d.String()}
				break
			}
		}
	}
	return nil
}

// readDeps reads missing dependencies from Dataverse and adds them to the
// batch, locked, as records to write first.
func (b *batch) readDeps(ctx context.Context, deps []dep) error {
	dv := b.s.cfg.Dataverse
	if dv == nil || len(deps) == 0 {
		return nil
	}
	seen := map[string]bool{}
	for _, d := range deps {
		key := d.entity + "/" + d.id
		if seen[key] {
			continue
		}
		seen[key] = true
		got, err := b.s.cfg.Store.LockRecords(ctx, b.s.cfg.WorkerID, []string{key}, b.s.cfg.RecordLockTTL)
		if err != nil {
			return fmt.Errorf("syncer: lock records: %w", err)
		}
		if len(got) == 0 {
			continue // another worker is on it: the dependent waits
		}
		b.lockMu.Lock()
		b.locked = append(b.locked, key)
		b.lockMu.Unlock()
		attrs, err := dv.Read(ctx, d.entity, d.id, b.s.cfg.Mapping.Columns(d.entity))
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if b.s.cfg.IsNotFound == nil || !b.s.cfg.IsNotFound(err) {
				b.s.log.Warn("syncer: read dependency from Dataverse", "dependency", d.String(), "err", err)
			}
			continue
		}
		r := &rec{entity: d.entity, id: d.id, key: key, kind: d.kind, attrs: attrs, formatted: map[string]string{}, full: true, synthetic: true}
		if t, ok := attrs["modifiedon"]; ok {
			if tv, ok := t.TimeValue(); ok {
				r.version = tv.UnixMilli()
			}
		}
		b.recs[key] = r
	}
	return nil
}

// lookup finds Marketo ids for ids of a kind: store first, then one Marketo
// query per 300 ids. Found links are cached in the store.
func (b *batch) lookup(ctx context.Context, kind string, ids map[string]string) error {
	var want []string
	for id := range ids {
		if _, ok := b.links[kind][id]; !ok && !b.absent[kind][id] {
			want = append(want, id)
		}
	}
	if len(want) == 0 {
		return nil
	}
	slices.Sort(want)
	if err := b.storeLinks(ctx, kind, want); err != nil {
		return err
	}
	var ask []string
	for _, id := range want {
		if _, ok := b.links[kind][id]; !ok {
			ask = append(ask, id)
		}
	}
	if len(ask) == 0 {
		return nil
	}
	if b.paused {
		return &pausedError{}
	}
	obj := objectOf[kind]
	field := externalField[kind]
	idField := "id"
	if kind == store.KindOpportunity {
		idField = "marketoGUID"
	}
	var found []store.Link
	for chunk := range slices.Chunk(ask, 300) {
		b.stats.Calls[string(obj)+" query"]++
		fields := []string{idField, field}
		if kind == store.KindPerson || kind == store.KindSalesPerson {
			fields = append(fields, "email")
		}
		recs, err := b.s.cfg.Marketo.Query(ctx, obj, field, chunk, fields)
		if err != nil {
			b.noteCallError(err)
			return fmt.Errorf("query %s by %s: %w", obj, field, err)
		}
		for _, r := range recs {
			ext := event.NormalizeID(fmt.Sprint(r[field]))
			if _, asked := ids[ext]; !asked {
				continue
			}
			l := store.Link{Kind: kind, ExternalID: ext, MarketoID: marketoID(r[idField]), Entity: ids[ext], UpdatedAt: b.s.clk.Now()}
			if e, ok := r["email"].(string); ok {
				l.Email = e
			}
			b.links[kind][ext] = l
			found = append(found, l)
		}
	}
	for _, id := range ask {
		if _, ok := b.links[kind][id]; !ok {
			b.absent[kind][id] = true
		}
	}
	if len(found) > 0 {
		if err := b.s.cfg.Store.PutLinks(ctx, found); err != nil {
			return fmt.Errorf("syncer: put links: %w", err)
		}
	}
	return nil
}

type pausedError struct{}

func (*pausedError) Error() string { return "marketo calls paused (quota or configuration)" }

// noteCallError pauses Marketo calls for the rest of the batch on quota and
// configuration errors, loudly.
func (b *batch) noteCallError(err error) {
	switch classOfErr(err) {
	case ClassQuota, ClassConfig:
		if !b.paused {
			b.s.log.Error("syncer: Marketo refuses calls (quota or configuration); pausing and rescheduling, nothing is dropped", "err", err)
		}
		b.paused = true
	}
}

// callFailure decides what a failed Marketo call means for its records.
func (b *batch) callFailure(err error, what string) *failure {
	var pe *pausedError
	if errors.As(err, &pe) {
		return &failure{act: actReschedule, delay: b.s.cfg.RequeueMax}
	}
	code, message := codeOfErr(err)
	switch classOfErr(err) {
	case ClassQuota, ClassConfig:
		return &failure{act: actReschedule, delay: b.s.cfg.RequeueMax}
	case ClassPermanent:
		return &failure{act: actDead, reason: ReasonRejected, desc: fmt.Sprintf("%s: marketo %s: %s", what, code, message)}
	case ClassDependency:
		return &failure{act: actRequeue, reason: ReasonMissingDependency, desc: fmt.Sprintf("%s: marketo %s: %s", what, code, message)}
	}
	return &failure{act: actRequeue, reason: ReasonGaveUp, desc: fmt.Sprintf("%s: %v", what, err)}
}

// recordFailure decides what a skipped record means.
func (b *batch) recordFailure(r *rec, obj Object, res Result) *failure {
	code, message := "", "skipped without a reason"
	if len(res.Reasons) > 0 {
		code, message = res.Reasons[0].Code, res.Reasons[0].Message
	}
	desc := fmt.Sprintf("marketo %s: %s (%s %s)", code, message, obj, r.name())
	switch ClassOf(code) {
	case ClassQuota, ClassConfig:
		b.paused = true
		b.s.log.Error("syncer: Marketo refuses writes (quota or configuration); rescheduling", "object", obj, "code", code, "message", message)
		return &failure{act: actReschedule, delay: b.s.cfg.RequeueMax}
	case ClassThrottled, ClassTransient, ClassReauth:
		return &failure{act: actRequeue, reason: ReasonGaveUp, desc: desc}
	case ClassDependency:
		return &failure{act: actRequeue, reason: ReasonMissingDependency, desc: desc}
	}
	return &failure{act: actDead, reason: ReasonRejected, desc: desc}
}

// depsReady checks in-batch dependencies once their stage is written.
func (b *batch) depsReady(r *rec) bool {
	for _, d := range r.deps {
		if _, ok := b.links[d.kind][d.id]; ok {
			continue
		}
		if dr := b.recs[d.entity+"/"+d.id]; dr != nil && dr.fail != nil && dr.fail.act == actReschedule {
			r.fail = &failure{act: actReschedule, delay: dr.fail.delay}
			return false
		}
		r.fail = &failure{act: actRequeue, reason: ReasonMissingDependency, desc: "missing dependency: " + d.String() + " did not sync"}
		return false
	}
	return true
}

func (b *batch) owner(r *rec) (string, bool) {
	ref, ok := refOf(r.attrs, "ownerid")
	if !ok {
		return "", false
	}
	if ref.LogicalName != event.EntitySystemUser {
		return b.s.cfg.DefaultSalesPersonID, b.s.cfg.DefaultSalesPersonID != ""
	}
	return ref.ID, true
}

func (b *batch) companyOf(r *rec, cols ...string) (string, bool) {
	for _, c := range cols {
		if ref, ok := refOf(r.attrs, c); ok && ref.LogicalName == event.EntityAccount {
			return ref.ID, true
		}
	}
	return "", false
}

// record builds the Marketo record of a Dataverse record.
func (b *batch) record(r *rec) Record {
	out := Record(b.s.cfg.Mapping.Apply(r.entity, r.attrs, r.formatted))
	if out == nil {
		out = Record{}
	}
	if f := externalField[r.kind]; f != "" {
		out[f] = r.id
	}
	switch r.entity {
	case event.EntityAccount:
		if o, ok := b.owner(r); ok {
			out["externalSalesPersonId"] = o
		}
	case event.EntityContact, event.EntityLead, event.EntityOpportunity:
		if o, ok := b.owner(r); ok {
			out["externalSalesPersonId"] = o
		}
		cols := map[string][]string{event.EntityContact: {"parentcustomerid"}, event.EntityLead: {"parentaccountid"}, event.EntityOpportunity: {"parentaccountid", "customerid"}}[r.entity]
		if c, ok := b.companyOf(r, cols...); ok {
			out["externalCompanyId"] = c
			if r.entity == event.EntityLead {
				delete(out, "company") // company fields on a linked lead give 1021
			}
		}
	}
	return out
}

// write upserts stage by stage in MSI's order.
func (b *batch) write(ctx context.Context) error {
	for _, kind := range stages {
		var recs []*rec
		for _, r := range b.live(kind) {
			if !r.deleted && r.retire == 0 && b.depsReady(r) {
				recs = append(recs, r)
			}
		}
		if len(recs) == 0 {
			continue
		}
		if b.paused {
			for _, r := range recs {
				r.fail = &failure{act: actReschedule, delay: b.s.cfg.RequeueMax}
			}
			continue
		}
		var err error
		switch kind {
		case store.KindPerson:
			err = b.writePersons(ctx, recs)
		case store.KindRole:
			err = b.writeRoles(ctx, recs)
		default:
			err = b.syncObjects(ctx, kind, recs, SyncRequest{Action: "createOrUpdate", DedupeBy: "dedupeFields"})
		}
		if err != nil {
			return err
		}
		if err := b.persist(ctx, recs); err != nil {
			return err
		}
	}
	return nil
}

// syncObjects writes recs of one kind in calls of ≤ 300 and maps results back.
func (b *batch) syncObjects(ctx context.Context, kind string, recs []*rec, req SyncRequest) error {
	obj := objectOf[kind]
	for chunk := range slices.Chunk(recs, b.s.cfg.BatchSize) {
		in := make([]Record, len(chunk))
		for i, r := range chunk {
			if kind == store.KindRole {
				in[i] = b.roleRecord(r)
			} else {
				in[i] = b.record(r)
				if r.noCompany {
					for _, f := range leadCompanyFields {
						delete(in[i], f)
					}
				}
				if r.byID != "" {
					delete(in[i], externalField[kind])
					if kind == store.KindPerson {
						in[i]["externalPersonId"] = r.id
					}
					id, _ := strconv.ParseInt(r.byID, 10, 64)
					in[i]["id"] = id
				}
			}
		}
		req.Input = in
		b.stats.Calls[string(obj)+" sync"]++
		res, err := b.s.cfg.Marketo.Sync(ctx, obj, req)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			b.noteCallError(err)
			f := b.callFailure(err, "sync "+string(obj))
			for _, r := range chunk {
				r.fail = f
			}
			continue
		}
		b.applyResults(obj, chunk, res)
		// 1021: the person is linked to a company in Marketo, which owns the
		// company fields: send the record again without them.
		var again []*rec
		for i, r := range chunk {
			if obj == Leads && !r.noCompany && i < len(res) && res[i].Status == "skipped" && len(res[i].Reasons) > 0 && res[i].Reasons[0].Code == "1021" {
				r.fail, r.noCompany = nil, true
				again = append(again, r)
			}
		}
		if len(again) > 0 {
			if err := b.syncObjects(ctx, kind, again, req); err != nil {
				return err
			}
		}
	}
	return nil
}

// leadCompanyFields are the lead fields a linked company owns (1021).
var leadCompanyFields = []string{"company", "site", "billingStreet", "billingCity", "billingState", "billingCountry",
	"billingPostalCode", "website", "mainPhone", "annualRevenue", "numberOfEmployees", "industry", "sicCode"}

func (b *batch) applyResults(obj Object, recs []*rec, res []Result) {
	for i, r := range recs {
		if i >= len(res) {
			r.fail = &failure{act: actRequeue, reason: ReasonGaveUp, desc: fmt.Sprintf("marketo returned %d results for %d %s", len(res), len(recs), obj)}
			continue
		}
		x := res[i]
		switch x.Status {
		case "created", "updated":
			r.written = true
			r.marketoID = x.MarketoGUID
			if x.ID != 0 {
				r.marketoID = strconv.FormatInt(x.ID, 10)
			}
			b.stats.Written[obj]++
		default:
			if obj == Leads && r.byID != "" && len(x.Reasons) > 0 && x.Reasons[0].Code == "1004" {
				// The stored id is stale (lead merged or deleted in Marketo):
				// forget it and try again by external id or email.
				r.fail = &failure{act: actReschedule, delay: b.s.cfg.LockedDelay}
				r.staleLink = true
				continue
			}
			r.fail = b.recordFailure(r, obj, x)
		}
	}
}

// settle completes, requeues or dead-letters every message. Settlements run
// concurrently so the queue can commit them in groups.
func (b *batch) settle(ctx context.Context) error {
	const (
		opComplete = iota
		opSkip
		opDead
		opRequeued
		opRescheduled
	)
	type op struct {
		m            *msg
		kind         int
		reason, desc string
	}
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
				msg := b.resendMessage(m, f)
				resend = append(resend, msg)
				kind := opRescheduled
				if msg.Properties[queue.PropAttempt] != strconv.Itoa(m.attempt) {
					kind = opRequeued
				}
				ops = append(ops, op{m: m, kind: kind, reason: f.reason, desc: f.desc})
			}
		}
	}
	// Re-sends are durable before their originals are completed.
	if len(resend) > 0 {
		if err := b.s.cfg.Queue.Send(ctx, resend...); err != nil {
			return fmt.Errorf("syncer: requeue %d messages: %w", len(resend), err)
		}
	}
	done := make([]bool, len(ops))
	errs := make([]error, len(ops))
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i, o := range ops {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			var err error
			if o.kind == opDead {
				err = b.s.cfg.Queue.DeadLetter(ctx, o.m.d, o.reason, o.desc)
			} else {
				err = b.s.cfg.Queue.Complete(ctx, o.m.d)
			}
			b.markSettled(o.m.d)
			switch {
			case err == nil:
				done[i] = true
			case ctx.Err() != nil:
				errs[i] = ctx.Err()
			case errors.Is(err, queue.ErrLockLost):
				b.s.log.Warn("syncer: lock lost before settling; the message will be redelivered", "message", o.m.d.ID)
			default:
				errs[i] = fmt.Errorf("syncer: settle %s: %w", o.m.d.ID, err)
			}
		}()
	}
	wg.Wait()
	var settled []store.HistoryEntry
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
		settled = append(settled, b.historyEntry(o.m, [...]string{store.OutcomeSynced, store.OutcomeSkipped,
			store.OutcomeDeadLettered, store.OutcomeRequeued, store.OutcomeRescheduled}[o.kind], o.reason, o.desc))
	}
	b.s.reportSettled(ctx, settled)
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func (b *batch) resendMessage(m *msg, f *failure) queue.Message {
	now := b.s.clk.Now()
	attempt, delay := m.attempt, f.delay
	props := maps.Clone(m.d.Properties)
	if props == nil {
		props = map[string]string{}
	}
	resched, _ := strconv.Atoi(props[propRescheduled])
	if f.act == actRequeue {
		delay = b.s.cfg.RequeueBase << min(m.attempt, 20)
		delay = min(delay, b.s.cfg.RequeueMax)
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
