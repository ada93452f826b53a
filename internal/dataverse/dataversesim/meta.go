package dataversesim

import "strings"

// colKind is the Dataverse type of a column, which decides how it is read
// from Web API JSON and written to the Web API and to webhook payloads.
type colKind int

const (
	kString colKind = iota
	kInt
	kDecimal
	kBool
	kGUID
	kLookup
	kOption
	kMoney
	kDate
	kMultiOption
)

type column struct {
	kind    colKind
	targets []string       // lookups: entities the column may point to
	labels  map[int]string // choices: display labels for FormattedValues
	hidden  bool           // write-only (serviceendpoint.authvalue)
}

type entityMeta struct {
	logical  string
	set      string
	idCol    string
	nameCol  string
	typeCode int // object type code, for record*objecttypecode
	cols     map[string]column
	// state → allowed statuses; the first one is the default.
	states map[int][]int
	// hasOwner adds ownerid/owninguser/owningbusinessunit.
	hasOwner bool
	// system tables take no webhooks and have no created/modified columns set by users.
	system bool
}

var (
	stateLabels     = map[int]string{0: "Active", 1: "Inactive"}
	statusLabels    = map[int]string{1: "Active", 2: "Inactive"}
	leadStateLabels = map[int]string{0: "Open", 1: "Qualified", 2: "Disqualified"}
	leadStatus      = map[int]string{1: "New", 2: "Contacted", 3: "Qualified", 4: "Lost", 5: "Cannot Contact", 6: "No Longer Interested", 7: "Canceled"}
	oppStateLabels  = map[int]string{0: "Open", 1: "Won", 2: "Lost"}
	oppStatus       = map[int]string{1: "In Progress", 2: "On Hold", 3: "Won", 4: "Canceled", 5: "Out-Sold"}
	objectTypes     = map[int]string{1: "Account", 2: "Contact", 3: "Opportunity", 4: "Lead", 8: "User", 9: "Team"}
	roleCategories  = map[int]string{1: "Business", 2: "Family", 3: "Social", 4: "Sales", 5: "Other", 1000: "Stakeholder", 1001: "Sales Team", 1002: "Service"}
	industryLabels  = map[int]string{1: "Accounting", 7: "Consulting", 12: "Financial", 19: "Manufacturing", 25: "Retail", 33: "Software"}
	leadSources     = map[int]string{1: "Advertisement", 2: "Employee Referral", 3: "External Referral", 4: "Partner", 8: "Web", 10: "Other"}
)

func str() column                         { return column{kind: kString} }
func lookup(targets ...string) column     { return column{kind: kLookup, targets: targets} }
func option(labels map[int]string) column { return column{kind: kOption, labels: labels} }

func addressCols(m map[string]column) {
	for _, c := range []string{"line1", "line2", "city", "stateorprovince", "postalcode", "country", "telephone1"} {
		m["address1_"+c] = str()
	}
	m["address1_composite"] = str()
}

// entities is the schema the simulator serves.
var entities = map[string]*entityMeta{}

// setToEntity maps entity set names to logical names.
var setToEntity = map[string]string{}

func register(m *entityMeta) {
	m.cols[m.idCol] = column{kind: kGUID}
	if !m.system {
		for _, c := range []string{"createdon", "modifiedon", "overriddencreatedon"} {
			m.cols[c] = column{kind: kDate}
		}
		for _, c := range []string{"createdby", "modifiedby", "createdonbehalfby", "modifiedonbehalfby"} {
			m.cols[c] = lookup("systemuser")
		}
	} else {
		m.cols["createdon"] = column{kind: kDate}
		m.cols["modifiedon"] = column{kind: kDate}
	}
	m.cols["versionnumber"] = column{kind: kInt}
	if m.hasOwner {
		m.cols["ownerid"] = lookup("systemuser", "team")
		m.cols["owninguser"] = lookup("systemuser")
		m.cols["owningteam"] = lookup("team")
		m.cols["owningbusinessunit"] = lookup("businessunit")
	}
	entities[m.logical] = m
	setToEntity[m.set] = m.logical
}

