package dataversesim

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Ref is a lookup value (EntityReference) given to or read from the simulator.
type Ref struct {
	LogicalName string
	ID          string
}

// OptionValue is a choice value (OptionSetValue).
type OptionValue int

// Money is a currency value.
type Money float64

// normID lower-cases a GUID and strips braces.
func normID(s string) string {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, "{")
	s = strings.TrimSuffix(s, "}")
	return strings.ToLower(s)
}

func isGUID(s string) bool {
	_, err := uuid.Parse(s)
	return err == nil && len(normID(s)) == 36
}

func newID() string { return uuid.NewString() }

// toFloat reads a number given as Go or JSON value.
func toFloat(v any) (float64, bool) {
	switch n := v.(type) {
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	case float64:
		return n, true
	case float32:
		return float64(n), true
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	case int32:
		return float64(n), true
	case OptionValue:
		return float64(n), true
	case Money:
		return float64(n), true
	}
	return 0, false
}

// coerce converts a value from a Web API body or a Go caller to the typed
// form the store keeps, according to the column's type.
func coerce(m *entityMeta, col string, v any) (any, error) {
	if v == nil {
		return nil, nil
	}
	c, known := m.cols[col]
	if !known {
		switch x := v.(type) {
		case json.Number:
			if i, err := x.Int64(); err == nil {
				return i, nil
			}
			f, _ := x.Float64()
			return f, nil
		case string, bool, float64, int64, time.Time, Ref, OptionValue, Money:
			return x, nil
		case int:
			return int64(x), nil
		}
		return nil, fmt.Errorf("unsupported value %T for %s", v, col)
	}
	bad := func() error {
		return fmt.Errorf("invalid value %v for %s.%s", v, m.logical, col)
	}
	switch c.kind {
	case kString:
		s, ok := v.(string)
		if !ok {
			return nil, bad()
		}
		return s, nil
	case kGUID:
		s, ok := v.(string)
		if !ok || !isGUID(s) {
			return nil, bad()
		}
		return normID(s), nil
	case kBool:
		b, ok := v.(bool)
		if !ok {
			return nil, bad()
		}
		return b, nil
	case kInt:
		f, ok := toFloat(v)
		if !ok || f != math.Trunc(f) {
			return nil, bad()
		}
		return int64(f), nil
	case kDecimal:
		f, ok := toFloat(v)
		if !ok {
			return nil, bad()
		}
		return f, nil
	case kMoney:
		f, ok := toFloat(v)
		if !ok {
			return nil, bad()
		}
		return Money(f), nil
	case kOption:
		f, ok := toFloat(v)
		if !ok || f != math.Trunc(f) {
			return nil, bad()
		}
		return OptionValue(int(f)), nil
	case kMultiOption:
		switch x := v.(type) {
		case string: // the Web API sends multi-select as "1,2,3"
			var out []OptionValue
			for _, p := range strings.Split(x, ",") {
				if p = strings.TrimSpace(p); p == "" {
					continue
				}
				n, err := strconv.Atoi(p)
				if err != nil {
					return nil, bad()
				}
				out = append(out, OptionValue(n))
			}
			return out, nil
		case []OptionValue:
			return x, nil
		}
		return nil, bad()
	case kDate:
		switch x := v.(type) {
		case time.Time:
			return x.UTC().Truncate(time.Second), nil
		case string:
			for _, layout := range []string{time.RFC3339Nano, "2006-01-02"} {
				if t, err := time.Parse(layout, x); err == nil {
					return t.UTC().Truncate(time.Second), nil
				}
			}
		}
		return nil, bad()
	case kLookup:
		switch x := v.(type) {
		case Ref:
			if !isGUID(x.ID) || !contains(c.targets, x.LogicalName) {
				return nil, fmt.Errorf("invalid reference %s(%s) for %s.%s", x.LogicalName, x.ID, m.logical, col)
			}
			return Ref{LogicalName: x.LogicalName, ID: normID(x.ID)}, nil
		case string:
			if len(c.targets) == 1 && isGUID(x) {
				return Ref{LogicalName: c.targets[0], ID: normID(x)}, nil
			}
		}
		return nil, bad()
	}
	return nil, bad()
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// webTime formats a DateTime as the Web API does (UTC, second precision).
func webTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05Z") }

// webValue renders a stored value as Web API JSON.
func webValue(v any) any {
	switch x := v.(type) {
	case Ref:
		return x.ID
	case OptionValue:
		return int(x)
	case Money:
		return float64(x)
	case time.Time:
		return webTime(x)
	case []OptionValue:
		parts := make([]string, len(x))
		for i, o := range x {
			parts[i] = strconv.Itoa(int(o))
		}
		return strings.Join(parts, ",")
	}
	return v
}

// formatted renders the display string of a value (FormattedValue annotation
// and FormattedValues in images); ok is false when Dataverse gives none.
func (s *Server) formatted(m *entityMeta, col string, v any) (string, bool) {
	if v == nil {
		return "", false
	}
	switch x := v.(type) {
	case Ref:
		return s.primaryName(x), true
	case OptionValue:
		if l, ok := m.cols[col].labels[int(x)]; ok {
			return l, true
		}
		return strconv.Itoa(int(x)), true
	case Money:
		return "$" + thousands(float64(x)), true
	case time.Time:
		return x.UTC().Format("1/2/2006 3:04 PM"), true
	case bool:
		if x {
			return "Yes", true
		}
		return "No", true
	case int64:
		if col == "versionnumber" {
			return "", false
		}
		return thousandsInt(x), true
	}
	return "", false
}

func thousandsInt(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func thousands(f float64) string {
	whole := int64(f)
	cents := int64(math.Round(math.Abs(f-float64(whole)) * 100))
	return fmt.Sprintf("%s.%02d", thousandsInt(whole), cents)
}

// valueEqual compares stored values for change detection.
func valueEqual(a, b any) bool {
	switch x := a.(type) {
	case time.Time:
		y, ok := b.(time.Time)
		return ok && x.Equal(y)
	case []OptionValue:
		y, ok := b.([]OptionValue)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if x[i] != y[i] {
				return false
			}
		}
		return true
	}
	return a == b
}
