package sqlitestore

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/msisync/msisync/internal/store"
)

// Issue 14: the store names people's records; in a folder that already
// exists with mode 0755 the database and its -wal and -shm files must still
// be readable by the owner only.
func TestFilesArePrivateWhateverTheFolderMode(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "store.db")
	s, err := Open(t.Context(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.PutLinks(t.Context(), []store.Link{{Kind: store.KindPerson, ExternalID: "9a100000-0000-4000-8000-000000000003", MarketoID: "1001", Entity: "contact", Email: "ada@example.org"}}); err != nil {
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
