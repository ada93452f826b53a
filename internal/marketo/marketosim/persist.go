package marketosim

import (
	"maps"
	"slices"
)

// Change is one record a call created, changed or removed.
type Change struct {
	Object string         // "salespersons", "companies", "leads", "opportunities", "opportunities/roles"
	Key    string         // id or marketoGUID
	Fields map[string]any // the whole record (with its id); nil when removed
}

// Add appends a persisted record to the State field of its object, so a
// store of Changes can rebuild a State for Restore.
func (st *State) Add(object string, fields map[string]any) {
	switch object {
	case objSalesPersons:
		st.SalesPersons = append(st.SalesPersons, fields)
	case objCompanies:
		st.Companies = append(st.Companies, fields)
	case objLeads:
		st.Leads = append(st.Leads, fields)
	case objOpportunities:
		st.Opportunities = append(st.Opportunities, fields)
	case objRoles:
		st.Roles = append(st.Roles, fields)
	}
}

// touch notes that r changes (tracking only when Options.Persist is set).
func (t *table) touch(r *record) {
	if t.changed != nil && (r.id != 0 || r.guid != "") {
		t.changed[t.keyOf(r)] = r
	}
}

// flush hands the records changed since the last flush to Options.Persist.
func (s *Server) flush() error {
	if s.opts.Persist == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.flushLocked()
}

// flushLocked runs Persist with s.mu held, so changes reach it in the order
// they were made and a call's response waits for its own changes. On
// failure the changes stay pending for the next flush.
func (s *Server) flushLocked() error {
	if s.opts.Persist == nil {
		return nil
	}
	var out []Change
	for _, name := range slices.Sorted(maps.Keys(s.tables)) {
		t := s.tables[name]
		for _, key := range slices.Sorted(maps.Keys(t.changed)) {
			c := Change{Object: name, Key: key}
			if r := t.changed[key]; r != nil && t.byID[key] == r {
				c.Fields = maps.Clone(r.fields)
			}
			out = append(out, c)
		}
	}
	if len(out) == 0 {
		return nil
	}
	if err := s.opts.Persist(out); err != nil {
		return err
	}
	for _, t := range s.tables {
		clear(t.changed)
	}
	return nil
}
