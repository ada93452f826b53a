package dataverse

import (
	"slices"

	"github.com/msisync/msisync/internal/event"
)

// defaultColumns are the columns the default field mapping reads per
// entity (keep in step with internal/syncer/mapping). The syncer's mapping
// is authoritative: pass mapping.Columns to StepsFor; DefaultSteps is the
// fallback when no mapping is at hand.
var defaultColumns = map[string][]string{
	event.EntitySystemUser: {"systemuserid", "firstname", "lastname", "fullname", "internalemailaddress", "domainname",
		"title", "address1_telephone1", "isdisabled", "azureactivedirectoryobjectid"},
	event.EntityAccount: {"accountid", "name", "websiteurl", "industrycode", "revenue", "numberofemployees", "telephone1",
		"address1_line1", "address1_city", "address1_stateorprovince", "address1_postalcode", "address1_country",
		"parentaccountid", "ownerid", "statecode"},
	event.EntityContact: {"contactid", "firstname", "lastname", "fullname", "emailaddress1", "jobtitle", "telephone1", "mobilephone",
		"address1_line1", "address1_city", "address1_stateorprovince", "address1_postalcode", "address1_country",
		"parentcustomerid", "originatingleadid", "ownerid", "statecode"},
	event.EntityLead: {"leadid", "firstname", "lastname", "fullname", "emailaddress1", "companyname", "jobtitle", "telephone1",
		"mobilephone", "address1_line1", "address1_city", "address1_stateorprovince", "address1_postalcode", "address1_country",
		"parentaccountid", "parentcontactid", "customerid", "qualifyingopportunityid", "ownerid", "statecode", "statuscode"},
	event.EntityOpportunity: {"opportunityid", "name", "estimatedvalue", "estimatedclosedate", "actualclosedate", "stepname",
		"description", "customerid", "parentaccountid", "parentcontactid", "originatingleadid", "ownerid", "statecode", "statuscode"},
	event.EntityConnection: {"connectionid", "record1id", "record2id", "record1roleid", "record2roleid", "ismaster",
		"relatedconnectionid", "statecode", "effectivestart", "effectiveend"},
}

// DefaultColumns returns the default mapped columns of an entity.
func DefaultColumns(entity string) []string { return slices.Clone(defaultColumns[entity]) }

// notFiltering are columns an Update step must not filter on: system and
// computed columns that change on every write (or never by themselves).
var notFiltering = map[string]bool{"modifiedon": true, "modifiedby": true, "versionnumber": true, "fullname": true,
	"ismaster": true, "relatedconnectionid": true}

// StepsFor builds the step specs for the synced entities from the columns
// the syncer maps (columns(entity)): Create, Update (filtering on the mapped
// columns, minus primary keys, computed columns and anything in
// writeBack) and Delete for each entity; Assign for account, contact, lead
// and opportunity; SetState for lead and opportunity; QualifyLead on lead;
// Merge on account, contact and lead.
// Post images carry the mapped columns; Delete (and connection Update) get
// a pre image. writeBack lists the MSI write-back columns, which must never
// trigger a step (that would loop).
func StepsFor(columns func(entity string) []string, writeBack []string) []StepSpec {
	var out []StepSpec
	for _, ent := range event.SyncedEntities {
		cols := columns(ent)
		var img, filter []string
		for _, c := range cols {
			if slices.Contains(writeBack, c) || slices.Contains(img, c) {
				continue
			}
			img = append(img, c)
			if c != ent+"id" && !notFiltering[c] {
				filter = append(filter, c)
			}
		}
		out = append(out,
			StepSpec{Entity: ent, Message: event.MessageCreate, PostImageAttributes: img},
			StepSpec{Entity: ent, Message: event.MessageUpdate, FilteringAttributes: filter, PostImageAttributes: img},
			StepSpec{Entity: ent, Message: event.MessageDelete, PreImageAttributes: img})
		if ent == event.EntityConnection {
			out[len(out)-2].PreImageAttributes = img
		}
		switch ent {
		case event.EntityAccount, event.EntityContact, event.EntityLead, event.EntityOpportunity:
			out = append(out, StepSpec{Entity: ent, Message: event.MessageAssign, PostImageAttributes: img})
		}
		switch ent {
		case event.EntityLead, event.EntityOpportunity:
			out = append(out, StepSpec{Entity: ent, Message: event.MessageSetState, PostImageAttributes: img})
		}
		if ent == event.EntityLead {
			out = append(out, StepSpec{Entity: ent, Message: event.MessageQualifyLead})
		}
		switch ent {
		case event.EntityAccount, event.EntityContact, event.EntityLead:
			// Merge: the master is re-synced and the subordinate retired.
			// No images: whether Merge supports them is unconfirmed, and the
			// worker re-reads the master.
			out = append(out, StepSpec{Entity: ent, Message: event.MessageMerge})
		}
	}
	return out
}

// DefaultSteps are StepsFor the default columns, with the default MSI
// write-back columns (msi_*) excluded.
func DefaultSteps() []StepSpec {
	return StepsFor(DefaultColumns, []string{"msi_lastinterestingmomenttype", "msi_lastinterestingmomentdate",
		"msi_lastinterestingmomentdesc", "msi_lastinterestingmomentsource", "msi_priority", "msi_relativeurgency", "msi_relativescore"})
}
