package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/msisync/msisync/internal/config"
	"github.com/msisync/msisync/internal/dataverse"
	"github.com/msisync/msisync/internal/marketo"
	"github.com/msisync/msisync/internal/marketo/marketosim"
	"github.com/msisync/msisync/internal/msi"
	"github.com/msisync/msisync/internal/queue"
	"github.com/msisync/msisync/internal/queue/servicebus"
	"github.com/msisync/msisync/internal/queue/sqlitequeue"
	"github.com/msisync/msisync/internal/store"
	"github.com/msisync/msisync/internal/store/pgstore"
	"github.com/msisync/msisync/internal/store/sqlitestore"
	"github.com/msisync/msisync/internal/syncer/mapping"
)

// app holds the adapters the settings select. Fields are nil when the
// command did not ask for them.
type app struct {
	cfg      *config.Config
	log      *slog.Logger
	registry *prometheus.Registry

	queue     queue.Queue
	store     store.Store
	marketo   *marketo.Client
	sandbox   *marketosim.Server // non-nil when Marketo is the built-in sandbox
	dataverse *dataverse.Client  // nil when MSISYNC_DATAVERSE_URL is unset
	mapping   *mapping.Mapping

	closers []func() error
}

type needs struct {
	queue, store, marketo, dataverse bool
	// ownSandbox: this process (serve, worker) runs the Marketo sandbox and
	// publishes it in the data folder; other commands use the published one.
	ownSandbox bool
}

func openApp(ctx context.Context, n needs) (*app, error) {
	cfg, log, err := loadConfig()
	if err != nil {
		return nil, err
	}
	a := &app{cfg: cfg, log: log, registry: prometheus.NewRegistry()}
	a.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	fail := func(err error) (*app, error) { a.Close(); return nil, err }

	if n.queue || n.store {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil && (cfg.ServiceBus == "" || cfg.DatabaseURL == "") {
			return fail(fmt.Errorf("create data folder %s (MSISYNC_DATA_DIR): %w", cfg.DataDir, err))
		}
	}
	if n.queue {
		if err := a.openQueue(ctx); err != nil {
			return fail(err)
		}
	}
	if n.store {
		if err := a.openStore(ctx); err != nil {
			return fail(err)
		}
	}
	if n.marketo {
		if a.mapping, err = loadMapping(cfg); err != nil {
			return fail(err)
		}
		if err := a.openMarketo(ctx, n.ownSandbox); err != nil {
			return fail(err)
		}
	}
	if n.dataverse && cfg.DataverseURL != "" {
		dv, err := dataverse.New(dataverse.Config{
			URL: cfg.DataverseURL, Token: cfg.DataverseToken, TenantID: cfg.AzureTenantID,
			ClientID: cfg.AzureClientID, ClientSecret: cfg.AzureClientSecret, Logger: log,
		})
		if err != nil {
			return fail(fmt.Errorf("dataverse client (MSISYNC_DATAVERSE_URL): %w", err))
		}
		a.dataverse = dv
	}
	return a, nil
}

// loadMapping reads the field mapping and adds the MSI write-back columns to
// its write-back set, so loop prevention and webhook filtering follow them.
func loadMapping(cfg *config.Config) (*mapping.Mapping, error) {
	m := mapping.Default()
	if cfg.MappingPath != "" {
		var err error
		if m, err = mapping.Load(cfg.MappingPath); err != nil {
			return nil, fmt.Errorf("MSISYNC_MAPPING: %w", err)
		}
	}
	fields, err := msiFields(cfg)
	if err != nil {
		return nil, err
	}
	m.AddWriteBack(msi.Columns(fields)...)
	return m, nil
}

func (a *app) openQueue(ctx context.Context) error {
	if a.cfg.ServiceBus != "" {
		q, err := servicebus.New(ctx, servicebus.Options{Connection: a.cfg.ServiceBus, QueueName: a.cfg.ServiceBusQueue, Logger: a.log})
		if err != nil {
			return fmt.Errorf("open Service Bus queue %q (MSISYNC_SERVICEBUS): %w", a.cfg.ServiceBusQueue, err)
		}
		a.queue = q
	} else {
		q, err := sqlitequeue.Open(ctx, a.cfg.QueuePath(), sqlitequeue.Options{Logger: a.log})
		if err != nil {
			return fmt.Errorf("open embedded queue %s: %w", a.cfg.QueuePath(), err)
		}
		a.queue = q
	}
	a.closers = append(a.closers, a.queue.Close)
	return nil
}

