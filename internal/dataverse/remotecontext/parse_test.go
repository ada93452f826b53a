package remotecontext

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/event"
)

const (
	orgID    = "7c8d3b5e-1f2a-4b6c-9d0e-123456789abc"
	orgName  = "unq7c8d3b5e1f2a4b6c9d0e12345678"
	userID   = "5d8e0e7a-3c1b-4f6a-8e2d-9b7c6a5f4e3d"
	corrID   = "9f1e2d3c-4b5a-4697-8877-665544332211"
	stepID   = "5e900000-0000-4000-8000-0000000000a1"
	account  = "b1a2c3d4-e5f6-4789-9abc-def012345678"
	contact  = "c0ffee00-1234-4567-89ab-cdef01234567"
	lead     = "1ead0000-aaaa-4bbb-8ccc-dddddddddddd"
	opp      = "0bb00000-1111-4222-8333-444444444444"
	sysuser2 = "77777777-8888-4999-8aaa-bbbbbbbbbbbb"
	conn     = "c0440000-0000-4000-8000-000000000001"
	team     = "7ea70000-0000-4000-8000-000000000007"
	t0       = int64(1767261600000) // 2026-01-01T10:00:00Z
)

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func ms(v int64) time.Time { return time.UnixMilli(v).UTC() }

// check is one assertion about a parsed event.
type check func(t *testing.T, e *event.Event)

func attr(name string, want event.Value) check {
	return func(t *testing.T, e *event.Event) {
		t.Helper()
		got, ok := e.Attributes[name]
		if !ok {
			t.Errorf("attribute %s missing; have %v", name, keys(e.Attributes))
			return
		}
		if !got.Equal(want) {
			t.Errorf("attribute %s = %s, want %s", name, js(got), js(want))
		}
	}
}

func noAttr(name string) check {
	return func(t *testing.T, e *event.Event) {
		t.Helper()
		if v, ok := e.Attributes[name]; ok {
			t.Errorf("attribute %s = %s, want absent", name, js(v))
		}
	}
}

func image(pre bool, alias, name string, want event.Value) check {
	return func(t *testing.T, e *event.Event) {
		t.Helper()
		imgs := e.PostImages
		if pre {
			imgs = e.PreImages
		}
		got, ok := imgs[alias][name]
		if !ok {
			t.Errorf("image %s: %s missing", alias, name)
			return
		}
		if !got.Equal(want) {
			t.Errorf("image %s: %s = %s, want %s", alias, name, js(got), js(want))
		}
	}
}

func formatted(name, want string) check {
	return func(t *testing.T, e *event.Event) {
		t.Helper()
		if got, ok := e.Formatted[name]; !ok || got != want {
			t.Errorf("formatted[%s] = %q (present %v), want %q", name, got, ok, want)
		}
	}
}

func fieldIs[T comparable](label string, get func(*event.Event) T, want T) check {
	return func(t *testing.T, e *event.Event) {
		t.Helper()
		if got := get(e); got != want {
			t.Errorf("%s = %v, want %v", label, got, want)
		}
	}
}

func version(v int64) check {
	return fieldIs("Version", func(e *event.Event) int64 { return e.Version }, v)
}
func occurred(v int64) check {
	return fieldIs("OccurredAt", func(e *event.Event) time.Time { return e.OccurredAt }, ms(v))
}
func rowVersion(v int64) check {
	return fieldIs("RowVersion", func(e *event.Event) int64 { return e.RowVersion }, v)
}
func truncated(v bool) check {
	return fieldIs("Truncated", func(e *event.Event) bool { return e.Truncated }, v)
}
func parentMessage(v string) check {
	return fieldIs("ParentMessage", func(e *event.Event) string { return e.ParentMessage }, v)
}

func ref(ln, id, name string) event.Value { return event.Reference(ln, id, name) }
func money(s string) event.Value          { return event.Money(json.Number(s)) }
func num(s string) event.Value            { return event.Number(json.Number(s)) }
func at(v int64) event.Value              { return event.Time(ms(v)) }

