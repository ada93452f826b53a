package msi

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/dataverse"
	"github.com/msisync/msisync/internal/marketo/marketotype"
	"github.com/msisync/msisync/internal/store"
)

// memStore implements the parts of store.Store the write-back uses; the
// embedded nil interface makes any other call panic.
type memStore struct {
	store.Store
	clock clock.Clock

	mu     sync.Mutex
	links  map[string]store.Link
	msi    map[string]map[string]string
	leases map[string]lease
	puts   int
	sorted []string // person ids in order; nil after a change
}

type lease struct {
	holder string
	until  time.Time
}

func newMemStore(c clock.Clock) *memStore {
	return &memStore{clock: c, links: map[string]store.Link{}, msi: map[string]map[string]string{}, leases: map[string]lease{}}
}

func (s *memStore) addPerson(entity, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.links[id] = store.Link{Kind: store.KindPerson, ExternalID: id, Entity: entity, MarketoID: fmt.Sprint(len(s.links) + 1)}
	s.sorted = nil
}

func (s *memStore) ListLinks(_ context.Context, kind, after string, limit int) ([]store.Link, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sorted == nil {
		for id := range s.links {
			s.sorted = append(s.sorted, id)
		}
		sort.Strings(s.sorted)
	}
	var out []store.Link
	for _, id := range s.sorted[sort.SearchStrings(s.sorted, after+"\x00"):] {
		if len(out) == limit {
			break
		}
		if l := s.links[id]; l.Kind == kind {
			out = append(out, l)
		}
	}
	return out, nil
}

func (s *memStore) GetMSIValues(_ context.Context, ids []string) (map[string]map[string]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]map[string]string{}
	for _, id := range ids {
		if v, ok := s.msi[id]; ok {
			out[id] = v
		}
	}
	return out, nil
}

func (s *memStore) PutMSIValues(_ context.Context, values map[string]map[string]string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.puts++
	for id, v := range values {
		s.msi[id] = v
	}
	return nil
}

func (s *memStore) AcquireLease(_ context.Context, name, holder string, ttl time.Duration) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	if l, ok := s.leases[name]; ok && l.holder != holder && now.Before(l.until) {
		return false, nil
	}
	s.leases[name] = lease{holder, now.Add(ttl)}
	return true, nil
}

func (s *memStore) ReleaseLease(_ context.Context, name, holder string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l, ok := s.leases[name]; ok && l.holder == holder {
		delete(s.leases, name)
	}
	return nil
}

func (s *memStore) leaseHolder(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.leases[name].holder
}

// fakeMarketo answers Get Leads by externalPersonId from a map.
type fakeMarketo struct {
	mu        sync.Mutex
	leads     map[string]map[string]any // externalPersonId → lead fields
	calls     int
	maxValues int
	fields    []string
	err       error
	failAfter int // calls after this number fail (0: never)
}

func newFakeMarketo() *fakeMarketo { return &fakeMarketo{leads: map[string]map[string]any{}} }

func (m *fakeMarketo) set(id string, fields map[string]any) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l := m.leads[id]
	if l == nil {
		l = map[string]any{"externalPersonId": id}
		m.leads[id] = l
	}
	for k, v := range fields {
		l[k] = v
	}
}

func (m *fakeMarketo) Query(_ context.Context, obj marketotype.Object, filterType string, values, fields []string) ([]marketotype.Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls++
	if obj != marketotype.Leads {
		return nil, fmt.Errorf("fake marketo: unexpected object %q", obj)
	}
	m.fields = fields
	if m.err != nil {
		return nil, m.err
	}
	if m.failAfter > 0 && m.calls > m.failAfter {
		return nil, errors.New("marketo: 607 daily quota reached")
	}
	if filterType != "externalPersonId" {
		return nil, fmt.Errorf("fake marketo: unexpected filterType %q", filterType)
	}
	if len(values) > 300 {
		return nil, fmt.Errorf("fake marketo: 1003 too many filterValues (%d)", len(values))
	}
	m.maxValues = max(m.maxValues, len(values))
	var out []marketotype.Record
	for _, v := range values {
		l, ok := m.leads[v]
		if !ok {
			continue
		}
		r := map[string]any{"id": 1}
		for _, f := range fields {
			if x, ok := l[f]; ok {
				r[f] = x
			}
		}
		out = append(out, r)
	}
	return out, nil
}

func (m *fakeMarketo) callCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls
}

// fakeDataverse holds rows by "entity/id" and answers updates like
// PATCH If-Match: * (404 for a missing row).
type fakeDataverse struct {
	mu       sync.Mutex
	rows     map[string]map[string]any
	requests int
	ops      int
	fail     map[string]int // key → status to answer instead
	err      error          // whole-request failure
}

func newFakeDataverse() *fakeDataverse {
	return &fakeDataverse{rows: map[string]map[string]any{}, fail: map[string]int{}}
}

func (d *fakeDataverse) add(entity, id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.rows[entity+"/"+id] = map[string]any{}
}

func (d *fakeDataverse) row(entity, id string) map[string]any {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.rows[entity+"/"+id]
}

func (d *fakeDataverse) Update(_ context.Context, entity, id string, fields map[string]any) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.requests++
	if d.err != nil {
		return d.err
	}
	return d.apply(dataverse.BatchOp{LogicalName: entity, ID: id, Fields: fields})
}

func (d *fakeDataverse) UpdateBatch(_ context.Context, ops []dataverse.BatchOp) ([]dataverse.BatchResult, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.requests++
	if d.err != nil {
		return nil, d.err
	}
	if len(ops) > 1000 {
		return nil, fmt.Errorf("fake dataverse: batch of %d over 1000", len(ops))
	}
	out := make([]dataverse.BatchResult, len(ops))
	for i, op := range ops {
		if err := d.apply(op); err != nil {
			out[i] = dataverse.BatchResult{Status: err.(*dataverse.APIError).Status, Err: err}
			continue
		}
		out[i] = dataverse.BatchResult{Status: 204}
	}
	return out, nil
}

// apply is one PATCH with If-Match: *.
func (d *fakeDataverse) apply(op dataverse.BatchOp) error {
	d.ops++
	key := op.LogicalName + "/" + op.ID
	if st, ok := d.fail[key]; ok {
		return &dataverse.APIError{Method: "PATCH", Path: key, Status: st}
	}
	row, ok := d.rows[key]
	if !ok {
		return &dataverse.APIError{Method: "PATCH", Path: key, Status: 404}
	}
	for k, v := range op.Fields {
		row[k] = v
	}
	return nil
}

func (d *fakeDataverse) counts() (requests, ops int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.requests, d.ops
}
