package marketosim

import (
	"encoding/json"
	"sort"
	"strconv"
	"strings"
)

type record struct {
	id     int64  // integer id (sales persons, companies, leads)
	guid   string // marketoGUID (opportunities, roles)
	order  int64  // insertion order
	fields map[string]any
}

// table holds one object's records with indexes on its key fields.
type table struct {
	spec      *objSpec
	ci        bool // case-insensitive external ids
	nextID    int64
	nextOrder int64
	byID      map[string]*record // by id or marketoGUID (as string)
	idx       map[string]map[string]map[*record]struct{}
	changed   map[string]*record // since the last flush, by key (nil: removed); nil map: not tracked
}

func newTable(spec *objSpec, startID int64, ci bool) *table {
	if startID == 0 {
		startID = 1
	}
	t := &table{spec: spec, ci: ci, nextID: startID, byID: map[string]*record{},
		idx: map[string]map[string]map[*record]struct{}{}}
	for f := range spec.indexed {
		t.idx[f] = map[string]map[*record]struct{}{}
	}
	return t
}

// norm turns a value into its comparison key for field.
func (t *table) norm(field string, v any) string {
	var s string
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		s = x
	case int64:
		s = strconv.FormatInt(x, 10)
	case int:
		s = strconv.Itoa(x)
	case float64:
		s = strconv.FormatFloat(x, 'f', -1, 64)
	case json.Number:
		s = x.String()
	case bool:
		s = strconv.FormatBool(x)
	default:
		b, _ := json.Marshal(x)
		s = string(b)
	}
	f := t.spec.byName[field]
	if f != nil && f.Type == "email" {
		return strings.ToLower(s)
	}
	if t.ci && strings.HasPrefix(field, "external") {
		return strings.ToLower(s)
	}
	return s
}

func (t *table) keyOf(r *record) string {
	if t.spec.idField == "marketoGUID" {
		return r.guid
	}
	return strconv.FormatInt(r.id, 10)
}

func (t *table) insert(r *record) {
	t.touch(r)
	r.order = t.nextOrder
	t.nextOrder++
	t.byID[t.keyOf(r)] = r
	for f, m := range t.idx {
		if v, ok := r.fields[f]; ok && v != nil {
			addIdx(m, t.norm(f, v), r)
		}
	}
}

func addIdx(m map[string]map[*record]struct{}, k string, r *record) {
	s := m[k]
	if s == nil {
		s = map[*record]struct{}{}
		m[k] = s
	}
	s[r] = struct{}{}
}

// set changes one field, keeping indexes right. A nil value removes it.
func (t *table) set(r *record, field string, v any) {
	t.touch(r)
	if m, ok := t.idx[field]; ok {
		if old, had := r.fields[field]; had && old != nil {
			k := t.norm(field, old)
			delete(m[k], r)
			if len(m[k]) == 0 {
				delete(m, k)
			}
		}
		if v != nil {
			addIdx(m, t.norm(field, v), r)
		}
	}
	if v == nil {
		delete(r.fields, field)
		return
	}
	r.fields[field] = v
}

func (t *table) remove(r *record) {
	for f := range t.idx {
		t.set(r, f, nil)
	}
	delete(t.byID, t.keyOf(r))
	if t.changed != nil {
		t.changed[t.keyOf(r)] = nil
	}
}

// find returns the records whose field equals v, oldest first.
func (t *table) find(field string, v any) []*record {
	if field == t.spec.idField {
		if r := t.byID[t.norm(field, v)]; r != nil {
			return []*record{r}
		}
		return nil
	}
	k := t.norm(field, v)
	if k == "" {
		return nil
	}
	var out []*record
	if m, ok := t.idx[field]; ok {
		for r := range m[k] {
			out = append(out, r)
		}
	} else {
		for _, r := range t.byID {
			if fv, ok := r.fields[field]; ok && fv != nil && t.norm(field, fv) == k {
				out = append(out, r)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].order < out[j].order })
	return out
}

func (t *table) all() []*record {
	out := make([]*record, 0, len(t.byID))
	for _, r := range t.byID {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].order < out[j].order })
	return out
}
