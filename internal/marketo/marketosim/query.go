package marketosim

import (
	"encoding/base32"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

var objectPaths = map[string]string{
	"salespersons": objSalesPersons, "companies": objCompanies, "leads": objLeads,
	"opportunities": objOpportunities, "opportunities/roles": objRoles,
}

func mediaType(r *http.Request) string {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return mt
}

// route dispatches a REST call that passed admission.
func (s *Server) route(r *http.Request, body []byte) *envelope {
	p := strings.TrimPrefix(r.URL.Path, "/rest/v1/")
	if p == r.URL.Path || !strings.HasSuffix(p, ".json") {
		return fail("610", "Requested resource not found")
	}
	p = strings.TrimSuffix(p, ".json")
	method := r.Method
	overridden := method == http.MethodPost && r.URL.Query().Get("_method") == "GET"
	if overridden {
		method = http.MethodGet
	}
	if p == "activities" || p == "activities/types" {
		if method != http.MethodGet {
			return fail("605", "HTTP Method not supported")
		}
		if p == "activities/types" {
			return s.activityTypes()
		}
		return s.activitiesFeed(r.URL.Query())
	}
	if p == "activities/pagingtoken" || p == "activities/leadchanges" {
		if method != http.MethodGet {
			return fail("605", "HTTP Method not supported")
		}
		if p == "activities/pagingtoken" {
			return s.pagingToken(r.URL.Query())
		}
		return s.leadChanges(r.URL.Query())
	}
	if strings.HasPrefix(p, "lead/") {
		if method != http.MethodGet {
			return fail("605", "HTTP Method not supported")
		}
		return s.leadByID(strings.TrimPrefix(p, "lead/"), r.URL.Query())
	}
	suffix := ""
	for _, sfx := range []string{"/delete", "/describe2", "/describe"} {
		if strings.HasSuffix(p, sfx) {
			suffix, p = sfx, strings.TrimSuffix(p, sfx)
			break
		}
	}
	obj, known := objectPaths[p]
	if !known || (suffix == "/describe2" && obj != objLeads) {
		return fail("610", "Requested resource not found")
	}
	spec := s.specs[obj]
	switch suffix {
	case "/describe", "/describe2":
		if method != http.MethodGet {
			return fail("605", "HTTP Method not supported")
		}
		return s.describe(spec, suffix == "/describe2")
	case "/delete":
		if method != http.MethodPost {
			return fail("605", "HTTP Method not supported")
		}
		if len(body) == 0 && obj == objLeads && r.URL.Query().Get("id") != "" {
			var in []map[string]any
			for _, id := range strings.Split(r.URL.Query().Get("id"), ",") {
				in = append(in, map[string]any{"id": id})
			}
			return s.deleteRecords(spec, &deleteRequest{Input: in})
		}
		if mediaType(r) != "application/json" {
			return fail("612", "Invalid Content Type")
		}
		var req deleteRequest
		if !decodeJSON(body, &req) {
			return fail("609", "Invalid JSON")
		}
		return s.deleteRecords(spec, &req)
	}
	switch method {
	case http.MethodGet:
		params := r.URL.Query()
		var q queryParams
		if overridden {
			switch mediaType(r) {
			case "application/x-www-form-urlencoded":
				form, err := url.ParseQuery(string(body))
				if err != nil {
					return fail("609", "Invalid form body")
				}
				for k, v := range form {
					params[k] = v
				}
			case "application/json":
				var jb struct {
					FilterType    string           `json:"filterType"`
					FilterValues  []string         `json:"filterValues"`
					Fields        []string         `json:"fields"`
					Input         []map[string]any `json:"input"`
					NextPageToken string           `json:"nextPageToken"`
					BatchSize     int              `json:"batchSize"`
				}
				if !decodeJSON(body, &jb) {
					return fail("609", "Invalid JSON")
				}
				q = queryParams{filterType: jb.FilterType, values: jb.FilterValues, fields: jb.Fields,
					compound: jb.Input, token: jb.NextPageToken, batchSize: jb.BatchSize, json: true}
				return s.query(spec, q)
			default:
				return fail("612", "Invalid Content Type")
			}
		}
		q.filterType = params.Get("filterType")
		if v := params.Get("filterValues"); v != "" {
			q.values = strings.Split(v, ",")
		}
		if v := params.Get("fields"); v != "" {
			q.fields = strings.Split(v, ",")
		}
		q.token = params.Get("nextPageToken")
		if v := params.Get("batchSize"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				return fail("1003", "Invalid batchSize")
			}
			q.batchSize = n
		}
		return s.query(spec, q)
	case http.MethodPost:
		if mediaType(r) != "application/json" {
			return fail("612", "Invalid Content Type")
		}
		var req syncRequest
		if !decodeJSON(body, &req) {
			return fail("609", "Invalid JSON")
		}
		if obj == objLeads {
			return s.syncLeads(&req)
		}
		return s.syncObjects(spec, &req)
	}
	return fail("605", "HTTP Method not supported")
}

