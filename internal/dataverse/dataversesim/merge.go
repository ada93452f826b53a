package dataversesim

import (
	"fmt"
	"sort"
)

// mergeChildren are the lookups Merge moves from the subordinate to the
// master, per merged entity: child table → columns.
var mergeChildren = map[string]map[string][]string{
	"account": {
		"contact":     {"parentcustomerid"},
		"opportunity": {"parentaccountid", "customerid"},
		"lead":        {"parentaccountid", "customerid"},
		"account":     {"parentaccountid"},
	},
	"contact": {
		"contact":     {"parentcustomerid"},
		"opportunity": {"parentcontactid", "customerid"},
		"lead":        {"parentcontactid", "customerid"},
	},
	"lead": {},
}

// mergedState is the state a subordinate is left in: contacts and accounts
// Inactive; a merged lead is Disqualified/Canceled (UNCONFIRMED: the
// documented fact is only that the subordinate is deactivated).
var mergedState = map[string][2]int{"account": {1, 2}, "contact": {1, 2}, "lead": {2, 7}}

// Merge merges the subordinate record into the master as Dataverse's
// MergeRequest does: the columns of updateContent are written to the master,
// the subordinate's children are re-parented to the master (each an Update
// whose parent context is Merge; connections too), the subordinate is deactivated with
// merged = true and masterid = the master (an Update, parent context Merge),
// and the Merge message fires on the master with Target (a reference),
// SubordinateId, UpdateContent and PerformParentingChecks.
func (s *Server) Merge(entity, masterID, subordinateID string, updateContent map[string]any) error {
	m, ok := entities[entity]
	if _, mergeable := mergeChildren[entity]; !ok || !mergeable {
		return fmt.Errorf("dataversesim: merge: %q cannot be merged (account, contact, lead)", entity)
	}
	_, content, err := s.typed(entity, updateContent)
	if err != nil {
		return fmt.Errorf("dataversesim: merge %s: %w", entity, err)
	}
	masterID, subordinateID = normID(masterID), normID(subordinateID)
	if masterID == subordinateID {
		return fmt.Errorf("dataversesim: merge %s %s: a record cannot be merged into itself", entity, masterID)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range []string{masterID, subordinateID} {
		row, ok := s.tables[entity][id]
		if !ok {
			return fmt.Errorf("dataversesim: merge %s %s: %w", entity, id, errNotFound(entity, id))
		}
		if sc, _ := row["statecode"].(OptionValue); sc != 0 {
			return fmt.Errorf("dataversesim: merge %s %s: the record is not active", entity, id)
		}
	}
	input := []jfield{{"Target", s.wcfRef(Ref{entity, masterID}, false)}, {"SubordinateId", subordinateID},
		{"UpdateContent", s.entity(m, "00000000-0000-0000-0000-000000000000", content, nil, false)},
		{"PerformParentingChecks", false}}
	parent := &parentCtx{message: "Merge", entity: entity, id: masterID, input: input}
	err = s.write(func() error {
		pre := s.tables[entity][masterID]
		if len(content) > 0 {
			if err := s.update(m, masterID, content, s.opts.UserID, parent); err != nil {
				return err
			}
		}
		for _, child := range sortedKeys(anyMap(mergeChildren[entity])) {
			cm := entities[child]
			ids := make([]string, 0)
			for id := range s.tables[child] {
				ids = append(ids, id)
			}
			sort.Strings(ids)
			for _, id := range ids {
				if child == entity && id == subordinateID {
					continue
				}
				set := map[string]any{}
				for _, col := range mergeChildren[entity][child] {
					if r, ok := s.tables[child][id][col].(Ref); ok && r.LogicalName == entity && normID(r.ID) == subordinateID {
						set[col] = Ref{entity, masterID}
					}
				}
				if len(set) > 0 {
					if err := s.update(cm, id, set, s.opts.UserID, parent); err != nil {
						return err
					}
				}
			}
		}
		// Every lookup at the subordinate now points at the master, and a
		// connection's ends are lookups: the master row is updated, its
		// reciprocal follows (mirrorConnection).
		conns := make([]string, 0)
		for id := range s.tables["connection"] {
			conns = append(conns, id)
		}
		sort.Strings(conns)
		for _, id := range conns {
			row := s.tables["connection"][id]
			if master, _ := row["ismaster"].(bool); !master {
				continue
			}
			set := map[string]any{}
			for _, col := range []string{"record1id", "record2id"} {
				if r, ok := row[col].(Ref); ok && r.LogicalName == entity && normID(r.ID) == subordinateID {
					set[col] = Ref{entity, masterID}
				}
			}
			if len(set) > 0 {
				if err := s.update(entities["connection"], id, set, s.opts.UserID, parent); err != nil {
					return err
				}
			}
		}
		st := mergedState[entity]
		if err := s.update(m, subordinateID, map[string]any{"statecode": OptionValue(st[0]), "statuscode": OptionValue(st[1]),
			"merged": true, "masterid": Ref{entity, masterID}}, s.opts.UserID, parent); err != nil {
			return err
		}
		s.fire(&change{m: m, id: masterID, message: "Merge", pre: pre, post: s.tables[entity][masterID], user: s.opts.UserID, input: input})
		return nil
	})
	if err != nil {
		return fmt.Errorf("dataversesim: merge %s %s into %s: %w", entity, subordinateID, masterID, err)
	}
	return nil
}

func anyMap(m map[string][]string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
