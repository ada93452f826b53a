package config

// AdminTokenFile is the name of the generated admin token inside the data folder.
const AdminTokenFile = "admin.token"

// EnsureAdminToken fills c.AdminToken when MSISYNC_ADMIN_TOKEN is unset, the
// way EnsureWebhookKey does for the webhook key: it reads the token saved in
// the data folder, or generates and saves one (0600). Callers use it in the
// zero-config (embedded queue) mode only, where the data folder persists;
// elsewhere an unset token keeps the admin API and console off. created is
// true only on the run that generated it.
func (c *Config) EnsureAdminToken() (created bool, err error) {
	if c.AdminToken != "" {
		return false, nil
	}
	tok, created, err := ensureSecretFile(c.DataDir, AdminTokenFile)
	if err != nil {
		return false, err
	}
	c.AdminToken, c.AdminTokenGenerated = tok, true
	return created, nil
}
