package sqlitequeue

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/queue"
)

// schemaV1 is the version-1 schema exactly as msisync created it (the body
// in the messages row): the fixture the migration must accept.
const schemaV1 = `
CREATE TABLE IF NOT EXISTS messages (
	seq            INTEGER PRIMARY KEY AUTOINCREMENT,
	id             TEXT    NOT NULL,
	body           BLOB    NOT NULL,
	props          TEXT    NOT NULL,
	entity         TEXT    NOT NULL,
	enqueued_at    INTEGER NOT NULL,
	visible_at     INTEGER NOT NULL, -- due time, or lock expiry while locked
	delivery_count INTEGER NOT NULL DEFAULT 0,
	lock_token     TEXT
);
CREATE INDEX IF NOT EXISTS messages_visible ON messages (visible_at, seq);
CREATE TABLE IF NOT EXISTS seen_ids (
	id         TEXT PRIMARY KEY,
	expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_ids_expiry ON seen_ids (expires_at);
CREATE TABLE IF NOT EXISTS dead (
	seq              INTEGER PRIMARY KEY AUTOINCREMENT,
	message_id       TEXT    NOT NULL,
	body             BLOB    NOT NULL,
	props            TEXT    NOT NULL,
	entity           TEXT    NOT NULL,
	reason           TEXT    NOT NULL,
	description      TEXT    NOT NULL,
	delivery_count   INTEGER NOT NULL,
	enqueued_at      INTEGER NOT NULL,
	first_failure_at INTEGER NOT NULL,
	dead_lettered_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_entity ON dead (entity);
PRAGMA user_version = 1;
`

// buildV1 writes a version-1 file at path, as a version-1 msisync left it
// at time now: pending messages p0…p(pending-1), a message locked until
// now+1 min by token "tok-locked" on its first delivery, a dead letter,
// seen ids for all of them, and a sequence counter at 1000 (messages up to
// seq 1000 were sent and completed before).
func buildV1(t testing.TB, path string, now time.Time, pending int) {
	t.Helper()
	db, err := sql.Open("sqlite", path+"?_journal_mode=WAL")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	exec := func(query string, args ...any) {
		t.Helper()
		if _, err := db.ExecContext(ctx, query, args...); err != nil {
			t.Fatalf("%s: %v", query, err)
		}
	}
	exec(schemaV1)
	n := now.UnixNano()
	exec(`INSERT INTO messages (seq, id, body, props, entity, enqueued_at, visible_at) VALUES (1000, 'gone', x'00', '{}', '', 0, 0)`)
	exec(`DELETE FROM messages`)
	props := `{"msisync-entity":"contact"}`
	for i := range pending {
		id := "p" + strconv.Itoa(i)
		exec(`INSERT INTO messages (id, body, props, entity, enqueued_at, visible_at) VALUES (?, ?, ?, 'contact', ?, ?)`,
			id, []byte("body of "+id), props, n, n)
		exec(`INSERT INTO seen_ids (id, expires_at) VALUES (?, ?)`, id, n+int64(time.Hour))
	}
	exec(`INSERT INTO messages (id, body, props, entity, enqueued_at, visible_at, delivery_count, lock_token)
		VALUES ('locked', 'body of locked', ?, 'contact', ?, ?, 1, 'tok-locked')`, props, n, n+int64(time.Minute))
	exec(`INSERT INTO seen_ids (id, expires_at) VALUES ('locked', ?)`, n+int64(time.Hour))
	exec(`INSERT INTO dead (message_id, body, props, entity, reason, description, delivery_count, enqueued_at,
		first_failure_at, dead_lettered_at) VALUES ('dead', 'body of dead', ?, 'contact', 'Poison', 'bad', 3, ?, ?, ?)`,
		props, n, n, n)
}

