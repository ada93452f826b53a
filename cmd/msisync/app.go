package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
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
	"github.com/msisync/msisync/internal/sandbox"
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
	sandbox   *sandbox.Sandbox  // non-nil when Marketo is the built-in sandbox
	dataverse *dataverse.Client // nil when MSISYNC_DATAVERSE_URL is unset
	mapping   *mapping.Mapping
	// onSettle gets what the syncer did with each message (record history,
	// the console's activity); nil outside serve and worker.
	onSettle func(context.Context, []store.HistoryEntry)

	closers []func() error
}

// sandboxHook, when set (tests only), sees the sandbox before it serves:
// the process tests give it Marketo's latency.
var sandboxHook func(*marketosim.Server)

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
		warnOpenFolder(log, cfg.DataDir)
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

// warnOpenFolder warns when an existing data folder lets group or others in:
// msisync's own files are 0600, but the folder's listing and anything else
// put there are not.
func warnOpenFolder(log *slog.Logger, dir string) {
	fi, err := os.Stat(dir)
	if err != nil || !fi.IsDir() || fi.Mode().Perm()&0o077 == 0 {
		return
	}
	log.Warn("the data folder is accessible to other users; msisync's files in it are 0600, but consider chmod 700",
		"folder", dir, "mode", fi.Mode().Perm().String())
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

// embeddedLockDuration is how long the embedded queue locks a delivered
// message. The worker renews the locks of its batch while it runs, so the
// lock only bounds how long the messages of a crashed (SIGKILLed) worker
// wait before they are delivered again: seconds, like the record locks.
const embeddedLockDuration = 15 * time.Second

func (a *app) openQueue(ctx context.Context) error {
	if a.cfg.ServiceBus != "" {
		q, err := servicebus.New(ctx, servicebus.Options{Connection: a.cfg.ServiceBus, QueueName: a.cfg.ServiceBusQueue,
			MaxMessageBytes: a.cfg.ServiceBusMaxMessageBytes, Logger: a.log})
		if err != nil {
			return fmt.Errorf("open Service Bus queue %q (MSISYNC_SERVICEBUS): %w", a.cfg.ServiceBusQueue, err)
		}
		// Check the queue's properties before any work: what cannot work
		// (sessions, auto-forwarding) stops here, what is unsafe is logged.
		if err := q.CheckQueue(ctx); err != nil {
			_ = q.Close()
			return err
		}
		a.queue = q
	} else {
		q, err := sqlitequeue.Open(ctx, a.cfg.QueuePath(), sqlitequeue.Options{Logger: a.log, LockDuration: embeddedLockDuration})
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
		if ep, ok := sandbox.Live(ctx, cfg.DataDir); ok {
			base, id, secret = ep.URL, ep.ClientID, ep.ClientSecret
			a.log.Info("using the Marketo sandbox of the running msisync serve", "url", ep.URL)
		}
	}
	if cfg.Sandbox() && base == "" {
		// The sandbox keeps its records in the data folder, committed before
		// each call answers, so the store's links stay true across restarts
		// and crashes.
		sb, err := sandbox.Open(ctx, sandbox.Options{DataDir: cfg.DataDir, ScoreField: cfg.ScoreField, Publish: ownSandbox,
			Logger: a.log, Configure: sandboxHook})
		if err != nil {
			return fmt.Errorf("start Marketo sandbox: %w", err)
		}
		a.sandbox = sb
		a.closers = append(a.closers, sb.Close)
		base, id, secret = sb.URL, sb.ClientID, sb.ClientSecret
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
