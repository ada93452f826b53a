package msi

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Type says how a field's value is compared and written to Dataverse.
type Type string

// Field types.
const (
	TypeText     Type = "text"     // written as a string
	TypeDateTime Type = "datetime" // written as an RFC 3339 UTC string
	TypeNumber   Type = "number"   // written as a JSON number (integer when whole)
)

// FieldMap copies one Marketo lead field onto one Dataverse column.
type FieldMap struct {
	Marketo   string // Marketo lead field API name, e.g. "priority"
	Dataverse string // Dataverse column logical name on lead and contact
	Type      Type
}

// Default Dataverse column names. The MSI solution's real column names are
// not published (see reference/dataverse.md §3.3), so these are our own
// `msi_` columns; override them with Config.Fields / ParseFields.
const (
	ColumnLIMType   = "msi_lastinterestingmomenttype"
	ColumnLIMDate   = "msi_lastinterestingmomentdate"
	ColumnLIMDesc   = "msi_lastinterestingmomentdesc"
	ColumnLIMSource = "msi_lastinterestingmomentsource"
	ColumnPriority  = "msi_priority"
	ColumnUrgency   = "msi_relativeurgency"
	ColumnScore     = "msi_relativescore"
)

// DefaultFields returns the MSI fields Adobe lists, mapped to the default
// columns. scoreField is the Marketo name of the relative score
// ("relativeScore" when empty; Adobe's MSI page says "relativeScoring").
func DefaultFields(scoreField string) []FieldMap {
	if scoreField == "" {
		scoreField = "relativeScore"
	}
	return []FieldMap{
		{"msiLastInterestingMomentType", ColumnLIMType, TypeText},
		{"msiLastInterestingMomentDate", ColumnLIMDate, TypeDateTime},
		{"msiLastInterestingMomentDesc", ColumnLIMDesc, TypeText},
		{"msiLastInterestingMomentSource", ColumnLIMSource, TypeText},
		{"priority", ColumnPriority, TypeNumber},
		{"relativeUrgency", ColumnUrgency, TypeNumber},
		{scoreField, ColumnScore, TypeNumber},
	}
}

// ParseFields reads a field list such as
// "priority=new_priority:number,msiLastInterestingMomentDate=new_limdate:datetime"
// (type optional, default text), for a setting like MSISYNC_MSI_FIELDS.
func ParseFields(s string) ([]FieldMap, error) {
	var out []FieldMap
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		mk, rest, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("msi fields: %q: want marketoField=dataverseColumn[:type]", part)
		}
		col, typ, _ := strings.Cut(rest, ":")
		f := FieldMap{Marketo: strings.TrimSpace(mk), Dataverse: strings.TrimSpace(col), Type: Type(strings.TrimSpace(typ))}
		if f.Type == "" {
			f.Type = TypeText
		}
		out = append(out, f)
	}
	if err := validateFields(out); err != nil {
		return nil, err
	}
	return out, nil
}

func validateFields(fields []FieldMap) error {
	if len(fields) == 0 {
		return fmt.Errorf("msi fields: at least one field is required")
	}
	seenM, seenD := map[string]bool{}, map[string]bool{}
	for i, f := range fields {
		switch {
		case f.Marketo == "":
			return fmt.Errorf("msi fields: field %d: Marketo name is empty", i+1)
		case f.Dataverse == "":
			return fmt.Errorf("msi fields: field %q: Dataverse column is empty", f.Marketo)
		case strings.EqualFold(f.Marketo, "externalPersonId"):
			return fmt.Errorf("msi fields: field %q: externalPersonId is the key, not a value to copy", f.Marketo)
		case seenM[f.Marketo]:
			return fmt.Errorf("msi fields: Marketo field %q is listed twice", f.Marketo)
		case seenD[strings.ToLower(f.Dataverse)]:
			return fmt.Errorf("msi fields: Dataverse column %q is listed twice", f.Dataverse)
		}
		switch f.Type {
		case TypeText, TypeDateTime, TypeNumber:
		default:
			return fmt.Errorf("msi fields: field %q: unknown type %q (want text, datetime or number)", f.Marketo, f.Type)
		}
		seenM[f.Marketo], seenD[strings.ToLower(f.Dataverse)] = true, true
	}
	return nil
}

// canonical renders a Marketo value as the text we compare and store: ""
// for null, dates in RFC 3339 UTC, numbers in shortest decimal form, so that
// "2024-05-01T10:00:00+0000" and "2024-05-01T10:00:00Z", or 3 and 3.0, are
// not mistaken for changes.
func canonical(v any, t Type) string {
	var s string
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		s = strings.TrimSpace(x)
	case json.Number:
		s = x.String()
	case float64:
		s = formatFloat(x)
	case float32:
		s = formatFloat(float64(x))
	case int:
		s = strconv.Itoa(x)
	case int64:
		s = strconv.FormatInt(x, 10)
	case bool:
		s = strconv.FormatBool(x)
	default:
		s = fmt.Sprint(x)
	}
	switch t {
	case TypeDateTime:
		if tm, ok := parseTime(s); ok {
			return tm.Format(time.RFC3339)
		}
	case TypeNumber:
		if f, err := strconv.ParseFloat(s, 64); err == nil {
			return formatFloat(f)
		}
	}
	return s
}

func formatFloat(f float64) string {
	if f == math.Trunc(f) && math.Abs(f) < 1e15 {
		return strconv.FormatInt(int64(f), 10)
	}
	return strconv.FormatFloat(f, 'f', -1, 64)
}

// Marketo writes "Z" but activity dates use "+0000"; accept both.
var timeLayouts = []string{time.RFC3339Nano, "2006-01-02T15:04:05Z0700", "2006-01-02T15:04:05.999Z0700", "2006-01-02"}

func parseTime(s string) (time.Time, bool) {
	for _, l := range timeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t.UTC(), true
		}
	}
	return time.Time{}, false
}

// dataverseValue turns a canonical text back into the JSON value written to
// the column: null for "", a number for number columns.
func dataverseValue(s string, t Type) any {
	if s == "" {
		return nil
	}
	if t == TypeNumber {
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return i
		}
		if f, err := strconv.ParseFloat(s, 64); err == nil {
			return f
		}
	}
	return s
}
