package event

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// Encode serialises the event for the queue. The bytes are exactly those of
// json.Marshal(e) (TestEncodeMatchesMarshal and FuzzEncode hold it to that),
// written by hand because Encode runs for every webhook and reflection with
// sorted map keys cost a third of the receiver's request path.
func Encode(e *Event) ([]byte, error) {
	if e.Schema == 0 {
		e.Schema = SchemaVersion
	}
	return AppendEncode(make([]byte, 0, sizeHint(e)), e)
}

// sizeHint guesses the encoded size from the number of values, so that the
// buffer is allocated once instead of grown by doubling (which copied a 7 KB
// event three times).
func sizeHint(e *Event) int {
	n := len(e.Attributes) + len(e.Formatted)
	for _, img := range e.PreImages {
		n += len(img)
	}
	for _, img := range e.PostImages {
		n += len(img)
	}
	return 512 + 96*n
}

// AppendEncode appends Encode's bytes to dst, so a caller can reuse a buffer.
func AppendEncode(dst []byte, e *Event) ([]byte, error) {
	if e.Schema == 0 {
		e.Schema = SchemaVersion
	}
	b, ok := appendEvent(dst, e)
	if ok {
		return b, nil
	}
	// Something json.Marshal refuses (an invalid number, a year beyond
	// 9999): let it say what, in its words.
	m, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encode event %s: %w", e.Key(), err)
	}
	return append(dst, m...), nil
}

// appendEvent writes the fields in struct order with encoding/json's
// omitempty rules; ok is false where json.Marshal would fail.
func appendEvent(b []byte, e *Event) (_ []byte, ok bool) {
	b = append(b, `{"schema":`...)
	b = strconv.AppendInt(b, int64(e.Schema), 10)
	b = appendKeyString(b, `,"id":`, e.ID)
	b = appendKeyString(b, `,"source":`, e.Source)
	b = appendOptString(b, `,"orgId":`, e.OrgID)
	b = appendOptString(b, `,"orgName":`, e.OrgName)
	b = appendKeyString(b, `,"entity":`, e.Entity)
	b = appendKeyString(b, `,"recordId":`, e.RecordID)
	b = appendKeyString(b, `,"message":`, e.Message)
	b = append(b, `,"occurredAt":`...)
	if b, ok = appendTime(b, e.OccurredAt); !ok {
		return b, false
	}
	if e.Version != 0 {
		b = strconv.AppendInt(append(b, `,"version":`...), e.Version, 10)
	}
	if e.RowVersion != 0 {
		b = strconv.AppendInt(append(b, `,"rowVersion":`...), e.RowVersion, 10)
	}
	if len(e.Attributes) > 0 {
		if b, ok = appendAttributes(append(b, `,"attributes":`...), e.Attributes); !ok {
			return b, false
		}
	}
	if len(e.Formatted) > 0 {
		b = append(b, `,"formatted":`...)
		b = appendStringMap(b, e.Formatted)
	}
	if len(e.PreImages) > 0 {
		if b, ok = appendImages(append(b, `,"preImages":`...), e.PreImages); !ok {
			return b, false
		}
	}
	if len(e.PostImages) > 0 {
		if b, ok = appendImages(append(b, `,"postImages":`...), e.PostImages); !ok {
			return b, false
		}
	}
	if e.Truncated {
		b = append(b, `,"truncated":true`...)
	}
	b = appendOptString(b, `,"correlationId":`, e.CorrelationID)
	b = appendOptString(b, `,"operationId":`, e.OperationID)
	b = appendOptString(b, `,"requestId":`, e.RequestID)
	b = appendOptString(b, `,"userId":`, e.UserID)
	b = appendOptString(b, `,"initiatingUserId":`, e.InitiatingUserID)
	if e.Depth != 0 {
		b = strconv.AppendInt(append(b, `,"depth":`...), int64(e.Depth), 10)
	}
	b = appendOptString(b, `,"parentMessage":`, e.ParentMessage)
	b = appendOptString(b, `,"stepId":`, e.StepID)
	b = appendOptString(b, `,"subordinateId":`, e.SubordinateID)
	return append(b, '}'), true
}

func appendKeyString(b []byte, key, s string) []byte {
	return appendString(append(b, key...), s)
}

func appendOptString(b []byte, key, s string) []byte {
	if s == "" {
		return b
	}
	return appendKeyString(b, key, s)
}

