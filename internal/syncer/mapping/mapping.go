// Package mapping turns Dataverse columns into Marketo fields. It holds the
// defaults for standard columns, reads a YAML file that changes or adds
// fields (custom columns, option-set labels), and knows which columns the MSI
// write-back owns (for loop prevention) and which columns each entity needs
// (for webhook filtering attributes and re-reads).
package mapping

import (
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/msisync/msisync/internal/event"
	"go.yaml.in/yaml/v3"
)

// Field types: how a column value becomes a Marketo value.
const (
	TypeText     = "text"     // strings as is, numbers in decimal, refs by id
	TypeLabel    = "label"    // option set: Labels, else the event's formatted label, else the number
	TypeNumber   = "number"   // float
	TypeInteger  = "integer"  // whole number
	TypeBool     = "bool"     // true/false
	TypeDate     = "date"     // YYYY-MM-DD
	TypeDateTime = "datetime" // RFC 3339
	TypeRefName  = "refname"  // a lookup's display name (e.g. a connection role)
	TypeClosed   = "closed"   // statecode != 0
	TypeWon      = "won"      // statecode == 1
)

var validTypes = []string{TypeText, TypeLabel, TypeNumber, TypeInteger, TypeBool, TypeDate, TypeDateTime, TypeRefName, TypeClosed, TypeWon}

// Field maps one Dataverse column onto one Marketo field.
type Field struct {
	Column string         `yaml:"column"`
	Field  string         `yaml:"field"`
	Type   string         `yaml:"type,omitempty"`
	Labels map[int]string `yaml:"labels,omitempty"`
}

// Structural columns the syncer reads itself (ids, owners, parents, state,
// merged: a record merged into another is retired, however it is read),
// per entity. They are not mapped to plain fields but must be read and
// filtered on.
var structural = map[string][]string{
	event.EntitySystemUser:  {"systemuserid", "isdisabled"},
	event.EntityAccount:     {"accountid", "ownerid", "statecode", "merged"},
	event.EntityContact:     {"contactid", "ownerid", "parentcustomerid", "originatingleadid", "statecode", "merged"},
	event.EntityLead:        {"leadid", "ownerid", "parentaccountid", "statecode", "statuscode", "merged"},
	event.EntityOpportunity: {"opportunityid", "ownerid", "parentaccountid", "customerid", "statecode", "statuscode"},
	event.EntityConnection:  {"connectionid", "record1id", "record2id", "record2roleid", "ismaster", "statecode"},
}

// Mapping is the full field mapping.
type Mapping struct {
	entities map[string][]Field
	// writeBack lists the lead/contact columns the MSI write-back writes.
	writeBack []string
}

// DefaultWriteBack are the Dataverse columns the MSI write-back fills by
// default (the MSI solution's real names are unconfirmed; override in YAML).
var DefaultWriteBack = []string{
	"msi_lastinterestingmomenttype", "msi_lastinterestingmomentdate", "msi_lastinterestingmomentdesc",
	"msi_lastinterestingmomentsource", "msi_priority", "msi_relativeurgency", "msi_relativescore",
}

func person() []Field {
	return []Field{
		{Column: "emailaddress1", Field: "email", Type: TypeText},
		{Column: "firstname", Field: "firstName", Type: TypeText},
		{Column: "lastname", Field: "lastName", Type: TypeText},
		{Column: "jobtitle", Field: "title", Type: TypeText},
		{Column: "telephone1", Field: "phone", Type: TypeText},
		{Column: "mobilephone", Field: "mobilePhone", Type: TypeText},
		{Column: "address1_line1", Field: "address", Type: TypeText},
		{Column: "address1_city", Field: "city", Type: TypeText},
		{Column: "address1_stateorprovince", Field: "state", Type: TypeText},
		{Column: "address1_postalcode", Field: "postalCode", Type: TypeText},
		{Column: "address1_country", Field: "country", Type: TypeText},
	}
}