func TestParseFixtures(t *testing.T) {
	tests := []struct {
		file            string
		headers         Headers
		entity, id, msg string
		checks          []check
	}{
		{file: "contact_create.json", entity: "contact", id: contact, msg: "Create", checks: []check{
			attr("firstname", event.String("Ada")),
			attr("description", event.String("Line one\nLine two")),
			attr("parentcustomerid", ref("account", account, "")),
			attr("parentcustomeridtype", event.String("account")),
			attr("donotemail", event.Bool(false)),
			attr("numberofchildren", num("0")),
			attr("new_interests", event.Options(100000000, 100000002)),
			attr("exchangerate", num("1.0000000000")),
			attr("transactioncurrencyid", ref("transactioncurrency", "cc000000-0000-4000-8000-0000000000ee", "US Dollar")),
			attr("statecode", event.Option(0)),
			attr("statuscode", event.Option(1)),
			attr("ownerid", ref("systemuser", userID, "")),
			attr("createdon", at(t0-5000)),
			attr("modifiedonbehalfby", event.Null()),
			image(false, "AsynchronousStepPrimaryName", "fullname", event.String("Ada Lovelace")),
			version(t0 - 5000), occurred(t0), rowVersion(1234567), truncated(false), parentMessage(""),
		}},
		{file: "contact_update.json", entity: "contact", id: contact, msg: "Update", checks: []check{
			attr("emailaddress1", event.String("ada.lovelace@example.org")),
			attr("jobtitle", event.Null()),
			attr("modifiedon", at(t0+60000)),
			noAttr("statecode"), // an Update's Target carries only the changed columns
			image(true, "PreImage", "jobtitle", event.String("Analyst")),
			image(true, "PreImage", "ownerid", ref("systemuser", userID, "Grace Hopper")),
			image(false, "PostImage", "parentcustomerid", ref("account", account, "Analytical Engines Ltd")),
			formatted("statecode", "Active"),
			formatted("parentcustomerid", "Analytical Engines Ltd"),
			func(t *testing.T, e *event.Event) {
				// The pre image's label for a changed column is stale and must not leak.
				if s, ok := e.Formatted["emailaddress1"]; ok {
					t.Errorf("formatted[emailaddress1] = %q from the pre image, want absent", s)
				}
			},
			version(t0 + 60000), occurred(t0 + 60500), rowVersion(1234600),
		}},
		{file: "contact_update_unescaped.json", entity: "contact", id: contact, msg: "Update", checks: []check{
			attr("modifiedon", at(t0+60000)), attr("modifiedby", ref("systemuser", userID, "")),
			version(t0 + 60000), occurred(t0 + 60500),
		}},
		{file: "contact_delete.json", entity: "contact", id: contact, msg: "Delete", checks: []check{
			func(t *testing.T, e *event.Event) {
				if len(e.Attributes) != 0 {
					t.Errorf("Delete attributes = %v, want none (Target is an EntityReference)", keys(e.Attributes))
				}
			},
			image(true, "PreImage", "emailaddress1", event.String("ada.lovelace@example.org")),
			// Version comes from the operation, not the stale pre-image modifiedon.
			version(t0 + 3600000), occurred(t0 + 3600000),
		}},
		{file: "contact_update_truncated.json", headers: Headers{SizeExceeded: true}, entity: "contact", id: contact, msg: "Update", checks: []check{
			truncated(true), version(t0 + 120000),
			func(t *testing.T, e *event.Event) {
				if e.Attributes != nil || e.PreImages != nil || e.PostImages != nil {
					t.Errorf("truncated event carries data: %v %v %v", e.Attributes, e.PreImages, e.PostImages)
				}
			},
		}},
		{file: "contact_sparse.json", entity: "contact", id: contact, msg: "Create", checks: []check{
			occurred(1664491520252), version(1664491520252),
			fieldIs("OrgID", func(e *event.Event) string { return e.OrgID }, "73cf6a17-84a0-4f0f-8961-d5f1ec770870"),
			fieldIs("OperationID", func(e *event.Event) string { return e.OperationID }, "add9211d-a6a3-449e-999b-ffaf47a5ba25"),
		}},
		{file: "contact_create_qualifylead.json", entity: "contact", id: contact, msg: "Create", checks: []check{
			parentMessage("QualifyLead"),
			attr("originatingleadid", ref("lead", lead, "")),
			fieldIs("RequestID", func(e *event.Event) string { return e.RequestID }, "0f000000-0000-4000-8000-000000000010"),
		}},
		{file: "account_create.json", entity: "account", id: account, msg: "Create", checks: []check{
			attr("revenue", money("1500000.5000")),
			attr("industrycode", event.Option(7)),
			attr("primarycontactid", ref("contact", contact, "")),
			attr("parentaccountid", event.Null()),
			attr("websiteurl", event.String("https://engines.example.com/")),
			attr("address1_latitude", num("51.50735")),
		}},
		{file: "account_update.json", entity: "account", id: account, msg: "Update", checks: []check{
			attr("revenue", money("2000000")), attr("industrycode", event.Null()),
			formatted("revenue", "$2,000,000.00"),
			image(false, "AsynchronousStepPrimaryName", "name", event.String("Analytical Engines Ltd")),
			// OperationCreatedOn carries -0700: the milliseconds are UTC regardless.
			occurred(t0 + 90000), version(t0 + 90000), rowVersion(99887766),
		}},
		{file: "account_delete.json", entity: "account", id: account, msg: "Delete", checks: []check{
			occurred(t0 + 7200000), version(t0 + 7200000),
		}},
		{file: "account_assign.json", entity: "account", id: account, msg: "Assign", checks: []check{
			attr("ownerid", ref("team", team, "Sales Team EMEA")),
			version(t0 + 100000),
		}},
		{file: "lead_create.json", entity: "lead", id: lead, msg: "Create", checks: []check{
			attr("companyname", event.String("Difference Co")),
			attr("leadqualitycode", event.Option(1)),
			attr("budgetamount", money("10000.0000")),
		}},
		{file: "lead_update.json", entity: "lead", id: lead, msg: "Update", checks: []check{
			attr("companyname", event.String("Difference Engines Co")),
			image(true, "PreImage", "companyname", event.String("Difference Co")),
			version(t0 + 30000),
		}},
		{file: "lead_delete.json", entity: "lead", id: lead, msg: "Delete", checks: []check{version(t0 + 40000)}},
		{file: "lead_setstate.json", entity: "lead", id: lead, msg: "SetState", checks: []check{
			attr("statecode", event.Option(2)), attr("statuscode", event.Option(6)),
		}},
		{file: "lead_qualifylead.json", entity: "lead", id: lead, msg: "QualifyLead", checks: []check{
			attr("statecode", event.Option(1)), attr("statuscode", event.Option(3)),
		}},
		{file: "opportunity_create.json", entity: "opportunity", id: opp, msg: "Create", checks: []check{
			attr("estimatedvalue", money("125000.0000")),
			attr("estimatedclosedate", at(1772323200000)),
			attr("customerid", ref("account", account, "")),
			attr("parentcontactid", ref("contact", contact, "")),
			attr("originatingleadid", ref("lead", lead, "")),
			attr("closeprobability", num("40")),
		}},
		{file: "opportunity_update.json", entity: "opportunity", id: opp, msg: "Update", checks: []check{
			attr("estimatedvalue", money("150000.2500")), occurred(t0 + 70000),
		}},
		{file: "opportunity_delete.json", entity: "opportunity", id: opp, msg: "Delete", checks: []check{
			image(true, "PreImage", "customerid", ref("account", account, "Analytical Engines Ltd")),
		}},
		{file: "opportunity_update_setstate.json", entity: "opportunity", id: opp, msg: "Update", checks: []check{
			parentMessage("SetStateDynamicEntity"),
			attr("statecode", event.Option(1)), attr("statuscode", event.Option(3)),
			attr("actualclosedate", at(1772323200000)),
		}},
		{file: "systemuser_create.json", entity: "systemuser", id: sysuser2, msg: "Create", checks: []check{
			attr("internalemailaddress", event.String("grace@example.com")),
			attr("isdisabled", event.Bool(false)),
			attr("azureactivedirectoryobjectid", event.String("aad00000-0000-4000-8000-000000000001")), // GUIDs lower-cased
		}},
		{file: "systemuser_update.json", entity: "systemuser", id: sysuser2, msg: "Update", checks: []check{
			attr("isdisabled", event.Bool(true)), version(t0 + 10000),
		}},
		{file: "systemuser_delete.json", entity: "systemuser", id: sysuser2, msg: "Delete", checks: []check{version(t0 + 20000)}},
		{file: "connection_create.json", entity: "connection", id: conn, msg: "Create", checks: []check{
			attr("record1id", ref("opportunity", opp, "")),
			attr("record2id", ref("contact", contact, "")),
			attr("record2roleid", ref("connectionrole", "801e0000-0000-4000-8000-000000000001", "")),
			attr("ismaster", event.Bool(true)),
			attr("record1objecttypecode", event.Option(3)),
		}},
		{file: "connection_update.json", entity: "connection", id: conn, msg: "Update", checks: []check{
			attr("record2roleid", ref("connectionrole", "801e0000-0000-4000-8000-000000000002", "")),
			image(true, "PreImage", "record1id", ref("opportunity", opp, "100 engines")),
			// The role changed, so the pre image's label is stale.
			func(t *testing.T, e *event.Event) {
				if _, ok := e.Formatted["record2roleid"]; ok {
					t.Error("stale pre-image label for a changed column kept")
				}
			},
		}},
		{file: "connection_delete.json", entity: "connection", id: conn, msg: "Delete", checks: []check{
			image(true, "PreImage", "record2id", ref("contact", contact, "")),
		}},
		{file: "email_create_partylist.json", entity: "email", id: "e0000000-0000-4000-8000-000000000001", msg: "Create", checks: []check{
			func(t *testing.T, e *event.Event) {
				to := e.Attributes["to"]
				if to.Kind != event.KindEntities || len(to.Entities) != 2 {
					t.Fatalf("to = %s, want 2 parties", js(to))
				}
				if !to.Entities[0]["partyid"].Equal(ref("contact", contact, "")) || !to.Entities[1]["partyid"].Equal(ref("systemuser", userID, "")) {
					t.Errorf("parties = %s", js(to))
				}
			},
		}},
	}
	for _, tc := range tests {
		t.Run(strings.TrimSuffix(tc.file, ".json"), func(t *testing.T) {
			e, err := Parse(fixture(t, tc.file), tc.headers)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if e.Entity != tc.entity || e.RecordID != tc.id || e.Message != tc.msg {
				t.Fatalf("got %s/%s %s, want %s/%s %s", e.Entity, e.RecordID, e.Message, tc.entity, tc.id, tc.msg)
			}
			if e.Source != event.SourceWebhook || e.Schema != event.SchemaVersion {
				t.Errorf("source/schema = %q/%d", e.Source, e.Schema)
			}
			if e.ID == "" || e.ID != e.DeriveID() {
				t.Errorf("ID = %q, want DeriveID() = %q", e.ID, e.DeriveID())
			}
			if !strings.Contains(tc.file, "sparse") {
				if e.OrgID != orgID || e.OrgName != orgName {
					t.Errorf("org = %q %q, want %q %q", e.OrgID, e.OrgName, orgID, orgName)
				}
				if e.UserID != userID || e.InitiatingUserID != userID || e.CorrelationID != corrID || e.Depth != 1 || e.StepID != stepID {
					t.Errorf("context ids: user %q init %q corr %q depth %d step %q", e.UserID, e.InitiatingUserID, e.CorrelationID, e.Depth, e.StepID)
				}
				if !event.IsGUID(e.OperationID) || e.OperationID != strings.ToLower(e.OperationID) {
					t.Errorf("OperationID = %q", e.OperationID)
				}
			}
			for _, c := range tc.checks {
				c(t, e)
			}
			// What we parse must travel on the queue and come back the same.
			b, err := event.Encode(e)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			back, err := event.Decode(b)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if back.ID != e.ID || len(back.Attributes) != len(e.Attributes) {
				t.Errorf("round trip changed the event")
			}
		})
	}
}

