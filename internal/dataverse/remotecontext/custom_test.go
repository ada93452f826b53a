package remotecontext

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/event"
)

func TestParseCustom(t *testing.T) {
	body := `{"entity":"Contact","id":"{C0FFEE00-1234-4567-89AB-CDEF01234567}","message":"update",
	  "attributes":{"firstname":"Ada","numberofchildren":2,"donotemail":true,"jobtitle":null,
	    "new_interests":[100000000,100000002],
	    "parentcustomerid":{"logicalName":"Account","id":"B1A2C3D4-E5F6-4789-9ABC-DEF012345678","name":"Engines"}},
	  "version":1767261600000,"organization":"7C8D3B5E-1F2A-4B6C-9D0E-123456789ABC","unknown":{"x":1}}`
	e, err := ParseCustom([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if e.Entity != "contact" || e.RecordID != contact || e.Message != event.MessageUpdate || e.Source != event.SourceCustom {
		t.Fatalf("got %s/%s %s %s", e.Entity, e.RecordID, e.Message, e.Source)
	}
	if e.Version != t0 || e.OrgID != orgID || e.ID != e.DeriveID() {
		t.Errorf("version %d org %q id %q", e.Version, e.OrgID, e.ID)
	}
	for name, want := range map[string]event.Value{
		"firstname":        event.String("Ada"),
		"numberofchildren": num("2"),
		"donotemail":       event.Bool(true),
		"jobtitle":         event.Null(),
		"new_interests":    event.Options(100000000, 100000002),
		"parentcustomerid": ref("account", account, "Engines"),
	} {
		if got := e.Attributes[name]; !got.Equal(want) {
			t.Errorf("%s = %s, want %s", name, js(got), js(want))
		}
	}

	e, err = ParseCustom([]byte(`{"entity":"lead","id":"1ead0000-aaaa-4bbb-8ccc-dddddddddddd","message":"Delete","version":"2026-01-01T10:00:00Z","organization":"contoso","occurredAt":"2026-01-01T11:00:00+01:00"}`))
	if err != nil {
		t.Fatal(err)
	}
	if e.Version != t0 || e.OrgName != "contoso" || !e.OccurredAt.Equal(time.UnixMilli(t0)) {
		t.Errorf("version %d org %q occurred %v", e.Version, e.OrgName, e.OccurredAt)
	}
}

func TestParseCustomErrors(t *testing.T) {
	for _, tc := range []struct {
		body   string
		syntax bool
		fields string
	}{
		{body: `{"entity":`, syntax: true},
		{body: `"contact"`, fields: "$"},
		{body: `{}`, fields: "entity,id,message"},
		{body: `{"entity":"contact","id":"x","message":"Update"}`, fields: "id"},
		{body: `{"entity":7,"id":"c0ffee00-1234-4567-89ab-cdef01234567","message":"Update"}`, fields: "entity"},
		{body: `{"entity":"contact","id":"c0ffee00-1234-4567-89ab-cdef01234567","message":"Update","attributes":[1]}`, fields: "attributes"},
		{body: `{"entity":"contact","id":"c0ffee00-1234-4567-89ab-cdef01234567","message":"Update","attributes":{"p":{"id":"c0ffee00-1234-4567-89ab-cdef01234567"}}}`, fields: "attributes.p.logicalName"},
		{body: `{"entity":"contact","id":"c0ffee00-1234-4567-89ab-cdef01234567","message":"Update","attributes":{"p":{"logicalName":"account","id":"1"}}}`, fields: "attributes.p.id"},
		{body: `{"entity":"contact","id":"c0ffee00-1234-4567-89ab-cdef01234567","message":"Update","attributes":{"m":[1,"a"]}}`, fields: "attributes.m[1]"},
		{body: `{"entity":"contact","id":"c0ffee00-1234-4567-89ab-cdef01234567","message":"Update","version":-1}`, fields: "version"},
		{body: `{"entity":"contact","id":"c0ffee00-1234-4567-89ab-cdef01234567","message":"Update","occurredAt":"yesterday"}`, fields: "occurredAt"},
	} {
		_, err := ParseCustom([]byte(tc.body))
		var se *SyntaxError
		switch {
		case err == nil:
			t.Errorf("%s: no error", tc.body)
		case tc.syntax:
			if !errors.As(err, &se) {
				t.Errorf("%s: err %v, want *SyntaxError", tc.body, err)
			}
		default:
			var got []string
			for _, f := range FieldErrors(err) {
				got = append(got, f.Field)
			}
			if strings.Join(got, ",") != tc.fields {
				t.Errorf("%s: fields %v, want %s (%v)", tc.body, got, tc.fields, err)
			}
		}
	}
}
