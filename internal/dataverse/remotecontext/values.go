package remotecontext

import (
	"encoding/json"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/msisync/msisync/internal/event"
)

// pair is one entry of a WCF dictionary.
type pair struct {
	key   string
	value any
}

// pairs reads a WCF dictionary: [{"key":…,"value":…}]. A plain JSON object is
// accepted too (hand-written mocks use one); its keys are sorted so the result
// does not depend on map order.
func pairs(v any) []pair {
	switch x := v.(type) {
	case []any:
		out := make([]pair, 0, len(x))
		for _, el := range x {
			m, ok := el.(jsonObject)
			if !ok {
				continue
			}
			k, ok := field(m, "key").(string)
			if !ok {
				continue
			}
			out = append(out, pair{key: k, value: field(m, "value")})
		}
		return out
	case jsonObject:
		out := make([]pair, 0, len(x))
		for _, m := range x {
			out = append(out, pair{key: m.key, value: m.value})
		}
		sort.Slice(out, func(i, j int) bool { return out[i].key < out[j].key })
		return out
	}
	return nil
}

// field reads an object member by its WCF name ("Value"), falling back to
// the lower-case spelling some serialisers use ("value").
func field(m jsonObject, name string) any {
	if v, ok := m.lookup(name); ok {
		return v
	}
	if v, ok := m.lookup(strings.ToLower(name[:1]) + name[1:]); ok {
		return v
	}
	if v, ok := m.lookup(strings.ToUpper(name[:1]) + name[1:]); ok {
		return v
	}
	return nil
}

func has(m jsonObject, name string) bool {
	_, ok := m.lookup(name)
	return ok
}

// typeName returns the contract name of a "__type" tag:
// "EntityReference:http://schemas.microsoft.com/xrm/2011/Contracts" → "EntityReference".
func typeName(m jsonObject) string {
	t, _ := m.get("__type").(string)
	if i := strings.IndexByte(t, ':'); i >= 0 {
		t = t[:i]
	}
	return t
}

// entity is an Entity (Target, image, party) or an EntityReference.
type entity struct {
	logicalName string
	id          string
	isRef       bool
	name        string
	attrs       event.Attributes
	formatted   map[string]string
	rowVersion  int64
}

// isEntityLike reports whether v looks like an Entity or EntityReference.
func isEntityLike(v any) bool {
	m, ok := v.(jsonObject)
	if !ok {
		return false
	}
	switch typeName(m) {
	case "Entity", "EntityReference":
		return true
	case "":
		return has(m, "Attributes") || (has(m, "LogicalName") && has(m, "Id"))
	}
	return false
}

// parseEntity reads an Entity or EntityReference; nil when v is neither.
// Entities in images carry no "__type", so the shape decides.
func parseEntity(v any, path string, errs *fieldErrs) *entity {
	m, ok := v.(jsonObject)
	if !ok || !isEntityLike(v) {
		return nil
	}
	en := &entity{
		logicalName: strings.ToLower(str(m.get("LogicalName"))),
		id:          guid(m.get("Id"), path+".Id", errs),
		name:        str(m.get("Name")),
	}
	if en.id == zeroGUID {
		en.id = "" // a new entity in a pre-operation Create has no id yet
	}
	if rv, ok := integer(m.get("RowVersion")); ok {
		en.rowVersion = rv
	}
	if typeName(m) == "EntityReference" || !has(m, "Attributes") {
		en.isRef = true
		return en
	}
	en.attrs = attributes(m.get("Attributes"), path+".Attributes", errs)
	for _, p := range pairs(m.get("FormattedValues")) {
		if s, ok := p.value.(string); ok {
			if en.formatted == nil {
				en.formatted = make(map[string]string)
			}
			en.formatted[p.key] = s
		}
	}
	return en
}

// attributes reads an AttributeCollection.
func attributes(v any, path string, errs *fieldErrs) event.Attributes {
	ps := pairs(v)
	if len(ps) == 0 {
		return nil
	}
	out := make(event.Attributes, len(ps))
	for _, p := range ps {
		out[p.key] = value(p.value, path+"."+p.key, errs)
	}
	return out
}

// value interprets one WCF-encoded column value.
func value(v any, path string, errs *fieldErrs) event.Value {
	switch x := v.(type) {
	case nil:
		return event.Null()
	case bool:
		return event.Bool(x)
	case json.Number:
		return event.Number(x)
	case string:
		if t, ok, err := parseDate(x); ok {
			if err != "" {
				errs.add(path, "%s", err)
				return event.Null()
			}
			return event.Time(t)
		}
		if len(x) == 36 && event.IsGUID(x) {
			// uniqueidentifier columns arrive as plain strings; ids are compared lower-case.
			return event.String(event.NormalizeID(x))
		}
		return event.String(x)
	case []any:
		return array(x, path, errs)
	case jsonObject:
		return object(x, path, errs)
	}
	return event.Null()
}

// array reads a multi-select choice (array of OptionSetValue) or a list of
// entities; anything else is kept as its JSON text.
func array(x []any, path string, errs *fieldErrs) event.Value {
	if len(x) == 0 {
		return event.Options() // an emptied multi-select
	}
	if opts, ok := optionList(x); ok {
		return event.Options(opts...)
	}
	allEntities := true
	for _, el := range x {
		if m, ok := el.(jsonObject); !ok || !has(m, "Attributes") {
			allEntities = false
			break
		}
	}
	if allEntities {
		return event.Value{Kind: event.KindEntities, Entities: entityList(x, path, errs)}
	}
	return rawString(x)
}

