package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/msisync/msisync/internal/config"
)

// The console URL with the generated token is printed on the run that
// generated it; later runs off a terminal (a container's log) name the file.
func TestConsoleBannerPrintsTheTokenOnce(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	var first, second bytes.Buffer
	cfg := &config.Config{Addr: "127.0.0.1:8080", DataDir: dir}
	if err := consoleToken(cfg, &first); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(first.String(), "http://127.0.0.1:8080/console/login#token="+cfg.AdminToken) {
		t.Fatalf("first run banner:\n%s", first.String())
	}
	again := &config.Config{Addr: "127.0.0.1:8080", DataDir: dir}
	if err := consoleToken(again, &second); err != nil {
		t.Fatal(err)
	}
	if again.AdminToken != cfg.AdminToken || strings.Contains(second.String(), cfg.AdminToken) || !strings.Contains(second.String(), config.AdminTokenFile) {
		t.Fatalf("second run banner (not a terminal) must name the file, not the token:\n%s", second.String())
	}
	var sb bytes.Buffer
	sbCfg := &config.Config{Addr: ":8080", DataDir: filepath.Join(t.TempDir(), "d"), ServiceBus: "ns.servicebus.windows.net"}
	if err := consoleToken(sbCfg, &sb); err != nil || sbCfg.AdminToken != "" || !strings.Contains(sb.String(), "Console: off") {
		t.Fatalf("Service Bus without MSISYNC_ADMIN_TOKEN: token %q, banner %q, %v; want the console off", sbCfg.AdminToken, sb.String(), err)
	}
}
