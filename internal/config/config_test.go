package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestDefaultsWithNoSettings(t *testing.T) {
	c, err := Load(env(nil))
	if err != nil {
		t.Fatalf("Load with no settings: %v", err)
	}
	// Loopback by default (issue 14): the sandbox's synced contacts and the
	// receiver are not on the network until MSISYNC_ADDR says so.
	if c.Addr != "127.0.0.1:8080" || c.DataDir != "./msisync-data" || c.WebhookHeader != "x-msisync-key" {
		t.Errorf("defaults: addr %q dir %q header %q", c.Addr, c.DataDir, c.WebhookHeader)
	}
	if !c.Sandbox() {
		t.Error("no Marketo URL should select the sandbox")
	}
	if c.BatchSize != 300 || c.MaxAttempts != 8 || c.MarketoCallsPer20s != 50 || c.MarketoConcurrency != 5 {
		t.Errorf("numeric defaults: %+v", c)
	}
	if c.ScoreField != "relativeScore" || c.LeadStrategy != "auto" || c.DeletePolicy != "keep" {
		t.Errorf("choice defaults: %q %q %q", c.ScoreField, c.LeadStrategy, c.DeletePolicy)
	}
}

func TestEveryWrongValueIsNamedInOneError(t *testing.T) {
	_, err := Load(env(map[string]string{
		"MSISYNC_ADDR":                  "8080",
		"MSISYNC_MARKETO_URL":           "https://123-ABC-456.mktorest.com/rest",
		"MSISYNC_MARKETO_CALLS_PER_20S": "150",
		"MSISYNC_MARKETO_CONCURRENCY":   "eleven",
		"MSISYNC_LEAD_STRATEGY":         "guess",
		"MSISYNC_DATABASE_URL":          "mysql://x",
		"MSISYNC_DATAVERSE_APP_USER_ID": "not-a-guid",
		"MSISYNC_MSI_INTERVAL":          "10s",
		"MSISYNC_WEBHOOK_KEY":           "short",
		"MSISYNC_WEBHOOK_HEADER":        "bad header",
		"MSISYNC_MARKETO_CLIENT_SECRET": "s3cr3t-value-never-printed",
		"MSISYNC_SERVICEBUS":            "not a namespace",
		"AZURE_CLIENT_SECRET":           "s3cr3t-azure-never-printed",
	}))
	if err == nil {
		t.Fatal("expected an error")
	}
	msg := err.Error()
	for _, name := range []string{"MSISYNC_ADDR", "MSISYNC_MARKETO_URL", "MSISYNC_MARKETO_CLIENT_ID",
		"MSISYNC_MARKETO_CALLS_PER_20S", "MSISYNC_MARKETO_CONCURRENCY", "MSISYNC_LEAD_STRATEGY",
		"MSISYNC_DATABASE_URL", "MSISYNC_DATAVERSE_APP_USER_ID", "MSISYNC_MSI_INTERVAL",
		"MSISYNC_WEBHOOK_KEY", "MSISYNC_WEBHOOK_HEADER", "MSISYNC_SERVICEBUS", "AZURE_TENANT_ID", "AZURE_CLIENT_ID"} {
		if !strings.Contains(msg, name+":") {
			t.Errorf("error does not name %s:\n%s", name, msg)
		}
	}
	if !strings.Contains(msg, "auto, lookup, split") {
		t.Errorf("choice error should list the allowed values:\n%s", msg)
	}
	if strings.Contains(msg, "s3cr3t") {
		t.Errorf("error leaks a secret:\n%s", msg)
	}
}

func TestURLCredentialsAreRefusedAndNotEchoed(t *testing.T) {
	_, err := Load(env(map[string]string{
		"MSISYNC_DATAVERSE_URL":         "https://admin:hunter2-secret@org.crm.dynamics.com",
		"MSISYNC_MARKETO_URL":           "ftp://u:hunter3-secret@123-ABC-456.mktorest.com",
		"MSISYNC_MARKETO_CLIENT_ID":     "id",
		"MSISYNC_MARKETO_CLIENT_SECRET": "secret-secret",
	}))
	if err == nil {
		t.Fatal("URLs with credentials were accepted")
	}
	msg := err.Error()
	for _, name := range []string{"MSISYNC_DATAVERSE_URL:", "MSISYNC_MARKETO_URL:"} {
		if !strings.Contains(msg, name) {
			t.Errorf("error does not name %s\n%s", name, msg)
		}
	}
	if strings.Contains(msg, "hunter") {
		t.Errorf("error echoes a password:\n%s", msg)
	}
}

func TestServiceBusAcceptsBothForms(t *testing.T) {
	for _, v := range []string{
		"Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=x",
		"endpoint=sb://ns.servicebus.windows.net/;sharedaccesskeyname=k;sharedaccesskey=x",
		"ns.servicebus.windows.net",
	} {
		c, err := Load(env(map[string]string{"MSISYNC_SERVICEBUS": v}))
		if err != nil {
			t.Errorf("MSISYNC_SERVICEBUS=%q: %v", v, err)
			continue
		}
		if c.ServiceBus != v {
			t.Errorf("ServiceBus = %q, want %q", c.ServiceBus, v)
		}
	}
}

