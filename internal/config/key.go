package config

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// KeyFile is the name of the generated webhook key inside the data folder.
const KeyFile = "webhook.key"

// EnsureWebhookKey fills c.WebhookKeys when MSISYNC_WEBHOOK_KEY is unset: it
// reads the key saved in the data folder, or generates and saves one (0600).
// created is true only on the run that generated it, so the caller prints
// the key exactly once.
func (c *Config) EnsureWebhookKey() (created bool, err error) {
	if len(c.WebhookKeys) > 0 {
		return false, nil
	}
	k, created, err := ensureSecretFile(c.DataDir, KeyFile)
	if err != nil {
		return false, fmt.Errorf("webhook key: %w", err)
	}
	c.WebhookKeys = []string{k}
	c.WebhookKeyGenerated = created
	return created, nil
}

// ensureSecretFile reads dir/name, or creates it with a new random value.
// The file appears whole or not at all (temp file, fsync, link), and a
// process that loses the race uses the winner's value.
func ensureSecretFile(dir, name string) (value string, created bool, err error) {
	path := filepath.Join(dir, name)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		v := strings.TrimSpace(string(b))
		if len(v) < 16 {
			return "", false, fmt.Errorf("%s is shorter than 16 characters: delete the file to generate a new one", path)
		}
		return v, false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", false, fmt.Errorf("read %s: %w", path, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", false, fmt.Errorf("create data folder %s: %w", dir, err)
	}
	raw := make([]byte, 24)
	if _, err := rand.Read(raw); err != nil {
		return "", false, fmt.Errorf("generate %s: %w", name, err)
	}
	v := hex.EncodeToString(raw)
	f, err := os.CreateTemp(dir, name+".*.tmp") // 0600
	if err != nil {
		return "", false, fmt.Errorf("save %s: %w", path, err)
	}
	defer os.Remove(f.Name())
	_, werr := f.WriteString(v + "\n")
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return "", false, fmt.Errorf("save %s: %w", path, werr)
	}
	if err := os.Link(f.Name(), path); errors.Is(err, fs.ErrExist) {
		return ensureSecretFile(dir, name)
	} else if err != nil {
		return "", false, fmt.Errorf("save %s: %w", path, err)
	}
	return v, true, nil
}
