package main

import (
	"net"
	"os"
	"strings"
	"testing"
)

// Journey (issue 2): wrong settings are all named in one clear error at
// start-up, with the values that are allowed, and nothing starts.
func TestJourneySettingsErrors(t *testing.T) {
	dataDir, base := cleanEnv(t)
	t.Setenv("MSISYNC_LEAD_STRATEGY", "guess")
	t.Setenv("MSISYNC_MARKETO_CONCURRENCY", "20")

	r := run(t, "serve")
	if r.err == nil {
		t.Fatal("serve started with MSISYNC_LEAD_STRATEGY=guess and MSISYNC_MARKETO_CONCURRENCY=20")
	}
	if r.exitCode() != 1 {
		t.Errorf("exit status %d, want 1", r.exitCode())
	}
	msg := r.err.Error()
	for _, want := range []string{
		"MSISYNC_LEAD_STRATEGY", `"guess"`, "auto, lookup, split",
		"MSISYNC_MARKETO_CONCURRENCY", `"20"`, "from 1 to 10",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not mention %s:\n%s", want, msg)
		}
	}
	if n := strings.Count(msg, "\n  "); n != 2 {
		t.Errorf("error lists %d problems, want exactly the 2 wrong settings:\n%s", n, msg)
	}
	// Nothing started: no listener, no data folder, no generated key.
	if c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://")); err == nil {
		c.Close()
		t.Errorf("something listens on %s after a failed start", base)
	}
	if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
		t.Errorf("data folder %s exists after a failed start (err %v)", dataDir, err)
	}

	// `serve --help` lists the settings (the public interface).
	help := mustRun(t, "serve", "--help")
	for _, name := range []string{"MSISYNC_ADDR", "MSISYNC_DATA_DIR", "MSISYNC_WEBHOOK_KEY", "MSISYNC_LEAD_STRATEGY", "MSISYNC_MARKETO_CONCURRENCY", "MSISYNC_DATAVERSE_URL"} {
		if !strings.Contains(help, name) {
			t.Errorf("serve --help does not list %s", name)
		}
	}
}
