package config

import (
	"os"
	"path/filepath"
	"testing"
)

func TestEnsureAdminTokenGeneratesOnceAndKeepsIt(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	c := &Config{DataDir: dir}
	created, err := c.EnsureAdminToken()
	if err != nil || !created || len(c.AdminToken) < 32 || !c.AdminTokenGenerated {
		t.Fatalf("first EnsureAdminToken = %v, %v (token %d chars)", created, err, len(c.AdminToken))
	}
	fi, err := os.Stat(filepath.Join(dir, AdminTokenFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	again := &Config{DataDir: dir}
	if created, err := again.EnsureAdminToken(); err != nil || created || again.AdminToken != c.AdminToken {
		t.Fatalf("second EnsureAdminToken = %v, %v; token same: %v", created, err, again.AdminToken == c.AdminToken)
	}
	set := &Config{DataDir: dir, AdminToken: "from-the-environment-123"}
	if created, err := set.EnsureAdminToken(); err != nil || created || set.AdminToken != "from-the-environment-123" || set.AdminTokenGenerated {
		t.Fatalf("EnsureAdminToken with MSISYNC_ADMIN_TOKEN set changed it: %v %v %+v", created, err, set)
	}
	if err := os.WriteFile(filepath.Join(dir, AdminTokenFile), []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := (&Config{DataDir: dir}).EnsureAdminToken(); err == nil {
		t.Fatal("a short saved token was accepted")
	}
}
