// Package config reads msisync's settings from the environment, checks them
// all at start-up and reports every wrong value at once.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/msisync/msisync/internal/event"
)

// Setting documents one environment variable. The table below is the single
// source for `msisync serve --help`, the README table and validation.
type Setting struct {
	Name    string
	Default string
	Help    string
	Secret  bool
}

// Settings lists every environment variable msisync reads.
var Settings = []Setting{
	{"MSISYNC_ADDR", "127.0.0.1:8080", "HTTP listen address (receiver, admin API, health, metrics); the default answers only on this machine: set :8080 to let Dataverse reach the receiver", false},
	{"MSISYNC_DATA_DIR", "./msisync-data", "folder for the embedded queue and store (SQLite files) and the generated webhook key", false},
	{"MSISYNC_WEBHOOK_KEY", "(generated)", "webhook keys, comma-separated for rotation; generated and saved in the data folder when unset", true},
	{"MSISYNC_WEBHOOK_HEADER", "x-msisync-key", "header name for Dataverse's HttpHeader auth mode (the ?code= WebhookKey mode is always accepted)", false},
	{"MSISYNC_ORGS", "", "optional allow-list of Dataverse organisation ids or names, comma-separated", false},
	{"MSISYNC_ADMIN_TOKEN", "(generated)", "bearer token for /admin/v1 and the console's login; with the embedded queue it is generated and saved in the data folder when unset, otherwise the admin API and console are off when unset", true},
	{"MSISYNC_MARKETO_URL", "(sandbox)", "Marketo base URL, e.g. https://123-ABC-456.mktorest.com; unset = built-in Marketo sandbox", false},
	{"MSISYNC_MARKETO_CLIENT_ID", "", "Marketo custom service client id", false},
	{"MSISYNC_MARKETO_CLIENT_SECRET", "", "Marketo custom service client secret", true},
	{"MSISYNC_MARKETO_CALLS_PER_20S", "50", "Marketo calls per rolling 20 s (Adobe advises 50 per integration; 1-100)", false},
	{"MSISYNC_MARKETO_CONCURRENCY", "5", "concurrent Marketo calls (1-10)", false},
	{"MSISYNC_MARKETO_DAILY_QUOTA", "50000", "daily Marketo call budget (0 = unlimited)", false},
	{"MSISYNC_MSI_BUDGET_SHARE", "20", "percent of the daily Marketo budget the background readers (MSI write-back, backfill, doctor) may use together (1-100)", false},
	{"MSISYNC_MARKETO_RESERVE", "5", "percent at the end of the daily budget only sync writes may spend (1-40); lookups, backfill and doctor stop before it, the MSI write-back one reserve earlier", false},
	{"MSISYNC_MSI_SWEEP", "24h", "the MSI write-back reads every synced person once per this period, in slices each cycle (urgency decays with time alone); Go duration ≥ 1h", false},
	{"MSISYNC_MARKETO_SCORE_FIELD", "relativeScore", "Marketo name of the MSI relative score field: relativeScore or relativeScoring", false},
	{"MSISYNC_LEAD_STRATEGY", "auto", "lead upsert: auto (detect lookupField=externalPersonId once), lookup (always use it), split (query by externalPersonId, update by id, create by email)", false},
	{"MSISYNC_SERVICEBUS", "", "Azure Service Bus connection string, or a namespace host name (azidentity); unset = embedded SQLite queue", true},
	{"MSISYNC_SERVICEBUS_QUEUE", "msisync", "Service Bus queue name", false},
	{"MSISYNC_SERVICEBUS_MAX_MESSAGE_BYTES", "262144", "Service Bus per-message limit in bytes, headers included: 262144 on Standard; on Premium the queue's max message size (1048576 by default, up to 104857600)", false},
	{"MSISYNC_DATABASE_URL", "", "postgres://… selects the PostgreSQL store (needed for several replicas); unset = SQLite in the data folder", true},
	{"MSISYNC_DATAVERSE_URL", "", "Dataverse environment URL, e.g. https://org.crm.dynamics.com (re-reads, MSI write-back, backfill, register)", false},
	{"MSISYNC_DATAVERSE_TOKEN", "", "static Dataverse bearer token (simulators, tests); otherwise Entra ID via AZURE_* settings", true},
	{"MSISYNC_DATAVERSE_APP_USER_ID", "", "systemuser id of msisync's application user in Dataverse: its own changes are skipped (loop prevention)", false},
	{"MSISYNC_MAPPING", "", "path of a YAML field-mapping file (defaults are built in)", false},
	{"MSISYNC_DEFAULT_SALES_PERSON_ID", "", "systemuser GUID used as sales person for team-owned records", false},
	{"MSISYNC_ANY_CONNECTION_ROLE", "false", "true: every opportunity→contact connection becomes a Marketo role; false: only Stakeholder-category roles (checked through Dataverse when MSISYNC_DATAVERSE_URL is set)", false},
	{"MSISYNC_DELETE_POLICY", "keep", "what a Dataverse lead/contact delete does in Marketo: keep or delete", false},
	{"MSISYNC_BATCH_SIZE", "300", "events per worker batch (1-300)", false},
	{"MSISYNC_RECEIVE_MAX", "auto", "most events one worker batch takes while a backlog waits (MSISYNC_BATCH_SIZE to 100000): a larger batch drains a backlog in fuller Marketo calls and holds more memory (~10-20 KB per event in flight); auto = 50 × MSISYNC_BATCH_SIZE with the embedded queue, 5 × with Service Bus (where each message's lock is renewed by a round trip of its own)", false},
	{"MSISYNC_MAX_ATTEMPTS", "8", "requeues before an event is dead-lettered (1-100)", false},
	{"MSISYNC_MSI_FIELDS", "(MSI defaults)", "MSI write-back fields, marketoField=dataverseColumn[:text|number|datetime], comma-separated; default msiLastInterestingMomentType=msi_lastinterestingmomenttype, …, priority=msi_priority:number, relativeUrgency=msi_relativeurgency:number, <score field>=msi_relativescore:number", false},
	{"MSISYNC_MSI_INTERVAL", "15m", "MSI write-back interval (Go duration, ≥ 1m; 0 disables it)", false},
	{"MSISYNC_RECONCILE_INTERVAL", "15m", "reconcile interval: read Dataverse changes (change tracking) and enqueue what webhooks missed (Go duration, ≥ 1m; 0 disables it; needs MSISYNC_DATAVERSE_URL)", false},
	{"MSISYNC_MAX_BODY_BYTES", "1048576", "largest webhook body accepted (bytes)", false},
	{"MSISYNC_LOG_LEVEL", "info", "debug, info, warn or error", false},
	{"MSISYNC_SHUTDOWN_TIMEOUT", "25s", "how long a stop (SIGTERM) waits for requests and the worker's batch in flight (Go duration, 1s-10m); what is dropped then is logged and the exit status is 1", false},
	{"AZURE_TENANT_ID", "", "Entra ID tenant for Dataverse and Service Bus (azidentity)", false},
	{"AZURE_CLIENT_ID", "", "Entra ID application (client) id", false},
	{"AZURE_CLIENT_SECRET", "", "Entra ID client secret", true},
}

