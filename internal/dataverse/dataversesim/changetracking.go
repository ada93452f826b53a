package dataversesim

import (
	"fmt"
	"math/rand"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultChangeTrackingExpiry is how long a delta token stays valid: the
// organisation's ExpireChangeTrackingInDays, 7 days by default in Microsoft's
// current documentation (older organisations were seen with 30 or 90).
const DefaultChangeTrackingExpiry = 7 * 24 * time.Hour

// switches are the simulator's fault and feature switches set at run time
// (change tracking per table, webhook faults). Callers of the change-tracking
// part hold s.mu; the webhook part has its own lock because deliveries run
// without s.mu.
type switches struct {
	noTracking map[string]bool // tables without change tracking
	expiry     time.Duration   // 0: DefaultChangeTrackingExpiry; < 0: never

	wmu     sync.Mutex
	drop    float64 // fraction of async webhook deliveries silently lost
	fail    float64 // fraction failed as system jobs (statuscode 31) without a call
	rnd     *rand.Rand
	dropped int64
	failed  int64
}

// SetChangeTracking enables or disables change tracking on a table (all
// tables have it by default). Without it, Prefer: odata.track-changes is
// ignored (no delta link), a $deltatoken is refused, and EntityDefinitions
// reports ChangeTrackingEnabled false. (Real Dataverse never disables it
// again once enabled; the switch is for tests.)
func (s *Server) SetChangeTracking(entity string, enabled bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sw.noTracking == nil {
		s.sw.noTracking = map[string]bool{}
	}
	s.sw.noTracking[entity] = !enabled
}

// SetChangeTrackingExpiry sets how old a delta token may be before it is
// answered with ExpiredVersionStamp (0: DefaultChangeTrackingExpiry; < 0:
// never). Token age is measured on the simulator's clock.
func (s *Server) SetChangeTrackingExpiry(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sw.expiry = d
}

func (s *Server) tracking(entity string) bool { return !s.sw.noTracking[entity] }

// deltaToken is "<version>!<MM/dd/yyyy HH:mm:ss>", the shape of Dataverse's
// tokens (e.g. 919042!08/22/2017 08:10:44): the version changes are read
// after, and when the token was issued (for expiry).
func (s *Server) deltaToken(version int64) string {
	return strconv.FormatInt(version, 10) + "!" + s.clk.Now().UTC().Format("01/02/2006 15:04:05")
}

func parseDeltaToken(tok string) (int64, time.Time, bool) {
	v, ts, ok := strings.Cut(tok, "!")
	if !ok {
		return 0, time.Time{}, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, time.Time{}, false
	}
	t, err := time.Parse("01/02/2006 15:04:05", ts)
	if err != nil {
		return 0, time.Time{}, false
	}
	return n, t, true
}

// trackStart is the version an initial change-tracking read started at:
// carried in its next links so that the delta link of the last page also
// returns rows changed while the pages were read.
const trackStartParam = "$ctstart"

func (s *Server) trackStart(q url.Values) int64 {
	if v, err := strconv.ParseInt(q.Get(trackStartParam), 10, 64); err == nil && v >= 0 && v <= s.version {
		return v
	}
	return s.version
}

func (s *Server) deltaQuery(q url.Values, version int64) string {
	nq := url.Values{}
	if sel := q.Get("$select"); sel != "" {
		nq.Set("$select", sel)
	}
	nq.Set("$deltatoken", s.deltaToken(version))
	return nq.Encode()
}

// serveDelta answers a delta link: the rows changed and deleted since the
// token's version (changed rows first, then deletions, as Dataverse orders
// them), and the next delta link.
func (s *Server) serveDelta(w http.ResponseWriter, r *http.Request, m *entityMeta, cols []string, p prefs, tok string) *apiError {
	if !s.tracking(m.logical) {
		return errBad("Change tracking is not enabled for the entity %s.", m.logical)
	}
	since, issued, ok := parseDeltaToken(tok)
	if !ok || since > s.version {
		return errBad("$deltatoken %q is not valid", tok)
	}
	expiry := s.sw.expiry
	if expiry == 0 {
		expiry = DefaultChangeTrackingExpiry
	}
	if expiry > 0 && s.clk.Now().Sub(issued) > expiry {
		return &apiError{http.StatusBadRequest, "0x80044352", "Version stamp associated with the client has expired. Please perform a full sync."}
	}
	var values []jobj
	for _, id := range s.sortedIDs(m.logical) {
		row := s.tables[m.logical][id]
		if v, _ := row["versionnumber"].(int64); v > since {
			values = append(values, s.webRow(m, row, cols, p))
		}
	}
	for _, d := range s.deleted[m.logical] {
		if d.version > since {
			values = append(values, jobj{{"@odata.context", baseURL(r) + "$metadata#" + m.set + "/$deletedEntity"}, {"id", d.id}, {"reason", "deleted"}})
		}
	}
	// Pages of odata.maxpagesize (≤ 5000) with a next link; the delta link
	// on the last page starts where the first page was read.
	q := r.URL.Query()
	size := 5000
	if p.maxPageSize > 0 && p.maxPageSize < size {
		size = p.maxPageSize
	}
	offset := 0
	if sk := q.Get("$skiptoken"); sk != "" {
		n, err := strconv.Atoi(sk)
		if err != nil || n < 0 {
			return errBad("$skiptoken %q is not valid", sk)
		}
		offset = min(n, len(values))
	}
	end := min(offset+size, len(values))
	body := jobj{{"@odata.context", contextURL(r, m, cols, false) + "/$delta"}, {"value", append([]jobj{}, values[offset:end]...)}}
	if end < len(values) {
		nq := url.Values{}
		for k, v := range q {
			nq[k] = v
		}
		nq.Set("$skiptoken", strconv.Itoa(end))
		if !nq.Has(trackStartParam) {
			nq.Set(trackStartParam, strconv.FormatInt(s.version, 10))
		}
		body = append(body, jfield{"@odata.nextLink", baseURL(r) + m.set + "?" + nq.Encode()})
	} else {
		body = append(body, jfield{"@odata.deltaLink", baseURL(r) + m.set + "?" + s.deltaQuery(q, s.trackStart(q))})
	}
	w.Header().Set("Preference-Applied", "odata.track-changes")
	writeJSON(w, 200, body)
	return nil
}

// serveEntityDefinition answers EntityDefinitions(LogicalName='x') with the
// few properties msisync reads.
func (s *Server) serveEntityDefinition(w http.ResponseWriter, r *http.Request, rest string) {
	key := strings.TrimSuffix(strings.TrimPrefix(rest, "EntityDefinitions("), ")")
	name, ok := strings.CutPrefix(key, "LogicalName=")
	name = strings.Trim(name, "'")
	m, known := entities[name]
	if !ok || !known {
		writeError(w, &apiError{http.StatusNotFound, "0x80040217", fmt.Sprintf("Could not find entity with LogicalName = %s", name)})
		return
	}
	writeJSON(w, 200, jobj{{"@odata.context", baseURL(r) + "$metadata#EntityDefinitions(LogicalName,ChangeTrackingEnabled)/$entity"},
		{"LogicalName", m.logical}, {"EntitySetName", m.set}, {"ChangeTrackingEnabled", s.tracking(m.logical)}})
}
