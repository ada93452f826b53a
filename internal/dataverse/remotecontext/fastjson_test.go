package remotecontext

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/msisync/msisync/api"
)

// fastDecodeCases are bodies where a hand-written JSON reader could go wrong.
var fastDecodeCases = []string{
	`{}`, `[]`, `{"a":[]}`, `{"a":{}}`, ` {"a" : [ 1 , 2 ] } `, "\t\r\n{\"a\":1}\n",
	`{"a":1,"a":2}`, `{"a":{"b":1},"a":[1]}`, // repeated keys: the last wins
	`{"n":[0,-0,1.5,-2e10,3E+2,4e-3,12345678901234567890,0.1e1]}`,
	`{"s":"\/Date(1767261660000)\/","t":"a\"b\\c\/d\b\f\n\r\t"}`,
	`{"u":"\u00e9\u4e2d\u0000\u001F\uFFFF"}`, `{"u":"\ud83d\ude00"}`, `{"u":"\ud800"}`, `{"u":"\udc00x"}`,
	`{"u":"é中😀"}`, "{\"u\":\"\xff\"}", "{\"u\":\"a\xc3\"}", "{\"u\":\"\\n\xe2\x82\"}", "{\"\xff\":1}",
	`{"a":true,"b":false,"c":null}`, `[true,false,null,"x",{"k":[{"k":"v"}]}]`, `"str"`, `12`, `null`,
	// malformed: each must fall back to encoding/json (and its error)
	``, ` `, `{`, `}`, `{"a"}`, `{"a":}`, `{"a":1,}`, `[1,]`, `[,1]`, `{"a":1 "b":2}`, `{a:1}`,
	`{"a":01}`, `{"a":-}`, `{"a":1.}`, `{"a":.5}`, `{"a":1e}`, `{"a":1e+}`, `{"a":+1}`, `{"a":tru}`,
	`{"a":nul}`, `{"a":truex}`, `{"a":"x` + "\n" + `"}`, `{"a":"\x"}`, `{"a":"\u12"}`, `{"a":"\u12G4"}`,
	`{"a":"unterminated}`, `{"a":1}{"b":2}`, `{"a":1} x`, "\ufeff{}", `{"a":NaN}`, `{"a":'x'}`,
	strings.Repeat("[", 300) + strings.Repeat("]", 300), strings.Repeat(`{"a":`, 250) + "1" + strings.Repeat("}", 250),
}

func checkFastDecode(t *testing.T, body []byte) {
	t.Helper()
	std, wantErr := decodeStd(body)
	got, ok := fastDecode(body)
	if !ok {
		return // decode falls back to decodeStd: the same result by construction
	}
	if wantErr != nil {
		t.Fatalf("fastDecode accepted %.200q, encoding/json says %v", body, wantErr)
	}
	// Values the parsers keep as JSON text (rawString) must read the same.
	stdJSON, err := json.Marshal(std)
	if err != nil {
		t.Fatal(err)
	}
	if gotJSON, err := json.Marshal(got); err != nil || string(gotJSON) != string(stdJSON) {
		t.Fatalf("fastDecode(%.200q) marshals to %.300s (%v), encoding/json's tree to %.300s", body, gotJSON, err, stdJSON)
	}
	want := toObject(std)
	// Key order is not part of the tree: the parsers look keys up, and
	// iterate objects only sorted (pairs) or into maps.
	if got, want := sortKeys(got), sortKeys(want); !reflect.DeepEqual(got, want) {
		t.Fatalf("fastDecode(%.200q)\n got %.500v\nwant %.500v", body, got, want)
	}
}

// sortKeys copies a tree with every object's keys sorted.
func sortKeys(v any) any {
	switch x := v.(type) {
	case jsonObject:
		o := make(jsonObject, len(x))
		for i, m := range x {
			o[i] = member{key: m.key, value: sortKeys(m.value)}
		}
		slices.SortFunc(o, func(a, b member) int { return strings.Compare(a.key, b.key) })
		return o
	case []any:
		out := make([]any, len(x))
		for i, el := range x {
			out[i] = sortKeys(el)
		}
		return out
	}
	return v
}

func TestFastDecodeMatchesEncodingJSON(t *testing.T) {
	for _, c := range fastDecodeCases {
		checkFastDecode(t, []byte(c))
	}
	files, _ := filepath.Glob(filepath.Join("testdata", "*.json"))
	if len(files) == 0 {
		t.Fatal("no testdata")
	}
	accepted := 0
	for _, name := range append(files, "") {
		var b []byte
		if name == "" {
			b = api.ExampleDataverseUpdate
		} else {
			var err error
			if b, err = os.ReadFile(name); err != nil {
				t.Fatal(err)
			}
		}
		checkFastDecode(t, b)
		if _, ok := fastDecode(b); ok {
			accepted++
		}
	}
	// The fast path must actually serve real payloads, or it only adds cost.
	if accepted < len(files) {
		t.Errorf("fastDecode took %d of %d real payloads; want all", accepted, len(files)+1)
	}
}

func TestFastDecodeDeclinesWhatItCannotMirror(t *testing.T) {
	for _, c := range []string{`{"a":1,"a":2}`, `{"u":"\ud83d\ude00"}`, "{\"u\":\"\xff\"}", `{"a":1,}`, ``, strings.Repeat("[", 300) + strings.Repeat("]", 300)} {
		if _, ok := fastDecode([]byte(c)); ok {
			t.Errorf("fastDecode accepted %q; it should leave it to encoding/json", c)
		}
	}
}

// FuzzFastDecode: whatever fastDecode accepts, encoding/json decodes to the
// same tree (once its maps are converted).
func FuzzFastDecode(f *testing.F) {
	for _, c := range fastDecodeCases {
		f.Add([]byte(c))
	}
	f.Add(api.ExampleDataverseUpdate)
	files, _ := filepath.Glob(filepath.Join("testdata", "*.json"))
	for _, name := range files {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) { checkFastDecode(t, body) })
}
