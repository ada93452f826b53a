package pgstore_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/store"
	"github.com/msisync/msisync/internal/store/pgstore"
	"github.com/msisync/msisync/internal/store/storetest"
)

const defaultURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

var quiet = slog.New(slog.DiscardHandler)

func testURL() string {
	if u := os.Getenv("MSISYNC_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return defaultURL
}

var (
	adminOnce sync.Once
	admin     *pgxpool.Pool
	adminErr  error
)

// adminPool connects once per test binary; tests without a reachable
// PostgreSQL skip, except under CI=true where that is a failure.
func adminPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	adminOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		admin, adminErr = pgxpool.New(ctx, testURL())
		if adminErr == nil {
			adminErr = admin.Ping(ctx)
		}
	})
	if adminErr != nil {
		msg := fmt.Sprintf("PostgreSQL not reachable at %s (set MSISYNC_TEST_DATABASE_URL): %v",
			pgstore.Redact(testURL()), adminErr)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + "; CI=true requires it")
		}
		t.Skip(msg)
	}
	return admin
}

// newSchema returns a fresh schema name that is dropped when t ends.
func newSchema(t testing.TB) string {
	t.Helper()
	pool := adminPool(t)
	b := make([]byte, 6)
	rand.Read(b)
	name := "msisync_test_" + hex.EncodeToString(b)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{name}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", name, err)
		}
	})
	return name
}

func open(t testing.TB, schema string, clk clock.Clock) *pgstore.Store {
	t.Helper()
	s, err := pgstore.Open(context.Background(), testURL(), pgstore.Options{Schema: schema, Clock: clk, Logger: quiet})
	if err != nil {
		t.Fatalf("Open(schema %s): %v", schema, err)
	}
	return s
}

func TestConformance(t *testing.T) {
	adminPool(t) // skip (or fail under CI=true) once, not per subtest
	storetest.Run(t, func(t *testing.T, clk *clock.Fake) store.Store {
		return open(t, newSchema(t), clk)
	})
}

func TestOpenBadInput(t *testing.T) {
	for _, schema := range []string{"Upper", "has-dash", "1digit", "x; DROP TABLE y", strings.Repeat("a", 64)} {
		_, err := pgstore.Open(t.Context(), testURL(), pgstore.Options{Schema: schema, Logger: quiet})
		if err == nil || !strings.Contains(err.Error(), "Options.Schema") {
			t.Errorf("Open(schema %q) error = %v, want one naming Options.Schema", schema, err)
		}
	}
	_, err := pgstore.Open(t.Context(), "postgres://u:s3cret@[bad", pgstore.Options{Logger: quiet})
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("Open(bad URL) error = %v, want an error without the password", err)
	}
	if _, err := pgstore.Open(t.Context(), "", pgstore.Options{Logger: quiet}); err == nil {
		t.Error("Open(empty URL) succeeded")
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://u:pw@h:5432/db?sslmode=disable":          "postgres://u:xxxxx@h:5432/db?sslmode=disable",
		"postgres://h/db?password=pw":                        "postgres://h/db?password=xxxxx",
		"host=h password=pw":                                 "(connection string)",
		"postgres://u@h/db":                                  "postgres://u@h/db",
		"postgres://h/db?sslpassword=pw&sslmode=verify-full": "postgres://h/db?sslmode=verify-full&sslpassword=xxxxx",
	} {
		if got := pgstore.Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestReopenAndNewerSchema(t *testing.T) {
	schema := newSchema(t)
	s := open(t, schema, nil)
	if err := s.PutMeta(t.Context(), "k", "v"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, schema, nil)
	if v, ok, err := s.GetMeta(t.Context(), "k"); err != nil || !ok || v != "v" {
		t.Fatalf("after reopen GetMeta = %q, %v, %v; want v", v, ok, err)
	}
	s.Close()
	if _, err := adminPool(t).Exec(t.Context(), "UPDATE "+pgx.Identifier{schema}.Sanitize()+".schema_version SET version = $1",
		pgstore.SchemaVersion+1); err != nil {
		t.Fatal(err)
	}
	if _, err := pgstore.Open(t.Context(), testURL(), pgstore.Options{Schema: schema, Logger: quiet}); err == nil ||
		!strings.Contains(err.Error(), "newer") {
		t.Fatalf("Open of a newer schema: err = %v, want a 'newer' error", err)
	}
}

// Replicas: several Stores opened at once on one schema (the migration must
// not race), then locking overlapping records concurrently.
func TestReplicasShareLocks(t *testing.T) {
	schema := newSchema(t)
	clk := clock.NewFake(storetest.Start)
	const replicas = 4
	stores := make([]*pgstore.Store, replicas)
	errs := make([]error, replicas)
	var wg sync.WaitGroup
	for i := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stores[i], errs[i] = pgstore.Open(t.Context(), testURL(), pgstore.Options{Schema: schema, Clock: clk, Logger: quiet})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Open replica %d: %v", i, err)
		}
		defer stores[i].Close()
	}
	keys := make([]string, 300)
	for i := range keys {
		keys[i] = fmt.Sprintf("contact/%03d", i)
	}
	for round := range 5 {
		got := make([][]string, replicas)
		start := make(chan struct{})
		for i := range stores {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				mine := slices.Clone(keys)
				if i%2 == 1 {
					slices.Reverse(mine)
				}
				got[i], errs[i] = stores[i].LockRecords(t.Context(), fmt.Sprintf("replica-%d", i), mine, time.Minute)
			}()
		}
		close(start)
		wg.Wait()
		var all []string
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d: LockRecords replica %d: %v", round, i, err)
			}
			all = append(all, got[i]...)
		}
		slices.Sort(all)
		if !slices.Equal(all, keys) {
			t.Fatalf("round %d: replicas locked %d keys in all (overlap or gap), want each of %d exactly once",
				round, len(all), len(keys))
		}
		for i := range stores {
			if err := stores[i].UnlockRecords(t.Context(), fmt.Sprintf("replica-%d", i), got[i]); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Concurrent version writes from replicas keep the maximum.
	for i := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v := map[string]int64{}
			for _, k := range keys {
				v[k] = int64(i)
			}
			errs[i] = stores[i].PutVersions(t.Context(), v)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("PutVersions replica %d: %v", i, err)
		}
	}
	v, err := stores[0].GetVersions(t.Context(), keys)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if v[k] != replicas-1 {
			t.Fatalf("version %s = %d after concurrent writes, want %d", k, v[k], replicas-1)
		}
	}
}

func BenchmarkPutLinks(b *testing.B) {
	s := open(b, newSchema(b), nil)
	defer s.Close()
	storetest.BenchmarkPutLinks(b, s)
}

func BenchmarkGetLinks(b *testing.B) {
	s := open(b, newSchema(b), nil)
	defer s.Close()
	storetest.BenchmarkGetLinks(b, s)
}
