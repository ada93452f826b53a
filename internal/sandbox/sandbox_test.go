package sandbox

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"
)

func token(t *testing.T, s *Sandbox) string {
	t.Helper()
	q := url.Values{"grant_type": {"client_credentials"}, "client_id": {s.ClientID}, "client_secret": {s.ClientSecret}}
	resp, err := http.Get(s.URL + "/identity/oauth/token?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || m.AccessToken == "" {
		t.Fatalf("token: %v", err)
	}
	return m.AccessToken
}

func syncLeads(t *testing.T, s *Sandbox, leads ...map[string]any) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"action": "createOrUpdate", "lookupField": "email", "input": leads})
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/rest/v1/leads.json", bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+token(t, s))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`"success":true`)) {
		t.Fatalf("sync leads: %d %s", resp.StatusCode, body)
	}
}

// Issue 14: a record is in the sandbox's database as soon as the call that
// wrote it answered: a second process opening the folder (the restart after
// a SIGKILL, which runs no Close) sees it.
func TestAnsweredWritesAreDurableWithoutClose(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(t.Context(), Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	syncLeads(t, s, map[string]any{"email": "ada@example.org", "externalPersonId": "9a100000-0000-4000-8000-000000000003"})
	syncLeads(t, s, map[string]any{"email": "ada@example.org", "firstName": "Ada"})

	// No Close of the first: as after kill -9.
	s2, err := Open(t.Context(), Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	st := s2.Sim.Dump()
	if len(st.Leads) != 1 || st.Leads[0]["firstName"] != "Ada" || st.Leads[0]["externalPersonId"] != "9a100000-0000-4000-8000-000000000003" {
		t.Fatalf("reopened sandbox leads: %v, want Ada with her externalPersonId", st.Leads)
	}
	// Ids continue after the restored ones.
	syncLeads(t, s2, map[string]any{"email": "grace@example.org"})
	st = s2.Sim.Dump()
	if len(st.Leads) != 2 || st.Leads[1]["id"] == st.Leads[0]["id"] {
		t.Fatalf("new lead after reopening: %v", st.Leads)
	}
}

func TestLegacyJSONIsImportedOnce(t *testing.T) {
	dir := t.TempDir()
	legacy := `{"Leads":[{"id":1001,"email":"ada@example.org","externalPersonId":"p-1","createdAt":"2026-01-01T00:00:00Z","updatedAt":"2026-01-01T00:00:00Z"}]}`
	if err := os.WriteFile(filepath.Join(dir, legacyFile), []byte(legacy), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(t.Context(), Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := os.Stat(filepath.Join(dir, legacyFile)); !os.IsNotExist(err) {
		t.Fatalf("legacy file still there after the import: %v", err)
	}
	s, err = Open(t.Context(), Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if st := s.Sim.Dump(); len(st.Leads) != 1 || st.Leads[0]["email"] != "ada@example.org" {
		t.Fatalf("imported leads: %v", st.Leads)
	}
}

func TestFilesArePrivateWhateverTheFolderMode(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := Open(t.Context(), Options{DataDir: dir, Publish: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	syncLeads(t, s, map[string]any{"email": "ada@example.org"})
	for _, f := range []string{DBFile, DBFile + "-wal", DBFile + "-shm", EndpointFile} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if m := fi.Mode().Perm(); m&0o077 != 0 {
			t.Errorf("%s has mode %v, want 0600", f, m)
		}
	}
	if ep, ok := Live(t.Context(), dir); !ok || ep.URL != s.URL {
		t.Fatalf("published endpoint %v live=%v, want %s", ep, ok, s.URL)
	}
}
