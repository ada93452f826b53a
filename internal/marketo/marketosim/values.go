package marketosim

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

const isoZ = "2006-01-02T15:04:05Z"

// coerce checks v against the field type and returns the stored value (nil
// for null or ""), or a skip reason message.
func coerce(f *Field, v any) (any, string) {
	if v == nil {
		return nil, ""
	}
	if s, ok := v.(string); ok && s == "" {
		return nil, ""
	}
	bad := func() (any, string) {
		return nil, fmt.Sprintf("Invalid value '%v' for field '%s' of type %s", v, f.Name, f.Type)
	}
	switch f.Type {
	case "string", "text", "phone", "url", "email", "reference":
		s, ok := v.(string)
		if !ok {
			// Marketo stores numbers sent to string fields as their text.
			n, isNum := v.(json.Number)
			if !isNum {
				return bad()
			}
			s = n.String()
		}
		if f.Type == "email" {
			for i := 0; i < len(s); i++ {
				if s[i] >= utf8.RuneSelf {
					return nil, fmt.Sprintf("Invalid email address '%s': only ASCII characters are supported", s)
				}
			}
		}
		if f.Length > 0 && utf8.RuneCountInString(s) > f.Length {
			return nil, fmt.Sprintf("Value for field '%s' exceeds max length %d", f.Name, f.Length)
		}
		return s, ""
	case "integer":
		switch x := v.(type) {
		case json.Number:
			if n, err := x.Int64(); err == nil {
				return n, ""
			}
		case string:
			if n, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64); err == nil {
				return n, ""
			}
		case float64:
			if x == math.Trunc(x) {
				return int64(x), ""
			}
		case int64:
			return x, ""
		}
		return bad()
	case "float", "currency":
		switch x := v.(type) {
		case json.Number:
			if n, err := x.Float64(); err == nil {
				return n, ""
			}
		case string:
			if n, err := strconv.ParseFloat(strings.TrimSpace(x), 64); err == nil {
				return n, ""
			}
		case float64:
			return x, ""
		}
		return bad()
	case "boolean":
		switch x := v.(type) {
		case bool:
			return x, ""
		case string:
			switch strings.ToLower(x) {
			case "true":
				return true, ""
			case "false":
				return false, ""
			}
		}
		return bad()
	case "datetime":
		s, ok := v.(string)
		if !ok {
			return bad()
		}
		for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05Z0700", "2006-01-02"} {
			if t, err := time.Parse(layout, s); err == nil {
				return t.UTC().Format(isoZ), ""
			}
		}
		return bad()
	case "date":
		s, ok := v.(string)
		if !ok {
			return bad()
		}
		if t, err := time.Parse("2006-01-02", s); err == nil {
			return t.Format("2006-01-02"), ""
		}
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			return t.UTC().Format("2006-01-02"), ""
		}
		return bad()
	}
	return v, ""
}
