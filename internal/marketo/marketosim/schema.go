package marketosim

import "sort"

// Field describes one field of a simulated Marketo object, as Describe
// reports it.
type Field struct {
	Name string
	// Type is the Marketo data type: string, text, email, phone, url,
	// integer, float, currency, boolean, date, datetime or reference.
	Type   string
	Length int // 0 = no length limit
	// ReadOnly fields are system-managed or computed (id, createdAt, MSI
	// scores); clients cannot write them.
	ReadOnly   bool
	Searchable bool // usable as filterType (and, for leads, as lookupField)
}

// Object names as they appear in the URL path under /rest/v1/.
const (
	objSalesPersons  = "salespersons"
	objCompanies     = "companies"
	objLeads         = "leads"
	objOpportunities = "opportunities"
	objRoles         = "opportunities/roles"
)

// companyFields are the lead fields that belong to the lead's company: a
// linked lead inherits them, and Sync Leads may not set them (1021).
var companyFields = []string{"company", "site", "billingStreet", "billingCity", "billingState",
	"billingCountry", "billingPostalCode", "website", "mainPhone", "annualRevenue",
	"numberOfEmployees", "industry", "sicCode"}

type objSpec struct {
	name          string
	displayName   string
	idField       string // "id" or "marketoGUID"
	dedupe        []string
	fields        []Field
	byName        map[string]*Field
	defaultFields []string
	indexed       map[string]bool
}

func (o *objSpec) add(fs ...Field) {
	for _, f := range fs {
		if _, dup := o.byName[f.Name]; dup {
			continue
		}
		o.fields = append(o.fields, f)
		o.byName[f.Name] = &o.fields[len(o.fields)-1]
	}
	// Re-point the map: appends may have moved the backing array.
	for i := range o.fields {
		o.byName[o.fields[i].Name] = &o.fields[i]
	}
}

func (o *objSpec) searchable() []string {
	var s []string
	for _, f := range o.fields {
		if f.Searchable {
			s = append(s, f.Name)
		}
	}
	sort.Strings(s)
	return s
}

func str(name string, n int) Field { return Field{Name: name, Type: "string", Length: n} }
func key(name string, n int) Field {
	return Field{Name: name, Type: "string", Length: n, Searchable: true}
}

var sysFields = []Field{
	{Name: "createdAt", Type: "datetime", ReadOnly: true},
	{Name: "updatedAt", Type: "datetime", ReadOnly: true},
}

