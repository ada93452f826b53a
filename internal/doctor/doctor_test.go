package doctor

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/marketo/marketotype"
	"github.com/msisync/msisync/internal/store"
)

type fakeMarketo map[marketotype.Object][]marketotype.Record

func (f fakeMarketo) Query(_ context.Context, obj marketotype.Object, filterType string, values []string, _ []string) ([]marketotype.Record, error) {
	var out []marketotype.Record
	for _, r := range f[obj] {
		for _, v := range values {
			if strings.EqualFold(text(r[filterType]), v) {
				out = append(out, r)
			}
		}
	}
	return out, nil
}

type fakeDV map[string]event.Attributes

func (f fakeDV) Read(_ context.Context, logicalName, id string, _ []string) (event.Attributes, error) {
	return f[logicalName+"/"+id], nil
}

type fakeLinks map[string]store.Link

func (f fakeLinks) GetLinks(_ context.Context, kind string, ids []string) (map[string]store.Link, error) {
	out := map[string]store.Link{}
	for _, id := range ids {
		if l, ok := f[kind+"/"+id]; ok {
			out[id] = l
		}
	}
	return out, nil
}

const (
	contact = "9a100000-0000-0000-0000-000000000001"
	account = "3f200000-0000-0000-0000-000000000002"
	user    = "5e300000-0000-0000-0000-000000000003"
)

func healthyWorld() (fakeMarketo, fakeDV, fakeLinks) {
	m := fakeMarketo{
		marketotype.Leads:        {{"id": 11, "email": "p@example.com", "externalPersonId": contact, "externalCompanyId": account, "externalSalesPersonId": user, "priority": 3}},
		marketotype.Companies:    {{"id": 21, "company": "Contoso", "externalCompanyId": account, "externalSalesPersonId": user}},
		marketotype.SalesPersons: {{"id": 31, "email": "Owner@Example.com", "externalSalesPersonId": user}},
	}
	dv := fakeDV{
		"contact/" + contact: {"parentcustomerid": event.Reference("account", account, ""), "ownerid": event.Reference("systemuser", user, "")},
		"systemuser/" + user: {"internalemailaddress": event.String("owner@example.com")},
	}
	links := fakeLinks{"person/" + contact: {Kind: store.KindPerson, ExternalID: contact, MarketoID: "11", Entity: "contact"}}
	return m, dv, links
}

func status(r *Report, name string) Status {
	for _, c := range r.Checks {
		if c.Name == name {
			return c.Status
		}
	}
	return ""
}

func TestHealthyContactPasses(t *testing.T) {
	m, dv, links := healthyWorld()
	d := &Doctor{Marketo: m, Dataverse: dv, Store: links}
	r, err := d.Diagnose(context.Background(), "contact", strings.ToUpper(contact))
	if err != nil {
		t.Fatal(err)
	}
	if !r.Healthy() {
		t.Fatalf("expected healthy:\n%s", r)
	}
	for _, n := range []string{"store", "marketo lead", "company", "sales person", "sales person email"} {
		if status(r, n) != OK {
			t.Errorf("check %q = %q\n%s", n, status(r, n), r)
		}
	}
}

func TestMissingCompanyAndEmailMismatchAreReportedWithFixes(t *testing.T) {
	m, dv, links := healthyWorld()
	m[marketotype.Companies] = nil
	m[marketotype.SalesPersons][0]["email"] = "someone.else@example.com"
	d := &Doctor{Marketo: m, Dataverse: dv, Store: links}
	r, err := d.Diagnose(context.Background(), "contact", contact)
	if err != nil {
		t.Fatal(err)
	}
	if r.Healthy() || status(r, "company") != Fail || status(r, "sales person email") != Fail {
		t.Fatalf("expected company and email failures:\n%s", r)
	}
	if !strings.Contains(r.String(), "fix:") {
		t.Errorf("failures should carry a fix:\n%s", r)
	}
}

func TestUnsyncedLeadAndAccountDrift(t *testing.T) {
	m, dv, links := healthyWorld()
	other := "3f200000-0000-0000-0000-0000000000ff"
	dv["contact/"+contact]["parentcustomerid"] = event.Reference("account", other, "")
	d := &Doctor{Marketo: m, Dataverse: dv, Store: links}
	r, _ := d.Diagnose(context.Background(), "contact", contact)
	if status(r, "company link") != Fail || !strings.Contains(r.String(), other) {
		t.Fatalf("account drift not reported:\n%s", r)
	}
	m[marketotype.Leads] = nil
	r, _ = d.Diagnose(context.Background(), "contact", contact)
	if status(r, "marketo lead") != Fail {
		t.Fatalf("missing lead not reported:\n%s", r)
	}
}

func TestBadInput(t *testing.T) {
	d := &Doctor{Marketo: fakeMarketo{}, Store: fakeLinks{}}
	if _, err := d.Diagnose(context.Background(), "contact", "nope"); err == nil || !strings.Contains(err.Error(), "not a GUID") {
		t.Errorf("bad id: %v", err)
	}
	_, err := d.Diagnose(context.Background(), "invoice", contact)
	var ie *InputError
	if !errors.As(err, &ie) || ie.Field != "entity" || !strings.Contains(err.Error(), "contact, lead, account") {
		t.Errorf("bad entity: %v", err)
	}
}