func TestKeysListAndGUIDsNormalised(t *testing.T) {
	c, err := Load(env(map[string]string{
		"MSISYNC_WEBHOOK_KEY":           " first-key-0123456789 , second-key-0123456789 ",
		"MSISYNC_DATAVERSE_APP_USER_ID": "{0A1B2C3D-0000-0000-0000-00000000ABCD}",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.WebhookKeys) != 2 || c.WebhookKeys[1] != "second-key-0123456789" {
		t.Errorf("keys = %q", c.WebhookKeys)
	}
	if c.DataverseAppUserID != "0a1b2c3d-0000-0000-0000-00000000abcd" {
		t.Errorf("app user id = %q", c.DataverseAppUserID)
	}
}

func TestGeneratedWebhookKeyIsSavedOnceAndReused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	c := &Config{DataDir: dir}
	created, err := c.EnsureWebhookKey()
	if err != nil || !created || len(c.WebhookKeys) != 1 || len(c.WebhookKeys[0]) < 32 {
		t.Fatalf("first run: created=%v keys=%q err=%v", created, c.WebhookKeys, err)
	}
	st, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", st, err)
	}
	again := &Config{DataDir: dir}
	created, err = again.EnsureWebhookKey()
	if err != nil || created || again.WebhookKeys[0] != c.WebhookKeys[0] {
		t.Fatalf("second run should reuse the key: created=%v key=%q err=%v", created, again.WebhookKeys, err)
	}
}

// TestRacingProcessesShareOneGeneratedKey: several starts on one fresh data
// folder end with one key, generated once, read whole by the others.
func TestRacingProcessesShareOneGeneratedKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	const n = 16
	type result struct {
		created bool
		key     string
		err     error
	}
	results := make(chan result, n)
	start := make(chan struct{})
	for range n {
		go func() {
			<-start
			c := &Config{DataDir: dir}
			created, err := c.EnsureWebhookKey()
			r := result{created: created, err: err}
			if len(c.WebhookKeys) == 1 {
				r.key = c.WebhookKeys[0]
			}
			results <- r
		}()
	}
	close(start)
	keys, creators := map[string]bool{}, 0
	for range n {
		r := <-results
		if r.err != nil {
			t.Fatalf("EnsureWebhookKey: %v", r.err)
		}
		if r.created {
			creators++
		}
		keys[r.key] = true
	}
	if creators != 1 || len(keys) != 1 {
		t.Fatalf("%d runs created a key, %d distinct keys %v; want 1 and 1", creators, len(keys), keys)
	}
	left, _ := filepath.Glob(filepath.Join(dir, KeyFile+".*"))
	if len(left) != 0 {
		t.Errorf("temporary files left behind: %v", left)
	}
}

func TestREADMEListsEverySetting(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatalf("README.md: %v", err)
	}
	for _, s := range Settings {
		if !strings.Contains(string(b), "`"+s.Name+"`") {
			t.Errorf("README.md does not document %s", s.Name)
		}
	}
}

func TestShutdownTimeout(t *testing.T) {
	c, err := Load(env(nil))
	if err != nil || c.ShutdownTimeout != 25*time.Second {
		t.Fatalf("default MSISYNC_SHUTDOWN_TIMEOUT = %v (%v), want 25s", c.ShutdownTimeout, err)
	}
	for _, v := range []string{"0", "500ms", "11m", "soon"} {
		_, err := Load(env(map[string]string{"MSISYNC_SHUTDOWN_TIMEOUT": v}))
		if err == nil || !strings.Contains(err.Error(), "MSISYNC_SHUTDOWN_TIMEOUT") || !strings.Contains(err.Error(), "1s to 10m") {
			t.Errorf("MSISYNC_SHUTDOWN_TIMEOUT=%s: %v, want an error naming the setting and the range", v, err)
		}
	}
}

func TestReceiveMaxIsAutoOrAWholeNumberFromTheBatchSize(t *testing.T) {
	c, err := Load(env(nil))
	if err != nil || c.ReceiveMax != 0 {
		t.Fatalf("unset: ReceiveMax %d, err %v; want 0 (auto)", c.ReceiveMax, err)
	}
	if c, err := Load(env(map[string]string{"MSISYNC_RECEIVE_MAX": "6000"})); err != nil || c.ReceiveMax != 6000 {
		t.Fatalf("6000: ReceiveMax %d, err %v", c.ReceiveMax, err)
	}
	for _, bad := range []string{"100", "100001", "lots"} {
		_, err := Load(env(map[string]string{"MSISYNC_BATCH_SIZE": "200", "MSISYNC_RECEIVE_MAX": bad}))
		if err == nil || !strings.Contains(err.Error(), "MSISYNC_RECEIVE_MAX") || !strings.Contains(err.Error(), "from 200 to 100000") {
			t.Errorf("MSISYNC_RECEIVE_MAX=%s: err %v, want one naming the setting and the range from the batch size", bad, err)
		}
	}
}
