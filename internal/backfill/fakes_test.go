package backfill

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/msisync/msisync/internal/dataverse"
	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/queue"
)

// fakeLister pages through in-memory tables in id order, with links that
// carry the offset, and understands "modifiedon ge <RFC 3339>".
type fakeLister struct {
	mu     sync.Mutex
	tables map[string][]event.Attributes
	calls  []listCall
	// failLink makes ListPage fail for links containing it.
	failLink string
	noCount  bool
}

type listCall struct {
	Entity string
	Opts   dataverse.ListOptions
	Next   string
}

func newFakeLister() *fakeLister { return &fakeLister{tables: map[string][]event.Attributes{}} }

func (l *fakeLister) put(entity string, row event.Attributes) {
	l.mu.Lock()
	defer l.mu.Unlock()
	id := event.NormalizeID(row[entity+"id"].Str)
	t := l.tables[entity]
	for i, r := range t {
		if event.NormalizeID(r[entity+"id"].Str) == id {
			t[i] = row
			return
		}
	}
	t = append(t, row)
	sort.Slice(t, func(i, j int) bool {
		return event.NormalizeID(t[i][entity+"id"].Str) < event.NormalizeID(t[j][entity+"id"].Str)
	})
	l.tables[entity] = t
}

func (l *fakeLister) matching(entity, filter string) ([]event.Attributes, error) {
	var since time.Time
	if filter != "" {
		v, ok := strings.CutPrefix(filter, "modifiedon ge ")
		if !ok {
			return nil, fmt.Errorf("fake lister: unsupported filter %q", filter)
		}
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return nil, fmt.Errorf("fake lister: filter %q: %v", filter, err)
		}
		since = t
	}
	var out []event.Attributes
	for _, r := range l.tables[entity] {
		if m, ok := r["modifiedon"].TimeValue(); !since.IsZero() && (!ok || m.Before(since)) {
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

func (l *fakeLister) ListPage(ctx context.Context, entity string, opts dataverse.ListOptions, next string) (dataverse.Page, error) {
	if err := ctx.Err(); err != nil {
		return dataverse.Page{}, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, listCall{entity, opts, next})
	if l.failLink != "" && next != "" && strings.Contains(next, l.failLink) {
		l.failLink = "" // once: as a link from an older deployment would be
		return dataverse.Page{}, errors.New("400 invalid $skiptoken")
	}
	filter, offset, size := opts.Filter, 0, opts.PageSize
	if next != "" {
		u, err := url.Parse(next)
		if err != nil {
			return dataverse.Page{}, err
		}
		q := u.Query()
		filter = q.Get("filter")
		offset, _ = strconv.Atoi(q.Get("offset"))
		size, _ = strconv.Atoi(q.Get("size"))
	}
	rows, err := l.matching(entity, filter)
	if err != nil {
		return dataverse.Page{}, err
	}
	end := min(offset+size, len(rows))
	p := dataverse.Page{}
	for _, r := range rows[offset:end] {
		sel := event.Attributes{}
		for k, v := range r {
			if opts.Select == nil || contains(opts.Select, k) {
				sel[k] = v
			}
		}
		p.Rows = append(p.Rows, sel)
	}
	if end < len(rows) {
		p.NextLink = "https://org.example/api/data/v9.2/" + entity + "s?" + url.Values{
			"filter": {filter}, "offset": {strconv.Itoa(end)}, "size": {strconv.Itoa(size)}}.Encode()
	}
	return p, nil
}

func (l *fakeLister) Count(_ context.Context, entity, filter string) (int, error) {
	if l.noCount {
		return 0, errors.New("count not supported")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	rows, err := l.matching(entity, filter)
	return len(rows), err
}

func (l *fakeLister) callsFor(entity string) []listCall {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []listCall
	for _, c := range l.calls {
		if c.Entity == entity {
			out = append(out, c)
		}
	}
	return out
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// recordingSender keeps every message sent, and which ids are new (a queue
// drops a repeated id within its duplicate detection window).
type recordingSender struct {
	mu     sync.Mutex
	sends  int
	msgs   []queue.Message
	seen   map[string]bool
	unique int
	// failAt makes the n-th Send call (1-based) fail.
	failAt int
}

func newRecordingSender() *recordingSender { return &recordingSender{seen: map[string]bool{}} }

func (s *recordingSender) Send(ctx context.Context, msgs ...queue.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sends++
	if s.failAt != 0 && s.sends == s.failAt {
		return errors.New("queue unavailable")
	}
	for _, m := range msgs {
		s.msgs = append(s.msgs, m)
		if !s.seen[m.ID] {
			s.seen[m.ID] = true
			s.unique++
		}
	}
	return nil
}

// memMeta is an in-memory MetaStore.
type memMeta struct {
	mu sync.Mutex
	m  map[string]string
}

func newMemMeta() *memMeta { return &memMeta{m: map[string]string{}} }

func (s *memMeta) GetMeta(_ context.Context, key string) (string, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[key]
	return v, ok, nil
}

func (s *memMeta) PutMeta(_ context.Context, key, value string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[key] = value
	return nil
}