// Config is the checked configuration.
type Config struct {
	Addr                string
	DataDir             string
	WebhookKeys         []string
	WebhookKeyGenerated bool
	WebhookHeader       string
	Orgs                []string
	AdminToken          string
	AdminTokenGenerated bool // read from or saved to the data folder (EnsureAdminToken)

	MarketoURL          string // empty = sandbox
	MarketoClientID     string
	MarketoClientSecret string
	MarketoCallsPer20s  int
	MarketoConcurrency  int
	MarketoDailyQuota   int
	MSIBudgetShare      int // percent of the daily quota for background readers
	MarketoReserve      int // percent of the daily quota only sync writes spend
	MSISweep            time.Duration
	ScoreField          string
	LeadStrategy        string

	ServiceBus      string
	ServiceBusQueue string
	DatabaseURL     string

	DataverseURL       string
	DataverseToken     string
	DataverseAppUserID string
	AzureTenantID      string
	AzureClientID      string
	AzureClientSecret  string

	MappingPath          string
	DefaultSalesPersonID string
	DeletePolicy         string
	AnyConnectionRole    bool
	BatchSize            int
	ReceiveMax           int // 0 = auto (syncer.DefaultReceiveMax)
	MaxAttempts          int
	MSIInterval          time.Duration
	ReconcileInterval    time.Duration
	MSIFields            string // raw; parsed by the msi package (main reports its errors under this name)
	MaxBodyBytes         int64
	LogLevel             string
	ShutdownTimeout      time.Duration

	// ServiceBusMaxMessageBytes is the broker's per-message limit.
	ServiceBusMaxMessageBytes int
}

