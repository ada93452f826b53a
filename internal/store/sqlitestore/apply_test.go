package sqlitestore_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/store"
	"github.com/msisync/msisync/internal/store/sqlitestore"
	"github.com/msisync/msisync/internal/store/storetest"
)

func TestApplyRollback(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "store.db"), clock.NewFake(storetest.Start))
	defer s.Close()
	storetest.ApplyRollback(t, s, func(step string, err error) func() {
		return sqlitestore.SetApplyHook(func(at string) error {
			if at == step {
				return err
			}
			return nil
		})
	})
}

const applyKillEnv = "MSISYNC_SQLITESTORE_APPLY_KILL_DB"

// crashLinks is large enough that the killed transaction has written many
// pages (links and connections) before it stops.
const crashLinks = 3000

func crashChanges() *store.Changes {
	var c store.Changes
	for i := range crashLinks {
		id := fmt.Sprintf("%08d-0000-0000-0000-000000000000", i)
		c.PutLinks(store.Link{Kind: store.KindPerson, ExternalID: id, MarketoID: fmt.Sprint(i + 1), Entity: "contact", UpdatedAt: storetest.Start})
		c.PutConnections(store.Connection{ID: id, OpportunityID: "o", PersonID: id, Role: "Influencer", UpdatedAt: storetest.Start})
		c.PutVersions(map[string]int64{"contact/" + id: int64(i + 1)})
	}
	c.DeleteLinks(store.KindRole, "seed-role")
	return &c
}

// TestHelperApplyKilled is the child of TestApplyKilledMidTransaction: it
// starts an Apply and stops inside its transaction, after the links and
// connections are written, until the parent SIGKILLs it.
func TestHelperApplyKilled(t *testing.T) {
	path := os.Getenv(applyKillEnv)
	if path == "" {
		t.Skip("helper for TestApplyKilledMidTransaction")
	}
	s, err := sqlitestore.Open(context.Background(), path, sqlitestore.Options{Clock: clock.NewFake(storetest.Start), Logger: quiet})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(2)
	}
	sqlitestore.SetApplyHook(func(step string) error {
		if step == "connections" {
			fmt.Println("inside")
			select {} // wait for SIGKILL
		}
		return nil
	})
	err = s.Apply(context.Background(), crashChanges())
	fmt.Println("error: Apply returned", err)
	os.Exit(2)
}

// TestApplyKilledMidTransaction kills (SIGKILL) a process inside Apply and
// checks the store holds none of that batch and all it held before.
func TestApplyKilledMidTransaction(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a second process")
	}
	path := filepath.Join(t.TempDir(), "store.db")
	s := open(t, path, clock.NewFake(storetest.Start))
	ctx := t.Context()
	if err := s.PutLinks(ctx, []store.Link{{Kind: store.KindRole, ExternalID: "seed-role", MarketoID: "r", Entity: "connection"}}); err != nil {
		t.Fatal(err)
	}
	s.Close()

	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperApplyKilled$", "-test.count=1")
	cmd.Env = append(os.Environ(), applyKillEnv+"="+path)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start helper: %v", err)
	}
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() || lines.Text() != "inside" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("helper did not reach the middle of Apply: %q %v", lines.Text(), lines.Err())
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL on Unix
		t.Fatal(err)
	}
	_ = cmd.Wait()

	s = open(t, path, clock.NewFake(storetest.Start))
	defer s.Close()
	if n, err := s.CountLinks(ctx, store.KindPerson); err != nil || n != 0 {
		t.Errorf("person links after the kill: %d, %v; want 0 (the batch rolled back)", n, err)
	}
	if got, err := s.GetLinks(ctx, store.KindRole, []string{"seed-role"}); err != nil || len(got) != 1 {
		t.Errorf("seed role link after the kill: %v, %v; want it kept (its delete rolled back)", got, err)
	}
	ids := make([]string, 0, 10)
	for i := 0; i < crashLinks; i += crashLinks / 10 {
		ids = append(ids, fmt.Sprintf("%08d-0000-0000-0000-000000000000", i))
	}
	if conns, err := s.GetConnections(ctx, ids); err != nil || len(conns) != 0 {
		t.Errorf("connections after the kill: %d, %v; want 0", len(conns), err)
	}
	// The store still takes the batch whole afterwards.
	if err := s.Apply(ctx, crashChanges()); err != nil {
		t.Fatalf("Apply after the crash: %v", err)
	}
	if n, err := s.CountLinks(ctx, store.KindPerson); err != nil || n != crashLinks {
		t.Errorf("person links after re-applying: %d, %v; want %d", n, err, crashLinks)
	}
}