// Default returns the built-in mapping for standard columns.
func Default() *Mapping {
	lead := append(person(), Field{Column: "companyname", Field: "company", Type: TypeText})
	return &Mapping{
		entities: map[string][]Field{
			event.EntitySystemUser: {
				{Column: "internalemailaddress", Field: "email", Type: TypeText},
				{Column: "firstname", Field: "firstName", Type: TypeText},
				{Column: "lastname", Field: "lastName", Type: TypeText},
				{Column: "title", Field: "title", Type: TypeText},
				{Column: "address1_telephone1", Field: "phone", Type: TypeText},
			},
			event.EntityAccount: {
				{Column: "name", Field: "company", Type: TypeText},
				{Column: "websiteurl", Field: "website", Type: TypeText},
				{Column: "industrycode", Field: "industry", Type: TypeLabel},
				{Column: "revenue", Field: "annualRevenue", Type: TypeNumber},
				{Column: "numberofemployees", Field: "numberOfEmployees", Type: TypeInteger},
				{Column: "address1_line1", Field: "billingStreet", Type: TypeText},
				{Column: "address1_city", Field: "billingCity", Type: TypeText},
				{Column: "address1_stateorprovince", Field: "billingState", Type: TypeText},
				{Column: "address1_postalcode", Field: "billingPostalCode", Type: TypeText},
				{Column: "address1_country", Field: "billingCountry", Type: TypeText},
			},
			event.EntityContact: person(),
			event.EntityLead:    lead,
			event.EntityOpportunity: {
				{Column: "name", Field: "name", Type: TypeText},
				{Column: "estimatedvalue", Field: "amount", Type: TypeNumber},
				{Column: "estimatedclosedate", Field: "closeDate", Type: TypeDate},
				{Column: "statecode", Field: "isClosed", Type: TypeClosed},
				{Column: "statecode", Field: "isWon", Type: TypeWon},
				{Column: "stepname", Field: "stage", Type: TypeText},
				{Column: "description", Field: "description", Type: TypeText},
			},
			event.EntityConnection: {
				{Column: "record2roleid", Field: "role", Type: TypeRefName},
			},
		},
		writeBack: slices.Clone(DefaultWriteBack),
	}
}

// Fields returns the field mappings of an entity.
func (m *Mapping) Fields(entity string) []Field { return m.entities[entity] }

// WriteBack returns the columns the MSI write-back owns.
func (m *Mapping) WriteBack() []string { return slices.Clone(m.writeBack) }

// AddWriteBack adds columns to the write-back set (main passes the MSI
// write-back's configured columns, so loop prevention and the webhook steps'
// filtering attributes follow MSISYNC_MSI_FIELDS).
func (m *Mapping) AddWriteBack(columns ...string) {
	for _, c := range columns {
		if c = strings.ToLower(strings.TrimSpace(c)); c != "" && !slices.Contains(m.writeBack, c) {
			m.writeBack = append(m.writeBack, c)
		}
	}
}

// IsWriteBack reports whether column is written by the MSI write-back.
func (m *Mapping) IsWriteBack(column string) bool { return slices.Contains(m.writeBack, column) }

// Columns returns the Dataverse columns the syncer needs for an entity:
// mapped columns plus structural ones (ids, owner, parents, state), sorted.
// Use it for webhook filtering attributes and re-reads.
func (m *Mapping) Columns(entity string) []string {
	set := map[string]bool{}
	for _, c := range structural[entity] {
		set[c] = true
	}
	for _, f := range m.entities[entity] {
		set[f.Column] = true
	}
	out := make([]string, 0, len(set))
	for c := range set {
		out = append(out, c)
	}
	slices.Sort(out)
	return out
}

// Apply maps the attributes of a record onto Marketo fields. Only columns
// present in attrs are written (partial updates leave other fields alone); a
// cleared column is written as nil, which Marketo stores as null.
func (m *Mapping) Apply(entity string, attrs event.Attributes, formatted map[string]string) map[string]any {
	out := map[string]any{}
	for _, f := range m.entities[entity] {
		v, ok := attrs[f.Column]
		if !ok {
			continue
		}
		out[f.Field] = f.convert(v, formatted[f.Column])
	}
	return out
}

