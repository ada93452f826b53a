package dataversesim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// throttle enforces the service protection limits per caller.
type throttle struct {
	mu       sync.Mutex
	hits     map[string][]time.Time
	exec     map[string][]execCost
	inflight int
}

// execCost is the execution time a request was charged.
type execCost struct {
	at   time.Time
	cost time.Duration
}

func (t *throttle) init() { t.hits = map[string][]time.Time{}; t.exec = map[string][]execCost{} }

// admit counts a request; it returns the seconds to wait when over a limit.
func (s *Server) admit(caller string) (release func(), retryAfter int, code, msg string) {
	t := &s.throttle
	t.mu.Lock()
	defer t.mu.Unlock()
	if s.opts.MaxConcurrent > 0 && t.inflight >= s.opts.MaxConcurrent {
		return nil, 1, "0x80072326", fmt.Sprintf("Number of concurrent requests exceeded the limit of %d.", s.opts.MaxConcurrent)
	}
	if n := s.opts.RequestsPerWindow; n > 0 {
		now := s.clk.Now()
		hits := t.hits[caller]
		cut := 0
		for cut < len(hits) && !hits[cut].After(now.Add(-s.opts.Window)) {
			cut++
		}
		hits = hits[cut:]
		if len(hits) >= n {
			t.hits[caller] = hits
			wait := int(math.Ceil(hits[0].Add(s.opts.Window).Sub(now).Seconds()))
			return nil, max(wait, 1), "0x80072322", fmt.Sprintf("Number of requests exceeded the limit of %d over time window of %d seconds.", n, int(s.opts.Window.Seconds()))
		}
		t.hits[caller] = append(hits, now)
	}
	if limit := s.opts.ExecutionTimePerWindow; limit > 0 {
		now := s.clk.Now()
		costs := t.exec[caller]
		cut := 0
		for cut < len(costs) && !costs[cut].at.After(now.Add(-s.opts.Window)) {
			cut++
		}
		costs = costs[cut:]
		t.exec[caller] = costs
		var sum time.Duration
		for _, c := range costs {
			sum += c.cost
		}
		if sum >= limit {
			// Wait until enough charged time leaves the window.
			wait := 0
			for _, c := range costs {
				sum -= c.cost
				wait = int(math.Ceil(c.at.Add(s.opts.Window).Sub(now).Seconds()))
				if sum < limit {
					break
				}
			}
			return nil, max(wait, 1), "0x80072321", fmt.Sprintf("Combined execution time of incoming requests exceeded limit of %d milliseconds over time window of %d seconds.",
				limit.Milliseconds(), int(s.opts.Window.Seconds()))
		}
	}
	t.inflight++
	start := time.Now()
	return func() {
		t.mu.Lock()
		t.inflight--
		if s.opts.ExecutionTimePerWindow > 0 {
			t.exec[caller] = append(t.exec[caller], execCost{at: s.clk.Now(), cost: time.Since(start) + s.opts.ExecutionTimePerRequest})
		}
		t.mu.Unlock()
	}, 0, "", ""
}

func writeError(w http.ResponseWriter, e *apiError) {
	w.Header().Set("Content-Type", "application/json; odata.metadata=minimal")
	w.Header().Set("OData-Version", "4.0")
	w.WriteHeader(e.status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"code": e.code, "message": e.msg}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := marshalNoHTML(v)
	if err != nil {
		writeError(w, &apiError{500, "0x80040216", err.Error()})
		return
	}
	w.Header().Set("Content-Type", "application/json; odata.metadata=minimal")
	w.Header().Set("OData-Version", "4.0")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

const apiPrefix = "/api/data/v9.2/"

// ServeHTTP serves the Web API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if !strings.HasPrefix(path, "/api/data/v9.") || len(path) < len(apiPrefix) {
		if s.serveIdentity(w, r) {
			return
		}
		writeError(w, &apiError{http.StatusNotFound, "0x80060888", "Resource not found for the segment '" + path + "'."})
		return
	}
	auth := r.Header.Get("Authorization")
	if ok, detail := s.authorized(r); !ok {
		h := `Bearer authorization_uri=https://login.microsoftonline.com/common/oauth2/authorize, resource_id=https://` + s.opts.Domain + "/"
		if detail != "" {
			h += ", " + detail
		}
		w.Header().Set("WWW-Authenticate", h)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	release, wait, code, msg := s.admit(auth)
	if release == nil {
		s.stats.throttled.Add(1)
		w.Header().Set("Retry-After", strconv.Itoa(wait))
		writeError(w, &apiError{http.StatusTooManyRequests, code, msg})
		return
	}
	defer release()
	s.stats.requests.Add(1)
	rest := path[len(apiPrefix):]
	if rest == "$batch" {
		s.serveBatch(w, r)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.route(w, r, rest, s.opts.AppUserID)
}

// baseURL is the service root as the caller addressed it.
func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https" {
		scheme = "https"
	}
	host := r.Host
	if host == "" {
		host = "localhost"
	}
	return scheme + "://" + host + apiPrefix
}

