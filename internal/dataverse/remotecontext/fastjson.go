package remotecontext

import (
	"encoding/json"
	"slices"
	"strings"
	"unicode/utf8"
)

// fastDecode builds the very tree decode's encoding/json pass builds
// (map[string]any, []any, json.Number, string, bool, nil) in a single pass
// without reflection, which makes it several times faster on webhook bodies
// (encoding/json was ~85% of the receiver's parse time).
//
// It answers ok=false for anything it is not certain to read exactly as
// encoding/json does — malformed JSON, invalid UTF-8 in a string, \u
// surrogate escapes, deep nesting — and decode then falls back to
// encoding/json, which also words the error. So a body fastDecode accepts
// gives the same tree, and a body it refuses gives the same result as
// before (TestFastDecodeMatchesEncodingJSON and FuzzFastDecode check both).
func fastDecode(b []byte) (any, bool) {
	p := fastParser{b: b}
	p.ws()
	v, ok := p.value()
	if !ok {
		return nil, false
	}
	p.ws()
	if p.i != len(p.b) {
		return nil, false
	}
	return v, true
}

// member is one name/value of a JSON object.
type member struct {
	key   string
	value any
}

// jsonObject is a JSON object with unique keys, in document order (from
// fastDecode) or sorted (from toObject). Objects in these payloads are small,
// so a linear search beats building a map.
type jsonObject []member

// lookup returns the value of key and whether it is present.
func (o jsonObject) lookup(key string) (any, bool) {
	for i := range o {
		if o[i].key == key {
			return o[i].value, true
		}
	}
	return nil, false
}

// get returns the value of key, nil when absent.
func (o jsonObject) get(key string) any {
	v, _ := o.lookup(key)
	return v
}

// maxUniqueCheck bounds the quadratic repeated-key check; larger objects
// (none in real payloads) go through encoding/json.
const maxUniqueCheck = 64

func (o jsonObject) unique() bool {
	if len(o) > maxUniqueCheck {
		return false
	}
	for i := 1; i < len(o); i++ {
		for j := range i {
			if o[i].key == o[j].key {
				return false
			}
		}
	}
	return true
}

// MarshalJSON writes the object as encoding/json writes the map it stands
// for (sorted keys), so values kept as raw JSON text read the same.
func (o jsonObject) MarshalJSON() ([]byte, error) {
	m := make(map[string]any, len(o))
	for _, kv := range o {
		m[kv.key] = kv.value
	}
	return json.Marshal(m)
}

// toObject converts an encoding/json tree (map[string]any) to the parsers'
// tree, with each object's keys sorted.
func toObject(v any) any {
	switch x := v.(type) {
	case map[string]any:
		o := make(jsonObject, 0, len(x))
		for k, el := range x {
			o = append(o, member{key: k, value: toObject(el)})
		}
		slices.SortFunc(o, func(a, b member) int { return strings.Compare(a.key, b.key) })
		return o
	case []any:
		for i, el := range x {
			x[i] = toObject(el)
		}
		return x
	}
	return v
}

// fastMaxDepth is far above any real payload; deeper input goes to
// encoding/json (which allows 10,000 levels).
const fastMaxDepth = 200

type fastParser struct {
	b       []byte
	i       int
	depth   int
	scratch []byte // unescaped string being built
	stack   []any  // elements of the arrays (and values of the objects) being read
	keys    []string
}

func (p *fastParser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *fastParser) value() (any, bool) {
	if p.i >= len(p.b) {
		return nil, false
	}
	switch c := p.b[p.i]; {
	case c == '{':
		return p.object()
	case c == '[':
		return p.array()
	case c == '"':
		s, ok := p.str()
		if !ok {
			return nil, false
		}
		return s, true
	case c == 't':
		return true, p.lit("true")
	case c == 'f':
		return false, p.lit("false")
	case c == 'n':
		return nil, p.lit("null")
	case c == '-' || c >= '0' && c <= '9':
		return p.number()
	}
	return nil, false
}

func (p *fastParser) lit(want string) bool {
	if len(p.b)-p.i < len(want) || string(p.b[p.i:p.i+len(want)]) != want {
		return false
	}
	p.i += len(want)
	return true
}

