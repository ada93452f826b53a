package event

import (
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"
)

// decodeCanonical reads exactly the form Encode writes (fields in struct
// order, no whitespace) and declines (ok false) anything else, which Decode
// then hands to json.Unmarshal. It exists because the worker decodes every
// message and json.Unmarshal's validating scan plus reflection cost a tenth
// of `msisync serve`'s CPU. What it accepts it reads as json.Unmarshal does:
// TestDecodeMatchesUnmarshal and FuzzDecode hold it to that.
func decodeCanonical(b []byte) (_ *Event, ok bool) {
	d := decoder{b: b, s: string(b)} // one copy; every plain string is a slice of it
	e := &Event{}
	if !d.lit(`{"schema":`) {
		return nil, false
	}
	var n int64
	if n, ok = d.int(); !ok {
		return nil, false
	}
	e.Schema = int(n)
	ok = d.key(`,"id":`) && d.str(&e.ID) && d.key(`,"source":`) && d.str(&e.Source) &&
		d.optStr(`,"orgId":`, &e.OrgID) && d.optStr(`,"orgName":`, &e.OrgName) &&
		d.key(`,"entity":`) && d.str(&e.Entity) && d.key(`,"recordId":`) && d.str(&e.RecordID) &&
		d.key(`,"message":`) && d.str(&e.Message) && d.key(`,"occurredAt":`) && d.time(&e.OccurredAt) &&
		d.optInt(`,"version":`, &e.Version) && d.optInt(`,"rowVersion":`, &e.RowVersion)
	if !ok {
		return nil, false
	}
	if d.lit(`,"attributes":`) {
		if e.Attributes, ok = d.attributes(0); !ok || e.Attributes == nil {
			return nil, false
		}
	}
	if d.lit(`,"formatted":`) {
		if e.Formatted, ok = d.stringMap(); !ok {
			return nil, false
		}
	}
	if d.lit(`,"preImages":`) {
		if e.PreImages, ok = d.images(); !ok {
			return nil, false
		}
	}
	if d.lit(`,"postImages":`) {
		if e.PostImages, ok = d.images(); !ok {
			return nil, false
		}
	}
	e.Truncated = d.lit(`,"truncated":true`)
	var depth int64
	ok = d.optStr(`,"correlationId":`, &e.CorrelationID) && d.optStr(`,"operationId":`, &e.OperationID) &&
		d.optStr(`,"requestId":`, &e.RequestID) && d.optStr(`,"userId":`, &e.UserID) &&
		d.optStr(`,"initiatingUserId":`, &e.InitiatingUserID) && d.optInt(`,"depth":`, &depth) &&
		d.optStr(`,"parentMessage":`, &e.ParentMessage) && d.optStr(`,"stepId":`, &e.StepID) &&
		d.optStr(`,"subordinateId":`, &e.SubordinateID) && d.lit("}") && d.i == len(d.b)
	if !ok || int64(int(depth)) != depth {
		return nil, false
	}
	e.Depth = int(depth)
	return e, true
}

type decoder struct {
	b []byte
	s string // b as a string, for slicing
	i int
}

func (d *decoder) lit(s string) bool {
	if len(d.b)-d.i >= len(s) && d.s[d.i:d.i+len(s)] == s {
		d.i += len(s)
		return true
	}
	return false
}

func (d *decoder) key(k string) bool { return d.lit(k) }

func (d *decoder) optStr(k string, dst *string) bool {
	if !d.lit(k) {
		return true
	}
	return d.str(dst)
}

func (d *decoder) optInt(k string, dst *int64) bool {
	if !d.lit(k) {
		return true
	}
	n, ok := d.int()
	*dst = n
	return ok
}

// int reads a JSON integer that fits an int64 (what json.Unmarshal puts
// into an int64 without error).
func (d *decoder) int() (int64, bool) {
	start := d.i
	if d.i < len(d.b) && d.b[d.i] == '-' {
		d.i++
	}
	digits := d.i
	for d.i < len(d.b) && '0' <= d.b[d.i] && d.b[d.i] <= '9' {
		d.i++
	}
	if d.i == digits || d.b[digits] == '0' && d.i-digits > 1 {
		return 0, false
	}
	if d.i < len(d.b) && (d.b[d.i] == '.' || d.b[d.i] == 'e' || d.b[d.i] == 'E') {
		return 0, false
	}
	n, err := strconv.ParseInt(d.s[start:d.i], 10, 64)
	return n, err == nil
}