func init() {
	register(&entityMeta{logical: "systemuser", set: "systemusers", idCol: "systemuserid", nameCol: "fullname", typeCode: 8,
		cols: map[string]column{
			"firstname": str(), "lastname": str(), "fullname": str(), "internalemailaddress": str(), "domainname": str(),
			"isdisabled": {kind: kBool}, "azureactivedirectoryobjectid": {kind: kGUID}, "businessunitid": lookup("businessunit"),
			"title": str(), "mobilephone": str(), "address1_telephone1": str(), "applicationid": {kind: kGUID},
		}})
	acc := map[string]column{
		"name": str(), "accountnumber": str(), "parentaccountid": lookup("account"), "primarycontactid": lookup("contact"),
		"statecode": option(stateLabels), "statuscode": option(statusLabels), "telephone1": str(), "websiteurl": str(),
		"emailaddress1": str(), "industrycode": option(industryLabels), "numberofemployees": {kind: kInt},
		"revenue": {kind: kMoney}, "revenue_base": {kind: kMoney}, "sic": str(), "description": str(), "tickersymbol": str(),
		"transactioncurrencyid": lookup("transactioncurrency"), "exchangerate": {kind: kDecimal}, "originatingleadid": lookup("lead"),
		"merged": {kind: kBool}, "masterid": lookup("account"),
	}
	addressCols(acc)
	register(&entityMeta{logical: "account", set: "accounts", idCol: "accountid", nameCol: "name", typeCode: 1, cols: acc, hasOwner: true,
		states: map[int][]int{0: {1}, 1: {2}}})
	con := map[string]column{
		"firstname": str(), "lastname": str(), "fullname": str(), "yomifullname": str(), "emailaddress1": str(), "emailaddress2": str(),
		"jobtitle": str(), "telephone1": str(), "mobilephone": str(), "department": str(), "salutation": str(),
		"parentcustomerid": lookup("account", "contact"), "originatingleadid": lookup("lead"),
		"statecode": option(stateLabels), "statuscode": option(statusLabels), "donotemail": {kind: kBool},
		"birthdate": {kind: kDate}, "description": str(), "websiteurl": str(),
		"merged": {kind: kBool}, "masterid": lookup("contact"),
	}
	addressCols(con)
	register(&entityMeta{logical: "contact", set: "contacts", idCol: "contactid", nameCol: "fullname", typeCode: 2, cols: con, hasOwner: true,
		states: map[int][]int{0: {1}, 1: {2}}})
	lead := map[string]column{
		"firstname": str(), "lastname": str(), "fullname": str(), "yomifullname": str(), "emailaddress1": str(), "companyname": str(),
		"jobtitle": str(), "telephone1": str(), "mobilephone": str(), "subject": str(), "websiteurl": str(), "description": str(),
		"parentaccountid": lookup("account"), "parentcontactid": lookup("contact"), "customerid": lookup("account", "contact"),
		"qualifyingopportunityid": lookup("opportunity"), "statecode": option(leadStateLabels), "statuscode": option(leadStatus),
		"leadsourcecode": option(leadSources), "industrycode": option(industryLabels), "numberofemployees": {kind: kInt},
		"revenue": {kind: kMoney}, "donotemail": {kind: kBool}, "transactioncurrencyid": lookup("transactioncurrency"), "exchangerate": {kind: kDecimal},
		"merged": {kind: kBool}, "masterid": lookup("lead"),
	}
	addressCols(lead)
	register(&entityMeta{logical: "lead", set: "leads", idCol: "leadid", nameCol: "fullname", typeCode: 4, cols: lead, hasOwner: true,
		states: map[int][]int{0: {1, 2}, 1: {3}, 2: {4, 5, 6, 7}}})
	register(&entityMeta{logical: "opportunity", set: "opportunities", idCol: "opportunityid", nameCol: "name", typeCode: 3, hasOwner: true,
		cols: map[string]column{
			"name": str(), "customerid": lookup("account", "contact"), "parentaccountid": lookup("account"), "parentcontactid": lookup("contact"),
			"estimatedvalue": {kind: kMoney}, "estimatedvalue_base": {kind: kMoney}, "actualvalue": {kind: kMoney},
			"estimatedclosedate": {kind: kDate}, "actualclosedate": {kind: kDate}, "closeprobability": {kind: kInt},
			"statecode": option(oppStateLabels), "statuscode": option(oppStatus), "originatingleadid": lookup("lead"),
			"stepname": str(), "description": str(), "transactioncurrencyid": lookup("transactioncurrency"), "exchangerate": {kind: kDecimal},
		},
		states: map[int][]int{0: {1, 2}, 1: {3}, 2: {4, 5}}})
	register(&entityMeta{logical: "connection", set: "connections", idCol: "connectionid", nameCol: "name", typeCode: 3234, hasOwner: true,
		cols: map[string]column{
			"name":      str(),
			"record1id": lookup("opportunity", "account", "contact", "lead", "systemuser"), "record2id": lookup("contact", "account", "opportunity", "lead", "systemuser"),
			"record1roleid": lookup("connectionrole"), "record2roleid": lookup("connectionrole"),
			"record1objecttypecode": option(objectTypes), "record2objecttypecode": option(objectTypes),
			"ismaster": {kind: kBool}, "relatedconnectionid": lookup("connection"), "statecode": option(stateLabels), "statuscode": option(statusLabels),
			"effectivestart": {kind: kDate}, "effectiveend": {kind: kDate}, "description": str(),
		},
		states: map[int][]int{0: {1}, 1: {2}}})
	register(&entityMeta{logical: "connectionrole", set: "connectionroles", idCol: "connectionroleid", nameCol: "name", typeCode: 3231,
		cols: map[string]column{"name": str(), "category": option(roleCategories), "description": str(),
			"statecode": option(stateLabels), "statuscode": option(statusLabels)},
		states: map[int][]int{0: {1}, 1: {2}}, system: true})

	// Registration tables.
	register(&entityMeta{logical: "serviceendpoint", set: "serviceendpoints", idCol: "serviceendpointid", nameCol: "name", system: true,
		cols: map[string]column{"name": str(), "description": str(), "url": str(), "authvalue": {kind: kString, hidden: true},
			"contract": {kind: kOption}, "authtype": {kind: kOption}, "messageformat": {kind: kOption}, "userclaim": {kind: kOption},
			"connectionmode": {kind: kOption}, "namespaceaddress": str(), "path": str(), "solutionnamespace": str(), "saskeyname": str(),
			"saskey": {kind: kString, hidden: true}, "sastoken": {kind: kString, hidden: true}, "namespaceformat": {kind: kOption}}})
	register(&entityMeta{logical: "sdkmessage", set: "sdkmessages", idCol: "sdkmessageid", nameCol: "name", system: true,
		cols: map[string]column{"name": str(), "categoryname": str(), "isprivate": {kind: kBool}}})
	register(&entityMeta{logical: "sdkmessagefilter", set: "sdkmessagefilters", idCol: "sdkmessagefilterid", nameCol: "name", system: true,
		cols: map[string]column{"name": str(), "sdkmessageid": lookup("sdkmessage"), "primaryobjecttypecode": str(),
			"secondaryobjecttypecode": str(), "iscustomprocessingstepallowed": {kind: kBool}, "isvisible": {kind: kBool}}})
	register(&entityMeta{logical: "sdkmessageprocessingstep", set: "sdkmessageprocessingsteps", idCol: "sdkmessageprocessingstepid", nameCol: "name", system: true,
		cols: map[string]column{"name": str(), "description": str(), "configuration": str(), "filteringattributes": str(),
			"mode": {kind: kOption}, "stage": {kind: kOption}, "rank": {kind: kInt}, "supporteddeployment": {kind: kOption},
			"invocationsource": {kind: kOption}, "asyncautodelete": {kind: kBool}, "statecode": option(map[int]string{0: "Enabled", 1: "Disabled"}),
			"statuscode": option(map[int]string{1: "Enabled", 2: "Disabled"}), "eventhandler": lookup("serviceendpoint", "plugintype"),
			"sdkmessageid": lookup("sdkmessage"), "sdkmessagefilterid": lookup("sdkmessagefilter"), "impersonatinguserid": lookup("systemuser"),
			"canbebypassed": {kind: kBool}, "canusereadonlyconnection": {kind: kBool}},
		states: map[int][]int{0: {1}, 1: {2}}})
	register(&entityMeta{logical: "sdkmessageprocessingstepimage", set: "sdkmessageprocessingstepimages", idCol: "sdkmessageprocessingstepimageid", nameCol: "name", system: true,
		cols: map[string]column{"name": str(), "entityalias": str(), "imagetype": {kind: kOption}, "messagepropertyname": str(),
			"attributes": str(), "description": str(), "sdkmessageprocessingstepid": lookup("sdkmessageprocessingstep")}})
	register(&entityMeta{logical: "asyncoperation", set: "asyncoperations", idCol: "asyncoperationid", nameCol: "name", system: true,
		cols: map[string]column{"name": str(), "message": str(), "friendlymessage": str(), "errorcode": {kind: kInt},
			"operationtype": {kind: kOption}, "statecode": {kind: kOption}, "statuscode": {kind: kOption}, "completedon": {kind: kDate},
			"startedon": {kind: kDate}, "owningextensionid": lookup("sdkmessageprocessingstep"), "primaryentitytype": str(),
			"regardingobjectid": lookup("account", "contact", "lead", "opportunity", "connection", "systemuser"),
			"correlationid":     {kind: kGUID}, "depth": {kind: kInt}, "messagename": str()}})
}

// bindColumn maps an `x@odata.bind` property name to its lookup column:
// `parentcustomerid_account` → `parentcustomerid`, `eventhandler_serviceendpoint` → `eventhandler`.
func (m *entityMeta) bindColumn(nav string) (string, bool) {
	if c, ok := m.cols[nav]; ok && c.kind == kLookup {
		return nav, true
	}
	if i := strings.LastIndex(nav, "_"); i > 0 {
		if c, ok := m.cols[nav[:i]]; ok && c.kind == kLookup {
			return nav[:i], true
		}
	}
	return "", false
}
