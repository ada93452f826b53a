package api_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/msisync/msisync/api"
	"github.com/msisync/msisync/internal/dataverse/remotecontext"
	"github.com/msisync/msisync/internal/event"
)

type schema struct {
	Properties map[string]json.RawMessage `json:"properties"`
	Required   []string                   `json:"required"`
	Defs       map[string]struct {
		Properties map[string]json.RawMessage `json:"properties"`
		Required   []string                   `json:"required"`
	} `json:"$defs"`
}

func loadSchema(t *testing.T) schema {
	t.Helper()
	var s schema
	if err := json.Unmarshal(api.EventSchema, &s); err != nil {
		t.Fatalf("event.schema.json: %v", err)
	}
	return s
}

// jsonFields lists the JSON member names of a struct, and those without
// omitempty (always present, so they must be required).
func jsonFields(t reflect.Type) (all, always []string) {
	for i := 0; i < t.NumField(); i++ {
		tag := t.Field(i).Tag.Get("json")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" || name == "" {
			continue
		}
		all = append(all, name)
		if !strings.Contains(opts, "omitempty") {
			always = append(always, name)
		}
	}
	sort.Strings(all)
	sort.Strings(always)
	return all, always
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sorted(s []string) []string {
	s = append([]string(nil), s...)
	sort.Strings(s)
	return s
}

// TestEventSchemaMatchesStruct keeps api/event.schema.json and internal/event
// from drifting: same members, both ways, and every always-written member required.
func TestEventSchemaMatchesStruct(t *testing.T) {
	s := loadSchema(t)
	for _, tc := range []struct {
		name     string
		typ      reflect.Type
		props    map[string]json.RawMessage
		required []string
		// exact: every always-written member must be required.
		exact bool
	}{
		{"Event", reflect.TypeOf(event.Event{}), s.Properties, s.Required, true},
		{"Value", reflect.TypeOf(event.Value{}), s.Defs["value"].Properties, s.Defs["value"].Required, true},
		{"Ref", reflect.TypeOf(event.Ref{}), s.Defs["ref"].Properties, s.Defs["ref"].Required, true},
	} {
		all, always := jsonFields(tc.typ)
		if got := keys(tc.props); strings.Join(got, ",") != strings.Join(all, ",") {
			t.Errorf("%s: schema properties %v, struct JSON fields %v", tc.name, got, all)
		}
		if tc.exact && strings.Join(sorted(tc.required), ",") != strings.Join(always, ",") {
			t.Errorf("%s: schema requires %v, the struct always writes %v", tc.name, sorted(tc.required), always)
		}
	}
	var v struct {
		Properties struct {
			Schema struct {
				Const int `json:"const"`
			} `json:"schema"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(api.EventSchema, &v); err != nil || v.Properties.Schema.Const != event.SchemaVersion {
		t.Errorf("schema const %d, event.SchemaVersion %d (%v)", v.Properties.Schema.Const, event.SchemaVersion, err)
	}
}

// TestExamplesParse checks the example requests the README posts.
func TestExamplesParse(t *testing.T) {
	e, err := remotecontext.Parse(api.ExampleDataverseUpdate, remotecontext.Headers{})
	if err != nil {
		t.Fatalf("dataverse example: %v", err)
	}
	if e.Entity != event.EntityContact || e.Message != event.MessageUpdate || len(e.PreImages) == 0 || len(e.PostImages) == 0 {
		t.Errorf("dataverse example parsed to %s %s with %d pre and %d post images", e.Entity, e.Message, len(e.PreImages), len(e.PostImages))
	}
	if n := len(api.ExampleDataverseUpdate); n < 5000 || n > 9000 {
		t.Errorf("dataverse example is %d bytes; the benchmark and README promise about 6-7 KB", n)
	}
	c, err := remotecontext.ParseCustom(api.ExampleCustomEvent)
	if err != nil {
		t.Fatalf("custom example: %v", err)
	}
	if c.Entity != event.EntityContact || c.RecordID != e.RecordID {
		t.Errorf("custom example: %s/%s", c.Entity, c.RecordID)
	}
	// Every member an encoded event carries is declared by the schema.
	s := loadSchema(t)
	for _, ev := range []*event.Event{e, c} {
		b, err := event.Encode(ev)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		for k := range m {
			if _, ok := s.Properties[k]; !ok {
				t.Errorf("encoded event has %q, which the schema does not declare", k)
			}
		}
	}
}

// TestOpenAPIDocument checks the document is OpenAPI 3.1 and that every
// schema it references exists.
func TestOpenAPIDocument(t *testing.T) {
	var doc struct {
		OpenAPI    string                    `yaml:"openapi"`
		Paths      map[string]map[string]any `yaml:"paths"`
		Components struct {
			Schemas   map[string]any `yaml:"schemas"`
			Responses map[string]any `yaml:"responses"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(api.OpenAPI, &doc); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.1") {
		t.Errorf("openapi %q", doc.OpenAPI)
	}
	text := string(api.OpenAPI)
	for _, kind := range []struct {
		prefix string
		have   map[string]any
	}{{"#/components/schemas/", doc.Components.Schemas}, {"#/components/responses/", doc.Components.Responses}} {
		for _, part := range strings.Split(text, kind.prefix)[1:] {
			name := part[:strings.IndexAny(part, "\"' }")]
			if _, ok := kind.have[name]; !ok {
				t.Errorf("openapi.yaml references %s%s, which is not defined", kind.prefix, name)
			}
		}
	}
	for path, ops := range doc.Paths {
		for method, op := range ops {
			if m, ok := op.(map[string]any); ok && m["responses"] == nil {
				t.Errorf("%s %s has no responses", method, path)
			}
		}
	}
}

// TestREADMEExamplesExist: every api/examples file the READMEs' curl
// commands post is in the repository.
func TestREADMEExamplesExist(t *testing.T) {
	ref := regexp.MustCompile(`api/examples/[A-Za-z0-9._-]+\.json`)
	for _, doc := range []string{"../README.md", "README.md"} {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		paths := ref.FindAllString(string(b), -1)
		if len(paths) == 0 {
			t.Errorf("%s names no api/examples file; did the pattern go stale?", doc)
		}
		for _, p := range paths {
			if _, err := os.Stat(filepath.Join("..", p)); err != nil {
				t.Errorf("%s posts %s, which does not exist", doc, p)
			}
		}
	}
}