func (a *app) openStore(ctx context.Context) error {
	if a.cfg.DatabaseURL != "" {
		s, err := pgstore.Open(ctx, a.cfg.DatabaseURL, pgstore.Options{Logger: a.log})
		if err != nil {
			return fmt.Errorf("open PostgreSQL store (MSISYNC_DATABASE_URL): %w", err)
		}
		a.store = s
	} else {
		s, err := sqlitestore.Open(ctx, a.cfg.StorePath(), sqlitestore.Options{Logger: a.log})
		if err != nil {
			return fmt.Errorf("open embedded store %s: %w", a.cfg.StorePath(), err)
		}
		a.store = s
	}
	a.closers = append(a.closers, a.store.Close)
	return nil
}

// openMarketo builds the client; without credentials it starts the built-in
// sandbox (the Marketo simulator) on a loopback port and points the client at
// it. Commands other than serve and worker (doctor, msi sync) use the sandbox
// of a running serve when there is one, not a copy of their own that would
// not see what serve synced.
func (a *app) openMarketo(ctx context.Context, ownSandbox bool) error {
	cfg := a.cfg
	base, id, secret := cfg.MarketoURL, cfg.MarketoClientID, cfg.MarketoClientSecret
	if cfg.Sandbox() && !ownSandbox {
		if ep, ok := liveSandbox(ctx, a.sandboxEndpointPath()); ok {
			base, id, secret = ep.URL, ep.ClientID, ep.ClientSecret
			a.log.Info("using the Marketo sandbox of the running msisync serve", "url", ep.URL)
		}
	}
	if cfg.Sandbox() && base == "" {
		id, secret = "sandbox-"+randomHex(4), randomHex(16)
		a.sandbox = marketosim.New(marketosim.Options{ClientID: id, ClientSecret: secret, ScoreField: cfg.ScoreField})
		// The sandbox keeps its records in the data folder, so the store's
		// links stay true across restarts.
		if err := loadSandbox(a.sandbox, a.sandboxPath()); err != nil {
			return err
		}
		a.closers = append(a.closers, func() error { return saveSandbox(a.sandbox, a.sandboxPath()) })
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("start Marketo sandbox: %w", err)
		}
		srv := &http.Server{Handler: a.sandbox}
		go func() { _ = srv.Serve(ln) }()
		a.closers = append(a.closers, func() error { return srv.Close() })
		base = "http://" + ln.Addr().String()
		if ownSandbox {
			ep := sandboxEndpoint{URL: base, ClientID: id, ClientSecret: secret}
			if err := publishSandbox(a.sandboxEndpointPath(), ep); err != nil {
				return err
			}
			a.closers = append(a.closers, func() error { return unpublishSandbox(a.sandboxEndpointPath(), ep) })
		}
	}
	mcfg := a.marketoLimits()
	mcfg.BaseURL, mcfg.ClientID, mcfg.ClientSecret = base, id, secret
	mcfg.Logger, mcfg.Registerer = a.log, a.registry
	// Marketo's limits belong to the instance: every process on this store
	// shares one governor through it.
	if slots, ok := a.store.(store.CallSlots); ok {
		mcfg.Slots = slots
	}
	c, err := marketo.New(mcfg)
	if err != nil {
		return fmt.Errorf("marketo client: %w", err)
	}
	if c.Shared() {
		a.log.Info("marketo: call governor shared through the store with every msisync process using it",
			"calls_per_20s", mcfg.CallsPerWindow, "concurrency", mcfg.MaxConcurrent, "daily_quota", mcfg.DailyQuota)
	} else {
		a.log.Info("marketo: no shared store for this command; the call governor counts this process's calls only",
			"calls_per_20s", mcfg.CallsPerWindow, "concurrency", mcfg.MaxConcurrent, "daily_quota", mcfg.DailyQuota)
	}
	a.closers = append(a.closers, func() error { c.Close(); return nil })
	a.marketo = c
	return nil
}