func optionList(x []any) ([]int, bool) {
	opts := make([]int, 0, len(x))
	for _, el := range x {
		var raw any = el
		if m, ok := el.(jsonObject); ok {
			if tn := typeName(m); tn != "OptionSetValue" && !(tn == "" && len(m) == 1 && has(m, "Value")) {
				return nil, false
			}
			raw = m.get("Value")
		}
		n, ok := raw.(json.Number)
		if !ok {
			return nil, false
		}
		i, err := strconv.Atoi(n.String())
		if err != nil {
			return nil, false
		}
		opts = append(opts, i)
	}
	return opts, true
}

func entityList(x []any, path string, errs *fieldErrs) []event.Attributes {
	out := make([]event.Attributes, 0, len(x))
	for i, el := range x {
		p := path + "[" + strconv.Itoa(i) + "]"
		en := parseEntity(el, p, errs)
		if en == nil {
			continue
		}
		attrs := en.attrs
		if attrs == nil {
			attrs = event.Attributes{}
		}
		out = append(out, attrs)
	}
	return out
}

func object(x jsonObject, path string, errs *fieldErrs) event.Value {
	switch typeName(x) {
	case "EntityReference":
		return reference(x, path, errs)
	case "OptionSetValue":
		n, ok := x.get("Value").(json.Number)
		i, err := strconv.Atoi(string(n))
		if !ok || err != nil {
			errs.add(path+".Value", "OptionSetValue must hold an integer, got %s", jsonKind(x.get("Value")))
			return event.Null()
		}
		return event.Option(i)
	case "Money":
		n, ok := x.get("Value").(json.Number)
		if !ok {
			if x.get("Value") == nil {
				return event.Null()
			}
			errs.add(path+".Value", "Money must hold a number, got %s", jsonKind(x.get("Value")))
			return event.Null()
		}
		return event.Money(n)
	case "EntityCollection":
		list, _ := x.get("Entities").([]any)
		return event.Value{Kind: event.KindEntities, Entities: entityList(list, path+".Entities", errs)}
	case "Entity":
		return event.Value{Kind: event.KindEntities, Entities: entityList([]any{x}, path, errs)}
	case "OptionSetValueCollection":
		// Not seen from Dataverse (multi-select arrives as a plain array), but
		// some serialisers wrap the array.
		for _, k := range []string{"Value", "Values", "Items"} {
			if list, ok := x.get(k).([]any); ok {
				return array(list, path, errs)
			}
		}
		return rawString(x)
	case "":
		if has(x, "Attributes") {
			return event.Value{Kind: event.KindEntities, Entities: entityList([]any{x}, path, errs)}
		}
		if has(x, "LogicalName") && has(x, "Id") {
			return reference(x, path, errs)
		}
	}
	// BooleanManagedProperty, AliasedValue and other wrappers hold a Value.
	if inner, ok := x.lookup("Value"); ok {
		return value(inner, path, errs)
	}
	return rawString(x)
}

func reference(x jsonObject, path string, errs *fieldErrs) event.Value {
	id := guid(x.get("Id"), path+".Id", errs)
	if id == "" {
		if x.get("Id") == nil {
			errs.add(path+".Id", "is required in an EntityReference")
		}
		return event.Null()
	}
	return event.Reference(strings.ToLower(str(x.get("LogicalName"))), id, str(x.get("Name")))
}

// rawString keeps a value we do not interpret as its JSON text rather than
// dropping it.
func rawString(v any) event.Value {
	b, err := json.Marshal(v)
	if err != nil {
		return event.Null()
	}
	return event.String(string(b))
}

// parseDate reads a WCF date, "/Date(ms)/" or "/Date(ms±hhmm)/" (after JSON
// decoding, so `\/` and `/` are the same). The milliseconds are UTC; the
// offset only says which zone the sender was in. ok reports whether s has the
// date shape at all; errMsg is set when it has the shape but is invalid.
func parseDate(s string) (t time.Time, ok bool, errMsg string) {
	if !strings.HasPrefix(s, "/Date(") || !strings.HasSuffix(s, ")/") {
		return time.Time{}, false, ""
	}
	inner := s[len("/Date(") : len(s)-len(")/")]
	digits := inner
	if i := strings.LastIndexAny(inner, "+-"); i > 0 {
		off := inner[i+1:]
		if len(off) != 4 || !allDigits(off) {
			return time.Time{}, true, "date " + strconv.Quote(truncate(s)) + " has an invalid offset"
		}
		digits = inner[:i]
	}
	body := strings.TrimPrefix(digits, "-")
	if body == "" || !allDigits(body) {
		return time.Time{}, true, "date " + strconv.Quote(truncate(s)) + " is not /Date(milliseconds)/"
	}
	ms, err := strconv.ParseInt(digits, 10, 64)
	if err != nil {
		return time.Time{}, true, "date " + strconv.Quote(truncate(s)) + " is out of range"
	}
	t = time.UnixMilli(ms).UTC()
	// RFC 3339 (and so the queue encoding) only covers years 0000–9999.
	if t.Year() < 0 || t.Year() > 9999 {
		return time.Time{}, true, "date " + strconv.Quote(truncate(s)) + " is out of range"
	}
	return t, true, ""
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
