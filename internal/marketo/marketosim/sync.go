package marketosim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
)

type syncRequest struct {
	Action        string           `json:"action"`
	DedupeBy      string           `json:"dedupeBy"`
	LookupField   string           `json:"lookupField"`
	PartitionName string           `json:"partitionName"`
	Input         []map[string]any `json:"input"`
}

func decodeJSON(body []byte, v any) bool {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	return dec.Decode(v) == nil
}

func skipped(code, msg string) map[string]any {
	return map[string]any{"status": "skipped", "reasons": []map[string]any{{"code": code, "message": msg}}}
}

func (s *Server) noteSkip(res map[string]any) {
	if rs, ok := res["reasons"].([]map[string]any); ok && len(rs) > 0 {
		s.stats.RecordReasons[rs[0]["code"].(string)]++
	}
}

func (s *Server) now() string { return s.opts.Clock.Now().UTC().Format(isoZ) }

// checkFields validates a record's fields; it returns the typed values to
// write and, on failure, a skip result. Key fields named in keep are kept
// even when read-only.
func (s *Server) checkFields(spec *objSpec, in map[string]any, keep string) (map[string]any, map[string]any) {
	names := make([]string, 0, len(in))
	for k := range in {
		names = append(names, k)
	}
	sort.Strings(names)
	msi := map[string]bool{}
	if spec.name == objLeads {
		for _, f := range msiFieldNames(s.opts.ScoreField) {
			msi[f] = true
		}
	}
	vals := map[string]any{}
	for _, k := range names {
		f := spec.byName[k]
		if f == nil {
			return nil, skipped("1006", fmt.Sprintf("Field '%s' not found", k))
		}
		if f.ReadOnly && k != keep {
			if msi[k] && s.opts.MSIWrites == "reject" {
				return nil, skipped("1006", fmt.Sprintf("Field '%s' not found", k))
			}
			continue // system-managed: ignored
		}
		v, msg := coerce(f, in[k])
		if msg != "" {
			return nil, skipped("1003", msg)
		}
		vals[k] = v
	}
	return vals, nil
}

func (s *Server) newRecord(t *table) *record {
	r := &record{fields: map[string]any{}}
	if t.spec.idField == "marketoGUID" {
		u, _ := uuid.NewRandomFromReader(s.rnd)
		r.guid = u.String()
		r.fields["marketoGUID"] = r.guid
	} else {
		r.id = t.nextID
		t.nextID++
		r.fields["id"] = r.id
	}
	now := s.now()
	r.fields["createdAt"] = now
	r.fields["updatedAt"] = now
	return r
}

func (s *Server) apply(t *table, r *record, vals map[string]any, isNew bool) {
	leads := t.spec.name == objLeads
	if isNew {
		for k, v := range vals {
			if v != nil {
				r.fields[k] = v
			}
		}
		t.insert(r)
		if leads {
			s.logActivity(r.id, activityNewLead, "", nil, nil)
		}
		return
	}
	for k, v := range vals {
		if old := r.fields[k]; leads && t.norm(k, old) != t.norm(k, v) {
			s.logActivity(r.id, activityDataValueChange, k, old, v)
		}
		t.set(r, k, v)
	}
	r.fields["updatedAt"] = s.now()
}

func validAction(a string, leads bool) bool {
	switch a {
	case "createOnly", "updateOnly", "createOrUpdate":
		return true
	case "createDuplicate":
		return leads
	}
	return false
}

