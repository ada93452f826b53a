// Package event holds the change event that travels on the queue: a compact,
// versioned envelope built from Dataverse's RemoteExecutionContext (or from a
// backfill page, or from the simple envelope custom plug-ins post).
package event

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// SchemaVersion is the version of the envelope written by this build.
// Decode accepts this version and older ones it knows how to read.
const SchemaVersion = 1

// Sources of events.
const (
	SourceWebhook    = "webhook"    // Dataverse webhook step via the HTTP receiver
	SourceServiceBus = "servicebus" // Dataverse's native Service Bus integration
	SourceBackfill   = "backfill"   // msisync backfill
	SourceReconcile  = "reconcile"  // msisync reconcile (Dataverse change tracking)
	SourceCustom     = "custom"     // the simple envelope (custom plug-ins, Power Automate)
)

// Entities msisync synchronises, by Dataverse logical name.
const (
	EntitySystemUser  = "systemuser"
	EntityAccount     = "account"
	EntityContact     = "contact"
	EntityLead        = "lead"
	EntityOpportunity = "opportunity"
	EntityConnection  = "connection"
)

// Messages msisync acts on.
const (
	MessageCreate                = "Create"
	MessageUpdate                = "Update"
	MessageDelete                = "Delete"
	MessageAssign                = "Assign"
	MessageSetState              = "SetState"
	MessageSetStateDynamicEntity = "SetStateDynamicEntity"
	MessageQualifyLead           = "QualifyLead"
	// MessageMerge merges a subordinate record into the event's record (the
	// master): account, contact and lead. SubordinateID names it.
	MessageMerge = "Merge"
)

// SyncedEntities lists the entities in the order MSI requires them to be
// written to Marketo.
var SyncedEntities = []string{EntitySystemUser, EntityAccount, EntityContact, EntityLead, EntityOpportunity, EntityConnection}

// IsSyncedEntity reports whether msisync synchronises the entity.
func IsSyncedEntity(logicalName string) bool {
	for _, e := range SyncedEntities {
		if e == logicalName {
			return true
		}
	}
	return false
}

// IsSyncedMessage reports whether msisync acts on the message.
func IsSyncedMessage(m string) bool {
	switch m {
	case MessageCreate, MessageUpdate, MessageDelete, MessageAssign, MessageSetState,
		MessageSetStateDynamicEntity, MessageQualifyLead, MessageMerge:
		return true
	}
	return false
}

// Event is one change of one Dataverse record.
type Event struct {
	Schema     int       `json:"schema"`
	ID         string    `json:"id"`     // stable message id, see DeriveID
	Source     string    `json:"source"` // one of the Source constants
	OrgID      string    `json:"orgId,omitempty"`
	OrgName    string    `json:"orgName,omitempty"`
	Entity     string    `json:"entity"`   // logical name, e.g. "contact"
	RecordID   string    `json:"recordId"` // lower-case GUID
	Message    string    `json:"message"`  // Create, Update, Delete, Assign, ...
	OccurredAt time.Time `json:"occurredAt"`
	// Version orders changes of one record: modifiedon in Unix milliseconds
	// (0 when unknown). RowVersion is Dataverse's RowVersion when sent.
	Version    int64 `json:"version,omitempty"`
	RowVersion int64 `json:"rowVersion,omitempty"`
	// Attributes are the columns the message carried (for an Update: only the
	// changed ones). Formatted holds display strings (option-set labels...).
	Attributes Attributes            `json:"attributes,omitempty"`
	Formatted  map[string]string     `json:"formatted,omitempty"`
	PreImages  map[string]Attributes `json:"preImages,omitempty"`
	PostImages map[string]Attributes `json:"postImages,omitempty"`
	// Truncated is set when Dataverse dropped the payload (over 256 KB) or the
	// event was reduced to fit the queue: the worker must re-read the record.
	Truncated bool `json:"truncated,omitempty"`

	CorrelationID    string `json:"correlationId,omitempty"`
	OperationID      string `json:"operationId,omitempty"`
	RequestID        string `json:"requestId,omitempty"`
	UserID           string `json:"userId,omitempty"`
	InitiatingUserID string `json:"initiatingUserId,omitempty"`
	Depth            int    `json:"depth,omitempty"`
	// ParentMessage is the parent context's message (e.g. QualifyLead for the
	// Create of a contact made by qualification).
	ParentMessage string `json:"parentMessage,omitempty"`
	StepID        string `json:"stepId,omitempty"`
	// SubordinateID is, for a Merge, the record merged into this one (and
	// deactivated by Dataverse): lower-case GUID.
	SubordinateID string `json:"subordinateId,omitempty"`
}

// Attributes maps column logical names to typed values.
type Attributes map[string]Value

// Kind is the type of a Value.
type Kind string

