package sqlitestore

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"testing"
)

// A store written by schema 1 (a row per column key) reads the same
// versions after the upgrade, and keeps never lowering them.
func TestVersionsMigrateFromSchema1(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "store.db")
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	v1 := map[string]int64{"contact/a": 10, "contact/a#lastname": 10, "contact/a#emailaddress1": 7,
		"contact/a@rv": 99, "contact/c#x#y": 4, "contact/c#12:3;": 5, "contact/c#é": 8, "person-creating/p": 1}
	stmts := []string{migrations[0], `PRAGMA user_version = 1`}
	for _, q := range stmts {
		if _, err := raw.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	for k, v := range v1 {
		if _, err := raw.ExecContext(ctx, `INSERT INTO versions (key, version) VALUES (?, ?)`, k, v); err != nil {
			t.Fatal(err)
		}
	}
	raw.Close()

	s, err := Open(ctx, path, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	keys := append(slicesKeys(v1), "contact/a#missing")
	got, err := s.GetVersions(ctx, keys)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(got, v1) {
		t.Fatalf("after migration GetVersions = %v\nwant %v", got, v1)
	}
	// One row per record: contact/a (with its columns), contact/a@rv,
	// contact/c (columns only), person-creating/p.
	var n int
	if err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM record_versions`).Scan(&n); err != nil || n != 4 {
		t.Fatalf("%d rows in record_versions (%v), want 4", n, err)
	}
	if err := s.PutVersions(ctx, map[string]int64{"contact/a#lastname": 9, "contact/a#emailaddress1": 11}); err != nil {
		t.Fatal(err)
	}
	got, err = s.GetVersions(ctx, []string{"contact/a#lastname", "contact/a#emailaddress1"})
	if err != nil || got["contact/a#lastname"] != 10 || got["contact/a#emailaddress1"] != 11 {
		t.Fatalf("after a put: %v, %v; want lastname 10 (not lowered), emailaddress1 11", got, err)
	}
}

// Keys that are not valid UTF-8 cannot travel in the JSON argument; they
// take the placeholder statements and round-trip byte for byte.
func TestVersionsOfKeysThatAreNotUTF8(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "store.db"), Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v := map[string]int64{"contact/\xff": 3, "contact/a#\xfe": 4, "contact/\xff#lastname": 5, "contact/ok#lastname": 6}
	if err := s.PutVersions(ctx, v); err != nil {
		t.Fatal(err)
	}
	if err := s.PutVersions(ctx, map[string]int64{"contact/a#\xfe": 2, "contact/\xff#lastname": 7}); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetVersions(ctx, slicesKeys(v))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"contact/\xff": 3, "contact/a#\xfe": 4, "contact/\xff#lastname": 7, "contact/ok#lastname": 6}
	if !maps.Equal(got, want) {
		t.Fatalf("GetVersions = %v\nwant %v", got, want)
	}
	locked, err := s.LockRecords(ctx, "w1", []string{"email/\xff@example.com", "contact/ok"}, 1e9)
	if err != nil || len(locked) != 2 {
		t.Fatalf("LockRecords = %q, %v", locked, err)
	}
}

func slicesKeys(m map[string]int64) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestParseColsRoundTrip(t *testing.T) {
	var b []byte
	in := [][2]any{{"lastname", int64(12)}, {"", int64(0)}, {"a:1;b", int64(-3)}, {"é#x", int64(1 << 62)}}
	for _, c := range in {
		b = appendCol(b, c[0].(string), c[1].(int64))
	}
	var out [][2]any
	if err := parseCols(b, func(col []byte, v int64) { out = append(out, [2]any{string(col), v}) }); err != nil {
		t.Fatal(err)
	}
	if len(out) != len(in) {
		t.Fatalf("parsed %v, want %v", out, in)
	}
	for i := range in {
		if out[i] != in[i] {
			t.Fatalf("parsed %v, want %v", out, in)
		}
	}
	for _, bad := range []string{"x", "3:ab", "3:abc", "3:abc1", "-1:a1;", "2:ab1x;"} {
		if err := parseCols([]byte(bad), func([]byte, int64) {}); err == nil {
			t.Errorf("parseCols(%q) = nil, want an error", bad)
		}
	}
}

// BenchmarkPutVersions stores a batch's versions: 300 records, each with
// its own version and five columns, cycling through 30,000 records.
func BenchmarkPutVersions(b *testing.B) {
	s, err := Open(b.Context(), filepath.Join(b.TempDir(), "store.db"), Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	cols := []string{"emailaddress1", "firstname", "lastname", "ownerid", "parentcustomerid"}
	i := 0
	for b.Loop() {
		v := make(map[string]int64, 300*(len(cols)+1))
		for j := range 300 {
			rec := fmt.Sprintf("contact/%08x-0000-4000-8000-000000000000", (i*300+j)%30000)
			v[rec] = int64(i + 1)
			for _, c := range cols {
				v[rec+"#"+c] = int64(i + 1)
			}
		}
		if err := s.PutVersions(b.Context(), v); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*300), "ns/record")
}
