package remotecontext

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/msisync/msisync/internal/event"
)

// parseDirect is parse's fast path: it reads the event straight off the tape
// (tape.go) with a handful of allocations, for bodies of the usual shape
// that are entirely valid. It answers ok=false (and parse takes the tree
// path, which reports every field error) for anything else: a field error of
// any kind, a plain-object dictionary, a value the tree path keeps as JSON
// text, a nested repeated key. So whenever it answers, it answers what the
// tree path would (TestDirectMatchesTree and FuzzDirect check that).
//
// A repeated top-level key is refused here with a *SyntaxError: with
// encoding/json the last would win, so a second "MessageName" could turn an
// Update into a Delete.
func parseDirect(body []byte, h Headers, source string) (*event.Event, error, bool) {
	d := directPool.Get().(*direct)
	defer d.release()
	if !d.t.build(body) {
		return nil, nil, false
	}
	if d.t.dup {
		return nil, &SyntaxError{Err: fmt.Errorf("the key %q appears more than once in the top-level object", d.t.dupKey)}, true
	}
	d.a = arena{buf: make([]byte, 0, len(body)/4+256)}
	e, ok := d.event(h, source)
	if !ok {
		return nil, nil, false
	}
	return e, nil, true
}

var directPool = sync.Pool{New: func() any { return &direct{} }}

type direct struct {
	t tape
	a arena
	// slabs for the pointers event.Value holds
	times []time.Time
	refs  []event.Ref
	// formatted values in the order the tree path merges them
	preFmt, targetFmt, postFmt []kv
}

type kv struct{ k, v string }

const maxPooledTape = 1 << 14

func (d *direct) release() {
	d.t.b = nil
	if cap(d.t.nodes) > maxPooledTape {
		d.t.nodes = nil
	}
	d.a = arena{}
	d.times, d.refs = nil, nil
	d.preFmt, d.targetFmt, d.postFmt = d.preFmt[:0], d.targetFmt[:0], d.postFmt[:0]
	directPool.Put(d)
}

func (d *direct) timeValue(tm time.Time) event.Value {
	if len(d.times) == cap(d.times) {
		d.times = make([]time.Time, 0, 8)
	}
	d.times = append(d.times, tm.UTC())
	return event.Value{Kind: event.KindTime, Time: &d.times[len(d.times)-1]}
}

func (d *direct) refValue(logicalName, id, name string) event.Value {
	if len(d.refs) == cap(d.refs) {
		d.refs = make([]event.Ref, 0, 8)
	}
	d.refs = append(d.refs, event.Ref{LogicalName: logicalName, ID: id, Name: name})
	return event.Value{Kind: event.KindRef, Ref: &d.refs[len(d.refs)-1]}
}

// str is a string node's text, "" when absent, null or not a string.
func (d *direct) str(i int) string {
	if d.t.kind(i) != kString {
		return ""
	}
	return d.a.str(&d.t, i)
}

// guid mirrors guid(): ok=false where the tree path would report an error.
func (d *direct) guid(i int) (string, bool) {
	switch d.t.kind(i) {
	case 0, kNull:
		return "", true
	case kString:
	default:
		return "", false
	}
	raw := d.t.text(i)
	if !d.t.nodes[i].esc && len(raw) == 36 {
		// The usual form: copy and lower-case in one step.
		s := d.a.lower(d.a.bytes(raw))
		if !event.IsGUID(s) {
			return "", false
		}
		return s, true
	}
	s := d.a.str(&d.t, i)
	if strings.TrimSpace(s) == "" {
		return "", true
	}
	if !event.IsGUID(s) {
		return "", false
	}
	return d.a.lower(event.NormalizeID(s)), true
}

// integer mirrors integer().
func (d *direct) integer(i int) (int64, bool) {
	switch d.t.kind(i) {
	case kNumber:
		return parseInt64(d.t.text(i))
	case kString:
		var buf [64]byte
		s := d.t.text(i)
		if d.t.nodes[i].esc {
			s = unescapeTo(buf[:0], s)
		}
		return parseInt64(bytes.TrimSpace(s))
	}
	return 0, false
}