// Value kinds.
const (
	KindNull     Kind = "null"
	KindString   Kind = "string"
	KindNumber   Kind = "number"
	KindBool     Kind = "bool"
	KindRef      Kind = "ref"      // EntityReference (lookup, owner, customer)
	KindOption   Kind = "option"   // OptionSetValue, in Num
	KindOptions  Kind = "options"  // multi-select, in Options
	KindMoney    Kind = "money"    // Money, in Num
	KindTime     Kind = "time"     // DateTime, in Time (UTC)
	KindEntities Kind = "entities" // EntityCollection (party lists), in Entities
)

// Ref is an EntityReference.
type Ref struct {
	LogicalName string `json:"logicalName"`
	ID          string `json:"id"`
	Name        string `json:"name,omitempty"`
}

// Value is a typed Dataverse column value.
type Value struct {
	Kind     Kind         `json:"kind"`
	Str      string       `json:"str,omitempty"`
	Num      json.Number  `json:"num,omitempty"`
	Bool     bool         `json:"bool,omitempty"`
	Ref      *Ref         `json:"ref,omitempty"`
	Options  []int        `json:"options,omitempty"`
	Time     *time.Time   `json:"time,omitempty"`
	Entities []Attributes `json:"entities,omitempty"`
}

// Constructors, for parsers and tests.
func Null() Value                { return Value{Kind: KindNull} }
func String(s string) Value      { return Value{Kind: KindString, Str: s} }
func Bool(b bool) Value          { return Value{Kind: KindBool, Bool: b} }
func Number(n json.Number) Value { return Value{Kind: KindNumber, Num: n} }
func Option(v int) Value         { return Value{Kind: KindOption, Num: json.Number(strconv.Itoa(v))} }
func Options(v ...int) Value     { return Value{Kind: KindOptions, Options: v} }
func Money(n json.Number) Value  { return Value{Kind: KindMoney, Num: n} }
func Reference(logicalName, id, name string) Value {
	return Value{Kind: KindRef, Ref: &Ref{LogicalName: logicalName, ID: NormalizeID(id), Name: name}}
}
func Time(t time.Time) Value { t = t.UTC(); return Value{Kind: KindTime, Time: &t} }

// IsNull reports whether the value is a cleared column.
func (v Value) IsNull() bool { return v.Kind == KindNull || v.Kind == "" }

// Text renders the value as Marketo-friendly text: strings as is, numbers in
// decimal, times in RFC 3339, references by id, booleans as true/false.
func (v Value) Text() string {
	switch v.Kind {
	case KindString:
		return v.Str
	case KindNumber, KindOption, KindMoney:
		return v.Num.String()
	case KindBool:
		return strconv.FormatBool(v.Bool)
	case KindRef:
		if v.Ref != nil {
			return v.Ref.ID
		}
	case KindTime:
		if v.Time != nil {
			return v.Time.UTC().Format(time.RFC3339)
		}
	case KindOptions:
		parts := make([]string, len(v.Options))
		for i, o := range v.Options {
			parts[i] = strconv.Itoa(o)
		}
		return strings.Join(parts, ";")
	}
	return ""
}

// Int returns the value as an integer (option sets, whole numbers, numeric strings).
func (v Value) Int() (int64, bool) {
	switch v.Kind {
	case KindNumber, KindOption, KindMoney:
		if i, err := v.Num.Int64(); err == nil {
			return i, true
		}
		if f, err := v.Num.Float64(); err == nil {
			return int64(f), true
		}
	case KindString:
		if i, err := strconv.ParseInt(v.Str, 10, 64); err == nil {
			return i, true
		}
	case KindOptions:
		if len(v.Options) > 0 {
			return int64(v.Options[0]), true
		}
	}
	return 0, false
}

// Float returns the value as a float (numbers, money, numeric strings).
func (v Value) Float() (float64, bool) {
	switch v.Kind {
	case KindNumber, KindOption, KindMoney:
		f, err := v.Num.Float64()
		return f, err == nil
	case KindString:
		f, err := strconv.ParseFloat(v.Str, 64)
		return f, err == nil
	}
	return 0, false
}

// Reference returns the value as an EntityReference. A plain GUID string
// (as a Web API read returns `_x_value` without annotations) is not a Ref.
func (v Value) Reference() (Ref, bool) {
	if v.Kind == KindRef && v.Ref != nil {
		return *v.Ref, true
	}
	return Ref{}, false
}

// TimeValue returns the value as a time (DateTime values and RFC 3339 strings).
func (v Value) TimeValue() (time.Time, bool) {
	switch v.Kind {
	case KindTime:
		if v.Time != nil {
			return *v.Time, true
		}
	case KindString:
		for _, layout := range []string{time.RFC3339Nano, "2006-01-02"} {
			if t, err := time.Parse(layout, v.Str); err == nil {
				return t.UTC(), true
			}
		}
	}
	return time.Time{}, false
}

// Equal reports whether two values are the same.
func (v Value) Equal(o Value) bool {
	a, _ := json.Marshal(v)
	b, _ := json.Marshal(o)
	return string(a) == string(b)
}