// number reads -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? and keeps its
// text, as encoding/json's UseNumber does.
func (p *fastParser) number() (any, bool) {
	end, ok := numberEnd(p.b, p.i)
	if !ok {
		return nil, false
	}
	start := p.i
	p.i = end
	return json.Number(string(p.b[start:end])), true
}

// numberEnd returns where the JSON number starting at b[i] ends:
// -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?. Both scanners use it.
func numberEnd(b []byte, i int) (int, bool) {
	if b[i] == '-' {
		i++
	}
	switch {
	case i >= len(b):
		return 0, false
	case b[i] == '0':
		i++
	case b[i] >= '1' && b[i] <= '9':
		i = digits(b, i)
	default:
		return 0, false
	}
	if i < len(b) && b[i] == '.' {
		j := digits(b, i+1)
		if j == i+1 {
			return 0, false
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(b, i)
		if j == i {
			return 0, false
		}
		i = j
	}
	return i, true
}

func digits(b []byte, i int) int {
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}

// str reads a string at p.i (which is '"').
func (p *fastParser) str() (string, bool) {
	b := p.b
	start := p.i + 1
	ascii := true
	for i := start; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			seg := b[start:i]
			if !ascii && !utf8.Valid(seg) {
				return "", false // encoding/json substitutes U+FFFD: let it
			}
			p.i = i + 1
			return intern(seg), true
		case c == '\\':
			return p.escaped(start, i, ascii)
		case c < 0x20:
			return "", false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return "", false
}

// escaped finishes a string with escapes; b[start:i] has none.
func (p *fastParser) escaped(start, i int, ascii bool) (string, bool) {
	b := p.b
	buf := append(p.scratch[:0], b[start:i]...)
	for i < len(b) {
		c := b[i]
		switch {
		case c == '"':
			p.scratch = buf
			if !ascii && !utf8.Valid(buf) {
				return "", false
			}
			p.i = i + 1
			return intern(buf), true
		case c == '\\':
			if i+1 >= len(b) {
				return "", false
			}
			switch e := b[i+1]; e {
			case '"', '\\', '/':
				buf = append(buf, e)
			case 'b':
				buf = append(buf, '\b')
			case 'f':
				buf = append(buf, '\f')
			case 'n':
				buf = append(buf, '\n')
			case 'r':
				buf = append(buf, '\r')
			case 't':
				buf = append(buf, '\t')
			case 'u':
				if i+6 > len(b) {
					return "", false
				}
				r, ok := hex4(b[i+2 : i+6])
				if !ok || r >= 0xd800 && r < 0xe000 {
					return "", false // surrogates: encoding/json pairs or replaces them
				}
				buf = utf8.AppendRune(buf, r)
				i += 6
				continue
			default:
				return "", false
			}
			i += 2
		case c < 0x20:
			return "", false
		default:
			if c >= utf8.RuneSelf {
				ascii = false
			}
			buf = append(buf, c)
			i++
		}
	}
	return "", false
}

func hex4(h []byte) (rune, bool) {
	var r rune
	for _, c := range h {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

func (p *fastParser) object() (any, bool) {
	p.i++ // {
	if p.depth++; p.depth > fastMaxDepth {
		return nil, false
	}
	base := len(p.stack)
	p.ws()
	if p.i < len(p.b) && p.b[p.i] == '}' {
		p.i++
		p.depth--
		return jsonObject{}, true
	}
	for {
		if p.i >= len(p.b) || p.b[p.i] != '"' {
			return nil, false
		}
		k, ok := p.str()
		if !ok {
			return nil, false
		}
		p.ws()
		if p.i >= len(p.b) || p.b[p.i] != ':' {
			return nil, false
		}
		p.i++
		p.ws()
		v, ok := p.value()
		if !ok {
			return nil, false
		}
		p.keys = append(p.keys, k)
		p.stack = append(p.stack, v)
		p.ws()
		if p.i >= len(p.b) {
			return nil, false
		}
		switch p.b[p.i] {
		case ',':
			p.i++
			p.ws()
			continue
		case '}':
			p.i++
			p.depth--
			n := len(p.stack) - base
			keys := p.keys[len(p.keys)-n:]
			obj := make(jsonObject, n)
			for j, v := range p.stack[base:] {
				obj[j] = member{key: keys[j], value: v}
			}
			clear(p.stack[base:])
			p.stack = p.stack[:base]
			p.keys = p.keys[:len(p.keys)-n]
			if !obj.unique() {
				return nil, false // encoding/json keeps the last of repeated keys: let it
			}
			return obj, true
		}
		return nil, false
	}
}

func (p *fastParser) array() (any, bool) {
	p.i++ // [
	if p.depth++; p.depth > fastMaxDepth {
		return nil, false
	}
	base := len(p.stack)
	p.ws()
	if p.i < len(p.b) && p.b[p.i] == ']' {
		p.i++
		p.depth--
		return make([]any, 0), true
	}
	for {
		v, ok := p.value()
		if !ok {
			return nil, false
		}
		p.stack = append(p.stack, v)
		p.ws()
		if p.i >= len(p.b) {
			return nil, false
		}
		switch p.b[p.i] {
		case ',':
			p.i++
			p.ws()
			continue
		case ']':
			p.i++
			p.depth--
			out := make([]any, len(p.stack)-base)
			copy(out, p.stack[base:])
			clear(p.stack[base:])
			p.stack = p.stack[:base]
			return out, true
		}
		return nil, false
	}
}

// interned are strings every Dataverse body repeats (keys, contract names);
// handing out the same string saves an allocation each time.
var interned = func() map[string]string {
	m := map[string]string{}
	for _, s := range []string{
		"key", "value", "__type", "Attributes", "LogicalName", "Id", "Name", "RowVersion", "KeyAttributes",
		"EntityState", "FormattedValues", "RelatedEntities", "Value", "Entities", "EntityName",
		"BusinessUnitId", "CorrelationId", "Depth", "InitiatingUserAgent", "InitiatingUserAzureActiveDirectoryObjectId",
		"InitiatingUserId", "InputParameters", "IsExecutingOffline", "IsInTransaction", "IsOfflinePlayback",
		"IsolationMode", "MessageName", "Mode", "OperationCreatedOn", "OperationId", "OrganizationId",
		"OrganizationName", "OutputParameters", "OwningExtension", "ParentContext", "PostEntityImages",
		"PreEntityImages", "PrimaryEntityId", "PrimaryEntityName", "RequestId", "SecondaryEntityName",
		"SharedVariables", "Stage", "UserAzureActiveDirectoryObjectId", "UserId",
		"Target", "PostImage", "PreImage", "AsynchronousStepPrimaryName", "SuppressDuplicateDetection",
		"IsAutoTransact", "DefaultsAddedFlag", "ChangedEntityTypes", "EntityMoniker", "State", "Status",
		"Assignee", "LeadId", "id", "Create", "Update", "Delete", "Assign", "SetState",
		"SetStateDynamicEntity", "QualifyLead", "none",
		"account", "contact", "lead", "opportunity", "systemuser", "connection",
		"modifiedon", "modifiedby", "modifiedonbehalfby", "createdon", "createdby", "ownerid",
		"statecode", "statuscode", "Active", "Inactive",
		"Entity:http://schemas.microsoft.com/xrm/2011/Contracts",
		"EntityReference:http://schemas.microsoft.com/xrm/2011/Contracts",
		"OptionSetValue:http://schemas.microsoft.com/xrm/2011/Contracts",
		"Money:http://schemas.microsoft.com/xrm/2011/Contracts",
		"EntityCollection:http://schemas.microsoft.com/xrm/2011/Contracts",
		"OptionSetValueCollection:http://schemas.microsoft.com/xrm/2011/Contracts",
		"KeyValuePairOfstringstring:#System.Collections.Generic",
	} {
		m[s] = s
	}
	return m
}()

func intern(b []byte) string {
	if s, ok := interned[string(b)]; ok { // no allocation for the lookup
		return s
	}
	return string(b)
}
