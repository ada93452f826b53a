package marketotype

import (
	"errors"
	"fmt"
	"testing"
)

func TestClassOf_OneTableForAllCodes(t *testing.T) {
	want := map[string]Class{
		"601": ClassReauth, "602": ClassReauth, "606": ClassThrottled, "615": ClassThrottled,
		"502": ClassTransient, "504": ClassTransient, "599": ClassTransient, "604": ClassTransient, "608": ClassTransient,
		"611": ClassTransient, "713": ClassTransient, "607": ClassQuota, "603": ClassConfig, "609": ClassConfig,
		"610": ClassConfig, "612": ClassConfig, "1018": ClassConfig, "1011": ClassConfig,
		"1001": ClassPermanent, "1003": ClassPermanent, "1004": ClassPermanent, "1006": ClassPermanent,
		"1007": ClassPermanent, "1036": ClassPermanent, "413": ClassPermanent, "718": ClassDependency,
		"1013": ClassDependency, "9999": ClassPermanent,
	}
	for code, c := range want {
		if got := ClassOf(code); got != c {
			t.Errorf("ClassOf(%s) = %v, want %v", code, got, c)
		}
	}
}

func TestResultClassAndErrNameTheFirstReason(t *testing.T) {
	ok := Result{Status: "updated"}
	if ok.Class() != ClassNone || ok.Err() != nil {
		t.Fatalf("updated record: class %v, err %v", ok.Class(), ok.Err())
	}
	sk := Result{Status: "skipped", Reasons: []Reason{{Code: "1013", Message: "Object not found"}, {Code: "1004", Message: "x"}}}
	if sk.Class() != ClassDependency {
		t.Errorf("class of skipped 1013 = %v, want dependency", sk.Class())
	}
	if err := sk.Err(); err == nil || err.Error() != "marketo: record skipped: 1013 Object not found" {
		t.Errorf("err = %v", err)
	}
	if c := (Result{Status: "skipped"}).Class(); c != ClassPermanent {
		t.Errorf("skipped without a reason = %v, want permanent", c)
	}
}

func TestErrorClassAndUnwrap(t *testing.T) {
	net := errors.New("connection reset")
	cases := []struct {
		err  *Error
		want Class
		text string
	}{
		{&Error{Op: "sync leads", Err: net}, ClassTransient, "marketo: sync leads: connection reset"},
		{&Error{Op: "sync leads", Code: "606", Message: "Max rate limit exceeded"}, ClassThrottled, "marketo: sync leads: 606 Max rate limit exceeded"},
		{&Error{Op: "query leads", HTTPStatus: 414, Code: "414"}, ClassPermanent, "marketo: query leads: HTTP 414"},
		{&Error{Op: "sync leads"}, ClassPermanent, "marketo: sync leads: code "},
	}
	for _, c := range cases {
		if got := c.err.Class(); got != c.want {
			t.Errorf("%v: class %v, want %v", c.err, got, c.want)
		}
		if c.err.Error() != c.text {
			t.Errorf("text %q, want %q", c.err.Error(), c.text)
		}
		if got := ClassOfError(fmt.Errorf("wrapped: %w", c.err)); got != c.want {
			t.Errorf("ClassOfError(wrapped %v) = %v, want %v", c.err, got, c.want)
		}
	}
	if !errors.Is(cases[0].err, net) {
		t.Error("Error does not unwrap to its network error")
	}
	if ClassOfError(nil) != ClassNone || ClassOfError(errors.New("context deadline exceeded")) != ClassTransient {
		t.Error("ClassOfError: nil must be none, an unclassified error transient")
	}
}

func TestObjectValidAndDescriptionLookups(t *testing.T) {
	for _, o := range []Object{SalesPersons, Companies, Leads, Opportunities, Roles} {
		if !o.Valid() {
			t.Errorf("%s not valid", o)
		}
	}
	if Object("activities").Valid() {
		t.Error("activities is not an object msisync writes")
	}
	d := &Description{Fields: []FieldInfo{{Name: "email", DataType: "email"}}, SearchableFields: [][]string{{"email"}, {"firstName", "lastName"}}}
	if f, ok := d.Field("email"); !ok || f.DataType != "email" {
		t.Errorf("Field(email) = %+v, %v", f, ok)
	}
	if _, ok := d.Field("nope"); ok {
		t.Error("Field(nope) found")
	}
	if !d.Searchable("email") || d.Searchable("firstName") {
		t.Error("Searchable: email alone is a key, firstName only with lastName")
	}
}