// NormalizeID lower-cases a GUID and strips braces, since Dataverse ids are
// case-insensitive and Marketo external ids are compared as strings.
func NormalizeID(id string) string {
	id = strings.TrimSpace(id)
	id = strings.TrimPrefix(id, "{")
	id = strings.TrimSuffix(id, "}")
	return strings.ToLower(id)
}

// IsGUID reports whether s is a GUID in 8-4-4-4-12 form (braces allowed),
// in either case: IsGUID(s) == isGUIDLower(NormalizeID(s)), without
// NormalizeID's lower-cased copy (the parser asks this of every id).
func IsGUID(s string) bool {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, "{")
	s = strings.TrimSuffix(s, "}")
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c|0x20 && c|0x20 <= 'f') {
				return false
			}
		}
	}
	return true
}

// Get returns an attribute from the event, looking at the message's own
// attributes first and then at the post and pre images, so callers see the
// freshest value available.
func (e *Event) Get(name string) (Value, bool) {
	if v, ok := e.Attributes[name]; ok {
		return v, true
	}
	for _, img := range e.PostImages {
		if v, ok := img[name]; ok {
			return v, true
		}
	}
	for _, img := range e.PreImages {
		if v, ok := img[name]; ok {
			return v, true
		}
	}
	return Value{}, false
}

// Key identifies the record the event is about: "entity/id".
func (e *Event) Key() string { return e.Entity + "/" + e.RecordID }

// DeriveID computes the stable message id of the event from (org, entity,
// record, message, operation, version), so that a re-sent delivery gets the
// same id and is dropped by duplicate detection. The source is left out on
// purpose: the same operation delivered by a webhook and by Dataverse's own
// Service Bus integration is one message.
func (e *Event) DeriveID() string {
	// One buffer on the stack instead of fmt and a hash object: this runs for
	// every webhook. The bytes hashed are exactly
	// lower(org id|org name) \0 entity \0 record \0 message \0 operation \0 version \0 row version.
	var buf [320]byte
	b := append(buf[:0], e.OrgID...)
	b = append(b, '|')
	b = append(b, e.OrgName...)
	b = appendLower(b[:0], b)
	for _, f := range [...]string{e.Entity, e.RecordID, e.Message, e.OperationID} {
		b = append(append(b, 0), f...)
	}
	b = strconv.AppendInt(append(b, 0), e.Version, 10)
	b = strconv.AppendInt(append(b, 0), e.RowVersion, 10)
	sum := sha256.Sum256(b)
	var out [32]byte
	hex.Encode(out[:], sum[:16])
	return string(out[:])
}

// appendLower appends s lower-cased to dst as strings.ToLower would; ASCII
// (every id and unique org name seen) is done without allocating. dst may
// be s[:0]: a byte is read before it is written, and the non-ASCII path
// copies s first.
func appendLower(dst, s []byte) []byte {
	for _, c := range s {
		if c >= 0x80 {
			return append(dst, strings.ToLower(string(s))...)
		}
	}
	for _, c := range s {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

// Validate checks the fields every event must have.
func (e *Event) Validate() error {
	switch {
	case e.Entity == "":
		return &FieldError{Field: "entity", Reason: "is required"}
	case e.RecordID == "":
		return &FieldError{Field: "recordId", Reason: "is required"}
	case !IsGUID(e.RecordID):
		return &FieldError{Field: "recordId", Reason: fmt.Sprintf("%q is not a GUID", e.RecordID)}
	case e.Message == "":
		return &FieldError{Field: "message", Reason: "is required"}
	case e.SubordinateID != "" && !IsGUID(e.SubordinateID):
		return &FieldError{Field: "subordinateId", Reason: fmt.Sprintf("%q is not a GUID", e.SubordinateID)}
	}
	return nil
}

// FieldError names the field of an event (or of a payload) that is wrong.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + " " + e.Reason }

// Decode parses an envelope written by Encode.
func Decode(b []byte) (*Event, error) {
	e, ok := decodeCanonical(b)
	if !ok {
		e = &Event{}
		if err := json.Unmarshal(b, e); err != nil {
			return nil, fmt.Errorf("decode event: %w", err)
		}
	}
	if e.Schema < 1 || e.Schema > SchemaVersion {
		return nil, fmt.Errorf("decode event: unsupported schema version %d (this build reads 1..%d)", e.Schema, SchemaVersion)
	}
	if err := e.Validate(); err != nil {
		return nil, fmt.Errorf("decode event: %w", err)
	}
	return e, nil
}

// Reduced returns a copy that carries only the record reference and is
// flagged Truncated, for events too large for the queue: the worker re-reads
// the record.
func (e *Event) Reduced() *Event {
	r := *e
	r.Attributes, r.Formatted, r.PreImages, r.PostImages = nil, nil, nil, nil
	r.Truncated = true
	return &r
}