// rawStr returns the span of a string literal (quotes included) and whether
// it holds escapes; false for what json.Unmarshal would change or refuse
// (control bytes, invalid UTF-8).
func (d *decoder) rawStr() (start, end int, esc, ok bool) {
	if d.i >= len(d.b) || d.b[d.i] != '"' {
		return 0, 0, false, false
	}
	start = d.i
	ascii := true
	for i := d.i + 1; i < len(d.b); i++ {
		switch c := d.b[i]; {
		case c == '"':
			if !ascii && !utf8.Valid(d.b[start+1:i]) {
				return 0, 0, false, false
			}
			d.i = i + 1
			return start, i + 1, esc, true
		case c == '\\':
			esc = true
			i++ // the escaped byte cannot end the string
		case c < 0x20:
			return 0, 0, false, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return 0, 0, false, false
}

func (d *decoder) str(dst *string) bool {
	start, end, esc, ok := d.rawStr()
	if !ok {
		return false
	}
	if !esc {
		*dst = d.s[start+1 : end-1]
		return true
	}
	*dst, ok = unescape(d.s[start+1 : end-1])
	return ok
}

// unescape resolves a string's escapes; false for a surrogate escape
// (json.Unmarshal pairs or replaces those; Encode never writes one) or a
// malformed escape.
func unescape(s string) (string, bool) {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		if i+1 >= len(s) {
			return "", false
		}
		i++
		switch s[i] {
		case '"', '\\', '/':
			out = append(out, s[i])
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			if i+4 >= len(s) {
				return "", false
			}
			r, err := strconv.ParseUint(s[i+1:i+5], 16, 32)
			if err != nil || r >= 0xd800 && r < 0xe000 {
				return "", false
			}
			out = utf8.AppendRune(out, rune(r))
			i += 4
		default:
			return "", false
		}
	}
	return string(out), true
}

func (d *decoder) time(dst *time.Time) bool {
	start, end, _, ok := d.rawStr()
	if !ok {
		return false
	}
	// json.Unmarshal hands the literal, quotes and all, to UnmarshalJSON.
	return dst.UnmarshalJSON(d.b[start:end]) == nil
}

// maxDecodeDepth bounds Entities inside Attributes (party lists nest once).
const maxDecodeDepth = 4

func (d *decoder) attributes(depth int) (Attributes, bool) {
	if d.lit("null") {
		return nil, true
	}
	if depth > maxDecodeDepth || !d.lit("{") {
		return nil, false
	}
	a := Attributes{}
	if d.lit("}") {
		return a, true
	}
	for {
		var k string
		if !d.str(&k) || !d.lit(":") {
			return nil, false
		}
		v, ok := d.value(depth)
		if !ok {
			return nil, false
		}
		a[k] = v
		if d.lit("}") {
			return a, true
		}
		if !d.lit(",") {
			return nil, false
		}
	}
}

func (d *decoder) images() (map[string]Attributes, bool) {
	if !d.lit("{") {
		return nil, false
	}
	m := map[string]Attributes{}
	if d.lit("}") {
		return m, true
	}
	for {
		var k string
		if !d.str(&k) || !d.lit(":") {
			return nil, false
		}
		a, ok := d.attributes(0)
		if !ok {
			return nil, false
		}
		m[k] = a
		if d.lit("}") {
			return m, true
		}
		if !d.lit(",") {
			return nil, false
		}
	}
}

func (d *decoder) stringMap() (map[string]string, bool) {
	if !d.lit("{") {
		return nil, false
	}
	m := map[string]string{}
	if d.lit("}") {
		return m, true
	}
	for {
		var k, v string
		if !d.str(&k) || !d.lit(":") || !d.str(&v) {
			return nil, false
		}
		m[k] = v
		if d.lit("}") {
			return m, true
		}
		if !d.lit(",") {
			return nil, false
		}
	}
}

func (d *decoder) value(depth int) (v Value, ok bool) {
	var kind string
	if !d.lit(`{"kind":`) || !d.str(&kind) || !d.optStr(`,"str":`, &v.Str) {
		return v, false
	}
	v.Kind = Kind(kind)
	if d.lit(`,"num":`) {
		start := d.i
		for d.i < len(d.b) && (d.b[d.i] == '-' || d.b[d.i] == '+' || d.b[d.i] == '.' || d.b[d.i] == 'e' || d.b[d.i] == 'E' || '0' <= d.b[d.i] && d.b[d.i] <= '9') {
			d.i++
		}
		if !validNumber(d.s[start:d.i]) {
			return v, false
		}
		v.Num = json.Number(d.s[start:d.i])
	}
	v.Bool = d.lit(`,"bool":true`)
	if d.lit(`,"ref":{"logicalName":`) {
		v.Ref = &Ref{}
		if !d.str(&v.Ref.LogicalName) || !d.key(`,"id":`) || !d.str(&v.Ref.ID) || !d.optStr(`,"name":`, &v.Ref.Name) || !d.lit("}") {
			return v, false
		}
	}
	if d.lit(`,"options":[`) {
		for {
			n, ok := d.int()
			if !ok || int64(int(n)) != n {
				return v, false
			}
			v.Options = append(v.Options, int(n))
			if d.lit("]") {
				break
			}
			if !d.lit(",") {
				return v, false
			}
		}
	}
	if d.lit(`,"time":`) {
		v.Time = new(time.Time)
		if !d.time(v.Time) {
			return v, false
		}
	}
	if d.lit(`,"entities":[`) {
		for {
			a, ok := d.attributes(depth + 1)
			if !ok {
				return v, false
			}
			v.Entities = append(v.Entities, a)
			if d.lit("]") {
				break
			}
			if !d.lit(",") {
				return v, false
			}
		}
	}
	return v, d.lit("}")
}