type queryParams struct {
	filterType string
	values     []string
	fields     []string
	compound   []map[string]any
	token      string
	batchSize  int
	json       bool
}

var pageEnc = base32.StdEncoding.WithPadding(base32.NoPadding)

func pageToken(off int) string { return pageEnc.EncodeToString([]byte("page:" + strconv.Itoa(off))) }

func pageOffset(tok string) (int, bool) {
	b, err := pageEnc.DecodeString(tok)
	if err != nil || !strings.HasPrefix(string(b), "page:") {
		return 0, false
	}
	n, err := strconv.Atoi(strings.TrimPrefix(string(b), "page:"))
	return n, err == nil && n >= 0
}

func (s *Server) query(spec *objSpec, q queryParams) *envelope {
	if q.filterType == "" {
		return fail("1003", "filterType cannot be blank")
	}
	ft := q.filterType
	compound := false
	switch ft {
	case "idField":
		ft = spec.idField
	case "dedupeFields":
		if len(spec.dedupe) > 1 {
			compound = true
		} else {
			ft = spec.dedupe[0]
		}
	}
	if compound {
		if len(q.compound) == 0 {
			return fail("1003", "Compound key query requires input in a JSON body")
		}
		if len(q.compound) > 300 {
			return fail("1003", "Input exceeds the maximum of 300")
		}
	} else {
		f := spec.byName[ft]
		if f == nil || !f.Searchable {
			return fail("1011", fmt.Sprintf("Field '%s' not supported", q.filterType))
		}
		if len(q.values) == 0 {
			return fail("1003", "filterValues cannot be blank")
		}
		if len(q.values) > 300 {
			return fail("1003", "Number of filterValues exceeds the maximum of 300")
		}
	}
	fields := q.fields
	if len(fields) == 0 {
		fields = spec.defaultFields
	}
	for _, f := range fields {
		if spec.byName[f] == nil {
			return fail("1006", fmt.Sprintf("Field '%s' not found", f))
		}
	}
	bs := q.batchSize
	if bs == 0 {
		bs = 300
	}
	if bs < 1 || bs > 300 {
		return fail("1003", "batchSize must be between 1 and 300")
	}
	off := 0
	if q.token != "" {
		var good bool
		if off, good = pageOffset(q.token); !good {
			return fail("1003", "Invalid nextPageToken")
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tables[spec.name]
	var matches []*record
	seen := map[*record]bool{}
	addAll := func(rs []*record) {
		for _, r := range rs {
			if !seen[r] {
				seen[r] = true
				matches = append(matches, r)
			}
		}
	}
	if compound {
		for _, in := range q.compound {
			if r := s.lookupKey(t, spec.dedupe, in); r != nil {
				addAll([]*record{r})
			}
		}
	} else {
		for _, v := range q.values {
			addAll(t.find(ft, strings.TrimSpace(v)))
		}
	}
	if spec.name == objLeads && len(matches) > 1000 {
		return fail("1003", "Too many results match the filter")
	}
	if off > len(matches) {
		off = len(matches)
	}
	end := off + bs
	if end > len(matches) {
		end = len(matches)
	}
	out := make([]map[string]any, 0, end-off)
	for i, r := range matches[off:end] {
		m := s.project(t, r, fields)
		if spec.name != objLeads {
			m["seq"] = i
		}
		out = append(out, m)
	}
	env := ok(out)
	if end < len(matches) {
		more := true
		env.MoreResult = &more
		env.NextPageToken = pageToken(end)
	}
	return env
}

// project returns the record's id and the requested fields; a lead linked
// to a company shows the company's values for company fields.
func (s *Server) project(t *table, r *record, fields []string) map[string]any {
	m := map[string]any{t.spec.idField: r.fields[t.spec.idField]}
	var company *record
	if t.spec.name == objLeads {
		if c := r.fields["externalCompanyId"]; c != nil {
			if cs := s.tables[objCompanies].find("externalCompanyId", c); len(cs) > 0 {
				company = cs[0]
			}
		}
	}
	isCompanyField := map[string]bool{}
	for _, f := range companyFields {
		isCompanyField[f] = true
	}
	for _, f := range fields {
		v, present := r.fields[f]
		if company != nil && isCompanyField[f] {
			v, present = company.fields[f]
		}
		if present && v != nil {
			m[f] = v
		} else if s.opts.ExplicitNulls {
			m[f] = nil
		}
	}
	return m
}

func (s *Server) leadByID(id string, params url.Values) *envelope {
	spec := s.specs[objLeads]
	fields := spec.defaultFields
	if v := params.Get("fields"); v != "" {
		fields = strings.Split(v, ",")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tables[objLeads]
	for _, f := range fields {
		if spec.byName[f] == nil {
			return fail("1006", fmt.Sprintf("Field '%s' not found", f))
		}
	}
	rs := t.find("id", id)
	if len(rs) == 0 {
		return ok(nil)
	}
	return ok([]map[string]any{s.project(t, rs[0], fields)})
}

type deleteRequest struct {
	DeleteBy string           `json:"deleteBy"`
	Input    []map[string]any `json:"input"`
}

func (s *Server) deleteRecords(spec *objSpec, req *deleteRequest) *envelope {
	if req.Input == nil {
		return fail("1003", "input cannot be blank")
	}
	if len(req.Input) > 300 {
		return fail(s.opts.InputCapCode, "Batch size of 300 exceeded")
	}
	keyFields := spec.dedupe
	switch req.DeleteBy {
	case "", "dedupeFields":
	case "idField":
		keyFields = []string{spec.idField}
	default:
		return fail("1003", fmt.Sprintf("Invalid deleteBy '%s'", req.DeleteBy))
	}
	if spec.name == objLeads {
		keyFields = []string{"id"} // leads are deleted by Marketo id only
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tables[spec.name]
	results := make([]map[string]any, len(req.Input))
	for i, in := range req.Input {
		var res map[string]any
		r := (*record)(nil)
		missing := false
		for _, k := range keyFields {
			if v := in[k]; v == nil || v == "" {
				missing = true
			}
		}
		switch {
		case spec.name != objLeads && s.opts.CRMEnabled:
			res = skipped("1018", "CRM Enabled")
		case missing:
			res = skipped("1003", fmt.Sprintf("Value for required field '%s' not specified", strings.Join(keyFields, ",")))
		default:
			r = s.lookupKey(t, keyFields, in)
			if r == nil {
				res = skipped("1013", "Record not found")
			} else if spec.name == objSalesPersons && s.salesPersonInUse(r) {
				res = skipped("1022", "Object in use")
			} else {
				t.remove(r)
				res = map[string]any{"status": "deleted"}
			}
		}
		if spec.name == objLeads {
			if r != nil {
				res["id"] = r.id
			} else if n, ok := in["id"]; ok {
				res["id"] = n
			}
		} else {
			res["seq"] = i
			if r != nil {
				res[spec.idField] = r.fields[spec.idField]
			}
		}
		s.noteSkip(res)
		results[i] = res
	}
	return ok(results)
}

func (s *Server) salesPersonInUse(r *record) bool {
	id := r.fields["externalSalesPersonId"]
	for _, obj := range []string{objLeads, objCompanies, objOpportunities} {
		if len(s.tables[obj].find("externalSalesPersonId", id)) > 0 {
			return true
		}
	}
	return false
}

func (s *Server) describe(spec *objSpec, v2 bool) *envelope {
	var searchable [][]string
	if spec.name == objRoles {
		searchable = append(searchable, spec.dedupe)
	}
	for _, f := range spec.searchable() {
		searchable = append(searchable, []string{f})
	}
	if spec.name == objLeads && !v2 {
		var out []map[string]any
		for i, f := range spec.fields {
			d := map[string]any{"id": i + 1, "displayName": f.Name, "dataType": f.Type,
				"rest": map[string]any{"name": f.Name, "readOnly": f.ReadOnly},
				"soap": map[string]any{"name": f.Name, "readOnly": f.ReadOnly}}
			if f.Length > 0 {
				d["length"] = f.Length
			}
			out = append(out, d)
		}
		return ok(out)
	}
	var fields []map[string]any
	for _, f := range spec.fields {
		d := map[string]any{"name": f.Name, "displayName": f.Name, "dataType": f.Type,
			"updateable": !f.ReadOnly && (spec.name == objLeads || !contains(spec.dedupe, f.Name)), "crmManaged": false}
		if f.Length > 0 {
			d["length"] = f.Length
		}
		fields = append(fields, d)
	}
	d := map[string]any{"name": spec.displayName, "displayName": spec.displayName,
		"idField": spec.idField, "dedupeFields": spec.dedupe, "searchableFields": searchable, "fields": fields}
	if spec.name == objLeads {
		d = map[string]any{"name": "API Lead", "searchableFields": searchable, "fields": fields}
	}
	return ok([]map[string]any{d})
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