// field mirrors field(): "Value", then "value", then "Value".
func (d *direct) field(o int, name string) int {
	if v := d.t.lookup(o, name); v >= 0 {
		return v
	}
	c := name[0]
	switch {
	case c >= 'A' && c <= 'Z':
		return d.fieldAlt(o, name, c+'a'-'A')
	case c >= 'a' && c <= 'z':
		return d.fieldAlt(o, name, c-'a'+'A')
	}
	return -1
}

func (d *direct) fieldAlt(o int, name string, first byte) int {
	if o < 0 || d.t.nodes[o].kind != kObject {
		return -1
	}
	for k := o + 1; k < int(d.t.nodes[o].next); k = int(d.t.nodes[k+1].next) {
		if key := d.t.text(k); len(key) == len(name) && key[0] == first && string(key[1:]) == name[1:] {
			return k + 1
		}
	}
	return -1
}

// eachPair calls fn for every entry of a WCF dictionary array, in order; ok is
// false for a dictionary the tree path reads differently (a plain object).
func (d *direct) eachPair(v int, fn func(key string, keyNode, val int) bool) bool {
	switch d.t.kind(v) {
	case 0, kNull, kString, kNumber, kTrue, kFalse:
		return true // pairs() reads these as empty
	case kObject:
		return d.t.nodes[v].n == 0
	}
	for el := v + 1; el < int(d.t.nodes[v].next); el = int(d.t.nodes[el].next) {
		if d.t.nodes[el].kind != kObject {
			continue
		}
		k, val := d.pair(el)
		if d.t.kind(k) != kString {
			continue
		}
		if !fn(d.str(k), k, val) {
			return false
		}
	}
	return true
}

// pair returns the key and value nodes of a dictionary entry el. Nearly
// every entry is exactly {"key": …, "value": …} in that order: read that
// shape off the tape, and look anything else up as field() does.
func (d *direct) pair(el int) (k, val int) {
	t := &d.t
	if t.nodes[el].n == 2 {
		if k1 := el + 1; string(t.text(k1)) == "key" {
			if k2 := int(t.nodes[k1+1].next); string(t.text(k2)) == "value" {
				return k1 + 1, k2 + 1
			}
		}
	}
	return d.field(el, "key"), d.field(el, "value")
}

// param returns the value of the last entry named key (paramMap's last
// wins): -1 when absent or when the entry has no value (present is then true).
func (d *direct) param(v int, key string) (val int, ok bool) {
	val, _, ok = d.paramPresent(v, key)
	return val, ok
}

func (d *direct) paramPresent(v int, key string) (val int, present, ok bool) {
	val = -1
	ok = d.eachPairRaw(v, func(k, x int) {
		if d.t.isStr(k, key) {
			val, present = x, true
		}
	})
	return val, present, ok
}

// eachPairRaw is eachPair without copying the keys.
func (d *direct) eachPairRaw(v int, fn func(keyNode, val int)) bool {
	switch d.t.kind(v) {
	case 0, kNull, kString, kNumber, kTrue, kFalse:
		return true
	case kObject:
		return d.t.nodes[v].n == 0
	}
	for el := v + 1; el < int(d.t.nodes[v].next); el = int(d.t.nodes[el].next) {
		if d.t.nodes[el].kind != kObject {
			continue
		}
		k, val := d.pair(el)
		if d.t.kind(k) != kString {
			continue
		}
		fn(k, val)
	}
	return true
}

// typeName mirrors typeName() on the raw text (contract names have no escapes).
func (d *direct) typeName(o int) (string, bool) {
	ty := d.t.lookup(o, "__type")
	if d.t.kind(ty) != kString {
		return "", true
	}
	raw := d.t.text(ty)
	if i := strings.IndexByte(string(raw), ':'); i >= 0 {
		raw = raw[:i]
	}
	for _, c := range raw {
		if c == '\\' {
			return "", false
		}
	}
	switch string(raw) {
	case "Entity":
		return "Entity", true
	case "EntityReference":
		return "EntityReference", true
	case "OptionSetValue":
		return "OptionSetValue", true
	case "Money":
		return "Money", true
	case "":
		return "", true
	}
	return "other", true // a wrapper; only "has a Value" matters then
}