type failingDV struct{ err error }

func (f failingDV) Read(context.Context, string, string, []string) (event.Attributes, error) {
	return nil, f.err
}

// TestDataverseReadFailureIsAWarningWithItsCause: an unreadable user is a
// warning that says why, whatever shape the reader's error has.
func TestDataverseReadFailureIsAWarningWithItsCause(t *testing.T) {
	m, _, links := healthyWorld()
	d := &Doctor{Marketo: m, Dataverse: failingDV{errors.New("403 Forbidden: missing privilege prvReadUser")}, Store: links}
	r, err := d.Diagnose(context.Background(), "systemuser", user)
	if err != nil {
		t.Fatal(err)
	}
	var detail string
	for _, c := range r.Checks {
		if c.Name == "sales person email" {
			if c.Status != Warn {
				t.Errorf("status %s, want warn", c.Status)
			}
			detail = c.Detail
		}
	}
	if !strings.Contains(detail, "prvReadUser") || strings.Contains(detail, "<nil>") {
		t.Errorf("detail %q should carry the read error", detail)
	}
	if !r.Healthy() {
		t.Errorf("an unreadable user is a warning, not a failure:\n%s", r)
	}
}

// TestAccountWithoutMarketoCompany: diagnosing an account that is not in
// Marketo fails the company check and looks no further.
func TestAccountWithoutMarketoCompany(t *testing.T) {
	_, dv, links := healthyWorld()
	d := &Doctor{Marketo: fakeMarketo{}, Dataverse: dv, Store: links}
	r, err := d.Diagnose(context.Background(), "account", account)
	if err != nil {
		t.Fatal(err)
	}
	if status(r, "company") != Fail || status(r, "sales person") != "" || len(r.Checks) != 1 {
		t.Errorf("report:\n%s", r)
	}
}

func TestPersonMergedAwayButStillLinkedFails(t *testing.T) {
	m, dv, links := healthyWorld()
	master := "9a100000-0000-0000-0000-0000000000ff"
	dv["contact/"+contact]["merged"] = event.Bool(true)
	dv["contact/"+contact]["statecode"] = event.Option(1)
	dv["contact/"+contact]["masterid"] = event.Reference("contact", master, "")
	d := &Doctor{Marketo: m, Dataverse: dv, Store: links}
	r, err := d.Diagnose(context.Background(), "contact", contact)
	if err != nil {
		t.Fatal(err)
	}
	if status(r, "record state") != Fail || r.Healthy() || !strings.Contains(r.String(), "merged into "+master) {
		t.Fatalf("report:\n%s", r)
	}
	// Once retired (no person carries its id), the merged record is fine.
	m[marketotype.Leads][0]["externalPersonId"] = nil
	r, _ = d.Diagnose(context.Background(), "contact", contact)
	if status(r, "record state") != OK || !r.Healthy() {
		t.Fatalf("report:\n%s", r)
	}
}

func TestPersonDeactivatedButLinkedWarns(t *testing.T) {
	m, dv, links := healthyWorld()
	dv["contact/"+contact]["statecode"] = event.Option(1)
	r, err := (&Doctor{Marketo: m, Dataverse: dv, Store: links}).Diagnose(context.Background(), "contact", contact)
	if err != nil {
		t.Fatal(err)
	}
	if status(r, "record state") != Warn || !strings.Contains(r.String(), "deactivated") {
		t.Fatalf("report:\n%s", r)
	}
}

func TestPersonEmailSharedWithAnotherLinkedPersonWarns(t *testing.T) {
	m, dv, links := healthyWorld()
	r, _ := (&Doctor{Marketo: m, Dataverse: dv, Store: links}).Diagnose(context.Background(), "contact", contact)
	if status(r, "shared email") != OK {
		t.Fatalf("report:\n%s", r)
	}
	other := "1ead0000-0000-0000-0000-000000000009"
	m[marketotype.Leads] = append(m[marketotype.Leads],
		marketotype.Record{"id": 12, "email": "P@example.com", "externalPersonId": strings.ToUpper(other)},
		marketotype.Record{"id": 13, "email": "p@example.com"})
	r, err := (&Doctor{Marketo: m, Dataverse: dv, Store: links}).Diagnose(context.Background(), "contact", contact)
	if err != nil {
		t.Fatal(err)
	}
	if status(r, "shared email") != Warn || !strings.Contains(r.String(), "12 ("+other+")") || !r.Healthy() {
		t.Fatalf("report:\n%s", r)
	}
	m[marketotype.Leads] = m[marketotype.Leads][:1]
	m[marketotype.Leads] = append(m[marketotype.Leads], marketotype.Record{"id": 13, "email": "p@example.com"})
	r, _ = (&Doctor{Marketo: m, Dataverse: dv, Store: links}).Diagnose(context.Background(), "contact", contact)
	if status(r, "shared email") != Info {
		t.Fatalf("report:\n%s", r)
	}
}