func (f Field) convert(v event.Value, formatted string) any {
	if v.IsNull() {
		switch f.Type {
		case TypeClosed, TypeWon:
			return false
		}
		return nil
	}
	switch f.Type {
	case TypeLabel:
		if i, ok := v.Int(); ok {
			if l, ok := f.Labels[int(i)]; ok {
				return l
			}
		}
		if formatted != "" {
			return formatted
		}
		return v.Text()
	case TypeNumber:
		if x, ok := v.Float(); ok && !math.IsNaN(x) {
			return x
		}
		return nil
	case TypeInteger:
		if i, ok := v.Int(); ok {
			return i
		}
		return nil
	case TypeBool:
		if v.Kind == event.KindBool {
			return v.Bool
		}
		b, err := strconv.ParseBool(v.Text())
		if err != nil {
			return nil
		}
		return b
	case TypeDate:
		if t, ok := v.TimeValue(); ok {
			return t.Format("2006-01-02")
		}
		return nil
	case TypeDateTime:
		if t, ok := v.TimeValue(); ok {
			return t.Format("2006-01-02T15:04:05Z")
		}
		return nil
	case TypeRefName:
		if r, ok := v.Reference(); ok {
			if r.Name != "" {
				return r.Name
			}
			if formatted != "" && !event.IsGUID(formatted) {
				return formatted
			}
			if l, ok := f.Labels[0]; ok {
				return l
			}
			return nil // never the id: the syncer finds the name or requeues the record first
		}
		return v.Text()
	case TypeClosed:
		i, ok := v.Int()
		return ok && i != 0
	case TypeWon:
		i, ok := v.Int()
		return ok && i == 1
	}
	return v.Text()
}

// file is the YAML format of MSISYNC_MAPPING.
//
//	writeBack: [msi_priority, ...]     # replaces the write-back columns
//	entities:
//	  contact:
//	    replace: false                 # true drops the defaults of this entity
//	    fields:
//	      - {column: new_segment, field: segment, type: label, labels: {100000000: Enterprise}}
//	      - {column: telephone1, field: ""}   # an empty field removes the default
type file struct {
	WriteBack *[]string             `yaml:"writeBack"`
	Entities  map[string]entityFile `yaml:"entities"`
}

type entityFile struct {
	Replace bool        `yaml:"replace"`
	Fields  []fieldNode `yaml:"fields"`
}

type fieldNode struct {
	Field
	line int
}

func (f *fieldNode) UnmarshalYAML(n *yaml.Node) error {
	f.line = n.Line
	type plain Field
	var p plain
	if err := n.Decode(&p); err != nil {
		return err
	}
	f.Field = Field(p)
	return nil
}

// Load reads a YAML mapping file over the defaults.
func Load(path string) (*Mapping, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("mapping: read %s: %w", path, err)
	}
	m, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("mapping: %s: %w", path, err)
	}
	return m, nil
}

// Parse reads a YAML mapping document over the defaults.
func Parse(b []byte) (*Mapping, error) {
	var f file
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && err.Error() != "EOF" {
		return nil, err
	}
	m := Default()
	if f.WriteBack != nil {
		m.writeBack = slices.Clone(*f.WriteBack)
	}
	for entity, ef := range f.Entities {
		if !event.IsSyncedEntity(entity) {
			return nil, fmt.Errorf("entities: unknown entity %q (want one of %s)", entity, strings.Join(event.SyncedEntities, ", "))
		}
		fields := m.entities[entity]
		if ef.Replace {
			fields = nil
		}
		for _, fn := range ef.Fields {
			fd := fn.Field
			where := fmt.Sprintf("line %d: entities.%s", fn.line, entity)
			if fd.Column == "" {
				return nil, fmt.Errorf("%s: field mapping needs a column", where)
			}
			fd.Column = strings.ToLower(fd.Column)
			if fd.Type == "" {
				fd.Type = TypeText
				if len(fd.Labels) > 0 {
					fd.Type = TypeLabel
				}
			}
			if !slices.Contains(validTypes, fd.Type) {
				return nil, fmt.Errorf("%s: column %s: unknown type %q (want one of %s)", where, fd.Column, fd.Type, strings.Join(validTypes, ", "))
			}
			if len(fd.Labels) > 0 && fd.Type != TypeLabel {
				return nil, fmt.Errorf("%s: column %s: labels need type label, not %q", where, fd.Column, fd.Type)
			}
			// A column already mapped is replaced; an empty field removes it.
			fields = slices.DeleteFunc(fields, func(x Field) bool { return x.Column == fd.Column })
			if fd.Field == "" {
				continue
			}
			for _, x := range fields {
				if x.Field == fd.Field {
					return nil, fmt.Errorf("%s: column %s: Marketo field %q is already mapped from column %s", where, fd.Column, fd.Field, x.Column)
				}
			}
			fields = append(fields, fd)
		}
		m.entities[entity] = fields
	}
	return m, nil
}
