package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/msisync/msisync/internal/config"
	"github.com/msisync/msisync/internal/dataverse"
	"github.com/msisync/msisync/internal/dataverse/remotecontext"
	"github.com/msisync/msisync/internal/doctor"
	"github.com/msisync/msisync/internal/msi"
	"github.com/msisync/msisync/internal/receiver"
	"github.com/msisync/msisync/internal/syncer"
)

// newServeCmd builds serve (both roles), receiver and worker.
func newServeCmd(use, short string, runReceiver, runWorker bool) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Long:  short + "\n" + settingsHelp(),
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return serve(c.Context(), c.ErrOrStderr(), use, runReceiver, runWorker)
		},
	}
}

// serve runs until ctx ends; notice is where the one-time webhook key
// notice goes (stderr).
func serve(ctx context.Context, notice io.Writer, role string, runReceiver, runWorker bool) error {
	a, err := openApp(ctx, needs{queue: true, store: runWorker, marketo: runWorker, dataverse: runWorker, ownSandbox: runWorker})
	if err != nil {
		return err
	}
	defer a.Close()
	cfg, log := a.cfg, a.log
	if err := registerQueueMetrics(a.registry, a.queue, log); err != nil {
		return fmt.Errorf("queue metrics: %w", err)
	}
	log.Info("msisync starting", "role", role, "version", version, "addr", cfg.Addr,
		"queue", map[bool]string{true: "servicebus:" + cfg.ServiceBusQueue, false: "sqlite:" + cfg.QueuePath()}[cfg.ServiceBus != ""],
		"store", map[bool]string{true: "postgres", false: "sqlite:" + cfg.StorePath()}[cfg.DatabaseURL != ""])
	if runWorker && a.sandbox != nil {
		log.Warn("MARKETO SANDBOX: no Marketo credentials are set, so events sync into the built-in Marketo simulator; see its state at /sandbox/marketo/state. Set MSISYNC_MARKETO_URL, MSISYNC_MARKETO_CLIENT_ID and MSISYNC_MARKETO_CLIENT_SECRET to sync into your Marketo.")
	}
	if runWorker && a.dataverse == nil {
		log.Info("Dataverse access not configured (MSISYNC_DATAVERSE_URL): no re-reads of partial events and no MSI write-back")
	}
	if runWorker && cfg.ServiceBus == "" && !runReceiver {
		log.Info("worker on the embedded queue: run the receiver against the same MSISYNC_DATA_DIR on this machine")
	}

	if runReceiver {
		created, err := cfg.EnsureWebhookKey()
		if err != nil {
			return err
		}
		if created {
			// Printed once, on the run that generated it; never logged.
			fmt.Fprintf(notice, "\nGenerated a webhook key (saved in %s/webhook.key; shown only now):\n\n  %s\n\n"+
				"Register the webhook in Dynamics with:\n  msisync dataverse register --url https://<public host>/webhooks/dataverse\n"+
				"or by hand (Plugin Registration Tool, WebhookKey auth) with that URL and the key above.\n"+
				"This process listens on http://%s%s.\n"+
				"Dataverse calls only ports 80 and 443 of a public host: put HTTPS in front of it\n"+
				"(a reverse proxy or a tunnel; see the README, \"Connect Dynamics 365\").\n\n",
				cfg.DataDir, cfg.WebhookKeys[0], hostPort(cfg.Addr), loopbackNote(cfg.Addr))
		} else if os.Getenv("MSISYNC_WEBHOOK_KEY") == "" {
			log.Info("using the webhook key saved in the data folder", "file", cfg.DataDir+"/webhook.key")
		}
	}

	if err := consoleToken(cfg, notice); err != nil {
		return err
	}
	consoleHandler, activity, err := newConsole(a, role)
	if err != nil {
		return err
	}
	a.onSettle = recordSettled(a, activity)

	ready := func(ctx context.Context) error {
		if err := a.queue.Ping(ctx); err != nil {
			return fmt.Errorf("queue: %w", err)
		}
		if a.store != nil {
			if err := a.store.Ping(ctx); err != nil {
				return fmt.Errorf("store: %w", err)
			}
		}
		return nil
	}
	public := func(r chi.Router) {
		if a.sandbox != nil {
			// state, stats, and MSI changes (POST …/msi) for trying the write-back.
			r.Mount("/sandbox/marketo", http.StripPrefix("/sandbox/marketo", a.sandbox.Control()))
		}
	}
	var budget receiver.BudgetFunc
	if a.store != nil {
		budget = func(ctx context.Context) (any, error) { return a.readBudget(ctx) }
	}
	var diagnose receiver.DiagnoseFunc
	if a.marketo != nil && a.store != nil {
		d := &doctor.Doctor{Marketo: a.marketo, Store: a.store, ScoreField: cfg.ScoreField}
		if a.dataverse != nil {
			d.Dataverse = a.dataverse
		}
		diagnose = func(ctx context.Context, entity, id string) (any, error) { return d.Diagnose(ctx, entity, id) }
	}
	h, err := receiver.New(receiver.Config{
		Keys: cfg.WebhookKeys, Header: cfg.WebhookHeader, Orgs: cfg.Orgs, AdminToken: cfg.AdminToken,
		MaxBodyBytes: cfg.MaxBodyBytes, Queue: a.queue, MaxMessageBytes: a.queue.MaxMessageBytes(),
		DeadLetters: a.queue, Ready: ready, Logger: log, Registerer: a.registry, Gatherer: a.registry,
		Public: public, Diagnose: diagnose, Budget: budget, DisableWebhooks: !runReceiver, Console: consoleHandler,
	})
	if err != nil {
		return fmt.Errorf("receiver: %w", err)
	}
	srv := &http.Server{Addr: cfg.Addr, Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 120 * time.Second}
	conns := trackConns(srv)
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s (MSISYNC_ADDR): %w", cfg.Addr, err)
	}

	// Every role's failure is kept (not only the first): a stop that timed
	// out must not hide behind the cancellation that started it.
	eg, gctx := errgroup.WithContext(ctx)
	g := &failures{g: eg}
	g.Go(func() error {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http server: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		// SIGTERM: stop accepting, let in-flight requests finish, then the
		// deferred Close closes the queue.
		sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			n := conns.active()
			_ = srv.Close()
			log.Error("shutdown timed out: dropped requests still in progress", "connections", n, "timeout", cfg.ShutdownTimeout.String())
			return fmt.Errorf("shutdown: requests not finished within %s (MSISYNC_SHUTDOWN_TIMEOUT): dropped %d connections", cfg.ShutdownTimeout, n)
		}
		return nil
	})
	log.Info("listening", "addr", ln.Addr().String())
	g.Go(func() error { activity.Run(gctx); return nil })
	if a.sandbox != nil {
		if tcp, ok := ln.Addr().(*net.TCPAddr); ok && !tcp.IP.IsLoopback() {
			// The sandbox's state endpoint has no auth: on a reachable
			// address it serves the synced contacts to anyone who asks.
			log.Warn("the Marketo sandbox's synced records (/sandbox/marketo) are readable without a token on this address; listen on 127.0.0.1 (the default MSISYNC_ADDR) or configure Marketo",
				"addr", ln.Addr().String())
		}
	}

	if runWorker {
		// Check once that this Marketo instance has what MSI non-native needs
		// (externalPersonId, the external keys, the MSI fields). A failure is
		// reported loudly but does not stop the worker: a custom service
		// without the schema permission cannot describe, yet may still sync.
		fields, err := msiFields(cfg)
		if err != nil {
			return err
		}
		var names []string
		for _, f := range fields {
			names = append(names, f.Marketo)
		}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = a.marketo.CheckInstance(cctx, names)
		activity.SetInstanceCheck(err)
		if err != nil {
			log.Error("Marketo instance check failed: is the MSI Non-Native feature enabled (Marketo Support) and does the API user have Read-Write Lead and schema permissions?", "error", err)
		} else {
			log.Info("Marketo instance has externalPersonId, the external keys and the MSI fields")
		}
		cancel()
		s, err := newSyncer(a)
		if err != nil {
			return err
		}
		// Every object the worker writes, with the mapping: name each field
		// the instance lacks now rather than dead-letter the first record.
		cctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		if err := s.CheckInstance(cctx, a.marketo); err != nil {
			log.Error("Marketo instance check of the mapped fields failed", "error", err)
		}
		cancel()
		g.Go(func() error { return s.Run(gctx) })
		if a.sandbox != nil {
			// Let the sandbox's MSI scores move, as Marketo's do, so the
			// write-back has something to copy.
			g.Go(func() error { a.sandbox.RunMSI(gctx, time.Minute, 5); return nil })
		}
		if a.dataverse != nil && cfg.ReconcileInterval > 0 {
			// One replica at a time (a lease in the store) heals what the
			// webhooks lost.
			r, err := newReconciler(a, nil, cfg.ReconcileInterval)
			if err != nil {
				return err
			}
			g.Go(func() error { return r.Run(gctx) })
		}
		if a.dataverse != nil && cfg.MSIInterval > 0 {
			w, err := newMSIWriter(a)
			if err != nil {
				return err
			}
			g.Go(func() error { return w.Run(gctx) })
		}
	}
	err = g.Wait()
	if err != nil {
		log.Error("msisync stopped with errors", "role", role, "error", err)
		return err
	}
	log.Info("msisync stopped", "role", role)
	return nil
}

