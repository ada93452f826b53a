package syncer

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/marketo/marketotype"
	"github.com/msisync/msisync/internal/queue"
	"github.com/msisync/msisync/internal/store"
)

// fakeQueue is an in-memory queue: scheduled delivery, locks, dead letters.
type fakeQueue struct {
	mu     sync.Mutex
	clk    clock.Clock
	lock   time.Duration // lock duration (default 1 min)
	renews int
	seq    int64
	items  []*fqItem
	dead   []queue.DeadLetter
	sent   []queue.Message // every Send, for assertions
}

type fqItem struct {
	m       queue.Message
	seq     int64
	count   int
	token   string
	locked  time.Time
	enq     time.Time
	removed bool
}

func newFakeQueue(clk clock.Clock) *fakeQueue { return &fakeQueue{clk: clk} }

func (q *fakeQueue) Send(_ context.Context, msgs ...queue.Message) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, m := range msgs {
		q.seq++
		q.items = append(q.items, &fqItem{m: m, seq: q.seq, enq: q.clk.Now()})
		q.sent = append(q.sent, m)
	}
	return nil
}

func (q *fakeQueue) Receive(_ context.Context, max int, _ time.Duration) ([]*queue.Delivery, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.clk.Now()
	var out []*queue.Delivery
	for _, it := range q.items {
		if len(out) == max {
			break
		}
		if it.removed || it.m.ScheduledAt.After(now) || it.locked.After(now) {
			continue
		}
		it.count++
		it.locked = now.Add(q.lockFor())
		it.token = fmt.Sprintf("%d/%d", it.seq, it.count)
		out = append(out, &queue.Delivery{Message: it.m, DeliveryCount: it.count, EnqueuedAt: it.enq,
			LockedUntil: it.locked, LockToken: it.token, SequenceNumber: it.seq})
	}
	return out, nil
}

func (q *fakeQueue) find(d *queue.Delivery) (*fqItem, error) {
	for _, it := range q.items {
		if it.seq == d.SequenceNumber && it.token == d.LockToken && !it.removed {
			return it, nil
		}
	}
	return nil, queue.ErrLockLost
}

func (q *fakeQueue) lockFor() time.Duration {
	if q.lock > 0 {
		return q.lock
	}
	return time.Minute
}

func (q *fakeQueue) renewCount() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.renews
}

func (q *fakeQueue) Renew(_ context.Context, d *queue.Delivery) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	it, err := q.find(d)
	if err != nil {
		return err
	}
	it.locked = q.clk.Now().Add(q.lockFor())
	d.LockedUntil = it.locked
	q.renews++
	return nil
}

func (q *fakeQueue) Complete(_ context.Context, d *queue.Delivery) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	it, err := q.find(d)
	if err != nil {
		return err
	}
	it.removed = true
	return nil
}

func (q *fakeQueue) Abandon(_ context.Context, d *queue.Delivery) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	it, err := q.find(d)
	if err != nil {
		return err
	}
	it.locked = time.Time{}
	return nil
}

func (q *fakeQueue) DeadLetter(_ context.Context, d *queue.Delivery, reason, desc string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	it, err := q.find(d)
	if err != nil {
		return err
	}
	it.removed = true
	q.dead = append(q.dead, queue.DeadLetter{MessageID: d.ID, Body: d.Body, Properties: d.Properties, Reason: reason, Description: desc})
	return nil
}

// pending counts messages not yet completed or dead-lettered.
func (q *fakeQueue) pending() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for _, it := range q.items {
		if !it.removed {
			n++
		}
	}
	return n
}

func (q *fakeQueue) deadLetters() []queue.DeadLetter {
	q.mu.Lock()
	defer q.mu.Unlock()
	return slices.Clone(q.dead)
}

// fakeStore is an in-memory store.Store.
type fakeStore struct {
	mu       sync.Mutex
	links    map[string]map[string]store.Link
	versions map[string]int64
	conns    map[string]store.Connection
	meta     map[string]string
	locks    map[string]string
	applyErr error // Apply fails with it, writing nothing, when set
	applies  int   // Apply calls with changes
}

func newFakeStore() *fakeStore {
	return &fakeStore{links: map[string]map[string]store.Link{}, versions: map[string]int64{},
		conns: map[string]store.Connection{}, meta: map[string]string{}, locks: map[string]string{}}
}

func (s *fakeStore) GetLinks(_ context.Context, kind string, ids []string) (map[string]store.Link, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]store.Link{}
	for _, id := range ids {
		if l, ok := s.links[kind][id]; ok {
			out[id] = l
		}
	}
	return out, nil
}