// route dispatches one request; callers hold s.mu.
func (s *Server) route(w http.ResponseWriter, r *http.Request, rest, user string) {
	switch {
	case rest == "WhoAmI" || rest == "WhoAmI()":
		writeJSON(w, 200, jobj{{"@odata.context", baseURL(r) + "$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse"},
			{"BusinessUnitId", s.buID}, {"UserId", user}, {"OrganizationId", s.opts.OrgID}})
		return
	case strings.HasPrefix(rest, "EntityDefinitions(") && r.Method == http.MethodGet:
		s.serveEntityDefinition(w, r, rest)
		return
	case strings.HasPrefix(rest, "RetrieveTotalRecordCount("):
		s.serveCount(w, r, rest)
		return
	}
	set, key, hasKey := rest, "", false
	if i := strings.IndexByte(rest, '('); i > 0 && strings.HasSuffix(rest, ")") {
		set, key, hasKey = rest[:i], rest[i+1:len(rest)-1], true
	}
	logical, ok := setToEntity[set]
	if !ok {
		writeError(w, &apiError{http.StatusNotFound, "0x80060888", "Resource not found for the segment '" + set + "'."})
		return
	}
	m := entities[logical]
	if hasKey && !isGUID(key) {
		writeError(w, errBad("Only GUID keys are supported by the simulator, got %q", key))
		return
	}
	id := normID(key)
	var err *apiError
	switch {
	case r.Method == http.MethodGet && !hasKey:
		err = s.serveList(w, r, m)
	case r.Method == http.MethodGet:
		err = s.serveGet(w, r, m, id)
	case r.Method == http.MethodPost && !hasKey:
		err = s.servePost(w, r, m, user)
	case r.Method == http.MethodPatch && hasKey:
		err = s.servePatch(w, r, m, id, user)
	case r.Method == http.MethodDelete && hasKey:
		err = s.serveDelete(w, r, m, id, user)
	default:
		err = &apiError{http.StatusMethodNotAllowed, "0x80060888", r.Method + " is not supported on " + rest}
	}
	if err != nil {
		writeError(w, err)
	}
}

func (s *Server) serveCount(w http.ResponseWriter, r *http.Request, rest string) {
	q := r.URL.Query()
	arg := strings.TrimSuffix(strings.TrimPrefix(rest, "RetrieveTotalRecordCount("), ")")
	names := strings.TrimPrefix(arg, "EntityNames=")
	if strings.HasPrefix(names, "@") {
		names = q.Get(names)
	}
	names = strings.Trim(names, "[]")
	var keys []string
	var vals []int
	for _, n := range strings.Split(names, ",") {
		n = strings.Trim(strings.TrimSpace(n), `'"`)
		if n == "" {
			continue
		}
		if _, ok := entities[n]; !ok {
			writeError(w, errBad("EntityNames: unknown table %q", n))
			return
		}
		keys = append(keys, n)
		vals = append(vals, len(s.tables[n]))
	}
	writeJSON(w, 200, jobj{{"EntityRecordCountCollection", jobj{{"Count", len(keys)}, {"IsReadOnly", false}, {"Keys", keys}, {"Values", vals}}}})
}

// selection parses $select into stored column names (nil: all).
func (s *Server) selection(m *entityMeta, q url.Values) ([]string, *apiError) {
	raw := q.Get("$select")
	if raw == "" {
		return nil, nil
	}
	var cols []string
	for _, name := range strings.Split(raw, ",") {
		name = strings.TrimSpace(name)
		col, _, err := s.queryColumn(m, name)
		if err != nil {
			return nil, errBad("%v", err)
		}
		cols = append(cols, col)
	}
	return cols, nil
}

func etag(row map[string]any) string { return fmt.Sprintf(`W/"%d"`, row["versionnumber"]) }