func TestParseHeadersFillGaps(t *testing.T) {
	body := `{"PrimaryEntityId":"C0FFEE00-1234-4567-89AB-CDEF01234567"}`
	e, err := Parse([]byte(body), Headers{Organization: "contoso.crm.dynamics.com", EntityName: "Contact", RequestName: "Update", CorrelationID: "9F1E2D3C-4B5A-4697-8877-665544332211"})
	if err != nil {
		t.Fatal(err)
	}
	if e.Entity != "contact" || e.Message != "Update" || e.OrgName != "contoso.crm.dynamics.com" || e.CorrelationID != corrID {
		t.Errorf("got %+v", e)
	}
}

func TestParseSameDeliveryTwiceSameID(t *testing.T) {
	a, err := Parse(fixture(t, "contact_update.json"), Headers{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse(fixture(t, "contact_update_unescaped.json"), Headers{})
	if err != nil {
		t.Fatal(err)
	}
	if a.ID != b.ID {
		t.Errorf("escaped and unescaped copies of one delivery got ids %s and %s", a.ID, b.ID)
	}
	c, err := Parse(fixture(t, "contact_delete.json"), Headers{})
	if err != nil {
		t.Fatal(err)
	}
	if c.ID == a.ID {
		t.Error("different operations share an id")
	}
}

func TestParseDates(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		err  bool
	}{
		{in: "/Date(1700000000000)/", want: 1700000000000},
		{in: "/Date(1700000000000+0000)/", want: 1700000000000},
		{in: "/Date(1700000000000-0700)/", want: 1700000000000},
		{in: "/Date(1700000000000+0530)/", want: 1700000000000},
		{in: "/Date(-86400000)/", want: -86400000},
		{in: "/Date(abc)/", err: true},
		{in: "/Date(1700000000000+07)/", err: true},
		{in: "/Date()/", err: true},
		{in: "/Date(99999999999999999)/", err: true}, // beyond year 9999
	} {
		got, ok, msg := parseDate(tc.in)
		if !ok {
			t.Errorf("%s: not recognised as a date", tc.in)
			continue
		}
		if tc.err != (msg != "") {
			t.Errorf("%s: error %q, want error %v", tc.in, msg, tc.err)
			continue
		}
		if !tc.err && got.UnixMilli() != tc.want {
			t.Errorf("%s = %d, want %d", tc.in, got.UnixMilli(), tc.want)
		}
	}
	if _, ok, _ := parseDate("Date(1)"); ok {
		t.Error("plain text taken for a date")
	}
}

func TestParseErrors(t *testing.T) {
	target := func(attrs string) string {
		return `{"MessageName":"Update","PrimaryEntityName":"contact","PrimaryEntityId":"c0ffee00-1234-4567-89ab-cdef01234567",
		"InputParameters":[{"key":"Target","value":{"__type":"Entity:http://schemas.microsoft.com/xrm/2011/Contracts","LogicalName":"contact","Attributes":[` + attrs + `]}}]}`
	}
	for _, tc := range []struct {
		name, body string
		syntax     bool
		fields     []string
	}{
		{name: "empty", body: "", syntax: true},
		{name: "truncated JSON", body: `{"MessageName":"Update"`, syntax: true},
		{name: "garbage", body: `<xml/>`, syntax: true},
		{name: "trailing data", body: `{} {}`, syntax: true},
		{name: "not an object", body: `[1,2]`, fields: []string{"$"}},
		{name: "no message", body: `{"PrimaryEntityName":"contact","PrimaryEntityId":"c0ffee00-1234-4567-89ab-cdef01234567"}`, fields: []string{"MessageName"}},
		{name: "no id", body: `{"MessageName":"Update","PrimaryEntityName":"contact"}`, fields: []string{"PrimaryEntityId"}},
		{name: "nothing", body: `{}`, fields: []string{"PrimaryEntityName", "PrimaryEntityId", "MessageName"}},
		{name: "message not a string", body: `{"MessageName":7,"PrimaryEntityName":["contact"],"PrimaryEntityId":"c0ffee00-1234-4567-89ab-cdef01234567"}`, fields: []string{"MessageName", "PrimaryEntityName"}},
		{name: "id not a GUID", body: `{"MessageName":"Update","PrimaryEntityName":"contact","PrimaryEntityId":"42"}`, fields: []string{"PrimaryEntityId"}},
		{name: "id a number", body: `{"MessageName":"Update","PrimaryEntityName":"contact","PrimaryEntityId":42}`, fields: []string{"PrimaryEntityId"}},
		{name: "user not a GUID", body: `{"MessageName":"Update","PrimaryEntityName":"contact","PrimaryEntityId":"c0ffee00-1234-4567-89ab-cdef01234567","UserId":"bob"}`, fields: []string{"UserId"}},
		{name: "lookup id not a GUID", body: target(`{"key":"parentcustomerid","value":{"__type":"EntityReference:x","Id":"nope","LogicalName":"account"}}`), fields: []string{"InputParameters.Target.Attributes.parentcustomerid.Id"}},
		{name: "option not an int", body: target(`{"key":"statuscode","value":{"__type":"OptionSetValue:x","Value":"one"}}`), fields: []string{"InputParameters.Target.Attributes.statuscode.Value"}},
		{name: "bad date", body: target(`{"key":"modifiedon","value":"/Date(12x)/"}`), fields: []string{"InputParameters.Target.Attributes.modifiedon"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.body), Headers{})
			if err == nil {
				t.Fatal("no error")
			}
			var se *SyntaxError
			var fe *event.FieldError
			if tc.syntax {
				if !errors.As(err, &se) || errors.As(err, &fe) {
					t.Fatalf("err = %v (%T), want a *SyntaxError only", err, err)
				}
				return
			}
			if errors.As(err, &se) || !errors.As(err, &fe) {
				t.Fatalf("err = %v (%T), want *event.FieldError", err, err)
			}
			var got []string
			for _, f := range FieldErrors(err) {
				got = append(got, f.Field)
			}
			if strings.Join(got, ",") != strings.Join(tc.fields, ",") {
				t.Errorf("fields = %v, want %v (err %v)", got, tc.fields, err)
			}
		})
	}
}

