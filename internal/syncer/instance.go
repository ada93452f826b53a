package syncer

import (
	"context"
	"fmt"
	"strings"

	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/marketo/marketotype"
)

// Describer describes a Marketo object's schema (the Marketo client
// satisfies it).
type Describer interface {
	Describe(ctx context.Context, obj marketotype.Object) (*marketotype.Description, error)
}

// instanceObjects lists, per Marketo object in MSI's order, the Dataverse
// entities mapped onto it and the fields the syncer sets itself.
var instanceObjects = []struct {
	obj      marketotype.Object
	entities []string
	keys     []string
}{
	{marketotype.SalesPersons, []string{event.EntitySystemUser}, []string{"externalSalesPersonId"}},
	{marketotype.Companies, []string{event.EntityAccount}, []string{"externalCompanyId", "externalSalesPersonId"}},
	{marketotype.Leads, []string{event.EntityContact, event.EntityLead}, []string{"externalPersonId", "externalCompanyId", "externalSalesPersonId"}},
	{marketotype.Opportunities, []string{event.EntityOpportunity}, []string{"externalOpportunityId", "externalCompanyId", "externalSalesPersonId"}},
	{marketotype.Roles, []string{event.EntityConnection}, []string{"externalOpportunityId", "leadId", "role"}},
}

// MissingField is a field the syncer would write that the instance lacks.
type MissingField struct {
	Object marketotype.Object
	Field  string
	// Column is the mapped Dataverse column (entity.column), "" for a key
	// the syncer sets itself (which only Marketo's configuration can add).
	Column string
}

// InstanceError names every mapped field the Marketo instance lacks, with
// the mapping setting that removes it.
type InstanceError struct{ Missing []MissingField }

func (e *InstanceError) Error() string {
	var b strings.Builder
	b.WriteString("marketo instance lacks fields the sync writes:")
	for _, m := range e.Missing {
		if m.Column == "" {
			fmt.Fprintf(&b, " %s.%s (set by msisync itself: it comes with the MSI Non-Native feature, which Marketo Support enables);", m.Object, m.Field)
			continue
		}
		entity, column, _ := strings.Cut(m.Column, ".")
		fmt.Fprintf(&b, " %s.%s (mapped from %s; create the field in Marketo, or remove it with MSISYNC_MAPPING: entities: {%s: {fields: [{column: %s, field: \"\"}]}});",
			m.Object, m.Field, m.Column, entity, column)
	}
	return strings.TrimSuffix(b.String(), ";")
}

// Class is ClassConfig.
func (e *InstanceError) Class() marketotype.Class { return marketotype.ClassConfig }

// CheckInstance describes every object the syncer writes (sales persons,
// companies, leads, opportunities, roles) and returns an *InstanceError
// naming each field the mapping or the syncer would write that the instance
// lacks, before the first write dead-letters a record for it. A Describe
// error is returned as is (a custom service may lack the schema
// permission yet be able to sync).
func (s *Syncer) CheckInstance(ctx context.Context, d Describer) error {
	var missing []MissingField
	for _, o := range instanceObjects {
		desc, err := d.Describe(ctx, o.obj)
		if err != nil {
			return fmt.Errorf("syncer: check instance: describe %s: %w", o.obj, err)
		}
		seen := map[string]bool{}
		check := func(field, column string) {
			if field == "" || seen[field] {
				return
			}
			seen[field] = true
			if _, ok := desc.Field(field); !ok {
				missing = append(missing, MissingField{Object: o.obj, Field: field, Column: column})
			}
		}
		for _, k := range o.keys {
			check(k, "")
		}
		for _, entity := range o.entities {
			for _, f := range s.cfg.Mapping.Fields(entity) {
				if o.obj == marketotype.Roles && f.Field == "role" {
					continue // a key, checked above
				}
				check(f.Field, entity+"."+f.Column)
			}
		}
	}
	if len(missing) > 0 {
		return &InstanceError{Missing: missing}
	}
	return nil
}
