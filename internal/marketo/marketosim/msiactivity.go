package marketosim

import (
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Activity type ids of the feeds (Interesting Moment's is an option).
const activityChangeScore = 22

// activityTypes serves GET /rest/v1/activities/types.json with the types
// an MSI integration reads (shape of Adobe's "Get Activity Types").
func (s *Server) activityTypes() *envelope {
	attr := func(name, typ string) map[string]any { return map[string]any{"name": name, "dataType": typ} }
	types := []map[string]any{
		{"id": 1, "name": "Visit Webpage", "description": "User visits a web page",
			"primaryAttribute": attr("Webpage ID", "integer"), "attributes": []map[string]any{attr("Client IP Address", "string")}},
		{"id": activityNewLead, "name": "New Lead", "description": "New person/record is added to the lead database",
			"primaryAttribute": attr("Lead ID", "integer"), "attributes": []map[string]any{attr("Source Type", "string")}},
		{"id": activityDataValueChange, "name": "Change Data Value", "description": "Changed attribute value for a person",
			"primaryAttribute": attr("Attribute Name", "integer"),
			"attributes":       []map[string]any{attr("New Value", "text"), attr("Old Value", "text"), attr("Reason", "text"), attr("Source", "text")}},
		{"id": activityChangeScore, "name": "Change Score", "description": "Change a score value",
			"primaryAttribute": attr("Score Name", "integer"),
			"attributes":       []map[string]any{attr("Change Value", "string"), attr("New Value", "integer"), attr("Old Value", "integer"), attr("Reason", "string")}},
		{"id": s.opts.InterestingMomentTypeID, "name": "Interesting Moment", "description": "Interesting moment for a person",
			"primaryAttribute": attr("Description", "string"),
			"attributes":       []map[string]any{attr("Type", "string"), attr("Source", "string"), attr("Date", "datetime")}},
	}
	return ok(types)
}

// activitiesFeed serves GET /rest/v1/activities.json: activities of up to
// ten types from a paging token on. Like leadchanges it always returns a
// nextPageToken and may return short pages with moreResult.
func (s *Server) activitiesFeed(q url.Values) *envelope {
	off, good := actOffset(q.Get("nextPageToken"))
	if !good {
		return fail("1003", "Invalid nextPageToken")
	}
	raw := q.Get("activityTypeIds")
	if raw == "" {
		return fail("1003", "activityTypeIds cannot be blank")
	}
	types := map[int]bool{}
	for _, v := range strings.Split(raw, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return fail("1003", fmt.Sprintf("Invalid activityTypeIds '%s'", raw))
		}
		types[n] = true
	}
	if len(types) > 10 {
		return fail("1003", "activityTypeIds exceeds the maximum of 10")
	}
	bs := 300
	if v := q.Get("batchSize"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 300 {
			return fail("1003", "batchSize must be between 1 and 300")
		}
		bs = n
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	i := off
	for scanned := 0; i < len(s.activities) && len(out) < bs && scanned < 1000; i, scanned = i+1, scanned+1 {
		a := s.activities[i]
		if !types[a.typeID] {
			continue
		}
		m := map[string]any{"id": a.id, "marketoGUID": strconv.FormatInt(a.id, 10), "leadId": a.leadID,
			"activityDate": a.at.Format("2006-01-02T15:04:05Z"), "activityTypeId": a.typeID,
			"primaryAttributeValue": a.primary, "attributes": a.attrs}
		if a.typeID == activityDataValueChange {
			m["primaryAttributeValue"] = a.field
			m["attributes"] = []map[string]any{{"name": "New Value", "value": a.newV}, {"name": "Old Value", "value": a.oldV},
				{"name": "Reason", "value": "Score updated"}, {"name": "Source", "value": "Marketo Flow Action"}}
		}
		if m["attributes"] == nil {
			m["attributes"] = []map[string]any{}
		}
		out = append(out, m)
	}
	more := i < len(s.activities)
	env := ok(out)
	env.MoreResult = &more
	env.NextPageToken = actToken(i)
	return env
}

// logMoment records an Interesting Moment activity. Called with s.mu held.
func (s *Server) logMoment(leadID int64, typ, desc, source string, at time.Time) {
	s.activities = append(s.activities, activity{id: int64(len(s.activities) + 1), leadID: leadID, at: at.UTC(),
		typeID: s.opts.InterestingMomentTypeID, primary: desc,
		attrs: []map[string]any{{"name": "Type", "value": typ}, {"name": "Source", "value": source},
			{"name": "Date", "value": at.UTC().Format(isoZ)}}})
}

// logScore records a Change Score activity. Called with s.mu held.
func (s *Server) logScore(leadID int64, field string, oldV, newV int64, at time.Time) {
	s.activities = append(s.activities, activity{id: int64(len(s.activities) + 1), leadID: leadID, at: at.UTC(),
		typeID: activityChangeScore, primary: field,
		attrs: []map[string]any{{"name": "Change Value", "value": fmt.Sprintf("%+d", newV-oldV)},
			{"name": "New Value", "value": newV}, {"name": "Old Value", "value": oldV}, {"name": "Reason", "value": "Interesting moment"}}})
}

// DecayMSI lets relativeUrgency and urgency decay with the time passed on
// the simulator's clock since the last decay (half-life
// Options.UrgencyHalfLife). The change emits no activity unless
// MSIChangeActivities is set; that is why a write-back needs a slow sweep
// besides the activity feed. It returns the number of leads changed.
func (s *Server) DecayMSI() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.decay()
}

// decay is DecayMSI with s.mu held.
func (s *Server) decay() int {
	now := s.opts.Clock.Now()
	if s.lastDecay.IsZero() || !now.After(s.lastDecay) {
		s.lastDecay = now
		return 0
	}
	f := math.Pow(0.5, float64(now.Sub(s.lastDecay))/float64(s.opts.UrgencyHalfLife))
	s.lastDecay = now
	changed := 0
	for _, r := range s.tables[objLeads].all() {
		c := false
		if v, ok := r.fields["relativeUrgency"].(int64); ok && v > 0 {
			if nv := int64(math.Round(float64(v) * f)); nv != v {
				s.setMSI(r, "relativeUrgency", nv)
				c = true
			}
		}
		if v, ok := r.fields["urgency"].(float64); ok && v > 0 {
			if nv := math.Round(v*f*10) / 10; nv != v {
				s.setMSI(r, "urgency", nv)
				c = true
			}
		}
		if c {
			changed++
		}
	}
	return changed
}