type dentity struct {
	logicalName, id string
	isRef           bool
	attrs           event.Attributes
	rowVersion      int64
}

// entity mirrors parseEntity; found=false when v is not entity-like.
func (d *direct) entity(v int, fmtOut *[]kv) (en dentity, found, ok bool) {
	if d.t.kind(v) != kObject {
		return en, false, true
	}
	tn, ok := d.typeName(v)
	if !ok {
		return en, false, false
	}
	hasAttrs := d.t.lookup(v, "Attributes") >= 0
	switch tn {
	case "Entity", "EntityReference":
	case "":
		if !hasAttrs && !(d.t.lookup(v, "LogicalName") >= 0 && d.t.lookup(v, "Id") >= 0) {
			return en, false, true
		}
	default:
		return en, false, true
	}
	en.logicalName = d.a.lower(d.str(d.t.lookup(v, "LogicalName")))
	if en.id, ok = d.guid(d.t.lookup(v, "Id")); !ok {
		return en, false, false
	}
	if en.id == zeroGUID {
		en.id = ""
	}
	if rv, ok := d.integer(d.t.lookup(v, "RowVersion")); ok {
		en.rowVersion = rv
	}
	if tn == "EntityReference" || !hasAttrs {
		en.isRef = true
		return en, true, true
	}
	if en.attrs, ok = d.attributes(d.t.lookup(v, "Attributes")); !ok {
		return en, false, false
	}
	ok = d.eachPair(d.t.lookup(v, "FormattedValues"), func(key string, _, val int) bool {
		if d.t.kind(val) == kString {
			*fmtOut = append(*fmtOut, kv{key, d.str(val)})
		}
		return true
	})
	return en, true, ok
}

func (d *direct) attributes(v int) (event.Attributes, bool) {
	if d.t.kind(v) != kArray || d.t.nodes[v].n == 0 {
		return nil, d.eachPair(v, func(string, int, int) bool { return true })
	}
	var out event.Attributes
	ok := d.eachPair(v, func(key string, _, val int) bool {
		x, ok := d.value(val)
		if !ok {
			return false
		}
		if out == nil {
			out = make(event.Attributes, d.t.nodes[v].n)
		}
		out[key] = x
		return true
	})
	return out, ok
}

// value mirrors value() for the shapes Dataverse sends.
func (d *direct) value(v int) (event.Value, bool) {
	switch d.t.kind(v) {
	case 0, kNull:
		return event.Null(), true
	case kTrue:
		return event.Bool(true), true
	case kFalse:
		return event.Bool(false), true
	case kNumber:
		return event.Number(json.Number(d.a.bytes(d.t.text(v)))), true
	case kString:
		s := d.str(v)
		if tm, isDate, msg := parseDate(s); isDate {
			if msg != "" {
				return event.Value{}, false
			}
			return d.timeValue(tm), true
		}
		if len(s) == 36 && event.IsGUID(s) {
			return event.String(d.a.lower(s)), true
		}
		return event.String(s), true
	case kArray:
		if d.t.nodes[v].n == 0 {
			return event.Options(), true
		}
		return d.options(v)
	}
	return d.object(v)
}

func (d *direct) options(v int) (event.Value, bool) {
	opts := make([]int, 0, d.t.nodes[v].n)
	for el := v + 1; el < int(d.t.nodes[v].next); el = int(d.t.nodes[el].next) {
		raw := el
		if d.t.nodes[el].kind == kObject {
			tn, ok := d.typeName(el)
			if !ok || tn != "OptionSetValue" && !(tn == "" && d.t.nodes[el].n == 1 && d.t.lookup(el, "Value") >= 0) {
				return event.Value{}, false
			}
			raw = d.t.lookup(el, "Value")
		}
		if d.t.kind(raw) != kNumber {
			return event.Value{}, false
		}
		i, err := strconv.Atoi(string(d.t.text(raw)))
		if err != nil {
			return event.Value{}, false
		}
		opts = append(opts, i)
	}
	return event.Options(opts...), true
}