func TestParseIgnorableEventReturnedWithError(t *testing.T) {
	// Third-party mocks omit PrimaryEntityId; the event still says what it is
	// about so the receiver can ignore entities it does not sync.
	e, err := Parse(fixture(t, "incident_sparse.json"), Headers{})
	var fe *event.FieldError
	if !errors.As(err, &fe) || fe.Field != "PrimaryEntityId" {
		t.Fatalf("err = %v", err)
	}
	if e == nil || e.Entity != "incident" || e.Message != "Create" {
		t.Fatalf("event = %+v", e)
	}
}

func TestParseServiceBus(t *testing.T) {
	body := fixture(t, "contact_update_truncated.json")
	e, err := ParseServiceBus(body, map[string]string{
		PropMaxSizeExceeded: "True",
		PropOrganization:    "contoso",
	})
	if err != nil {
		t.Fatal(err)
	}
	if e.Source != event.SourceServiceBus || !e.Truncated || e.Entity != "contact" || e.RecordID != contact {
		t.Errorf("got %+v", e)
	}
	w, err := Parse(body, Headers{SizeExceeded: true})
	if err != nil {
		t.Fatal(err)
	}
	if w.ID != e.ID {
		t.Errorf("the same operation by webhook (%s) and by Service Bus (%s) must be one message", w.ID, e.ID)
	}

	sparse := []byte(`{"PrimaryEntityId":"c0ffee00-1234-4567-89ab-cdef01234567"}`)
	e, err = ParseServiceBus(sparse, map[string]string{
		PropEntityLogicalName: "contact", PropRequestName: "Delete", PropUser: "5D8E0E7A-3C1B-4F6A-8E2D-9B7C6A5F4E3D",
	})
	if err != nil {
		t.Fatal(err)
	}
	if e.Entity != "contact" || e.Message != "Delete" || e.UserID != userID || e.Truncated {
		t.Errorf("claims not applied: %+v", e)
	}
}

func TestHeadersFrom(t *testing.T) {
	h := make(map[string][]string)
	set := func(k, v string) { h[canonical(k)] = []string{v} }
	set(HeaderOrganization, "contoso.crm.dynamics.com")
	set(HeaderEntityName, "contact")
	set(HeaderRequestName, "Update")
	set(HeaderCorrelationID, corrID)
	set(HeaderSizeExceeded, "")
	got := HeadersFrom(h)
	want := Headers{Organization: "contoso.crm.dynamics.com", EntityName: "contact", RequestName: "Update", CorrelationID: corrID, SizeExceeded: true}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	delete(h, canonical(HeaderSizeExceeded))
	if HeadersFrom(h).SizeExceeded {
		t.Error("size exceeded without the header")
	}
}

func js(v any) string { b, _ := json.Marshal(v); return string(b) }

func keys(a event.Attributes) []string {
	var out []string
	for k := range a {
		out = append(out, k)
	}
	return out
}
