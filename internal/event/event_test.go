package event

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func sample() *Event {
	return &Event{
		Schema: SchemaVersion, Source: SourceWebhook, OrgID: "00000000-0000-0000-0000-0000000000aa",
		Entity: EntityContact, RecordID: "9a1e0000-0000-0000-0000-000000000001", Message: MessageUpdate,
		OperationID: "op-1", Version: 1700000000000,
		Attributes: Attributes{
			"emailaddress1":    String("a@example.com"),
			"parentcustomerid": Reference("account", "3F200000-0000-0000-0000-000000000002", ""),
			"statuscode":       Option(1),
			"revenue":          Money("1234.50"),
			"modifiedon":       Time(time.UnixMilli(1700000000000)),
			"fax":              Null(),
		},
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	e := sample()
	e.ID = e.DeriveID()
	b, err := Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != e.ID || got.RecordID != e.RecordID || len(got.Attributes) != len(e.Attributes) {
		t.Fatalf("round trip changed the event: %+v", got)
	}
	for k, v := range e.Attributes {
		if !got.Attributes[k].Equal(v) {
			t.Errorf("attribute %s: got %+v want %+v", k, got.Attributes[k], v)
		}
	}
	ref, ok := got.Attributes["parentcustomerid"].Reference()
	if !ok || ref.ID != "3f200000-0000-0000-0000-000000000002" {
		t.Errorf("reference id not lower-cased: %+v", ref)
	}
}

func TestDeriveIDIsStableAndDistinguishesVersions(t *testing.T) {
	a, b := sample(), sample()
	if a.DeriveID() != b.DeriveID() {
		t.Fatal("same event, different ids")
	}
	b.Version++
	if a.DeriveID() == b.DeriveID() {
		t.Fatal("a newer version must get a new id")
	}
	c := sample()
	c.Message = MessageDelete
	if a.DeriveID() == c.DeriveID() {
		t.Fatal("a different message must get a new id")
	}
}

func TestDecodeRejectsUnknownSchemaAndMissingFields(t *testing.T) {
	if _, err := Decode([]byte(`{"schema":99,"entity":"contact","recordId":"9a1e0000-0000-0000-0000-000000000001","message":"Update"}`)); err == nil || !strings.Contains(err.Error(), "schema version 99") {
		t.Errorf("schema 99: %v", err)
	}
	_, err := Decode([]byte(`{"schema":1,"entity":"contact","recordId":"nope","message":"Update"}`))
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "recordId" {
		t.Errorf("bad record id: %v", err)
	}
	_, err = Decode([]byte(`{"schema":1,"entity":"contact","recordId":"9a1e0000-0000-0000-0000-000000000001","message":"Merge","subordinateId":"x"}`))
	if !errors.As(err, &fe) || fe.Field != "subordinateId" {
		t.Errorf("bad subordinate id: %v", err)
	}
}

func TestIsGUIDAndNormalize(t *testing.T) {
	for s, want := range map[string]bool{
		"9a1e0000-0000-0000-0000-000000000001":   true,
		"{9A1E0000-0000-0000-0000-00000000000F}": true,
		"9a1e0000000000000000000000000001":       false,
		"9a1e0000-0000-0000-0000-00000000000g":   false,
		"":                                       false,
	} {
		if IsGUID(s) != want {
			t.Errorf("IsGUID(%q) = %v", s, !want)
		}
	}
	if NormalizeID(" {ABC} ") != "abc" {
		t.Error("NormalizeID")
	}
}

func TestValueAccessors(t *testing.T) {
	if n, ok := Option(100000001).Int(); !ok || n != 100000001 {
		t.Errorf("option Int = %d %v", n, ok)
	}
	if f, ok := Money("12.5").Float(); !ok || f != 12.5 {
		t.Errorf("money Float = %v %v", f, ok)
	}
	if tm, ok := String("2026-11-29T10:00:00Z").TimeValue(); !ok || tm.Hour() != 10 {
		t.Errorf("string TimeValue = %v %v", tm, ok)
	}
	if Options(1, 2).Text() != "1;2" || Bool(true).Text() != "true" {
		t.Error("Text")
	}
	if !Null().IsNull() || String("").IsNull() {
		t.Error("IsNull")
	}
	b, _ := json.Marshal(Bool(false))
	var v Value
	_ = json.Unmarshal(b, &v)
	if v.Kind != KindBool || v.Bool {
		t.Errorf("false bool round trip: %s", b)
	}
}

func TestGetPrefersAttributesThenPostThenPre(t *testing.T) {
	e := sample()
	e.PostImages = map[string]Attributes{"post": {"lastname": String("Post"), "emailaddress1": String("old@x")}}
	e.PreImages = map[string]Attributes{"pre": {"lastname": String("Pre"), "firstname": String("Pre")}}
	if v, _ := e.Get("emailaddress1"); v.Str != "a@example.com" {
		t.Errorf("attribute should win: %v", v.Str)
	}
	if v, _ := e.Get("lastname"); v.Str != "Post" {
		t.Errorf("post image should beat pre image: %v", v.Str)
	}
	if v, _ := e.Get("firstname"); v.Str != "Pre" {
		t.Errorf("pre image fallback: %v", v.Str)
	}
	if _, ok := e.Get("nope"); ok {
		t.Error("missing attribute found")
	}
}

func TestReducedKeepsReferenceOnly(t *testing.T) {
	e := sample()
	e.PostImages = map[string]Attributes{"p": {"x": String("y")}}
	r := e.Reduced()
	if !r.Truncated || r.Attributes != nil || r.PostImages != nil || r.RecordID != e.RecordID || r.Entity != e.Entity {
		t.Fatalf("reduced = %+v", r)
	}
	if e.Truncated || e.Attributes == nil {
		t.Fatal("Reduced modified the original")
	}
}

// TestDeriveIDIsStableAcrossReleases pins the id of one event: replicas of
// two releases run side by side during a rollout, and a changed derivation
// would let Service Bus duplicate detection pass Dataverse's re-sends.
func TestDeriveIDIsStableAcrossReleases(t *testing.T) {
	const want = "b6ce46f6693ddcf0d3513b10c72c784e"
	if got := sample().DeriveID(); got != want {
		t.Fatalf("DeriveID() = %s, want %s: changing the derivation breaks duplicate detection across a rollout", got, want)
	}
	// Attributes are not part of the id: the same change re-sent with more
	// or fewer columns is still the same message.
	e := sample()
	e.Attributes = nil
	if got := e.DeriveID(); got != want {
		t.Errorf("without attributes DeriveID() = %s, want %s", got, want)
	}
	// The source is not part of the id: a webhook and Dataverse's native
	// Service Bus delivery of one operation are one message.
	e.Source = SourceServiceBus
	if got := e.DeriveID(); got != want {
		t.Errorf("another source changed the id: %s", got)
	}
	// The organisation name is compared case-insensitively.
	e.OrgName = "Contoso"
	f := sample()
	f.OrgName = "CONTOSO"
	if e.DeriveID() != f.DeriveID() {
		t.Error("org name case changed the id")
	}
	// Each remaining input changes it.
	for name, mod := range map[string]func(*Event){
		"operation": func(e *Event) { e.OperationID = "op-2" },
		"record":    func(e *Event) { e.RecordID = "9a1e0000-0000-0000-0000-000000000002" },
		"entity":    func(e *Event) { e.Entity = EntityLead },
		"rowVer":    func(e *Event) { e.RowVersion = 7 },
		"org":       func(e *Event) { e.OrgID = "00000000-0000-0000-0000-0000000000bb" },
	} {
		g := sample()
		mod(g)
		if g.DeriveID() == want {
			t.Errorf("changing the %s kept the id", name)
		}
	}
}

// TestDeriveIDMatchesItsDefinition checks the allocation-free DeriveID
// against the plain formula it implements, including upper case, non-ASCII
// organisation names (strings.ToLower's rules) and fields longer than its
// stack buffer.
func TestDeriveIDMatchesItsDefinition(t *testing.T) {
	plain := func(e *Event) string {
		h := sha256.New()
		fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s\x00%s\x00%d\x00%d",
			strings.ToLower(e.OrgID+"|"+e.OrgName), e.Entity, e.RecordID, e.Message, e.OperationID, e.Version, e.RowVersion)
		return hex.EncodeToString(h.Sum(nil)[:16])
	}
	for _, e := range []*Event{
		{},
		{OrgID: "7C8D3B5E-1F2A-4B6C-9D0E-123456789ABC", OrgName: "unqABC", Entity: "contact",
			RecordID: "9a100000-0000-4000-8000-000000000003", Message: "Update", OperationID: "0f000000-0000-4000-8000-000000000099",
			Version: 1767261655000, RowVersion: 987654321},
		{OrgID: "x", OrgName: "ÜNQ-İstanbul-Straße", Entity: "lead", Message: "Create", Version: -1, RowVersion: -42},
		{OrgID: strings.Repeat("A", 400), OrgName: strings.Repeat("b", 300), Entity: strings.Repeat("c", 200), OperationID: "Z"},
	} {
		if got, want := e.DeriveID(), plain(e); got != want {
			t.Errorf("DeriveID(%+v) = %s, want %s", e, got, want)
		}
	}
}
