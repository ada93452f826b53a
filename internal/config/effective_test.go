package config

import (
	"strings"
	"testing"
)

func TestEffectiveRedactsSecrets(t *testing.T) {
	env := map[string]string{
		"MSISYNC_MARKETO_CLIENT_SECRET": "s3cr3t-value-1234",
		"MSISYNC_DATABASE_URL":          "postgres://u:pw-9876@db/x",
		"MSISYNC_BATCH_SIZE":            "100",
	}
	vals := Effective(func(k string) string { return env[k] })
	if len(vals) != len(Settings) {
		t.Fatalf("Effective listed %d settings, want %d", len(vals), len(Settings))
	}
	by := map[string]Value{}
	for _, v := range vals {
		by[v.Name] = v
		for _, secret := range []string{"s3cr3t", "pw-9876"} {
			if strings.Contains(v.Value, secret) {
				t.Errorf("%s shows a secret: %q", v.Name, v.Value)
			}
		}
	}
	if v := by["MSISYNC_MARKETO_CLIENT_SECRET"]; !v.Secret || !v.Set || v.Value != "" {
		t.Errorf("client secret = %+v, want secret, set, no value", v)
	}
	if v := by["MSISYNC_DATABASE_URL"]; !v.Secret || !v.Set || v.Value != "" {
		t.Errorf("database URL = %+v, want secret, set, no value", v)
	}
	if v := by["MSISYNC_BATCH_SIZE"]; v.Value != "100" || v.Default {
		t.Errorf("batch size = %+v, want 100 (not default)", v)
	}
	if v := by["MSISYNC_MAX_ATTEMPTS"]; v.Value != "8" || !v.Default {
		t.Errorf("max attempts = %+v, want the default 8", v)
	}
}
