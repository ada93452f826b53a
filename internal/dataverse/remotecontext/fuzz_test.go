package remotecontext

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/msisync/msisync/internal/event"
)

// FuzzParse feeds arbitrary bodies to the parsers: they must never panic, must
// classify every failure as a *SyntaxError or *event.FieldError, and what they
// accept must be a valid event that encodes for the queue.
func FuzzParse(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, false)
		f.Add(b, true)
	}
	f.Add([]byte(`{"entity":"contact","id":"c0ffee00-1234-4567-89ab-cdef01234567","message":"update","attributes":{"a":[1,2],"b":{"logicalName":"account","id":"b1a2c3d4-e5f6-4789-9abc-def012345678"}}}`), false)
	f.Add([]byte(`{"MessageName":"Update","PrimaryEntityName":"contact","PrimaryEntityId":"c0ffee00-1234-4567-89ab-cdef01234567","ParentContext":{"MessageName":"SetState","InputParameters":{"State":1}}}`), false)
	f.Fuzz(func(t *testing.T, body []byte, exceeded bool) {
		for name, parse := range map[string]func() (*event.Event, error){
			"webhook": func() (*event.Event, error) { return Parse(body, Headers{SizeExceeded: exceeded}) },
			"servicebus": func() (*event.Event, error) {
				return ParseServiceBus(body, map[string]string{PropEntityLogicalName: "contact"})
			},
			"custom": func() (*event.Event, error) { return ParseCustom(body) },
		} {
			e, err := parse()
			if err != nil {
				var se *SyntaxError
				var fe *event.FieldError
				if !errors.As(err, &se) && !errors.As(err, &fe) {
					t.Fatalf("%s: unclassified error %T: %v", name, err, err)
				}
				continue
			}
			if err := e.Validate(); err != nil {
				t.Fatalf("%s: accepted an invalid event: %v", name, err)
			}
			if e.ID != e.DeriveID() {
				t.Fatalf("%s: ID not derived", name)
			}
			b, err := event.Encode(e)
			if err != nil {
				t.Fatalf("%s: accepted event does not encode: %v", name, err)
			}
			if _, err := event.Decode(b); err != nil {
				t.Fatalf("%s: encoded event does not decode: %v", name, err)
			}
		}
	})
}
