package event

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

// awkward strings: every escape encoding/json makes, invalid UTF-8, the two
// line separators, multi-byte runes.
var awkward = []string{"", "plain", `q"uo\te`, "<a href='x'>&amp;</a>", "tab\tnl\ncr\rbs\bff\f", "\x00\x01\x1f\x7f",
	"bad \xff\xfe utf8", "trunc \xe2\x82", "ls\u2028ps\u2029", "Zoë — 東京 🙂", "3F2504E0-4F89-11D3-9A0C-0305E82C3301"}

func randomString(r *rand.Rand) string {
	if r.IntN(3) == 0 {
		return awkward[r.IntN(len(awkward))]
	}
	var sb strings.Builder
	for range r.IntN(12) {
		sb.WriteByte(byte(r.IntN(256)))
	}
	return sb.String()
}

func randomTime(r *rand.Rand) time.Time {
	t := time.Unix(r.Int64N(253402300799), r.Int64N(1e9))
	switch r.IntN(3) {
	case 0:
		return t.UTC()
	case 1:
		return t.In(time.FixedZone("x", (r.IntN(48)-24)*1800+r.IntN(2)*17))
	}
	return t.Round(time.Millisecond).UTC()
}

func randomAttributes(r *rand.Rand, depth int) Attributes {
	if r.IntN(8) == 0 {
		return nil
	}
	a := Attributes{}
	for range r.IntN(10) {
		a[randomString(r)] = randomValue(r, depth)
	}
	return a
}

func randomValue(r *rand.Rand, depth int) Value {
	nums := []json.Number{"0", "-1", "1234.50", "1e10", "-0.5E-3", "12345678901234567890"}
	switch r.IntN(10) {
	case 0:
		return Null()
	case 1:
		return String(randomString(r))
	case 2:
		return Number(nums[r.IntN(len(nums))])
	case 3:
		return Bool(r.IntN(2) == 0)
	case 4:
		return Value{Kind: KindRef, Ref: &Ref{LogicalName: randomString(r), ID: randomString(r), Name: randomString(r)}}
	case 5:
		return Option(r.IntN(1000000) - 500)
	case 6:
		opts := make([]int, r.IntN(4))
		for i := range opts {
			opts[i] = r.IntN(1 << 30)
		}
		return Value{Kind: KindOptions, Options: opts}
	case 7:
		return Time(randomTime(r))
	case 8:
		if depth < 2 {
			var es []Attributes
			for range r.IntN(3) {
				es = append(es, randomAttributes(r, depth+1))
			}
			return Value{Kind: KindEntities, Entities: es}
		}
	}
	return Money(nums[r.IntN(len(nums))])
}

func randomEvent(r *rand.Rand) *Event {
	e := &Event{
		Schema: r.IntN(3), ID: randomString(r), Source: randomString(r), OrgID: randomString(r), OrgName: randomString(r),
		Entity: randomString(r), RecordID: randomString(r), Message: randomString(r), Version: r.Int64() - r.Int64(),
		Attributes: randomAttributes(r, 0), Truncated: r.IntN(2) == 0, CorrelationID: randomString(r),
		OperationID: randomString(r), RequestID: randomString(r), UserID: randomString(r),
		InitiatingUserID: randomString(r), Depth: r.IntN(3), ParentMessage: randomString(r), StepID: randomString(r),
		SubordinateID: randomString(r),
	}
	if r.IntN(2) == 0 {
		e.OccurredAt = randomTime(r)
	}
	if r.IntN(2) == 0 {
		e.RowVersion = r.Int64N(1 << 40)
	}
	if r.IntN(2) == 0 {
		e.Formatted = map[string]string{}
		for range r.IntN(5) {
			e.Formatted[randomString(r)] = randomString(r)
		}
	}
	for _, img := range []*map[string]Attributes{&e.PreImages, &e.PostImages} {
		if r.IntN(2) == 0 {
			*img = map[string]Attributes{}
			for range r.IntN(3) {
				(*img)[randomString(r)] = randomAttributes(r, 0)
			}
		}
	}
	return e
}

func TestEncodeMatchesMarshal(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 15))
	for i := range 3000 {
		e := randomEvent(r)
		got, err := Encode(e)
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		want, err := json.Marshal(e)
		if err != nil {
			t.Fatalf("event %d: json.Marshal: %v", i, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("event %d differs from json.Marshal\n got %s\nwant %s", i, got, want)
		}
	}
}

