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
	path := filepath.Join(c.DataDir, KeyFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		k := strings.TrimSpace(string(b))
		if len(k) < 16 {
			return false, fmt.Errorf("webhook key in %s is shorter than 16 characters: delete the file to generate a new one", path)
		}
		c.WebhookKeys = []string{k}
		return false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return false, fmt.Errorf("read webhook key %s: %w", path, err)
	}
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return false, fmt.Errorf("create data folder %s: %w", c.DataDir, err)
	}
	raw := make([]byte, 24)
	if _, err := rand.Read(raw); err != nil {
		return false, fmt.Errorf("generate webhook key: %w", err)
	}
	k := hex.EncodeToString(raw)
	// Write a temporary file, then link it into place: the key file appears
	// whole or not at all, so a second process racing us never reads it
	// half-written, and the link fails (and we use its key) if it won.
	f, err := os.CreateTemp(c.DataDir, KeyFile+".*.tmp")
	if err != nil {
		return false, fmt.Errorf("save webhook key %s: %w", path, err)
	}
	defer os.Remove(f.Name()) // CreateTemp makes it 0600
	if _, err := f.WriteString(k + "\n"); err != nil {
		f.Close()
		return false, fmt.Errorf("save webhook key %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return false, fmt.Errorf("save webhook key %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return false, fmt.Errorf("save webhook key %s: %w", path, err)
	}
	if err := os.Link(f.Name(), path); errors.Is(err, fs.ErrExist) {
		return c.EnsureWebhookKey()
	} else if err != nil {
		return false, fmt.Errorf("save webhook key %s: %w", path, err)
	}
	c.WebhookKeys = []string{k}
	c.WebhookKeyGenerated = true
	return true, nil
}