// Sandbox reports whether Marketo calls go to the built-in simulator.
func (c *Config) Sandbox() bool { return c.MarketoURL == "" }

// QueuePath and StorePath are the embedded SQLite files.
func (c *Config) QueuePath() string { return filepath.Join(c.DataDir, "queue.db") }

// StorePath is the embedded store's SQLite file.
func (c *Config) StorePath() string { return filepath.Join(c.DataDir, "store.db") }

// Load reads and checks the settings. getenv is os.Getenv in production.
// Every invalid value is reported, each on its own line, in one error.
func Load(getenv func(string) string) (*Config, error) {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...)))
	}
	get := func(name string) string {
		v := strings.TrimSpace(getenv(name))
		if v == "" {
			for _, s := range Settings {
				if s.Name == name && !strings.HasPrefix(s.Default, "(") {
					return s.Default
				}
			}
		}
		return v
	}
	intIn := func(name string, lo, hi int) int {
		v := get(name)
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi {
			bad(name, "%q is not a whole number from %d to %d", v, lo, hi)
		}
		return n
	}
	oneOf := func(name string, allowed ...string) string {
		v := get(name)
		for _, a := range allowed {
			if strings.EqualFold(v, a) {
				return a
			}
		}
		bad(name, "%q is not allowed; use one of %s", v, strings.Join(allowed, ", "))
		return v
	}
	guid := func(name string) string {
		v := get(name)
		if v != "" && !event.IsGUID(v) {
			bad(name, "%q is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)", v)
		}
		return event.NormalizeID(v)
	}
	httpURL := func(name string) string {
		v := strings.TrimRight(get(name), "/")
		if v == "" {
			return ""
		}
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			bad(name, "%q is not an http(s) URL with a host", redactURL(v))
		} else if u.User != nil {
			bad(name, "%q must not carry credentials (use the client id and secret settings)", u.Redacted())
		}
		return v
	}

	c := &Config{
		Addr:                get("MSISYNC_ADDR"),
		DataDir:             get("MSISYNC_DATA_DIR"),
		WebhookHeader:       get("MSISYNC_WEBHOOK_HEADER"),
		AdminToken:          get("MSISYNC_ADMIN_TOKEN"),
		MarketoClientID:     get("MSISYNC_MARKETO_CLIENT_ID"),
		MarketoClientSecret: get("MSISYNC_MARKETO_CLIENT_SECRET"),
		ServiceBus:          get("MSISYNC_SERVICEBUS"),
		ServiceBusQueue:     get("MSISYNC_SERVICEBUS_QUEUE"),
		DatabaseURL:         get("MSISYNC_DATABASE_URL"),
		DataverseToken:      get("MSISYNC_DATAVERSE_TOKEN"),
		AzureTenantID:       get("AZURE_TENANT_ID"),
		AzureClientID:       get("AZURE_CLIENT_ID"),
		AzureClientSecret:   get("AZURE_CLIENT_SECRET"),
		MappingPath:         get("MSISYNC_MAPPING"),
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		bad("MSISYNC_ADDR", "%q is not host:port (e.g. :8080)", c.Addr)
	}
	for _, k := range splitList(getenv("MSISYNC_WEBHOOK_KEY")) {
		if len(k) < 16 {
			bad("MSISYNC_WEBHOOK_KEY", "a key is shorter than 16 characters (key %d of the list)", len(c.WebhookKeys)+1)
		}
		c.WebhookKeys = append(c.WebhookKeys, k)
	}
	if !validHeaderName(c.WebhookHeader) {
		bad("MSISYNC_WEBHOOK_HEADER", "%q is not a valid HTTP header name", c.WebhookHeader)
	}
	c.Orgs = splitList(getenv("MSISYNC_ORGS"))
	if t := c.AdminToken; t != "" && len(t) < 16 {
		bad("MSISYNC_ADMIN_TOKEN", "is shorter than 16 characters")
	}

	c.MarketoURL = httpURL("MSISYNC_MARKETO_URL")
	if c.MarketoURL != "" {
		if strings.HasSuffix(c.MarketoURL, "/rest") || strings.HasSuffix(c.MarketoURL, "/identity") {
			bad("MSISYNC_MARKETO_URL", "%q must be the base URL without /rest or /identity", c.MarketoURL)
		}
		if c.MarketoClientID == "" {
			bad("MSISYNC_MARKETO_CLIENT_ID", "is required when MSISYNC_MARKETO_URL is set")
		}
		if c.MarketoClientSecret == "" {
			bad("MSISYNC_MARKETO_CLIENT_SECRET", "is required when MSISYNC_MARKETO_URL is set")
		}
	} else if c.MarketoClientID != "" || c.MarketoClientSecret != "" {
		bad("MSISYNC_MARKETO_URL", "is required when Marketo credentials are set (unset all three to use the sandbox)")
	}
	c.MarketoCallsPer20s = intIn("MSISYNC_MARKETO_CALLS_PER_20S", 1, 100)
	c.MarketoConcurrency = intIn("MSISYNC_MARKETO_CONCURRENCY", 1, 10)
	c.MarketoDailyQuota = intIn("MSISYNC_MARKETO_DAILY_QUOTA", 0, 10_000_000)
	c.MSIBudgetShare = intIn("MSISYNC_MSI_BUDGET_SHARE", 1, 100)
	c.MarketoReserve = intIn("MSISYNC_MARKETO_RESERVE", 1, 40)
	if v := get("MSISYNC_MSI_SWEEP"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Hour {
			bad("MSISYNC_MSI_SWEEP", "%q is not a duration of at least 1h, e.g. 24h", v)
		}
		c.MSISweep = d
	}
	c.ScoreField = oneOf("MSISYNC_MARKETO_SCORE_FIELD", "relativeScore", "relativeScoring")
	c.LeadStrategy = oneOf("MSISYNC_LEAD_STRATEGY", "auto", "lookup", "split")

	if c.DatabaseURL != "" && !strings.HasPrefix(c.DatabaseURL, "postgres://") && !strings.HasPrefix(c.DatabaseURL, "postgresql://") {
		bad("MSISYNC_DATABASE_URL", "must start with postgres:// or postgresql://")
	}
	// Case-insensitive, as the servicebus adapter tells the two forms apart.
	if c.ServiceBus != "" && !strings.Contains(strings.ToLower(c.ServiceBus), "endpoint=") && strings.ContainsAny(c.ServiceBus, ";= /") {
		bad("MSISYNC_SERVICEBUS", "is neither a connection string (Endpoint=sb://…;…) nor a namespace host name (name.servicebus.windows.net)")
	}
	if c.ServiceBus != "" && !validEntityName(c.ServiceBusQueue) {
		bad("MSISYNC_SERVICEBUS_QUEUE", "%q is not a valid queue name (letters, digits, . - _ /, up to 260)", c.ServiceBusQueue)
	}

	if c.AzureClientSecret != "" {
		// Entra ID client credentials need all three (Dataverse and azidentity alike).
		if c.AzureTenantID == "" {
			bad("AZURE_TENANT_ID", "is required when AZURE_CLIENT_SECRET is set")
		}
		if c.AzureClientID == "" {
			bad("AZURE_CLIENT_ID", "is required when AZURE_CLIENT_SECRET is set")
		}
	}
	c.DataverseURL = httpURL("MSISYNC_DATAVERSE_URL")
	c.DataverseAppUserID = guid("MSISYNC_DATAVERSE_APP_USER_ID")
	c.DefaultSalesPersonID = guid("MSISYNC_DEFAULT_SALES_PERSON_ID")
	if c.MappingPath != "" {
		if _, err := os.Stat(c.MappingPath); err != nil {
			bad("MSISYNC_MAPPING", "cannot read %q: %v", c.MappingPath, errors.Unwrap(err))
		}
	}
	c.DeletePolicy = oneOf("MSISYNC_DELETE_POLICY", "keep", "delete")
	c.AnyConnectionRole = oneOf("MSISYNC_ANY_CONNECTION_ROLE", "false", "true") == "true"
	c.BatchSize = intIn("MSISYNC_BATCH_SIZE", 1, 300)
	if v := get("MSISYNC_RECEIVE_MAX"); !strings.EqualFold(v, "auto") {
		c.ReceiveMax = intIn("MSISYNC_RECEIVE_MAX", c.BatchSize, 100000)
	}
	c.MaxAttempts = intIn("MSISYNC_MAX_ATTEMPTS", 1, 100)
	c.MSIFields = get("MSISYNC_MSI_FIELDS")
	if v := get("MSISYNC_MSI_INTERVAL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || (d != 0 && d < time.Minute) {
			bad("MSISYNC_MSI_INTERVAL", "%q is not a duration of at least 1m (or 0 to disable), e.g. 15m", v)
		}
		c.MSIInterval = d
	}
	if v := get("MSISYNC_RECONCILE_INTERVAL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || (d != 0 && d < time.Minute) {
			bad("MSISYNC_RECONCILE_INTERVAL", "%q is not a duration of at least 1m (or 0 to disable), e.g. 15m", v)
		}
		c.ReconcileInterval = d
	}
	c.MaxBodyBytes = int64(intIn("MSISYNC_MAX_BODY_BYTES", 1024, 64<<20))
	c.ServiceBusMaxMessageBytes = intIn("MSISYNC_SERVICEBUS_MAX_MESSAGE_BYTES", 64<<10, 100<<20)
	c.LogLevel = oneOf("MSISYNC_LOG_LEVEL", "debug", "info", "warn", "error")
	if v := get("MSISYNC_SHUTDOWN_TIMEOUT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Second || d > 10*time.Minute {
			bad("MSISYNC_SHUTDOWN_TIMEOUT", "%q is not a duration from 1s to 10m, e.g. 25s", v)
		}
		c.ShutdownTimeout = d
	}

	if len(errs) > 0 {
		return nil, &Error{Problems: errs}
	}
	return c, nil
}

// Error lists every invalid setting.
type Error struct{ Problems []error }

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "invalid settings (%d):", len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.Error())
	}
	return b.String()
}

// redactURL hides a password in a URL that may not parse.
func redactURL(v string) string {
	if u, err := url.Parse(v); err == nil {
		return u.Redacted()
	}
	if strings.Contains(v, "@") {
		return "(a URL with credentials)"
	}
	return v
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("!#$%&'*+-.^_`|~", c)) {
			return false
		}
	}
	return true
}

func validEntityName(s string) bool {
	if s == "" || len(s) > 260 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune(".-_/", c)) {
			return false
		}
	}
	return true
}