// webRow renders a row as the Web API does.
func (s *Server) webRow(m *entityMeta, row map[string]any, cols []string, p prefs) jobj {
	o := jobj{{"@odata.etag", etag(row)}}
	if cols == nil {
		seen := map[string]bool{}
		for c := range m.cols {
			cols = append(cols, c)
			seen[c] = true
		}
		for c := range row {
			if !seen[c] {
				cols = append(cols, c)
			}
		}
		sort.Strings(cols)
	} else if !contains(cols, m.idCol) {
		cols = append(cols, m.idCol)
	}
	for _, c := range cols {
		meta := m.cols[c]
		if meta.hidden {
			continue
		}
		v := row[c]
		if meta.kind == kLookup {
			key := "_" + c + "_value"
			o = append(o, jfield{key, webValue(v)})
			if r, ok := v.(Ref); ok {
				if p.wants(annFormatted) {
					o = append(o, jfield{key + "@" + annFormatted, s.primaryName(r)})
				}
				if p.wants(annNav) {
					nav := c
					if len(meta.targets) > 1 {
						nav = c + "_" + r.LogicalName
					}
					o = append(o, jfield{key + "@" + annNav, nav})
				}
				if p.wants(annLogical) {
					o = append(o, jfield{key + "@" + annLogical, r.LogicalName})
				}
			}
			continue
		}
		o = append(o, jfield{c, webValue(v)})
		if p.wants(annFormatted) {
			if f, ok := s.formatted(m, c, v); ok {
				if _, isRef := v.(Ref); !isRef {
					o = append(o, jfield{c + "@" + annFormatted, f})
				}
			}
		}
	}
	return o
}

func contextURL(r *http.Request, m *entityMeta, cols []string, single bool) string {
	u := baseURL(r) + "$metadata#" + m.set
	if cols != nil {
		u += "(" + strings.Join(cols, ",") + ")"
	}
	if single {
		u += "/$entity"
	}
	return u
}

func applied(w http.ResponseWriter, p prefs, pageSize int) {
	var parts []string
	if pageSize > 0 && p.maxPageSize > 0 {
		parts = append(parts, "odata.maxpagesize="+strconv.Itoa(pageSize))
	}
	if len(p.annotations) > 0 {
		parts = append(parts, `odata.include-annotations="`+strings.Join(p.annotations, ",")+`"`)
	}
	if p.representation {
		parts = append(parts, "return=representation")
	}
	if p.trackChanges {
		parts = append(parts, "odata.track-changes")
	}
	if len(parts) > 0 {
		w.Header().Set("Preference-Applied", strings.Join(parts, ","))
	}
}