// failures is an errgroup that keeps every role's error but cancellation.
type failures struct {
	g    *errgroup.Group
	mu   sync.Mutex
	errs []error
}

func (f *failures) Go(fn func() error) {
	f.g.Go(func() error {
		err := fn()
		if err != nil && !errors.Is(err, context.Canceled) {
			f.mu.Lock()
			f.errs = append(f.errs, err)
			f.mu.Unlock()
		}
		return err
	})
}

func (f *failures) Wait() error {
	_ = f.g.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	return errors.Join(f.errs...)
}

// connCounter counts the server's connections that are serving a request.
type connCounter struct {
	mu  sync.Mutex
	act map[net.Conn]bool
}

func trackConns(srv *http.Server) *connCounter {
	c := &connCounter{act: map[net.Conn]bool{}}
	srv.ConnState = func(conn net.Conn, st http.ConnState) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if st == http.StateActive {
			c.act[conn] = true
		} else {
			delete(c.act, conn)
		}
	}
	return c
}

func (c *connCounter) active() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.act)
}

// batchWait is how long the worker lets a batch fill after its first
// message. Marketo allows 50-100 calls per 20 s: without it, a burst of
// webhooks arriving over a second is cut into dozens of small batches of two
// calls each (600 contact creates took 42 calls and hit the rate limit);
// with it they go 300 to a call, for at most this much added latency.
const batchWait = time.Second