func TestMigratesVersion1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v1.db")
	fake := clock.NewFake(start)
	buildV1(t, path, start, 3)
	ctx := t.Context()
	q := openTest(t, path, Options{Clock: fake, LockDuration: time.Minute})

	var version, bodies int
	if err := q.db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil || version != schemaVersion {
		t.Fatalf("user_version = %d, %v; want %d", version, err, schemaVersion)
	}
	if err := q.db.QueryRowContext(ctx, "SELECT count(*) FROM bodies").Scan(&bodies); err != nil || bodies != 4 {
		t.Fatalf("bodies = %d, %v; want 4", bodies, err)
	}
	if c, err := q.Counts(ctx); err != nil || c != (queue.Counts{Active: 3, Locked: 1, Dead: 1}) {
		t.Fatalf("Counts = %+v, %v", c, err)
	}
	// The lock taken before the upgrade still holds and still settles.
	if err := q.Renew(ctx, &queue.Delivery{Message: queue.Message{ID: "locked"}, SequenceNumber: 1004, LockToken: "tok-locked"}); err != nil {
		t.Fatalf("Renew of the lock taken under version 1: %v", err)
	}
	ds, err := q.Receive(ctx, 10, 0)
	if err != nil || len(ds) != 3 {
		t.Fatalf("Receive = %d, %v; want the 3 pending", len(ds), err)
	}
	for i, d := range ds {
		id := "p" + strconv.Itoa(i)
		if d.ID != id || string(d.Body) != "body of "+id || d.Properties[queue.PropEntity] != "contact" || d.SequenceNumber != int64(1001+i) {
			t.Errorf("delivery %d = %q %q %v seq %d", i, d.ID, d.Body, d.Properties, d.SequenceNumber)
		}
		if err := q.Complete(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	fake.Advance(2 * time.Minute)
	ds, err = q.Receive(ctx, 10, 0)
	if err != nil || len(ds) != 1 || ds[0].ID != "locked" || string(ds[0].Body) != "body of locked" || ds[0].DeliveryCount != 2 {
		t.Fatalf("after the old lock expired: %+v, %v", ds, err)
	}
	dls, err := q.ListDead(ctx, queue.Filter{})
	if err != nil || len(dls) != 1 || dls[0].MessageID != "dead" || string(dls[0].Body) != "body of dead" {
		t.Fatalf("ListDead = %+v, %v", dls, err)
	}
	// Seen ids survive: a re-send of a migrated id is still a duplicate.
	if err := q.Send(ctx, queue.Message{ID: "p0", Body: []byte("again")}, queue.Message{ID: "new", Body: []byte("new")}); err != nil {
		t.Fatal(err)
	}
	ds, err = q.Receive(ctx, 10, 0)
	if err != nil || len(ds) != 1 || ds[0].ID != "new" || ds[0].SequenceNumber <= 1004 {
		t.Fatalf("after re-sending p0 and sending new: %+v, %v (want only new, seq after 1004)", ds, err)
	}
	if n, err := q.ReplayDead(ctx, queue.Filter{}); err != nil || n != 1 {
		t.Fatalf("ReplayDead = %d, %v", n, err)
	}
	if ds, err := q.Receive(ctx, 10, 0); err != nil || len(ds) != 1 || string(ds[0].Body) != "body of dead" {
		t.Fatalf("replayed dead letter: %+v, %v", ds, err)
	}
}

// migrateChildEnv switches the test binary into the child of
// TestSIGKILLDuringMigration: "during:<path>" blocks inside the migration's
// transaction, "after:<path>" after Open returned; both print a line first.
const migrateChildEnv = "MSISYNC_SQLITEQUEUE_MIGRATE_CHILD"

func TestMigrateChild(t *testing.T) {
	mode, path, ok := strings.Cut(os.Getenv(migrateChildEnv), ":")
	if !ok {
		t.Skip("runs only as the child of TestSIGKILLDuringMigration")
	}
	if mode == "during" {
		migrateHook = func() {
			fmt.Println("migrating")
			time.Sleep(30 * time.Second) // the parent kills us here
		}
	}
	if _, err := Open(context.Background(), path, Options{}); err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	fmt.Println("opened")
	time.Sleep(30 * time.Second)
	os.Exit(3)
}

// TestSIGKILLDuringMigration kills a real process inside the migration's
// transaction and right after it committed: either way the file opens and
// every message, body and dead letter is there.
func TestSIGKILLDuringMigration(t *testing.T) {
	if os.Getenv(migrateChildEnv) != "" {
		t.Skip("inside the child")
	}
	const pending = 500
	for _, mode := range []struct{ name, line string }{{"during", "migrating"}, {"after", "opened"}} {
		t.Run(mode.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "v1.db")
			buildV1(t, path, time.Now(), pending)
			cmd := exec.Command(os.Args[0], "-test.run=^TestMigrateChild$", "-test.count=1")
			cmd.Env = append(os.Environ(), migrateChildEnv+"="+mode.name+":"+path)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(stdout)
			seen := false
			for sc.Scan() {
				if sc.Text() == mode.line {
					seen = true
					break
				}
			}
			if err := cmd.Process.Kill(); err != nil { // SIGKILL
				t.Fatal(err)
			}
			cmd.Wait()
			if !seen {
				t.Fatalf("child never printed %q; stderr: %s", mode.line, stderr.String())
			}
			q := openTest(t, path, Options{})
			ctx := t.Context()
			if c, err := q.Counts(ctx); err != nil || c.Active != pending || c.Locked != 1 || c.Dead != 1 {
				t.Fatalf("Counts after SIGKILL %s migration = %+v, %v", mode.name, c, err)
			}
			got := 0
			for {
				ds, err := q.Receive(ctx, 100, 0)
				if err != nil {
					t.Fatal(err)
				}
				if len(ds) == 0 {
					break
				}
				for _, d := range ds {
					if string(d.Body) != "body of "+d.ID {
						t.Fatalf("message %q has body %q", d.ID, d.Body)
					}
					got++
				}
			}
			if got != pending {
				t.Fatalf("received %d of %d pending messages", got, pending)
			}
		})
	}
}