// syncObjects handles Sync for sales persons, companies, opportunities and
// roles.
func (s *Server) syncObjects(spec *objSpec, req *syncRequest) *envelope {
	if req.Input == nil {
		return fail("1003", "input cannot be blank")
	}
	if len(req.Input) > 300 {
		return fail(s.opts.InputCapCode, "Batch size of 300 exceeded")
	}
	if req.Action == "" {
		req.Action = "createOrUpdate"
	}
	if req.DedupeBy == "" {
		req.DedupeBy = "dedupeFields"
	}
	if !validAction(req.Action, false) {
		return fail("1003", fmt.Sprintf("Invalid action '%s'", req.Action))
	}
	if req.DedupeBy != "dedupeFields" && req.DedupeBy != "idField" {
		return fail("1003", fmt.Sprintf("Invalid dedupeBy '%s'", req.DedupeBy))
	}
	if req.DedupeBy == "idField" && req.Action == "createOnly" {
		return fail("1003", "dedupeBy 'idField' is not compatible with action 'createOnly'")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tables[spec.name]
	if spec.name == objOpportunities && s.opts.SalesPerson718RequestLevel && !s.opts.CRMEnabled {
		for _, in := range req.Input {
			if sp, ok := in["externalSalesPersonId"]; ok && sp != nil && sp != "" &&
				len(s.tables[objSalesPersons].find("externalSalesPersonId", sp)) == 0 {
				return fail("718", "ExternalSalesPersonID not found")
			}
		}
	}
	keyFields := spec.dedupe
	if req.DedupeBy == "idField" {
		keyFields = []string{spec.idField}
	}
	seen := map[string]bool{}
	results := make([]map[string]any, len(req.Input))
	for i, in := range req.Input {
		res := s.syncObject(t, keyFields, req, in, seen)
		res["seq"] = i
		s.noteSkip(res)
		results[i] = res
	}
	return ok(results)
}

func (s *Server) syncObject(t *table, keyFields []string, req *syncRequest, in map[string]any, seen map[string]bool) map[string]any {
	spec := t.spec
	if s.opts.CRMEnabled {
		return skipped("1018", "CRM Enabled")
	}
	var parts []string
	for _, k := range keyFields {
		v, present := in[k]
		if !present || v == nil || v == "" {
			return skipped("1003", fmt.Sprintf("Value for required field '%s' not specified", k))
		}
		parts = append(parts, t.norm(k, v))
	}
	dk := strings.Join(parts, "\x00")
	if seen[dk] {
		return skipped("1036", "Duplicate object found in input")
	}
	seen[dk] = true
	keep := ""
	if req.DedupeBy == "idField" {
		keep = spec.idField
	}
	vals, skip := s.checkFields(spec, in, keep)
	if skip != nil {
		return skip
	}
	delete(vals, spec.idField)
	existing := s.lookupKey(t, keyFields, in)
	if req.Action == "createOnly" && existing != nil {
		return skipped("1017", "Object already exists")
	}
	if existing == nil && (req.Action == "updateOnly" || req.DedupeBy == "idField") {
		return skipped("1013", "Object not found")
	}
	// Values of the final record, for the checks below.
	final := func(f string) any {
		if v, ok := vals[f]; ok {
			return v
		}
		if existing != nil {
			return existing.fields[f]
		}
		return nil
	}
	if spec.name == objOpportunities {
		if v, ok := vals["name"]; (existing == nil && v == nil) || (ok && v == nil) {
			return skipped("1003", "The 'name' field must not be null")
		}
	}
	if spec.name == objOpportunities || spec.name == objCompanies {
		if sp := final("externalSalesPersonId"); sp != nil && len(s.tables[objSalesPersons].find("externalSalesPersonId", sp)) == 0 {
			return skipped(s.opts.MissingSalesPersonCode, "ExternalSalesPersonID not found")
		}
	}
	if spec.name == objRoles {
		if len(s.tables[objOpportunities].find("externalOpportunityId", final("externalOpportunityId"))) == 0 {
			return skipped(s.opts.MissingRefCode, "Opportunity not found")
		}
		if len(s.tables[objLeads].find("id", final("leadId"))) == 0 {
			return skipped(s.opts.MissingRefCode, "Lead not found")
		}
	}
	res := map[string]any{}
	if existing == nil {
		r := s.newRecord(t)
		s.apply(t, r, vals, true)
		res["status"] = "created"
		existing = r
	} else {
		s.apply(t, existing, vals, false)
		res["status"] = "updated"
	}
	if spec.idField == "marketoGUID" {
		res["marketoGUID"] = existing.guid
	} else {
		res["id"] = existing.id
	}
	return res
}

// lookupKey finds the record with the given key values.
func (s *Server) lookupKey(t *table, keyFields []string, in map[string]any) *record {
	cands := t.find(keyFields[0], in[keyFields[0]])
	for _, r := range cands {
		match := true
		for _, k := range keyFields[1:] {
			if t.norm(k, r.fields[k]) != t.norm(k, in[k]) {
				match = false
				break
			}
		}
		if match {
			return r
		}
	}
	return nil
}

// leadLookupSupported says whether field may be a Sync Leads lookupField.
func (s *Server) leadLookupSupported(field string) bool {
	switch field {
	case "email", "id":
		return true
	case "externalPersonId":
		return s.opts.LookupExternalPersonID
	}
	for _, f := range s.opts.CustomFields[objLeads] {
		if f.Name == field && f.Searchable {
			return true
		}
	}
	return false
}

type leadPlan struct {
	result map[string]any
	target *record // nil = create
	vals   map[string]any
}

// syncLeads handles Sync Leads: results by position, no seq, no id on
// skipped leads.
func (s *Server) syncLeads(req *syncRequest) *envelope {
	if req.Input == nil {
		return fail("1003", "input cannot be blank")
	}
	if len(req.Input) > 300 {
		return fail(s.opts.InputCapCode, "Batch size of 300 exceeded")
	}
	if req.Action == "" {
		req.Action = "createOrUpdate"
	}
	if !validAction(req.Action, true) {
		return fail("1003", fmt.Sprintf("Invalid action '%s'", req.Action))
	}
	lookup := req.LookupField
	if lookup == "" {
		lookup = "email"
	}
	if !s.leadLookupSupported(lookup) {
		return fail("1011", fmt.Sprintf("Field '%s' not supported", lookup))
	}
	if lookup == "id" && req.Action != "updateOnly" {
		return fail("1003", "lookupField 'id' is only allowed with action 'updateOnly'")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tables[objLeads]
	plans := make([]leadPlan, len(req.Input))
	seen := map[string]bool{}
	for i, in := range req.Input {
		plans[i] = s.planLead(t, req.Action, lookup, in, seen)
	}
	if s.opts.RaceDuplicates {
		// Let a concurrent call look up the same keys before we write.
		gate := s.raceGate
		s.mu.Unlock()
		if gate != nil {
			gate()
		} else {
			time.Sleep(2 * time.Millisecond)
		}
		s.mu.Lock()
	}
	results := make([]map[string]any, len(plans))
	for i, p := range plans {
		if p.result != nil {
			s.noteSkip(p.result)
			results[i] = p.result
			continue
		}
		if p.target == nil {
			r := s.newRecord(t)
			s.apply(t, r, p.vals, true)
			results[i] = map[string]any{"id": r.id, "status": "created"}
		} else {
			s.apply(t, p.target, p.vals, false)
			results[i] = map[string]any{"id": p.target.id, "status": "updated"}
		}
	}
	return ok(results)
}

func (s *Server) planLead(t *table, action, lookup string, in map[string]any, seen map[string]bool) leadPlan {
	skip := func(code, msg string) leadPlan { return leadPlan{result: skipped(code, msg)} }
	kv := in[lookup]
	hasKey := kv != nil && kv != ""
	if action != "createDuplicate" {
		if !hasKey && action != "createOnly" {
			return skip("1003", fmt.Sprintf("Value for lookup field '%s' not specified", lookup))
		}
		if hasKey {
			k := t.norm(lookup, kv)
			if seen[k] {
				return skip("1036", "Duplicate object found in input")
			}
			seen[k] = true
		}
	}
	keep := ""
	if lookup == "id" {
		keep = "id"
	}
	vals, sk := s.checkFields(t.spec, in, keep)
	if sk != nil {
		return leadPlan{result: sk}
	}
	delete(vals, "id")
	var existing *record
	if action != "createDuplicate" && hasKey {
		m := t.find(lookup, kv)
		if len(m) > 1 {
			return skip("1007", "Multiple lead match lookup criteria")
		}
		if len(m) == 1 {
			existing = m[0]
		}
	}
	switch {
	case action == "createOnly" && existing != nil:
		return skip("1005", "Lead already exists")
	case action == "updateOnly" && existing == nil:
		return skip("1004", "Lead not found")
	}
	linkedNow := existing != nil && existing.fields["externalCompanyId"] != nil
	if v, ok := vals["externalCompanyId"]; ok && v == nil && linkedNow {
		// A lead leaves a company only by joining another one.
		delete(vals, "externalCompanyId")
	}
	linked := linkedNow || vals["externalCompanyId"] != nil
	if linked {
		for _, f := range companyFields {
			if _, ok := vals[f]; ok {
				return skip("1021", "Company update not allowed during syncLead")
			}
		}
	}
	if c := vals["externalCompanyId"]; c != nil && len(s.tables[objCompanies].find("externalCompanyId", c)) == 0 {
		return skip(s.opts.MissingRefCode, fmt.Sprintf("Company with externalCompanyId '%v' not found", c))
	}
	if sp := vals["externalSalesPersonId"]; sp != nil && len(s.tables[objSalesPersons].find("externalSalesPersonId", sp)) == 0 {
		return skip(s.opts.MissingRefCode, fmt.Sprintf("Sales person with externalSalesPersonId '%v' not found", sp))
	}
	return leadPlan{target: existing, vals: vals}
}
