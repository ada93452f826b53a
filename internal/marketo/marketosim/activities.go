package marketosim

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Activity type ids of the lead-changes feed.
const (
	activityNewLead         = 12
	activityDataValueChange = 13
)

type activity struct {
	id     int64
	leadID int64
	at     time.Time
	typeID int
	field  string
	oldV   any
	newV   any
	// For activities.json: the primary attribute value and attributes
	// (Interesting Moment, Change Score).
	primary any
	attrs   []map[string]any
}

// logActivity records a lead activity for the lead-changes feed. Called
// with s.mu held.
func (s *Server) logActivity(leadID int64, typeID int, field string, oldV, newV any) {
	s.activities = append(s.activities, activity{id: int64(len(s.activities) + 1), leadID: leadID,
		at: s.opts.Clock.Now().UTC(), typeID: typeID, field: field, oldV: oldV, newV: newV})
}

func actToken(i int) string { return pageEnc.EncodeToString([]byte("act:" + strconv.Itoa(i))) }

func actOffset(tok string) (int, bool) {
	b, err := pageEnc.DecodeString(tok)
	if err != nil || !strings.HasPrefix(string(b), "act:") {
		return 0, false
	}
	n, err := strconv.Atoi(strings.TrimPrefix(string(b), "act:"))
	return n, err == nil && n >= 0
}

// pagingToken serves GET /rest/v1/activities/pagingtoken.json.
func (s *Server) pagingToken(q url.Values) *envelope {
	since := q.Get("sinceDatetime")
	if since == "" {
		return fail("1003", "sinceDatetime cannot be blank")
	}
	var t time.Time
	var err error
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05Z0700", "2006-01-02"} {
		if t, err = time.Parse(layout, since); err == nil {
			break
		}
	}
	if err != nil {
		return fail("1003", fmt.Sprintf("Invalid sinceDatetime '%s'", since))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	i := 0
	for i < len(s.activities) && s.activities[i].at.Before(t) {
		i++
	}
	return &envelope{Success: true, NextPageToken: actToken(i)}
}

// leadChanges serves GET /rest/v1/activities/leadchanges.json: New Lead
// activities and Data Value Changes of the requested fields. It always
// returns a nextPageToken, and may return a short page with moreResult.
func (s *Server) leadChanges(q url.Values) *envelope {
	off, good := actOffset(q.Get("nextPageToken"))
	if !good {
		return fail("1003", "Invalid nextPageToken")
	}
	if q.Get("fields") == "" {
		return fail("701", "fields cannot be blank")
	}
	spec := s.specs[objLeads]
	want := map[string]bool{}
	for _, f := range strings.Split(q.Get("fields"), ",") {
		if spec.byName[f] == nil {
			return fail("1006", fmt.Sprintf("Field '%s' not found", f))
		}
		want[f] = true
	}
	bs := 300
	if v := q.Get("batchSize"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 300 {
			return fail("1003", "batchSize must be between 1 and 300")
		}
		bs = n
	}
	var leadIDs map[int64]bool
	if v := q.Get("leadIds"); v != "" {
		ids := strings.Split(v, ",")
		if len(ids) > 30 {
			return fail("1003", "leadIds exceeds the maximum of 30")
		}
		leadIDs = map[int64]bool{}
		for _, id := range ids {
			n, _ := strconv.ParseInt(id, 10, 64)
			leadIDs[n] = true
		}
	}
	fieldID := map[string]int{}
	for i, f := range spec.fields {
		fieldID[f.Name] = i + 1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	i := off
	// Marketo scans a bounded slice of the log per call, so pages can be short.
	for scanned := 0; i < len(s.activities) && len(out) < bs && scanned < 1000; i, scanned = i+1, scanned+1 {
		a := s.activities[i]
		if leadIDs != nil && !leadIDs[a.leadID] {
			continue
		}
		if a.typeID != activityNewLead && a.typeID != activityDataValueChange {
			continue // only New Lead and Data Value Change appear in this feed
		}
		if a.typeID == activityDataValueChange && !want[a.field] {
			continue
		}
		m := map[string]any{"id": a.id, "marketoGUID": strconv.FormatInt(a.id, 10), "leadId": a.leadID,
			"activityDate": a.at.Format("2006-01-02T15:04:05-0700"), "activityTypeId": a.typeID,
			"fields": []map[string]any{}, "attributes": []map[string]any{{"name": "Source", "value": "API"}}}
		if a.typeID == activityDataValueChange {
			m["fields"] = []map[string]any{{"id": fieldID[a.field], "name": a.field, "newValue": a.newV, "oldValue": a.oldV}}
		}
		out = append(out, m)
	}
	more := i < len(s.activities)
	env := ok(out)
	env.MoreResult = &more
	env.NextPageToken = actToken(i)
	return env
}