// What json.Marshal refuses, Encode refuses too (and says what, for which record).
func TestEncodeRefusesWhatMarshalRefuses(t *testing.T) {
	year10k := time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	for name, e := range map[string]*Event{
		"invalid number":   {Entity: "contact", RecordID: "r", Attributes: Attributes{"x": Number("1.")}},
		"year 10000":       {Entity: "contact", RecordID: "r", OccurredAt: year10k},
		"value year 10000": {Entity: "contact", RecordID: "r", Attributes: Attributes{"x": {Kind: KindTime, Time: &year10k}}},
		"zone 24 h":        {Entity: "contact", RecordID: "r", OccurredAt: time.Unix(0, 0).In(time.FixedZone("x", 24*3600))},
	} {
		if _, err := json.Marshal(e); err == nil {
			t.Fatalf("%s: json.Marshal accepts it; the case is wrong", name)
		}
		_, err := Encode(e)
		if err == nil || !strings.Contains(err.Error(), "contact/r") {
			t.Errorf("%s: Encode error %v, want one naming contact/r", name, err)
		}
	}
}

func FuzzEncode(f *testing.F) {
	for _, s := range awkward {
		f.Add(s, s, "1.5", int64(1700000000000))
	}
	f.Fuzz(func(t *testing.T, k, s, num string, ms int64) {
		e := &Event{Schema: 1, Entity: s, RecordID: k, OccurredAt: time.UnixMilli(ms), Formatted: map[string]string{k: s, s: k},
			Attributes: Attributes{k: String(s), s: Number(json.Number(num)), "r": Reference(k, s, num)}}
		want, werr := json.Marshal(e)
		got, err := AppendEncode(nil, e)
		if (err != nil) != (werr != nil) {
			t.Fatalf("Encode error %v, json.Marshal error %v", err, werr)
		}
		if err == nil && !bytes.Equal(got, want) {
			t.Fatalf("differs from json.Marshal\n got %s\nwant %s", got, want)
		}
	})
}

func BenchmarkEncode(b *testing.B) {
	e := sample()
	e.ID = e.DeriveID()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Encode(e); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeMarshal(b *testing.B) {
	e := sample()
	e.ID = e.DeriveID()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := json.Marshal(e); err != nil {
			b.Fatal(err)
		}
	}
}

// isGUIDPlain is IsGUID's definition: normalise, then check the lower-case form.
func isGUIDPlain(s string) bool {
	s = NormalizeID(s)
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return false
			}
		}
	}
	return true
}

func FuzzIsGUID(f *testing.F) {
	for _, s := range []string{"3F2504E0-4F89-11D3-9A0C-0305E82C3301", " {3f2504e0-4f89-11d3-9a0c-0305e82c3301} ",
		"3F2504E0-4F89-11D3-9A0C-0305E82C330G", "3F2504E0-4F89-11D3-9A0C-0305E82C330\u212a", "\u00a03f2504e0-4f89-11d3-9a0c-0305e82c3301",
		"{{3f2504e0-4f89-11d3-9a0c-0305e82c3301}}", "3f2504e0+4f89-11d3-9a0c-0305e82c3301"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := IsGUID(s), isGUIDPlain(s); got != want {
			t.Fatalf("IsGUID(%q) = %v, the definition says %v", s, got, want)
		}
	})
}

// Everything Encode writes is read back by the canonical decoder, exactly as
// json.Unmarshal reads it.
func TestDecodeMatchesUnmarshal(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 16))
	for i := range 3000 {
		b, err := Encode(randomEvent(r))
		if err != nil {
			t.Fatal(err)
		}
		got, ok := decodeCanonical(b)
		if !ok {
			t.Fatalf("event %d: the canonical decoder declines Encode's output %s", i, b)
		}
		var want Event
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(*got, want) {
			t.Fatalf("event %d: decoded differently from json.Unmarshal\n got %+v\nwant %+v\nfrom %s", i, *got, want, b)
		}
	}
}

// Whatever the canonical decoder accepts, json.Unmarshal accepts and reads
// the same way.
func FuzzDecode(f *testing.F) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		b, _ := Encode(randomEvent(r))
		f.Add(b)
	}
	f.Add([]byte(`{"schema":1,"id":"a\u00e9\"b","source":"","entity":"","recordId":"","message":"","occurredAt":"2026-01-02T03:04:05Z","attributes":{"x":{"kind":"options","options":[-0,1]}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := decodeCanonical(b)
		if !ok {
			return
		}
		var want Event
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatalf("canonical decoder accepts what json.Unmarshal refuses (%v): %q", err, b)
		}
		if !reflect.DeepEqual(*got, want) {
			t.Fatalf("decoded differently from json.Unmarshal\n got %+v\nwant %+v\nfrom %q", *got, want, b)
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	e := sample()
	e.ID = e.DeriveID()
	body, _ := Encode(e)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(body); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeUnmarshal(b *testing.B) {
	e := sample()
	e.ID = e.DeriveID()
	body, _ := Encode(e)
	b.ReportAllocs()
	for b.Loop() {
		var x Event
		if err := json.Unmarshal(body, &x); err != nil {
			b.Fatal(err)
		}
	}
}
