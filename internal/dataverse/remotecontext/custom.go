package remotecontext

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/msisync/msisync/internal/event"
)

// ParseCustom reads the simple envelope custom plug-ins and Power Automate
// flows post:
//
//	{"entity":"contact","id":"<guid>","message":"Update",
//	 "attributes":{"firstname":"Ada","parentcustomerid":{"logicalName":"account","id":"<guid>"}},
//	 "version":1700000000000, "organization":"contoso", "occurredAt":"2026-01-02T03:04:05Z",
//	 "correlationId":"<guid>"}
//
// entity, id and message are required. An attribute is a plain JSON value
// (string, number, boolean, null), an array of integers (multi-select), or
// {"logicalName","id","name"?} for a lookup. version is Unix milliseconds or
// an RFC 3339 time; organization is an organisation id (GUID) or name.
// Message names are matched case-insensitively against the ones msisync knows.
func ParseCustom(body []byte) (*event.Event, error) {
	tree, err := decode(body)
	if err != nil {
		return nil, err
	}
	root, ok := tree.(jsonObject)
	if !ok {
		return nil, &event.FieldError{Field: "$", Reason: "must be a JSON object, got " + jsonKind(tree)}
	}
	var errs fieldErrs
	e := &event.Event{Schema: event.SchemaVersion, Source: event.SourceCustom}

	e.Entity = strings.ToLower(strings.TrimSpace(stringField(root, "entity", &errs)))
	if e.Entity == "" && !hasErr(errs, "entity") {
		errs.add("entity", "is required")
	}
	if id := stringField(root, "id", &errs); id == "" {
		if !hasErr(errs, "id") {
			errs.add("id", "is required")
		}
	} else if !event.IsGUID(id) {
		errs.add("id", "%q is not a GUID", truncate(id))
	} else {
		e.RecordID = event.NormalizeID(id)
	}
	e.Message = canonicalMessage(stringField(root, "message", &errs))
	if e.Message == "" && !hasErr(errs, "message") {
		errs.add("message", "is required")
	}

	if org := stringField(root, "organization", &errs); event.IsGUID(org) {
		e.OrgID = event.NormalizeID(org)
	} else {
		e.OrgName = org
	}
	if c := stringField(root, "correlationId", &errs); c != "" {
		e.CorrelationID = event.NormalizeID(c)
	}

	switch v := root.get("version").(type) {
	case nil:
	case json.Number:
		if ms, err := v.Int64(); err == nil && ms >= 0 {
			e.Version = ms
		} else {
			errs.add("version", "must be Unix milliseconds (a non-negative integer) or an RFC 3339 time, got %s", v.String())
		}
	case string:
		if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
			e.Version = t.UnixMilli()
		} else {
			errs.add("version", "must be Unix milliseconds or an RFC 3339 time, got %q", truncate(v))
		}
	default:
		errs.add("version", "must be Unix milliseconds or an RFC 3339 time, got %s", jsonKind(v))
	}
	if s := stringField(root, "occurredAt", &errs); s != "" {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil && t.Year() <= 9999 {
			e.OccurredAt = t.UTC()
		} else {
			errs.add("occurredAt", "must be an RFC 3339 time, got %q", truncate(s))
		}
	}

	switch attrs := root.get("attributes").(type) {
	case nil:
	case jsonObject:
		if len(attrs) > 0 {
			e.Attributes = make(event.Attributes, len(attrs))
		}
		for _, a := range attrs {
			e.Attributes[a.key] = customValue(a.value, "attributes."+a.key, &errs)
		}
	default:
		errs.add("attributes", "must be an object of column → value, got %s", jsonKind(attrs))
	}
	if e.Version == 0 {
		if t, ok := e.Attributes["modifiedon"].TimeValue(); ok && t.Unix() > 0 {
			e.Version = t.UnixMilli()
		}
	}
	if err := errs.err(); err != nil {
		return e, err
	}
	e.ID = e.DeriveID()
	return e, nil
}

func stringField(m jsonObject, name string, errs *fieldErrs) string {
	switch v := m.get(name).(type) {
	case nil:
		return ""
	case string:
		return strings.TrimSpace(v)
	default:
		errs.add(name, "must be a string, got %s", jsonKind(v))
		return ""
	}
}

// canonicalMessage maps "update" to "Update"; unknown messages are kept as sent.
func canonicalMessage(m string) string {
	for _, known := range []string{event.MessageCreate, event.MessageUpdate, event.MessageDelete,
		event.MessageAssign, event.MessageSetState, event.MessageSetStateDynamicEntity, event.MessageQualifyLead} {
		if strings.EqualFold(m, known) {
			return known
		}
	}
	return m
}

func customValue(v any, path string, errs *fieldErrs) event.Value {
	switch x := v.(type) {
	case nil:
		return event.Null()
	case bool:
		return event.Bool(x)
	case json.Number:
		return event.Number(x)
	case string:
		return event.String(x)
	case []any:
		opts := make([]int, 0, len(x))
		for i, el := range x {
			n, ok := el.(json.Number)
			o, err := strconv.Atoi(string(n))
			if !ok || err != nil {
				errs.add(path+"["+strconv.Itoa(i)+"]", "a multi-select value must be an integer, got %s", jsonKind(el))
				return event.Null()
			}
			opts = append(opts, o)
		}
		return event.Options(opts...)
	case jsonObject:
		ln, _ := x.get("logicalName").(string)
		id, _ := x.get("id").(string)
		switch {
		case strings.TrimSpace(ln) == "":
			errs.add(path+".logicalName", "is required in a lookup {logicalName, id}")
		case !event.IsGUID(id):
			errs.add(path+".id", "%q is not a GUID", truncate(id))
		default:
			name, _ := x.get("name").(string)
			return event.Reference(strings.ToLower(strings.TrimSpace(ln)), id, name)
		}
		return event.Null()
	}
	return event.Null()
}
