package sqlitestore

import (
	"unicode/utf8"
)

// The hot statements take their keys as one JSON argument read with
// json_each(?) rather than as a list of placeholders: the statement text is
// then short and the same for every batch, so SQLite parses a few dozen
// bytes instead of thousands of "?", and a batch needs one statement rather
// than one per 500 rows. (Before: a third of the store's CPU in a 30,000
// event drain was parsing and binding the long lists.)

// jsonSafe reports whether s can travel in a JSON string unchanged: valid
// UTF-8 (JSON would replace other bytes, and the key would no longer
// match). Callers fall back to placeholders otherwise.
func jsonSafe(s string) bool { return utf8.ValidString(s) }

// appendJSONString appends s as a JSON string literal.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			const hex = "0123456789abcdef"
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// jsonStrings encodes ss as a JSON array of strings; ok is false when one of
// them cannot travel in JSON unchanged.
func jsonStrings(ss []string) (string, bool) {
	n := 2
	for _, s := range ss {
		if !jsonSafe(s) {
			return "", false
		}
		n += len(s) + 3
	}
	b := make([]byte, 0, n)
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, s)
	}
	return string(append(b, ']')), true
}
