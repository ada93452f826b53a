package marketosim

import (
	"encoding/json"
	"fmt"
	"time"
)

var momentTypes = []string{"Web", "Email", "Milestone", "Social"}
var momentSources = []string{"Web", "Email", "Sales", "Marketo"}

// SetMSI sets computed MSI fields on the leads whose externalPersonId is
// externalPersonID (compared case-insensitively). Keys are field names;
// "score" means the configured score field.
func (s *Server) SetMSI(externalPersonID string, fields map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.flushLocked() // Persist reports its own failures
	t := s.tables[objLeads]
	for _, r := range t.all() {
		v, _ := r.fields["externalPersonId"].(string)
		if !equalFoldASCII(v, externalPersonID) {
			continue
		}
		for k, val := range fields {
			if k == "score" {
				k = s.opts.ScoreField
			}
			if tm, ok := val.(time.Time); ok {
				val = tm.UTC().Format(isoZ)
			}
			s.setMSI(r, k, val)
		}
		r.fields["updatedAt"] = s.now()
	}
}

func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// TickMSI simulates MSI activity: n random leads get a new interesting
// moment and new priority, urgency and score values. It returns the ids of
// the leads it changed.
func (s *Server) TickMSI(n int) []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.flushLocked() // Persist reports its own failures
	leads := s.tables[objLeads].all()
	s.decay()
	if len(leads) == 0 || n <= 0 {
		return nil
	}
	if n > len(leads) {
		n = len(leads)
	}
	now := s.now()
	at := s.opts.Clock.Now()
	var ids []int64
	for _, i := range s.rnd.Perm(len(leads))[:n] {
		r := leads[i]
		typ := momentTypes[s.rnd.Intn(len(momentTypes))]
		desc := fmt.Sprintf("%s: visited pricing page (%d)", typ, s.rnd.Intn(1000))
		src := momentSources[s.rnd.Intn(len(momentSources))]
		s.setMSI(r, "msiLastInterestingMomentType", typ)
		s.setMSI(r, "msiLastInterestingMomentDate", now)
		s.setMSI(r, "msiLastInterestingMomentDesc", desc)
		s.setMSI(r, "msiLastInterestingMomentSource", src)
		s.setMSI(r, "priority", int64(s.rnd.Intn(100)+1))
		s.setMSI(r, "relativeUrgency", int64(s.rnd.Intn(100)+1))
		s.setMSI(r, "urgency", float64(s.rnd.Intn(1000))/10)
		oldScore, _ := r.fields[s.opts.ScoreField].(int64)
		newScore := int64(s.rnd.Intn(100) + 1)
		s.setMSI(r, s.opts.ScoreField, newScore)
		// What Marketo logs for the lead: the moment and the score change.
		s.logMoment(r.id, typ, desc, src, at)
		s.logScore(r.id, s.opts.ScoreField, oldScore, newScore, at)
		r.fields["updatedAt"] = now
		ids = append(ids, r.id)
	}
	return ids
}

// setMSI changes one computed field, logging the change when the options
// say MSI changes emit activities. Called with s.mu held.
func (s *Server) setMSI(r *record, field string, v any) {
	old := r.fields[field]
	if s.opts.MSIChangeActivities && old != v {
		s.logActivity(r.id, activityDataValueChange, field, old, v)
	}
	s.tables[objLeads].set(r, field, v)
}

// Dump returns a copy of every record with its id or marketoGUID and all
// stored fields, oldest first.
func (s *Server) Dump() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	dump := func(obj string) []map[string]any {
		var out []map[string]any
		for _, r := range s.tables[obj].all() {
			m := make(map[string]any, len(r.fields))
			for k, v := range r.fields {
				m[k] = v
			}
			out = append(out, m)
		}
		return out
	}
	return State{SalesPersons: dump(objSalesPersons), Companies: dump(objCompanies), Leads: dump(objLeads),
		Opportunities: dump(objOpportunities), Roles: dump(objRoles)}
}

// SetRaceGate installs a hook that Sync Leads calls between looking leads
// up and writing them when Options.RaceDuplicates is set, so a test can make
// two calls overlap deterministically.
func (s *Server) SetRaceGate(gate func()) {
	s.mu.Lock()
	s.raceGate = gate
	s.mu.Unlock()
}

// Restore replaces the simulator's records with a State (as Dump returns it,
// possibly after a JSON round trip), so a sandbox can keep its data across
// restarts. Integer ids continue after the highest restored one.
func (s *Server) Restore(st State) error {
	s.Reset()
	s.mu.Lock()
	defer s.mu.Unlock()
	for obj, recs := range map[string][]map[string]any{objSalesPersons: st.SalesPersons, objCompanies: st.Companies,
		objLeads: st.Leads, objOpportunities: st.Opportunities, objRoles: st.Roles} {
		t := s.tables[obj]
		for i, fields := range recs {
			r := &record{fields: make(map[string]any, len(fields))}
			for k, v := range fields {
				if n, ok := v.(float64); ok && n == float64(int64(n)) {
					v = int64(n) // JSON numbers come back as float64; the simulator keeps integers
				}
				if n, ok := v.(json.Number); ok {
					if iv, err := n.Int64(); err == nil {
						v = iv
					}
				}
				r.fields[k] = v
			}
			if t.spec.idField == "marketoGUID" {
				g, _ := r.fields["marketoGUID"].(string)
				if g == "" {
					return fmt.Errorf("marketosim: restore %s record %d: no marketoGUID", obj, i)
				}
				r.guid = g
			} else {
				id, ok := r.fields["id"].(int64)
				if !ok || id <= 0 {
					return fmt.Errorf("marketosim: restore %s record %d: no integer id", obj, i)
				}
				r.id = id
				if id >= t.nextID {
					t.nextID = id + 1
				}
			}
			t.insert(r)
		}
	}
	for _, t := range s.tables {
		if t.changed != nil {
			clear(t.changed) // restored from the persisted records: nothing new
		}
	}
	return nil
}