// receiveMax is MSISYNC_RECEIVE_MAX, or its default for the configured queue.
func receiveMax(cfg *config.Config) int {
	if cfg.ReceiveMax > 0 {
		return cfg.ReceiveMax
	}
	return syncer.DefaultReceiveMax(cfg.BatchSize, cfg.ServiceBus != "")
}

func newSyncer(a *app) (*syncer.Syncer, error) {
	cfg := a.cfg
	var reader syncer.RecordReader
	if a.dataverse != nil {
		reader = a.dataverse
	}
	host, _ := os.Hostname()
	s, err := syncer.New(syncer.Config{
		Queue: a.queue, Store: a.store, Marketo: a.marketo, Dataverse: reader, IsNotFound: dataverse.IsNotFound,
		ParseNative: remotecontext.ParseServiceBus, Mapping: a.mapping,
		// The worker finishes its batch in the first 60% of the stop's time,
		// so abandoning what is left and closing still fit inside it.
		DrainTimeout: cfg.ShutdownTimeout * 6 / 10,
		BatchSize:    cfg.BatchSize, ReceiveMax: receiveMax(cfg), BatchWait: batchWait,
		// As many calls of one kind at once as the governor lets through.
		CallConcurrency: cfg.MarketoConcurrency, MaxAttempts: cfg.MaxAttempts, LeadStrategy: cfg.LeadStrategy,
		DeletePolicy: cfg.DeletePolicy, AnyConnectionRole: cfg.AnyConnectionRole, AppUserID: cfg.DataverseAppUserID, DefaultSalesPersonID: cfg.DefaultSalesPersonID,
		WorkerID: host + "-" + randomHex(3), Logger: a.log, Registerer: a.registry, OnSettle: a.onSettle,
	})
	if err != nil {
		return nil, fmt.Errorf("syncer: %w", err)
	}
	return s, nil
}

func newMSIWriter(a *app) (*msi.Writer, error) {
	host, _ := os.Hostname()
	fields, err := msiFields(a.cfg)
	if err != nil {
		return nil, err
	}
	w, err := msi.New(msi.Config{
		Store: a.store, Marketo: a.marketo, Dataverse: a.dataverse, Fields: fields,
		Interval: a.cfg.MSIInterval, Holder: host + "-" + randomHex(3), Logger: a.log, Registerer: a.registry,
		// Incremental: activities since a stored paging token plus a rolling sweep.
		Activities: a.marketo, Sweep: a.cfg.MSISweep,
	})
	if err != nil {
		return nil, fmt.Errorf("msi write-back: %w", err)
	}
	return w, nil
}

// loopbackNote says when addr answers only on this machine.
func loopbackNote(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
		return "\n  (this machine only: set MSISYNC_ADDR=:8080 to listen on every interface)"
	}
	return ""
}

func hostPort(addr string) string {
	if strings.HasPrefix(addr, ":") {
		return "localhost" + addr
	}
	return addr
}
