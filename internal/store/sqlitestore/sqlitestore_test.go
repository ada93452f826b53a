package sqlitestore_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/store"
	"github.com/msisync/msisync/internal/store/sqlitestore"
	"github.com/msisync/msisync/internal/store/storetest"
)

var quiet = slog.New(slog.DiscardHandler)

func open(t testing.TB, path string, clk clock.Clock) *sqlitestore.Store {
	t.Helper()
	s, err := sqlitestore.Open(context.Background(), path, sqlitestore.Options{Clock: clk, Logger: quiet})
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, clk *clock.Fake) store.Store {
		return open(t, filepath.Join(t.TempDir(), "store.db"), clk)
	})
}

func TestConformanceMemory(t *testing.T) {
	if raceEnabled {
		t.Skip("the file-backed run covers the same code; under -race a second run costs ~15s")
	}
	storetest.Run(t, func(t *testing.T, clk *clock.Fake) store.Store {
		return open(t, ":memory:", clk)
	})
}

func TestReopenKeepsDataAndSchemaVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	s := open(t, path, nil)
	if err := s.PutLinks(t.Context(), []store.Link{{Kind: store.KindCompany, ExternalID: "a", MarketoID: "1"}}); err != nil {
		t.Fatalf("PutLinks: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s = open(t, path, nil)
	defer s.Close()
	got, err := s.GetLinks(t.Context(), store.KindCompany, []string{"a"})
	if err != nil || got["a"].MarketoID != "1" {
		t.Fatalf("after reopen GetLinks = %v, %v; want MarketoID 1", got, err)
	}
}

func TestRejectsNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	s := open(t, path, nil)
	s.Close()
	// Pretend a newer msisync migrated the file.
	db := open(t, path, nil)
	db.Close()
	raw, err := openRaw(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(fmt.Sprintf("PRAGMA user_version = %d", sqlitestore.SchemaVersion+1)); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	if _, err := sqlitestore.Open(t.Context(), path, sqlitestore.Options{Logger: quiet}); err == nil {
		t.Fatal("Open of a file with a newer schema version succeeded")
	}
}

func TestOpenBadInput(t *testing.T) {
	for _, path := range []string{"", "a?b.db"} {
		if _, err := sqlitestore.Open(t.Context(), path, sqlitestore.Options{Logger: quiet}); err == nil {
			t.Errorf("Open(%q) succeeded, want an error", path)
		}
	}
	if _, err := sqlitestore.Open(t.Context(), filepath.Join(t.TempDir(), "x.db"), sqlitestore.Options{Logger: quiet, BusyTimeout: -time.Second}); err == nil {
		t.Error("Open with a negative BusyTimeout succeeded")
	}
	if _, err := sqlitestore.Open(t.Context(), filepath.Join(t.TempDir(), "missing-dir", "x.db"), sqlitestore.Options{Logger: quiet}); err == nil {
		t.Error("Open in a missing directory succeeded")
	}
}

// Two Stores on one file stand for the receiver and worker processes: each
// has its own connections, so they contend through SQLite's file locks.
func TestTwoOpenersShareLocks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	clk := clock.NewFake(storetest.Start)
	var (
		stores [2]*sqlitestore.Store
		wg     sync.WaitGroup
		errs   [2]error
	)
	// Open concurrently: schema creation must not race.
	for i := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stores[i], errs[i] = sqlitestore.Open(t.Context(), path, sqlitestore.Options{Clock: clk, Logger: quiet})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Open #%d: %v", i, err)
		}
		defer stores[i].Close()
	}
	keys := make([]string, 200)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%03d", i)
	}
	for round := range 5 {
		var got [2][]string
		start := make(chan struct{})
		for i := range stores {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				mine := slices.Clone(keys)
				if i == 1 {
					slices.Reverse(mine)
				}
				got[i], errs[i] = stores[i].LockRecords(t.Context(), fmt.Sprintf("p%d", i), mine, time.Minute)
			}()
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d: LockRecords #%d: %v", round, i, err)
			}
		}
		all := append(slices.Clone(got[0]), got[1]...)
		slices.Sort(all)
		if !slices.Equal(all, keys) {
			t.Fatalf("round %d: the two openers locked %d+%d keys (overlap or gap), want each of %d exactly once",
				round, len(got[0]), len(got[1]), len(keys))
		}
		for i := range stores {
			if err := stores[i].UnlockRecords(t.Context(), fmt.Sprintf("p%d", i), got[i]); err != nil {
				t.Fatalf("UnlockRecords: %v", err)
			}
		}
	}
	// What one writes, the other reads.
	if err := stores[0].PutVersions(t.Context(), map[string]int64{"contact/x": 3}); err != nil {
		t.Fatal(err)
	}
	if v, err := stores[1].GetVersions(t.Context(), []string{"contact/x"}); err != nil || v["contact/x"] != 3 {
		t.Fatalf("second opener read %v, %v; want contact/x=3", v, err)
	}
}

func BenchmarkPutLinks(b *testing.B) {
	s := open(b, filepath.Join(b.TempDir(), "store.db"), nil)
	defer s.Close()
	storetest.BenchmarkPutLinks(b, s)
}

func BenchmarkGetLinks(b *testing.B) {
	s := open(b, filepath.Join(b.TempDir(), "store.db"), nil)
	defer s.Close()
	storetest.BenchmarkGetLinks(b, s)
}

// BenchmarkRenewRecordLocks re-locks a drain batch's keys (6,000 records and
// emails) for their owner, as the syncer does every RecordLockTTL/3.
func BenchmarkRenewRecordLocks(b *testing.B) {
	s := open(b, filepath.Join(b.TempDir(), "store.db"), nil)
	keys := make([]string, 6000)
	for i := range keys {
		keys[i] = fmt.Sprintf("contact/%08x-0000-4000-8000-000000000000", i)
	}
	ctx := b.Context()
	if _, err := s.LockRecords(ctx, "w1", keys, time.Minute); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		got, err := s.LockRecords(ctx, "w1", keys, time.Minute)
		if err != nil || len(got) != len(keys) {
			b.Fatalf("LockRecords = %d keys, %v", len(got), err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(keys)), "ns/key")
}

// BenchmarkLockRecordsFresh locks a drain batch's keys (6,000) nobody holds,
// then unlocks them, as each syncer batch does.
func BenchmarkLockRecordsFresh(b *testing.B) {
	s := open(b, filepath.Join(b.TempDir(), "store.db"), nil)
	keys := make([]string, 6000)
	ctx := b.Context()
	n := 0
	for b.Loop() {
		for i := range keys {
			keys[i] = fmt.Sprintf("contact/%08x-0000-4000-8000-%012x", i, n)
		}
		n++
		got, err := s.LockRecords(ctx, "w1", keys, time.Minute)
		if err != nil || len(got) != len(keys) {
			b.Fatalf("LockRecords = %d keys, %v", len(got), err)
		}
		if err := s.UnlockRecords(ctx, "w1", keys); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(keys)), "ns/key")
}