func (d *direct) object(x int) (event.Value, bool) {
	tn, ok := d.typeName(x)
	if !ok {
		return event.Value{}, false
	}
	switch tn {
	case "EntityReference":
		return d.reference(x)
	case "OptionSetValue":
		n := d.t.lookup(x, "Value")
		if d.t.kind(n) != kNumber {
			return event.Value{}, false
		}
		i, err := strconv.Atoi(string(d.t.text(n)))
		if err != nil {
			return event.Value{}, false
		}
		return event.Option(i), true
	case "Money":
		n := d.t.lookup(x, "Value")
		switch d.t.kind(n) {
		case 0, kNull:
			return event.Null(), true
		case kNumber:
			return event.Money(json.Number(d.a.bytes(d.t.text(n)))), true
		}
		return event.Value{}, false
	case "Entity":
		return event.Value{}, false // entity lists: the tree path
	case "":
		if d.t.lookup(x, "Attributes") >= 0 {
			return event.Value{}, false
		}
		if d.t.lookup(x, "LogicalName") >= 0 && d.t.lookup(x, "Id") >= 0 {
			return d.reference(x)
		}
	}
	if inner := d.t.lookup(x, "Value"); inner >= 0 {
		return d.value(inner)
	}
	return event.Value{}, false // kept as JSON text by the tree path
}

func (d *direct) reference(x int) (event.Value, bool) {
	id, ok := d.guid(d.t.lookup(x, "Id"))
	if !ok || id == "" {
		return event.Value{}, false
	}
	return d.refValue(d.a.lower(d.str(d.t.lookup(x, "LogicalName"))), id, d.str(d.t.lookup(x, "Name"))), true
}

// images mirrors images(); formatted values go to fmtOut in order.
func (d *direct) images(v int, fmtOut *[]kv) (map[string]event.Attributes, bool) {
	var out map[string]event.Attributes
	ok := d.eachPair(v, func(key string, _, val int) bool {
		en, found, ok := d.entity(val, fmtOut)
		if !ok {
			return false
		}
		if !found {
			return true
		}
		attrs := en.attrs
		if attrs == nil {
			attrs = event.Attributes{}
		}
		if out == nil {
			out = make(map[string]event.Attributes, 1)
		}
		out[key] = attrs
		return true
	})
	return out, ok
}

