package remotecontext

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/msisync/msisync/api"
	"github.com/msisync/msisync/internal/event"
)

// checkDirect: whenever parseDirect answers, the tree path answers the same
// event (a repeated top-level key aside, which only parseDirect refuses).
func checkDirect(t *testing.T, body []byte, h Headers) bool {
	t.Helper()
	got, gotErr, ok := parseDirect(body, h, event.SourceWebhook)
	if !ok {
		return false
	}
	if gotErr != nil {
		var se *SyntaxError
		if !errors.As(gotErr, &se) || !strings.Contains(gotErr.Error(), "more than once in the top-level object") {
			t.Fatalf("parseDirect(%.200q): unexpected error %v", body, gotErr)
		}
		return true
	}
	want, wantErr := parseTree(body, h, event.SourceWebhook)
	if wantErr != nil {
		t.Fatalf("parseDirect accepted %.200q; the tree path says %v", body, wantErr)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("parseDirect(%.200q)\n got %+v\nwant %+v", body, got, want)
	}
	return true
}

func realBodies(t testing.TB) map[string][]byte {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.json"))
	if len(files) == 0 {
		t.Fatal("no testdata")
	}
	out := map[string][]byte{"api.ExampleDataverseUpdate": api.ExampleDataverseUpdate}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		out[name] = b
	}
	return out
}

func TestDirectMatchesTree(t *testing.T) {
	served := 0
	bodies := realBodies(t)
	for name, b := range bodies {
		for _, h := range []Headers{{}, {Organization: "org", EntityName: "Contact", RequestName: "Update", CorrelationID: "9F1E2D3C-4B5A-4697-8877-665544332211", SizeExceeded: true}} {
			if checkDirect(t, b, h) {
				served++
			} else if h == (Headers{}) {
				t.Logf("declined: %s", name)
			}
		}
	}
	// The direct path must serve (nearly) every real payload, or it only adds cost.
	if served < 2*(len(bodies)-3) {
		t.Errorf("parseDirect served %d of %d real payloads", served, 2*len(bodies))
	}
	for _, c := range fastDecodeCases {
		checkDirect(t, []byte(c), Headers{})
	}
}

// TestDirectRefusesRepeatedTopLevelKey: encoding/json keeps the last of
// repeated keys, so a second MessageName could turn an Update into a Delete.
func TestDirectRefusesRepeatedTopLevelKey(t *testing.T) {
	body := `{"MessageName":"Update","PrimaryEntityName":"contact","PrimaryEntityId":"C0FFEE00-1234-4567-89AB-CDEF01234567","MessageName":"Delete"}`
	_, err := Parse([]byte(body), Headers{})
	var se *SyntaxError
	if !errors.As(err, &se) || !strings.Contains(err.Error(), `"MessageName" appears more than once`) {
		t.Fatalf("Parse = %v, want a SyntaxError naming MessageName", err)
	}
	// The empty key too (found by FuzzDirect: "" was the "no repeat" mark).
	empty := `{"MessageName":"Update","PrimaryEntityName":"contact","PrimaryEntityId":"C0FFEE00-1234-4567-89AB-CDEF01234567","":"","":""}`
	if _, err := Parse([]byte(empty), Headers{}); !errors.As(err, &se) || !strings.Contains(err.Error(), `"" appears more than once`) {
		t.Fatalf("Parse(repeated empty key) = %v, want a SyntaxError naming the key \"\"", err)
	}
	// Nested repeats are left to the tree path (encoding/json: the last wins).
	nested := `{"MessageName":"Update","PrimaryEntityName":"contact","PrimaryEntityId":"C0FFEE00-1234-4567-89AB-CDEF01234567","OwningExtension":{"Id":null,"Id":null}}`
	if _, _, ok := parseDirect([]byte(nested), Headers{}, event.SourceWebhook); ok {
		t.Fatal("parseDirect answered a body with a nested repeated key")
	}
	if e, err := Parse([]byte(nested), Headers{}); err != nil || e.RecordID != "c0ffee00-1234-4567-89ab-cdef01234567" {
		t.Fatalf("Parse(nested repeat) = %+v, %v", e, err)
	}
}

// TestDirectDeclinesWhatItCannotMirror: bodies with field errors or unusual
// shapes go to the tree path, which names every field.
func TestDirectDeclinesWhatItCannotMirror(t *testing.T) {
	base := `"MessageName":"Update","PrimaryEntityName":"contact","PrimaryEntityId":"C0FFEE00-1234-4567-89AB-CDEF01234567"`
	for _, c := range []string{
		`{` + base + `,"UserId":"not-a-guid"}`,
		`{` + base + `,"InputParameters":{"Target":{"LogicalName":"contact","Id":"C0FFEE00-1234-4567-89AB-CDEF01234567","Attributes":[]}}}`,
		`{` + base + `,"InputParameters":[{"key":"Target","value":{"LogicalName":"account","Id":"C0FFEE00-1234-4567-89AB-CDEF01234567","Attributes":[]}}]}`,
		`{` + base + `,"InputParameters":[{"key":"Target","value":{"Attributes":[{"key":"x","value":{"a":1}}]}}]}`,
		`{"MessageName":"Update","PrimaryEntityName":"contact"}`,
		`{` + base + `,"OperationCreatedOn":"\/Date(x)\/"}`,
		`[` + base + `]`,
	} {
		if _, _, ok := parseDirect([]byte(c), Headers{}, event.SourceWebhook); ok {
			t.Errorf("parseDirect answered %s", c)
		}
	}
}

// FuzzDirect: on any body, parseDirect either declines or agrees with the
// tree path (seeded with every real payload and the decoder's edge cases).
func FuzzDirect(f *testing.F) {
	for _, b := range realBodies(f) {
		f.Add(b)
	}
	for _, c := range fastDecodeCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, body []byte) { checkDirect(t, body, Headers{}) })
}

// plainRun must stop exactly where the byte-at-a-time loop stops.
func FuzzPlainRun(f *testing.F) {
	for _, s := range []string{"", "abcdefghijklmnop", `abcdefg"hij`, "abcdefgh\\ij", "abcdefghij\x1fk", "abcdefghijk\x80",
		"\x20\x21\x7f\x7e\x5b\x5d\x5c", "0123456789abcdef\"", "Zoë is here, long enough", "\x00\x00\x00\x00\x00\x00\x00\x00\x00"} {
		f.Add([]byte(s), 0)
	}
	f.Fuzz(func(t *testing.T, b []byte, start int) {
		if start < 0 || start > len(b) {
			start = 0
		}
		want := start
		for want < len(b) && plainASCII[b[want]] {
			want++
		}
		if got := plainRun(b, start); got != want {
			t.Fatalf("plainRun(%q, %d) = %d, want %d", b, start, got, want)
		}
	})
}