// marketoLimits are the governor settings of the Marketo client.
func (a *app) marketoLimits() marketo.Config {
	cfg := a.cfg
	return marketo.Config{
		CallsPerWindow: cfg.MarketoCallsPer20s, MaxConcurrent: cfg.MarketoConcurrency, DailyQuota: cfg.MarketoDailyQuota,
		Priorities: marketo.Priorities{BackgroundShare: float64(cfg.MSIBudgetShare) / 100, Reserve: float64(cfg.MarketoReserve) / 100},
	}
}

// Close releases everything in reverse order of opening.
func (a *app) Close() error {
	var errs []error
	for i := len(a.closers) - 1; i >= 0; i-- {
		errs = append(errs, a.closers[i]())
	}
	a.closers = nil
	return errors.Join(errs...)
}

// openQueueOnly is for the dlq and queue commands.
func openQueueOnly(ctx context.Context) (queue.Queue, func(), error) {
	a, err := openApp(ctx, needs{queue: true})
	if err != nil {
		return nil, nil, err
	}
	return a.queue, func() { _ = a.Close() }, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// sandboxEndpoint is where a running serve's sandbox answers (loopback; the
// file is 0600 like the webhook key).
type sandboxEndpoint struct {
	URL          string `json:"url"`
	ClientID     string `json:"clientId"`
	ClientSecret string `json:"clientSecret"`
}

func (a *app) sandboxEndpointPath() string {
	return filepath.Join(a.cfg.DataDir, "marketo-sandbox.endpoint.json")
}

func publishSandbox(path string, ep sandboxEndpoint) error {
	b, err := json.Marshal(ep)
	if err != nil {
		return fmt.Errorf("publish Marketo sandbox: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("publish Marketo sandbox %s: %w", path, err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("publish Marketo sandbox %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("publish Marketo sandbox %s: %w", path, err)
	}
	return nil
}

// unpublishSandbox removes the endpoint file if it is still ours (a second
// worker on the folder may have published its own since).
func unpublishSandbox(path string, ep sandboxEndpoint) error {
	var cur sandboxEndpoint
	b, err := os.ReadFile(path)
	if err != nil || json.Unmarshal(b, &cur) != nil || cur != ep {
		return nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("unpublish Marketo sandbox %s: %w", path, err)
	}
	return nil
}

// liveSandbox reads the published endpoint and checks that it answers with
// those credentials (a file left by a killed serve does not).
func liveSandbox(ctx context.Context, path string) (sandboxEndpoint, bool) {
	var ep sandboxEndpoint
	b, err := os.ReadFile(path)
	if err != nil || json.Unmarshal(b, &ep) != nil || ep.URL == "" {
		return ep, false
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	q := url.Values{"grant_type": {"client_credentials"}, "client_id": {ep.ClientID}, "client_secret": {ep.ClientSecret}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ep.URL+"/identity/oauth/token?"+q.Encode(), nil)
	if err != nil {
		return ep, false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ep, false
	}
	resp.Body.Close()
	return ep, resp.StatusCode == http.StatusOK
}

func (a *app) sandboxPath() string { return filepath.Join(a.cfg.DataDir, "marketo-sandbox.json") }

func loadSandbox(sim *marketosim.Server, path string) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read Marketo sandbox state %s: %w", path, err)
	}
	var st marketosim.State
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("read Marketo sandbox state %s: %w (delete the file to start the sandbox empty)", path, err)
	}
	if err := sim.Restore(st); err != nil {
		return fmt.Errorf("restore Marketo sandbox from %s: %w", path, err)
	}
	return nil
}

// saveSandbox writes the sandbox state atomically (temp file + rename).
func saveSandbox(sim *marketosim.Server, path string) error {
	b, err := json.Marshal(sim.Dump())
	if err != nil {
		return fmt.Errorf("save Marketo sandbox: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("save Marketo sandbox %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("save Marketo sandbox %s: %w", path, err)
	}
	return nil
}