func (d *direct) event(h Headers, source string) (*event.Event, bool) {
	t := &d.t
	root := 0
	if t.kind(root) != kObject {
		return nil, false
	}
	e := &event.Event{Schema: event.SchemaVersion, Source: source, Truncated: h.SizeExceeded}
	msgNode, entNode := t.lookup(root, "MessageName"), t.lookup(root, "PrimaryEntityName")
	for _, n := range [...]int{msgNode, entNode} {
		if k := t.kind(n); k != 0 && k != kNull && k != kString {
			return nil, false
		}
	}
	e.Message = strings.TrimSpace(d.str(msgNode))
	if e.Message == "" {
		e.Message = h.RequestName
	}
	e.Entity = d.a.lower(strings.TrimSpace(d.str(entNode)))
	if e.Entity == "" {
		e.Entity = strings.ToLower(h.EntityName)
	}
	var ok bool
	for _, f := range [...]struct {
		key string
		dst *string
	}{
		{"PrimaryEntityId", &e.RecordID}, {"OrganizationId", &e.OrgID}, {"CorrelationId", &e.CorrelationID},
		{"OperationId", &e.OperationID}, {"RequestId", &e.RequestID}, {"UserId", &e.UserID},
		{"InitiatingUserId", &e.InitiatingUserID},
	} {
		if *f.dst, ok = d.guid(t.lookup(root, f.key)); !ok {
			return nil, false
		}
	}
	if e.RecordID == zeroGUID {
		e.RecordID = ""
	}
	e.OrgName = d.str(t.lookup(root, "OrganizationName"))
	if e.OrgName == "" {
		e.OrgName = h.Organization
	}
	if e.CorrelationID == "" {
		e.CorrelationID = event.NormalizeID(h.CorrelationID)
	}
	if e.RequestID == "" {
		e.RequestID = event.NormalizeID(h.RequestID)
	}
	if n, ok := d.integer(t.lookup(root, "Depth")); ok && n >= 0 && n < 1<<31 {
		e.Depth = int(n)
	}
	if ext := t.lookup(root, "OwningExtension"); t.kind(ext) == kObject {
		if e.StepID, ok = d.guid(t.lookup(ext, "Id")); !ok {
			return nil, false
		}
	}
	var occurred time.Time
	if n := t.lookup(root, "OperationCreatedOn"); t.kind(n) == kString {
		tm, isDate, msg := parseDate(d.str(n))
		switch {
		case msg != "":
			return nil, false
		case isDate:
			occurred = tm
		}
	}

	inputs := t.lookup(root, "InputParameters")
	targetNode, ok := d.param(inputs, "Target")
	if !ok {
		return nil, false
	}
	target, haveTarget, ok := d.entity(targetNode, &d.targetFmt)
	if !ok {
		return nil, false
	}
	if haveTarget {
		if target.logicalName != "" && e.Entity != "" && target.logicalName != e.Entity {
			return nil, false // the tree path reports the mismatch
		}
		if e.Entity == "" {
			e.Entity = target.logicalName
		}
		if e.RecordID == "" {
			e.RecordID = target.id
		}
		if !target.isRef {
			e.Attributes = target.attrs
			e.RowVersion = target.rowVersion
		}
	}
	if !d.messageInputs(e, e.Message, inputs) {
		return nil, false
	}
	if e.RecordID == "" {
		out := t.lookup(root, "OutputParameters")
		id, ok := d.param(out, "id")
		if !ok {
			return nil, false
		}
		if s := d.str(id); event.IsGUID(s) {
			e.RecordID = d.a.lower(event.NormalizeID(s))
		}
	}

	parent := t.lookup(root, "ParentContext")
	for depth := 0; t.kind(parent) == kObject && depth < maxParentDepth; depth++ {
		if e.ParentMessage == "" {
			msg := strings.TrimSpace(d.str(t.lookup(parent, "MessageName")))
			if msg != "" && !strings.EqualFold(msg, e.Message) {
				e.ParentMessage = msg
				if isSetState(msg) && !d.messageInputs(e, msg, t.lookup(parent, "InputParameters")) {
					return nil, false // the tree path ignores the parent's oddities; let it
				}
			}
		}
		parent = t.lookup(parent, "ParentContext")
	}

	if e.PreImages, ok = d.images(t.lookup(root, "PreEntityImages"), &d.preFmt); !ok {
		return nil, false
	}
	postNode := t.lookup(root, "PostEntityImages")
	if e.PostImages, ok = d.images(postNode, &d.postFmt); !ok {
		return nil, false
	}
	e.Formatted = d.formatted(e.Attributes)

	modified, haveModified := timeOf(e.Attributes["modifiedon"])
	if !haveModified && len(e.PostImages) > 0 {
		for _, alias := range sortedKeys(e.PostImages) {
			if modified, haveModified = timeOf(e.PostImages[alias]["modifiedon"]); haveModified {
				break
			}
		}
	}
	if e.RowVersion == 0 {
		d.eachPairRaw(postNode, func(_, val int) {
			if e.RowVersion == 0 && t.kind(val) == kObject {
				if rv, ok := d.integer(t.lookup(val, "RowVersion")); ok {
					e.RowVersion = rv
				}
			}
		})
	}
	switch {
	case haveModified:
		e.Version = modified.UnixMilli()
	case !occurred.IsZero():
		e.Version = occurred.UnixMilli()
	}
	e.OccurredAt = occurred
	if e.OccurredAt.IsZero() && haveModified {
		e.OccurredAt = modified
	}
	if e.Entity == "" || e.RecordID == "" || e.Message == "" {
		return nil, false // the tree path names what is missing
	}
	e.ID = e.DeriveID()
	return e, true
}