func (s *fakeStore) PutLinks(_ context.Context, links []store.Link) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range links {
		if s.links[l.Kind] == nil {
			s.links[l.Kind] = map[string]store.Link{}
		}
		s.links[l.Kind][l.ExternalID] = l
	}
	return nil
}

func (s *fakeStore) DeleteLinks(_ context.Context, kind string, ids []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		delete(s.links[kind], id)
	}
	return nil
}

func (s *fakeStore) ListLinks(_ context.Context, kind, after string, limit int) ([]store.Link, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := slices.Sorted(maps.Keys(s.links[kind]))
	var out []store.Link
	for _, id := range ids {
		if id > after && (limit <= 0 || len(out) < limit) {
			out = append(out, s.links[kind][id])
		}
	}
	return out, nil
}

func (s *fakeStore) CountLinks(_ context.Context, kind string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.links[kind]), nil
}

func (s *fakeStore) GetVersions(_ context.Context, keys []string) (map[string]int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int64{}
	for _, k := range keys {
		if v, ok := s.versions[k]; ok {
			out[k] = v
		}
	}
	return out, nil
}

func (s *fakeStore) PutVersions(_ context.Context, v map[string]int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, x := range v {
		s.versions[k] = max(s.versions[k], x)
	}
	return nil
}

func (s *fakeStore) GetConnections(_ context.Context, ids []string) (map[string]store.Connection, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]store.Connection{}
	for _, id := range ids {
		if c, ok := s.conns[id]; ok {
			out[id] = c
		}
	}
	return out, nil
}

func (s *fakeStore) PutConnections(_ context.Context, cs []store.Connection) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range cs {
		s.conns[c.ID] = c
	}
	return nil
}

func (s *fakeStore) DeleteConnections(_ context.Context, ids []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		delete(s.conns, id)
	}
	return nil
}

