package remotecontext

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/msisync/msisync/internal/event"
)

func BenchmarkParse(b *testing.B) {
	body := fixture(b, "contact_update.json")
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(body, Headers{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseCompact is the same Update without the fixture's
// indentation: Dataverse's serializer sends compact JSON.
func BenchmarkParseCompact(b *testing.B) {
	var buf bytes.Buffer
	if err := json.Compact(&buf, fixture(b, "contact_update.json")); err != nil {
		b.Fatal(err)
	}
	body := buf.Bytes()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(body, Headers{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeOnly is the floor: encoding/json into a generic tree.
func BenchmarkDecodeOnly(b *testing.B) {
	body := fixture(b, "contact_update.json")
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		var v any
		if err := json.Unmarshal(body, &v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncode(b *testing.B) {
	e, err := Parse(fixture(b, "contact_update.json"), Headers{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := event.Encode(e); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecode compares the tree readers on the same body: fast is what
// Parse uses, std the encoding/json path it falls back to.
func BenchmarkDecode(b *testing.B) {
	body := fixture(b, "contact_update.json")
	for name, dec := range map[string]func([]byte) (any, error){"fast": decode, "std": decodeStd} {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := dec(body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkParseTree is Parse through the generic tree (the path parseDirect
// declines to): the same-run baseline for BenchmarkParse.
func BenchmarkParseTree(b *testing.B) {
	body := fixture(b, "contact_update.json")
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseTree(body, Headers{}, event.SourceWebhook); err != nil {
			b.Fatal(err)
		}
	}
}