// sortedKeys returns m's keys in encoding/json's order, in buf when it fits.
func sortedKeys[V any](buf []string, m map[string]V) []string {
	keys := buf[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func appendAttributes(b []byte, a Attributes) (_ []byte, ok bool) {
	if a == nil {
		return append(b, "null"...), true
	}
	var buf [64]string
	b = append(b, '{')
	for i, k := range sortedKeys(buf[:], a) {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(appendString(b, k), ':')
		if b, ok = appendValue(b, a[k]); !ok {
			return b, false
		}
	}
	return append(b, '}'), true
}

func appendImages(b []byte, m map[string]Attributes) (_ []byte, ok bool) {
	var buf [8]string
	b = append(b, '{')
	for i, k := range sortedKeys(buf[:], m) {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(appendString(b, k), ':')
		if b, ok = appendAttributes(b, m[k]); !ok {
			return b, false
		}
	}
	return append(b, '}'), true
}

func appendStringMap(b []byte, m map[string]string) []byte {
	var buf [32]string
	b = append(b, '{')
	for i, k := range sortedKeys(buf[:], m) {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(append(appendString(b, k), ':'), m[k])
	}
	return append(b, '}')
}

func appendValue(b []byte, v Value) (_ []byte, ok bool) {
	b = appendKeyString(b, `{"kind":`, string(v.Kind))
	b = appendOptString(b, `,"str":`, v.Str)
	if v.Num != "" {
		if !validNumber(string(v.Num)) {
			return b, false
		}
		b = append(append(b, `,"num":`...), v.Num...)
	}
	if v.Bool {
		b = append(b, `,"bool":true`...)
	}
	if v.Ref != nil {
		b = appendKeyString(b, `,"ref":{"logicalName":`, v.Ref.LogicalName)
		b = appendKeyString(b, `,"id":`, v.Ref.ID)
		b = appendOptString(b, `,"name":`, v.Ref.Name)
		b = append(b, '}')
	}
	if len(v.Options) > 0 {
		b = append(b, `,"options":[`...)
		for i, o := range v.Options {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, int64(o), 10)
		}
		b = append(b, ']')
	}
	if v.Time != nil {
		if b, ok = appendTime(append(b, `,"time":`...), *v.Time); !ok {
			return b, false
		}
	}
	if len(v.Entities) > 0 {
		b = append(b, `,"entities":[`...)
		for i, a := range v.Entities {
			if i > 0 {
				b = append(b, ',')
			}
			if b, ok = appendAttributes(b, a); !ok {
				return b, false
			}
		}
		b = append(b, ']')
	}
	return append(b, '}'), true
}

// appendTime is time.Time.MarshalJSON without its allocation, with the
// same refusals (a year outside 0..9999, a zone offset of 24 hours or more).
func appendTime(b []byte, t time.Time) (_ []byte, ok bool) {
	if y := t.Year(); y < 0 || y > 9999 {
		return b, false
	}
	if _, off := t.Zone(); off <= -24*3600 || off >= 24*3600 {
		return b, false
	}
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"'), true
}

// validNumber is encoding/json's isValidNumber: the JSON number grammar.
func validNumber(s string) bool {
	if s == "" {
		return false
	}
	if s[0] == '-' {
		s = s[1:]
		if s == "" {
			return false
		}
	}
	switch {
	case s[0] == '0':
		s = s[1:]
	case '1' <= s[0] && s[0] <= '9':
		s = s[1:]
		for len(s) > 0 && '0' <= s[0] && s[0] <= '9' {
			s = s[1:]
		}
	default:
		return false
	}
	if len(s) >= 2 && s[0] == '.' && '0' <= s[1] && s[1] <= '9' {
		s = s[2:]
		for len(s) > 0 && '0' <= s[0] && s[0] <= '9' {
			s = s[1:]
		}
	}
	if len(s) >= 2 && (s[0] == 'e' || s[0] == 'E') {
		s = s[1:]
		if s[0] == '+' || s[0] == '-' {
			s = s[1:]
			if s == "" {
				return false
			}
		}
		for len(s) > 0 && '0' <= s[0] && s[0] <= '9' {
			s = s[1:]
		}
	}
	return s == ""
}

const hexDigits = "0123456789abcdef"

// appendString is encoding/json's string encoding with HTML escaping (its
// default): <, > and & as \u003c..., control bytes escaped, invalid UTF-8
// as \ufffd, U+2028 and U+2029 escaped.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