// formatted mirrors mergeFormatted.
func (d *direct) formatted(changed event.Attributes) map[string]string {
	n := len(d.preFmt) + len(d.targetFmt) + len(d.postFmt)
	if n == 0 {
		return nil
	}
	out := make(map[string]string, n)
	for _, f := range d.preFmt {
		if _, isChanged := changed[f.k]; !isChanged {
			out[f.k] = f.v
		}
	}
	for _, f := range d.targetFmt {
		out[f.k] = f.v
	}
	for _, f := range d.postFmt {
		out[f.k] = f.v
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// messageInputs mirrors applyMessageInputs; false where it would report an error.
func (d *direct) messageInputs(e *event.Event, message string, inputs int) bool {
	set := func(col string, v event.Value) {
		if e.Attributes == nil {
			e.Attributes = event.Attributes{}
		}
		if _, exists := e.Attributes[col]; !exists {
			e.Attributes[col] = v
		}
	}
	option := func(name, col string) bool {
		raw, ok := d.param(inputs, name)
		if !ok {
			return false
		}
		if raw < 0 {
			return true
		}
		v, ok := d.value(raw)
		if !ok {
			return false
		}
		if v.Kind == event.KindNumber {
			if i, ok := v.Int(); ok {
				v = event.Option(int(i))
			}
		}
		if v.Kind == event.KindOption {
			set(col, v)
		}
		return true
	}
	refID := func(name string) (match, ok bool) {
		n, ok := d.param(inputs, name)
		if !ok {
			return false, false
		}
		ref, found, ok := d.entity(n, new([]kv))
		if !ok {
			return false, false
		}
		if !found {
			return true, true
		}
		if e.RecordID != "" && ref.id != "" && ref.id != e.RecordID {
			return false, true
		}
		if e.Entity == "" {
			e.Entity = ref.logicalName
		}
		if e.RecordID == "" {
			e.RecordID = ref.id
		}
		return true, true
	}
	switch {
	case strings.EqualFold(message, event.MessageAssign):
		n, ok := d.param(inputs, "Assignee")
		if !ok {
			return false
		}
		v, ok := d.value(n)
		if !ok {
			return false
		}
		if v.Kind == event.KindRef {
			set("ownerid", v)
		}
	case isSetState(message):
		match, ok := refID("EntityMoniker")
		if !ok || !match {
			return ok
		}
		return option("State", "statecode") && option("Status", "statuscode")
	case strings.EqualFold(message, event.MessageMerge):
		// Rare, and SubordinateId/UpdateContent are read by the tree path only.
		return false
	case strings.EqualFold(message, event.MessageQualifyLead):
		match, ok := refID("LeadId")
		if !ok || !match {
			return ok
		}
		if !option("Status", "statuscode") {
			return false
		}
		if _, present, _ := d.paramPresent(inputs, "LeadId"); present {
			set("statecode", event.Option(1))
		}
	}
	return true
}

func lowerUnicode(s string) string { return strings.ToLower(s) }

// parseInt64 is strconv.ParseInt(string(b), 10, 64) without the copy.
func parseInt64(b []byte) (int64, bool) {
	neg := false
	if len(b) > 0 && (b[0] == '-' || b[0] == '+') {
		neg = b[0] == '-'
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 19 {
		if len(b) > 19 {
			n, err := strconv.ParseInt(string(b), 10, 64) // leading zeros; rare
			if err == nil && neg {
				n = -n
			}
			return n, err == nil
		}
		return 0, false
	}
	var u uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		u = u*10 + uint64(c-'0')
	}
	switch {
	case !neg && u > 1<<63-1, neg && u > 1<<63:
		return 0, false
	case neg:
		return -int64(u), true
	}
	return int64(u), true
}