func (s *Server) serveGet(w http.ResponseWriter, r *http.Request, m *entityMeta, id string) *apiError {
	row, ok := s.tables[m.logical][id]
	if !ok {
		return errNotFound(m.logical, id)
	}
	cols, err := s.selection(m, r.URL.Query())
	if err != nil {
		return err
	}
	p := parsePrefer(r.Header)
	if inm := r.Header.Get("If-None-Match"); inm != "" && inm != "null" && inm == etag(row) {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	applied(w, p, 0)
	w.Header().Set("ETag", etag(row))
	body := append(jobj{{"@odata.context", contextURL(r, m, cols, true)}}, s.webRow(m, row, cols, p)...)
	writeJSON(w, 200, body)
	return nil
}

// skiptoken is the paging cookie: page number and last primary key.
func skiptoken(page int, lastID string) string {
	return fmt.Sprintf(`<cookie pagenumber="%d" lastid="%s" istracking="False" />`, page, lastID)
}

func parseSkiptoken(t string) (page int, lastID string, ok bool) {
	var p int
	var id string
	i := strings.Index(t, `pagenumber="`)
	j := strings.Index(t, `lastid="`)
	if i < 0 || j < 0 {
		return 0, "", false
	}
	fmt.Sscanf(t[i+len(`pagenumber="`):], "%d", &p)
	id, _, _ = strings.Cut(t[j+len(`lastid="`):], `"`)
	return p, id, p > 1
}

func (s *Server) serveList(w http.ResponseWriter, r *http.Request, m *entityMeta) *apiError {
	q := r.URL.Query()
	if q.Has("$skip") {
		return errBad("The query parameter $skip is not supported")
	}
	cols, aerr := s.selection(m, q)
	if aerr != nil {
		return aerr
	}
	p := parsePrefer(r.Header)
	if p.trackChanges && !s.tracking(m.logical) {
		p.trackChanges = false // not enabled on the table: the preference is ignored
	}
	if q.Has("$deltatoken") || p.trackChanges {
		for _, opt := range []string{"$filter", "$orderby", "$top", "$expand"} {
			if q.Has(opt) {
				return errBad("%s is not supported with change tracking", opt)
			}
		}
	}
	if tok := q.Get("$deltatoken"); tok != "" {
		return s.serveDelta(w, r, m, cols, p, tok)
	}
	var filter cond
	if f := q.Get("$filter"); f != "" {
		toks, err := tokenize(f)
		if err != nil {
			return errBad("$filter: %v", err)
		}
		fp := &filterParser{s: s, m: m, toks: toks}
		filter, err = fp.parseOr()
		if err == nil && fp.pos != len(toks) {
			err = fmt.Errorf("unexpected %q", toks[fp.pos].text)
		}
		if err != nil {
			return errBad("$filter: %v", err)
		}
	}
	type order struct {
		col  string
		desc bool
	}
	var orders []order
	if ob := q.Get("$orderby"); ob != "" {
		for _, part := range strings.Split(ob, ",") {
			f := strings.Fields(part)
			if len(f) == 0 || len(f) > 2 {
				return errBad("$orderby: invalid clause %q", part)
			}
			col, _, err := s.queryColumn(m, f[0])
			if err != nil {
				return errBad("$orderby: %v", err)
			}
			desc := len(f) == 2 && strings.EqualFold(f[1], "desc")
			if len(f) == 2 && !desc && !strings.EqualFold(f[1], "asc") {
				return errBad("$orderby: invalid direction %q", f[1])
			}
			orders = append(orders, order{col, desc})
		}
	}
	top := -1
	if t := q.Get("$top"); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 0 {
			return errBad("$top: %q is not a non-negative integer", t)
		}
		top = n
	}
	pageSize := 5000
	if p.maxPageSize > 0 && p.maxPageSize < 5000 {
		pageSize = p.maxPageSize
	}
	page, lastID := 1, ""
	if tok := q.Get("$skiptoken"); tok != "" {
		pn, last, ok := parseSkiptoken(tok)
		if !ok {
			return errBad("$skiptoken: invalid paging cookie")
		}
		page, lastID = pn, last
	}
	limit := pageSize // rows of this page
	if top >= 0 {
		limit = min(limit, max(0, top-(page-1)*pageSize))
	}
	table := s.tables[m.logical]
	var pageRows []map[string]any
	more := false
	count := -1
	if len(orders) == 0 {
		// Keyset paging on the primary key: stable under inserts, and
		// each page costs only the rows it scans.
		ids := s.sortedIDs(m.logical)
		start := 0
		if lastID != "" {
			start = sort.SearchStrings(ids, lastID)
			if start < len(ids) && ids[start] == lastID {
				start++
			}
		}
		for _, id := range ids[start:] {
			row := table[id]
			if filter != nil && !filter.match(row) {
				continue
			}
			if len(pageRows) == limit {
				more = true
				break
			}
			pageRows = append(pageRows, row)
		}
		if top >= 0 && (page-1)*pageSize+len(pageRows) >= top {
			more = false
		}
	} else {
		type keyed struct {
			id  string
			row map[string]any
		}
		rows := make([]keyed, 0, len(table))
		for id, row := range table {
			if filter == nil || filter.match(row) {
				rows = append(rows, keyed{id, row})
			}
		}
		sort.Slice(rows, func(i, j int) bool {
			for _, o := range orders {
				c := cmpValues(rows[i].row[o.col], rows[j].row[o.col])
				if o.desc {
					c = -c
				}
				if c != 0 {
					return c < 0
				}
			}
			return rows[i].id < rows[j].id
		})
		if top >= 0 && top < len(rows) {
			rows = rows[:top]
		}
		count = len(rows)
		start := min((page-1)*pageSize, len(rows))
		end := min(start+pageSize, len(rows))
		for _, k := range rows[start:end] {
			pageRows = append(pageRows, k.row)
		}
		more = end < len(rows)
	}
	values := make([]jobj, 0, len(pageRows))
	for _, row := range pageRows {
		values = append(values, s.webRow(m, row, cols, p))
	}
	body := jobj{{"@odata.context", contextURL(r, m, cols, false)}}
	if q.Get("$count") == "true" {
		if count < 0 {
			count = 0
			for _, row := range table {
				if filter == nil || filter.match(row) {
					count++
				}
			}
			if top >= 0 {
				count = min(count, top)
			}
		}
		body = append(body, jfield{"@odata.count", min(count, 5000)})
	}
	body = append(body, jfield{"value", values})
	if p.trackChanges && !more {
		body = append(body, jfield{"@odata.deltaLink", baseURL(r) + m.set + "?" + s.deltaQuery(q, s.trackStart(q))})
	}
	if more && len(pageRows) > 0 {
		nq := url.Values{}
		for k, v := range q {
			if k != "$skiptoken" {
				nq[k] = v
			}
		}
		nq.Set("$skiptoken", skiptoken(page+1, pageRows[len(pageRows)-1][m.idCol].(string)))
		if p.trackChanges && !nq.Has(trackStartParam) {
			nq.Set(trackStartParam, strconv.FormatInt(s.version, 10))
		}
		body = append(body, jfield{"@odata.nextLink", baseURL(r) + m.set + "?" + nq.Encode()})
	}
	applied(w, p, pageSize)
	writeJSON(w, 200, body)
	return nil
}

