package sqlitequeue

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/msisync/msisync/internal/queue"
)

// Issue 14: queued events are personal data; in a folder that already
// exists with mode 0755 the database and its -wal and -shm files must still
// be readable by the owner only.
func TestFilesArePrivateWhateverTheFolderMode(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "queue.db")
	q, err := Open(t.Context(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if err := q.Send(t.Context(), queue.Message{ID: "m1", Body: []byte(`{"email":"ada@example.org"}`)}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatalf("%s: %v", filepath.Base(f), err)
		}
		if m := fi.Mode().Perm(); m&0o077 != 0 {
			t.Errorf("%s has mode %v, want 0600", filepath.Base(f), m)
		}
	}
}