// buildSpecs returns the object catalogue for the options: standard fields,
// the MSI fields (with the configured score field name) and custom fields.
func buildSpecs(o Options) map[string]*objSpec {
	specs := map[string]*objSpec{}
	mk := func(name, display, idField string, dedupe, defaults []string, indexed ...string) *objSpec {
		s := &objSpec{name: name, displayName: display, idField: idField, dedupe: dedupe,
			byName: map[string]*Field{}, defaultFields: defaults, indexed: map[string]bool{}}
		for _, f := range indexed {
			s.indexed[f] = true
		}
		specs[name] = s
		return s
	}

	sp := mk(objSalesPersons, "Sales Person", "id", []string{"externalSalesPersonId"},
		[]string{"id", "externalSalesPersonId", "createdAt", "updatedAt"}, "externalSalesPersonId", "email")
	sp.add(Field{Name: "id", Type: "integer", ReadOnly: true, Searchable: true},
		key("externalSalesPersonId", 255), Field{Name: "email", Type: "email", Length: 255, Searchable: true},
		str("firstName", 255), str("lastName", 255))
	if !o.OmitUnconfirmedFields {
		sp.add(Field{Name: "phone", Type: "phone", Length: 255}, Field{Name: "fax", Type: "phone", Length: 255},
			Field{Name: "mobilePhone", Type: "phone", Length: 255}, str("title", 255))
	}
	sp.add(sysFields...)

	co := mk(objCompanies, "Company", "id", []string{"externalCompanyId"},
		[]string{"id", "externalCompanyId", "createdAt", "updatedAt"}, "externalCompanyId", "externalSalesPersonId", "company")
	co.add(Field{Name: "id", Type: "integer", ReadOnly: true, Searchable: true},
		key("externalCompanyId", 100), str("externalSalesPersonId", 255),
		Field{Name: "company", Type: "string", Length: 255, Searchable: true},
		str("site", 255), Field{Name: "website", Type: "url", Length: 255},
		Field{Name: "mainPhone", Type: "phone", Length: 255}, Field{Name: "annualRevenue", Type: "currency"},
		str("industry", 255))
	if !o.OmitUnconfirmedFields {
		co.add(str("billingStreet", 255), str("billingCity", 255), str("billingState", 255),
			str("billingCountry", 255), str("billingPostalCode", 255),
			Field{Name: "numberOfEmployees", Type: "integer"}, str("sicCode", 40))
	}
	co.add(sysFields...)

	ld := mk(objLeads, "Lead", "id", []string{"email"},
		[]string{"id", "email", "updatedAt", "createdAt", "firstName", "lastName"},
		"email", "externalPersonId", "externalCompanyId", "externalSalesPersonId")
	ld.add(Field{Name: "id", Type: "integer", ReadOnly: true, Searchable: true},
		Field{Name: "email", Type: "email", Length: 255, Searchable: true},
		str("firstName", 255), str("lastName", 255), str("middleName", 255), str("salutation", 255),
		str("title", 255), Field{Name: "phone", Type: "phone", Length: 255},
		Field{Name: "mobilePhone", Type: "phone", Length: 255}, Field{Name: "fax", Type: "phone", Length: 255},
		Field{Name: "address", Type: "text", Length: 2000}, str("city", 255), str("state", 255),
		str("country", 255), str("postalCode", 255), str("department", 255),
		str("leadSource", 255), str("leadStatus", 255), Field{Name: "leadScore", Type: "integer"},
		Field{Name: "unsubscribed", Type: "boolean"}, Field{Name: "doNotCall", Type: "boolean"},
		Field{Name: "emailInvalid", Type: "boolean"},
		// Company fields: inherited from the linked company.
		str("company", 255), str("site", 255), str("billingStreet", 255), str("billingCity", 255),
		str("billingState", 255), str("billingCountry", 255), str("billingPostalCode", 255),
		Field{Name: "website", Type: "url", Length: 255}, Field{Name: "mainPhone", Type: "phone", Length: 255},
		Field{Name: "annualRevenue", Type: "currency"}, Field{Name: "numberOfEmployees", Type: "integer"},
		str("industry", 255), str("sicCode", 40),
		// MSI non-native keys.
		key("externalPersonId", 255), key("externalSalesPersonId", 255), key("externalCompanyId", 100),
		// MSI computed fields: read-only.
		Field{Name: "msiLastInterestingMomentType", Type: "string", Length: 255, ReadOnly: true},
		Field{Name: "msiLastInterestingMomentDate", Type: "datetime", ReadOnly: true},
		Field{Name: "msiLastInterestingMomentDesc", Type: "text", Length: 2000, ReadOnly: true},
		Field{Name: "msiLastInterestingMomentSource", Type: "string", Length: 255, ReadOnly: true},
		Field{Name: "priority", Type: "integer", ReadOnly: true},
		Field{Name: "relativeUrgency", Type: "integer", ReadOnly: true},
		Field{Name: "urgency", Type: "float", ReadOnly: true},
		Field{Name: o.ScoreField, Type: "integer", ReadOnly: true})
	ld.add(sysFields...)

	op := mk(objOpportunities, "Opportunity", "marketoGUID", []string{"externalOpportunityId"},
		[]string{"marketoGUID", "externalOpportunityId", "createdAt", "updatedAt"},
		"externalOpportunityId", "externalSalesPersonId", "externalCompanyId")
	op.add(Field{Name: "marketoGUID", Type: "string", Length: 36, ReadOnly: true, Searchable: true},
		key("externalOpportunityId", 50), str("name", 255), Field{Name: "description", Type: "text", Length: 2000},
		str("type", 255), str("stage", 255), Field{Name: "amount", Type: "currency"}, str("source", 255),
		str("externalCompanyId", 100), str("externalSalesPersonId", 255),
		Field{Name: "externalCreatedDate", Type: "datetime"})
	if !o.OmitUnconfirmedFields {
		op.add(Field{Name: "closeDate", Type: "date"}, Field{Name: "isClosed", Type: "boolean"},
			Field{Name: "isWon", Type: "boolean"}, Field{Name: "expectedRevenue", Type: "currency"},
			Field{Name: "probability", Type: "integer"}, str("fiscalQuarter", 255),
			Field{Name: "fiscalYear", Type: "integer"}, str("nextStep", 255), str("leadSource", 255),
			Field{Name: "lastActivityDate", Type: "datetime"})
	}
	op.add(sysFields...)

	ro := mk(objRoles, "Opportunity Role", "marketoGUID", []string{"externalOpportunityId", "leadId", "role"},
		[]string{"marketoGUID", "externalOpportunityId", "leadId", "role", "createdAt", "updatedAt"},
		"externalOpportunityId", "leadId")
	ro.add(Field{Name: "marketoGUID", Type: "string", Length: 36, ReadOnly: true, Searchable: true},
		key("externalOpportunityId", 50), Field{Name: "leadId", Type: "integer", Searchable: true},
		str("role", 50), Field{Name: "isPrimary", Type: "boolean"},
		Field{Name: "externalCreatedDate", Type: "datetime"})
	ro.add(sysFields...)

	for obj, fs := range o.CustomFields {
		if s, ok := specs[obj]; ok {
			s.add(fs...)
			for _, f := range fs {
				if f.Searchable {
					s.indexed[f.Name] = true
				}
			}
		}
	}
	return specs
}

// msiFields are the lead fields the simulator computes.
func msiFieldNames(scoreField string) []string {
	return []string{"msiLastInterestingMomentType", "msiLastInterestingMomentDate",
		"msiLastInterestingMomentDesc", "msiLastInterestingMomentSource", "priority",
		"relativeUrgency", "urgency", scoreField}
}