func (s *fakeStore) ConnectionsByOpportunity(_ context.Context, opp string) ([]store.Connection, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []store.Connection
	for _, c := range s.conns {
		if c.OpportunityID == opp {
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func (s *fakeStore) GetMSIValues(context.Context, []string) (map[string]map[string]string, error) {
	return nil, nil
}
func (s *fakeStore) PutMSIValues(context.Context, map[string]map[string]string) error { return nil }
func (s *fakeStore) AcquireLease(context.Context, string, string, time.Duration) (bool, error) {
	return true, nil
}
func (s *fakeStore) ReleaseLease(context.Context, string, string) error { return nil }

func (s *fakeStore) LockRecords(_ context.Context, owner string, keys []string, _ time.Duration) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, k := range keys {
		if o, ok := s.locks[k]; ok && o != owner {
			continue
		}
		s.locks[k] = owner
		out = append(out, k)
	}
	return out, nil
}

func (s *fakeStore) UnlockRecords(_ context.Context, owner string, keys []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range keys {
		if s.locks[k] == owner {
			delete(s.locks, k)
		}
	}
	return nil
}

func (s *fakeStore) GetMeta(_ context.Context, k string) (string, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.meta[k]
	return v, ok, nil
}

func (s *fakeStore) PutMeta(_ context.Context, k, v string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.meta[k] = v
	return nil
}

// Apply applies the changes whole, under one lock, in the adapters' order.
func (s *fakeStore) Apply(_ context.Context, c *store.Changes) error {
	if c == nil || c.Empty() {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.applyErr != nil {
		return s.applyErr
	}
	s.applies++
	for kind, ids := range c.LinkDeletes() {
		for _, id := range ids {
			delete(s.links[kind], id)
		}
	}
	for _, l := range c.LinkPuts() {
		if s.links[l.Kind] == nil {
			s.links[l.Kind] = map[string]store.Link{}
		}
		s.links[l.Kind][l.ExternalID] = l
	}
	for _, id := range c.ConnectionDeletes() {
		delete(s.conns, id)
	}
	for _, x := range c.ConnectionPuts() {
		s.conns[x.ID] = x
	}
	for k, v := range c.Versions() {
		s.versions[k] = max(s.versions[k], v)
	}
	maps.Copy(s.meta, c.Meta())
	return nil
}

func (s *fakeStore) Ping(context.Context) error { return nil }
func (s *fakeStore) Close() error               { return nil }

// fakeMarketo keeps objects by key and applies the referential rules the
// syncer depends on.
type fakeMarketo struct {
	mu              sync.Mutex
	lookupSupported bool
	nextID          int64
	salesPersons    map[string]marketotype.Record // by externalSalesPersonId
	companies       map[string]marketotype.Record
	leads           map[int64]marketotype.Record
	opps            map[string]marketotype.Record
	roles           map[string]marketotype.Record // opp|leadId|role
	calls           []string                      // "leads sync createOrUpdate/email" ...
	failNext        []error
	failQuery       error                                          // every Query fails with it when set
	beforeSync      func()                                         // called (unlocked) at the start of every Sync
	onSync          func(marketotype.Object, []marketotype.Record) // called (unlocked) after beforeSync
	skipCode        map[string]string                              // externalId → reason code to skip with
	deletes         [][]marketotype.Record                         // input of every Delete call of roles
	failDelete      error                                          // every Delete fails with it when set
}

func newFakeMarketo() *fakeMarketo {
	return &fakeMarketo{nextID: 1000, salesPersons: map[string]marketotype.Record{}, companies: map[string]marketotype.Record{},
		leads: map[int64]marketotype.Record{}, opps: map[string]marketotype.Record{}, roles: map[string]marketotype.Record{}, skipCode: map[string]string{}}
}

func skipped(code, msg string) marketotype.Result {
	return marketotype.Result{Status: "skipped", Reasons: []marketotype.Reason{{Code: code, Message: msg}}}
}

func upsertInto(m map[string]marketotype.Record, key string, r marketotype.Record) string {
	st := "updated"
	cur, ok := m[key]
	if !ok {
		cur = marketotype.Record{}
		st = "created"
	}
	maps.Copy(cur, r)
	m[key] = cur
	return st
}

func (f *fakeMarketo) Sync(_ context.Context, obj marketotype.Object, req marketotype.SyncRequest) ([]marketotype.Result, error) {
	if f.beforeSync != nil {
		f.beforeSync()
	}
	if f.onSync != nil {
		f.onSync(obj, req.Input)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf("%s sync %s/%s", obj, req.Action, req.LookupField))
	if len(f.failNext) > 0 {
		err := f.failNext[0]
		f.failNext = f.failNext[1:]
		return nil, err
	}
	if len(req.Input) > 300 {
		return nil, &marketotype.Error{Op: "sync", Code: "1003", Message: "too many records"}
	}
	out := make([]marketotype.Result, len(req.Input))
	for i, r := range req.Input {
		res := marketotype.Result{Seq: i}
		switch obj {
		case marketotype.SalesPersons:
			res.Status = upsertInto(f.salesPersons, r["externalSalesPersonId"].(string), r)
		case marketotype.Companies:
			id := r["externalCompanyId"].(string)
			if c := f.skipCode[id]; c != "" {
				out[i] = skipped(c, "rejected")
				continue
			}
			res.Status = upsertInto(f.companies, id, r)
		case marketotype.Opportunities:
			if sp, ok := r["externalSalesPersonId"].(string); ok && f.salesPersons[sp] == nil {
				out[i] = skipped("718", "ExternalSalesPersonID not found")
				continue
			}
			res.Status = upsertInto(f.opps, r["externalOpportunityId"].(string), r)
		case marketotype.Roles:
			lid, _ := r["leadId"].(int64)
			opp := r["externalOpportunityId"].(string)
			if f.opps[opp] == nil || f.leads[lid] == nil {
				out[i] = skipped("1013", "Object not found")
				continue
			}
			res.Status = upsertInto(f.roles, fmt.Sprintf("%s|%d|%s", opp, lid, r["role"]), r)
		case marketotype.Leads:
			res = f.syncLead(req, r)
		}
		out[i] = res
	}
	return out, nil
}

func (f *fakeMarketo) syncLead(req marketotype.SyncRequest, r marketotype.Record) marketotype.Result {
	var match []int64
	switch {
	case req.Action == "createDuplicate": // always creates
	case req.LookupField == "externalPersonId":
		if !f.lookupSupported {
			return skipped("1011", "Field 'externalPersonId' not supported")
		}
		for id, l := range f.leads {
			if l["externalPersonId"] == r["externalPersonId"] {
				match = append(match, id)
			}
		}
	case req.LookupField == "id":
		id, _ := r["id"].(int64)
		if f.leads[id] != nil {
			match = append(match, id)
		}
	default:
		for id, l := range f.leads {
			if e, _ := l["email"].(string); e != "" && strings.EqualFold(e, fmt.Sprint(r["email"])) {
				match = append(match, id)
			}
		}
	}
	switch {
	case len(match) > 1:
		return skipped("1007", "Multiple leads match the lookup criteria")
	case len(match) == 1:
		if _, linked := f.leads[match[0]]["externalCompanyId"]; linked {
			if _, ok := r["company"]; ok {
				return skipped("1021", "Company update not allowed during syncLead")
			}
		}
		if req.Action == "createOnly" {
			return skipped("1005", "Lead already exists")
		}
		c := maps.Clone(r)
		delete(c, "id")
		maps.Copy(f.leads[match[0]], c)
		return marketotype.Result{ID: match[0], Status: "updated"}
	case req.Action == "updateOnly":
		return skipped("1004", "Lead not found")
	}
	f.nextID++
	c := maps.Clone(r)
	delete(c, "id")
	f.leads[f.nextID] = c
	return marketotype.Result{ID: f.nextID, Status: "created"}
}

func (f *fakeMarketo) Query(_ context.Context, obj marketotype.Object, filterType string, values, fields []string) ([]marketotype.Record, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf("%s query %s", obj, filterType))
	if f.failQuery != nil {
		return nil, f.failQuery
	}
	want := map[string]bool{}
	for _, v := range values {
		want[strings.ToLower(v)] = true
	}
	var out []marketotype.Record
	add := func(r marketotype.Record, id any) {
		if want[strings.ToLower(fmt.Sprint(r[filterType]))] {
			c := maps.Clone(r)
			if obj == marketotype.Opportunities {
				c["marketoGUID"] = id
			} else {
				c["id"] = id
			}
			out = append(out, c)
		}
	}
	switch obj {
	case marketotype.SalesPersons:
		for k, r := range f.salesPersons {
			add(r, float64(len(k)))
		}
	case marketotype.Companies:
		for k, r := range f.companies {
			add(r, float64(len(k)))
		}
	case marketotype.Opportunities:
		for k, r := range f.opps {
			add(r, "guid-"+k)
		}
	case marketotype.Leads:
		for id, r := range f.leads {
			add(r, float64(id))
		}
	}
	return out, nil
}

func (f *fakeMarketo) Delete(_ context.Context, obj marketotype.Object, deleteBy string, input []marketotype.Record) ([]marketotype.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf("%s delete %s", obj, deleteBy))
	if f.failDelete != nil {
		return nil, f.failDelete
	}
	if obj == marketotype.Roles {
		f.deletes = append(f.deletes, slices.Clone(input))
	}
	out := make([]marketotype.Result, len(input))
	for i, r := range input {
		var ok bool
		switch obj {
		case marketotype.Companies:
			_, ok = f.companies[r["externalCompanyId"].(string)]
			delete(f.companies, r["externalCompanyId"].(string))
		case marketotype.Opportunities:
			_, ok = f.opps[r["externalOpportunityId"].(string)]
			delete(f.opps, r["externalOpportunityId"].(string))
		case marketotype.Roles:
			k := fmt.Sprintf("%s|%d|%s", r["externalOpportunityId"], r["leadId"], r["role"])
			_, ok = f.roles[k]
			delete(f.roles, k)
		case marketotype.Leads:
			id, _ := r["id"].(int64)
			_, ok = f.leads[id]
			delete(f.leads, id)
		}
		if ok {
			out[i] = marketotype.Result{Seq: i, Status: "deleted"}
		} else {
			out[i] = skipped("1013", "Record not found")
		}
	}
	return out, nil
}

func (f *fakeMarketo) leadByExt(ext string) (int64, marketotype.Record) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, l := range f.leads {
		if l["externalPersonId"] == ext {
			return id, l
		}
	}
	return 0, nil
}

func (f *fakeMarketo) callCount(prefix string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if strings.HasPrefix(c, prefix) {
			n++
		}
	}
	return n
}

// fakeDataverse serves re-reads from a map of current records.
type fakeDataverse struct {
	mu      sync.Mutex
	records map[string]event.Attributes // "entity/id"
	reads   []string
	err     error // when set, every read fails with it (an outage)
}

var errFakeNotFound = fmt.Errorf("dataverse: not found")

func (d *fakeDataverse) Read(_ context.Context, entity, id string, _ []string) (event.Attributes, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.reads = append(d.reads, entity+"/"+id)
	if d.err != nil {
		return nil, fmt.Errorf("read %s %s: %w", entity, id, d.err)
	}
	a, ok := d.records[entity+"/"+id]
	if !ok {
		return nil, fmt.Errorf("read %s %s: %w", entity, id, errFakeNotFound)
	}
	return maps.Clone(a), nil
}

var _ = strconv.Itoa
