package sqlitestore_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/store/sqlitestore"
	"github.com/msisync/msisync/internal/store/storetest"
)

const helperEnv = "MSISYNC_SQLITESTORE_HELPER_DB"

const processKeys = 300

// race locks each key alone, as a worker would, and writes a version per key
// so the two processes also contend for the write lock. It returns the keys
// it got.
func race(ctx context.Context, s *sqlitestore.Store, owner string) ([]string, error) {
	var got []string
	for i := range processKeys {
		k := fmt.Sprintf("contact/%03d", i)
		locked, err := s.LockRecords(ctx, owner, []string{k}, time.Hour)
		if err != nil {
			return nil, err
		}
		got = append(got, locked...)
		if err := s.PutVersions(ctx, map[string]int64{owner + "/" + k: int64(i)}); err != nil {
			return nil, err
		}
	}
	return got, nil
}

// TestHelperProcess is the second process of TestTwoProcesses; it does
// nothing unless that test started it.
func TestHelperProcess(t *testing.T) {
	path := os.Getenv(helperEnv)
	if path == "" {
		t.Skip("helper for TestTwoProcesses")
	}
	s, err := sqlitestore.Open(context.Background(), path, sqlitestore.Options{Clock: clock.NewFake(storetest.Start), Logger: quiet})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(2)
	}
	defer s.Close()
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		fmt.Println("error:", err)
		os.Exit(2)
	}
	got, err := race(context.Background(), s, "child")
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(2)
	}
	out, _ := json.Marshal(got)
	fmt.Println(string(out))
	os.Exit(0)
}

// TestTwoProcesses is the receiver-and-worker case: two OS processes on one
// file, contending through SQLite's file locks and busy_timeout.
func TestTwoProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a second process")
	}
	path := filepath.Join(t.TempDir(), "store.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start helper: %v", err)
	}
	defer cmd.Process.Kill() //nolint:errcheck // already exited on the happy path
	// Both processes open (and possibly create) the file at the same time.
	s := open(t, path, clock.NewFake(storetest.Start))
	defer s.Close()
	lines := bufio.NewScanner(stdout)
	lines.Buffer(nil, 1<<20)
	if !lines.Scan() || lines.Text() != "ready" {
		t.Fatalf("helper did not start: %q %v", lines.Text(), lines.Err())
	}
	if _, err := fmt.Fprintln(stdin, "go"); err != nil {
		t.Fatal(err)
	}
	mine, err := race(t.Context(), s, "parent")
	if err != nil {
		t.Fatalf("parent: %v", err)
	}
	if !lines.Scan() {
		t.Fatalf("helper gave no result: %v", lines.Err())
	}
	var theirs []string
	if err := json.Unmarshal(lines.Bytes(), &theirs); err != nil {
		t.Fatalf("helper result %q: %v", lines.Text(), err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v", err)
	}
	all := append(slices.Clone(mine), theirs...)
	slices.Sort(all)
	if len(all) != processKeys || len(slices.Compact(all)) != processKeys {
		t.Fatalf("parent locked %d and child %d keys: overlap or gap, want each of %d exactly once",
			len(mine), len(theirs), processKeys)
	}
	t.Logf("parent locked %d keys, child %d", len(mine), len(theirs))
	keys := []string{}
	for i := range processKeys {
		keys = append(keys, fmt.Sprintf("parent/contact/%03d", i), fmt.Sprintf("child/contact/%03d", i))
	}
	v, err := s.GetVersions(t.Context(), keys)
	if err != nil || len(v) != 2*processKeys {
		t.Fatalf("versions written by both processes: %d, %v; want %d", len(v), err, 2*processKeys)
	}
}