// parseBody converts a Web API JSON body to typed columns.
func (s *Server) parseBody(r *http.Request, m *entityMeta) (map[string]any, *apiError) {
	raw, err := io.ReadAll(io.LimitReader(r.Body, 32<<20))
	if err != nil {
		return nil, errBad("read body: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var body map[string]any
	if err := dec.Decode(&body); err != nil {
		return nil, errBad("The request body is not valid JSON: %v", err)
	}
	out := map[string]any{}
	for k, v := range body {
		if nav, ok := strings.CutSuffix(k, "@odata.bind"); ok {
			col, ok := m.bindColumn(nav)
			if !ok {
				return nil, errBad("An undeclared property '%s' which only has property annotations in the payload but no property value was found in the payload.", nav)
			}
			if v == nil {
				out[col] = nil
				continue
			}
			ref, ok := parseBind(v)
			if !ok {
				return nil, errBad("%s: %v is not a valid entity reference like /accounts(<id>)", k, v)
			}
			tv, err := coerce(m, col, ref)
			if err != nil {
				return nil, errBad("%v", err)
			}
			out[col] = tv
			continue
		}
		if strings.Contains(k, "@") {
			continue // other annotations
		}
		c, known := m.cols[k]
		if !known {
			if strings.HasPrefix(k, "_") && strings.HasSuffix(k, "_value") {
				return nil, errBad("The property '%s' cannot be set; use %s@odata.bind.", k, strings.TrimSuffix(strings.TrimPrefix(k, "_"), "_value"))
			}
			if !isCustomColumn(k) {
				return nil, errBad("The property '%s' does not exist on type 'Microsoft.Dynamics.CRM.%s'.", k, m.logical)
			}
		}
		if known && c.kind == kLookup {
			return nil, errBad("The property '%s' is a lookup; set it with %s@odata.bind.", k, k)
		}
		tv, err := coerce(m, k, v)
		if err != nil {
			return nil, errBad("%v", err)
		}
		out[k] = tv
	}
	return out, nil
}

// otherSets are tables the simulator does not serve but lookups may bind to.
var otherSets = map[string]string{"businessunits": "businessunit", "teams": "team",
	"transactioncurrencies": "transactioncurrency", "plugintypes": "plugintype"}

// parseBind reads "/accounts(<id>)" (or an absolute URL to it).
func parseBind(v any) (Ref, bool) {
	s, ok := v.(string)
	if !ok {
		return Ref{}, false
	}
	if i := strings.Index(s, apiPrefix); i >= 0 {
		s = s[i+len(apiPrefix):]
	}
	s = strings.TrimPrefix(s, "/")
	i := strings.IndexByte(s, '(')
	if i <= 0 || !strings.HasSuffix(s, ")") {
		return Ref{}, false
	}
	logical, ok := setToEntity[s[:i]]
	id := s[i+1 : len(s)-1]
	if !ok {
		logical, ok = otherSets[s[:i]]
	}
	if !ok || !isGUID(id) {
		return Ref{}, false
	}
	return Ref{logical, normID(id)}, true
}

func (s *Server) entityID(r *http.Request, m *entityMeta, id string) string {
	return baseURL(r) + m.set + "(" + id + ")"
}

func (s *Server) writeSaved(w http.ResponseWriter, r *http.Request, m *entityMeta, id string, created bool) *apiError {
	p := parsePrefer(r.Header)
	row := s.tables[m.logical][id]
	w.Header().Set("OData-EntityId", s.entityID(r, m, id))
	if row != nil {
		w.Header().Set("ETag", etag(row))
	}
	if !p.representation || row == nil {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	cols, err := s.selection(m, r.URL.Query())
	if err != nil {
		return err
	}
	applied(w, p, 0)
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeJSON(w, status, append(jobj{{"@odata.context", contextURL(r, m, cols, true)}}, s.webRow(m, row, cols, p)...))
	return nil
}

func (s *Server) servePost(w http.ResponseWriter, r *http.Request, m *entityMeta, user string) *apiError {
	attrs, aerr := s.parseBody(r, m)
	if aerr != nil {
		return aerr
	}
	if err := s.validateSystem(m, attrs, nil); err != nil {
		return err
	}
	var id string
	if err := s.write(func() (err error) { id, err = s.createChecked(m, attrs, user, nil); return err }); err != nil {
		return asAPIError(err)
	}
	return s.writeSaved(w, r, m, id, true)
}

func asAPIError(err error) *apiError {
	if e, ok := err.(*apiError); ok {
		return e
	}
	return errBad("%v", err)
}

func (s *Server) servePatch(w http.ResponseWriter, r *http.Request, m *entityMeta, id, user string) *apiError {
	attrs, aerr := s.parseBody(r, m)
	if aerr != nil {
		return aerr
	}
	row, exists := s.tables[m.logical][id]
	ifMatch, ifNoneMatch := r.Header.Get("If-Match"), r.Header.Get("If-None-Match")
	switch {
	case ifMatch == "*" && !exists:
		return errNotFound(m.logical, id)
	case ifMatch != "" && ifMatch != "*" && !exists:
		return errNotFound(m.logical, id)
	case ifMatch != "" && ifMatch != "*" && ifMatch != etag(row):
		return &apiError{http.StatusPreconditionFailed, "0x80060882", "The version of the existing record doesn't match the RowVersion property provided."}
	case ifNoneMatch == "*" && exists:
		return &apiError{http.StatusPreconditionFailed, "0x80040237", "A record with matching key values already exists."}
	}
	if !exists {
		attrs[m.idCol] = id
		if err := s.validateSystem(m, attrs, nil); err != nil {
			return err
		}
		if err := s.write(func() error { _, err := s.createChecked(m, attrs, user, nil); return err }); err != nil {
			return asAPIError(err)
		}
		return s.writeSaved(w, r, m, id, true)
	}
	if v, ok := attrs[m.idCol]; ok && v != id {
		return errBad("The primary key %s in the body does not match the key in the URL", m.idCol)
	}
	if err := s.validateSystem(m, attrs, row); err != nil {
		return err
	}
	if err := s.write(func() error { return s.update(m, id, attrs, user, nil) }); err != nil {
		return asAPIError(err)
	}
	return s.writeSaved(w, r, m, id, false)
}

func (s *Server) serveDelete(w http.ResponseWriter, r *http.Request, m *entityMeta, id, user string) *apiError {
	row, exists := s.tables[m.logical][id]
	if !exists {
		return errNotFound(m.logical, id)
	}
	if im := r.Header.Get("If-Match"); im != "" && im != "*" && im != etag(row) {
		return &apiError{http.StatusPreconditionFailed, "0x80060882", "The version of the existing record doesn't match the RowVersion property provided."}
	}
	if m.logical == "asyncoperation" || m.logical == "sdkmessage" || m.logical == "sdkmessagefilter" {
		return &apiError{http.StatusForbidden, "0x80040220", "The simulator does not allow deleting " + m.logical + " rows."}
	}
	if err := s.write(func() error { return s.remove(m, id, user, nil) }); err != nil {
		return asAPIError(err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// validateSystem applies the rules of the registration tables.
func (s *Server) validateSystem(m *entityMeta, attrs, existing map[string]any) *apiError {
	get := func(k string) any {
		if v, ok := attrs[k]; ok {
			return v
		}
		return existing[k]
	}
	switch m.logical {
	case "asyncoperation", "sdkmessage", "sdkmessagefilter":
		return &apiError{http.StatusForbidden, "0x80040220", "The simulator does not allow writing " + m.logical + " rows."}
	case "serviceendpoint":
		c, _ := get("contract").(OptionValue)
		if c == 8 {
			if u, _ := get("url").(string); u == "" {
				return errBad("url is required for a webhook (contract 8)")
			} else if pu, err := url.Parse(u); err != nil || (pu.Scheme != "https" && pu.Scheme != "http") {
				return errBad("url %q is not an absolute http(s) URL", u)
			}
			at, _ := get("authtype").(OptionValue)
			if at != 4 && at != 5 && at != 6 {
				return errBad("authtype %d is not valid for a webhook; use 4 (WebhookKey), 5 (HttpHeader) or 6 (HttpQueryString)", at)
			}
		}
		if existing == nil {
			if _, ok := attrs["messageformat"]; !ok {
				attrs["messageformat"] = OptionValue(2)
			}
			if _, ok := attrs["userclaim"]; !ok {
				attrs["userclaim"] = OptionValue(1)
			}
			if _, ok := attrs["connectionmode"]; !ok {
				attrs["connectionmode"] = OptionValue(1)
			}
		}
	case "sdkmessageprocessingstep":
		if existing == nil {
			for k, v := range map[string]any{"mode": OptionValue(0), "stage": OptionValue(10), "rank": int64(1),
				"supporteddeployment": OptionValue(0), "asyncautodelete": false, "invocationsource": OptionValue(0)} {
				if _, ok := attrs[k]; !ok {
					attrs[k] = v
				}
			}
		}
		if n, _ := get("name").(string); n == "" {
			return errBad("name is required for sdkmessageprocessingstep")
		}
		mode, _ := get("mode").(OptionValue)
		stage, _ := get("stage").(OptionValue)
		if stage != 10 && stage != 20 && stage != 40 {
			return errBad("stage %d is not valid; use 10, 20 or 40", stage)
		}
		if mode != 0 && mode != 1 {
			return errBad("mode %d is not valid; use 0 or 1", mode)
		}
		if mode == 1 && stage != 40 {
			return &apiError{http.StatusBadRequest, "0x80044184", "Asynchronous steps are supported only in the PostOperation stage (40)."}
		}
		if auto, _ := get("asyncautodelete").(bool); auto && mode != 1 {
			return errBad("asyncautodelete is valid only for asynchronous steps")
		}
		mref, ok := get("sdkmessageid").(Ref)
		if !ok {
			return errBad("sdkmessageid is required for sdkmessageprocessingstep")
		}
		if _, ok := get("eventhandler").(Ref); !ok {
			return errBad("eventhandler is required for sdkmessageprocessingstep")
		}
		if fref, ok := get("sdkmessagefilterid").(Ref); ok {
			f := s.tables["sdkmessagefilter"][fref.ID]
			if fm, _ := f["sdkmessageid"].(Ref); fm.ID != mref.ID {
				return errBad("sdkmessagefilter %s does not belong to sdkmessage %s", fref.ID, mref.ID)
			}
		}
	case "sdkmessageprocessingstepimage":
		if existing == nil {
			if _, ok := attrs["imagetype"]; !ok {
				attrs["imagetype"] = OptionValue(0)
			}
		}
		it, _ := get("imagetype").(OptionValue)
		if it < 0 || it > 2 {
			return errBad("imagetype %d is not valid; use 0, 1 or 2", it)
		}
		if a, _ := get("entityalias").(string); a == "" {
			return errBad("entityalias is required for sdkmessageprocessingstepimage")
		}
		if mp, _ := get("messagepropertyname").(string); mp == "" {
			return errBad("messagepropertyname is required for sdkmessageprocessingstepimage")
		}
		sref, ok := get("sdkmessageprocessingstepid").(Ref)
		if !ok {
			return errBad("sdkmessageprocessingstepid is required for sdkmessageprocessingstepimage")
		}
		st, ok := s.tables["sdkmessageprocessingstep"][sref.ID]
		if !ok {
			return errNotFound("sdkmessageprocessingstep", sref.ID)
		}
		mref, _ := st["sdkmessageid"].(Ref)
		msg, _ := s.tables["sdkmessage"][mref.ID]["name"].(string)
		if msg == "Create" && (it == 0 || it == 2) {
			return errBad("A pre-image is not valid for the Create message")
		}
		if msg == "Delete" && (it == 1 || it == 2) {
			return errBad("A post-image is not valid for the Delete message")
		}
	}
	return nil
}
