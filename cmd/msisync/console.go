package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/term"

	"github.com/msisync/msisync/internal/config"
	"github.com/msisync/msisync/internal/console"
	"github.com/msisync/msisync/internal/doctor"
	"github.com/msisync/msisync/internal/marketo"
	"github.com/msisync/msisync/internal/queue"
	"github.com/msisync/msisync/internal/reconcile"
	"github.com/msisync/msisync/internal/store"
)

// consoleToken makes sure the admin token exists in zero-config mode (the
// embedded queue: the data folder persists, so a generated token does too)
// and prints where the console is. Elsewhere an unset MSISYNC_ADMIN_TOKEN
// keeps the admin API and the console off.
func consoleToken(cfg *config.Config, notice io.Writer) error {
	created := false
	if cfg.AdminToken == "" && cfg.ServiceBus == "" {
		var err error
		if created, err = cfg.EnsureAdminToken(); err != nil {
			return fmt.Errorf("admin token (MSISYNC_ADMIN_TOKEN): %w", err)
		}
	}
	base := "http://" + hostPort(cfg.Addr) + console.Path + "/"
	file := filepath.Join(cfg.DataDir, config.AdminTokenFile)
	switch {
	case cfg.AdminToken == "":
		fmt.Fprintf(notice, "\nConsole: off (set MSISYNC_ADMIN_TOKEN to turn it and the admin API on).\n\n")
	case cfg.AdminTokenGenerated && (created || isTerminal(notice)):
		// The token rides in the fragment, which the browser never sends:
		// the login page fills it in. Printed on the run that generated it
		// and on a terminal, never logged, so that a container's log
		// collector sees it once at most.
		fmt.Fprintf(notice, "\nConsole: %slogin#token=%s\n  (admin token saved in %s; the admin API takes it as a bearer token)\n\n",
			base, cfg.AdminToken, file)
	case cfg.AdminTokenGenerated:
		fmt.Fprintf(notice, "\nConsole: %s  (log in with the admin token in %s)\n\n", base, file)
	default:
		fmt.Fprintf(notice, "\nConsole: %s  (log in with MSISYNC_ADMIN_TOKEN)\n\n", base)
	}
	return nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// newConsole builds the console from what this process opened; the
// activity it returns is fed by the syncer (when this process runs one).
func newConsole(a *app, role string) (http.Handler, *console.Activity, error) {
	act, err := console.NewActivity(nil, a.registry, a.registry)
	if err != nil {
		return nil, nil, fmt.Errorf("console: %w", err)
	}
	if a.cfg.AdminToken == "" {
		return nil, act, nil
	}
	settings := config.Effective(os.Getenv)
	for i, v := range settings {
		// Say where a generated secret is, never what it is.
		switch {
		case v.Set:
		case v.Name == "MSISYNC_WEBHOOK_KEY" && len(a.cfg.WebhookKeys) > 0:
			settings[i].Value = "generated, in " + filepath.Join(a.cfg.DataDir, config.KeyFile)
		case v.Name == "MSISYNC_ADMIN_TOKEN" && a.cfg.AdminTokenGenerated:
			settings[i].Value = "generated, in " + filepath.Join(a.cfg.DataDir, config.AdminTokenFile)
		}
	}
	cfg := console.Config{
		Token: a.cfg.AdminToken, DeadLetters: a.queue, Activity: act, Gatherer: a.registry,
		Settings: settings, Role: role, Logger: a.log,
	}
	if c, ok := a.queue.(queue.Counter); ok {
		cfg.Queue = c
	}
	if a.store != nil {
		cfg.Links = a.store
		if h, ok := a.store.(store.History); ok {
			cfg.History = h
		}
	}
	if a.store != nil {
		cfg.Cycles = reconcileCycles{store: a.store}
	}
	if a.marketo != nil {
		cfg.Budget = consoleBudget{c: a.marketo, window: marketo.InstanceWindow}
	}
	if a.marketo != nil && a.store != nil {
		d := &doctor.Doctor{Marketo: a.marketo, Store: a.store, ScoreField: a.cfg.ScoreField}
		if a.dataverse != nil {
			d.Dataverse = a.dataverse
		}
		cfg.Doctor, cfg.People = d, a.marketo
	}
	h, err := console.New(cfg)
	if err != nil {
		return nil, nil, err
	}
	return h, act, nil
}

// recordSettled is the syncer's OnSettle: the record history in the store
// (when it keeps one) and the console's activity.
func recordSettled(a *app, act *console.Activity) func(context.Context, []store.HistoryEntry) {
	h, _ := a.store.(store.History)
	return func(ctx context.Context, entries []store.HistoryEntry) {
		act.Settled(ctx, entries)
		if h != nil {
			if err := h.AppendHistory(ctx, entries); err != nil && ctx.Err() == nil {
				a.log.Warn("cannot record the history of settled events (the console's record page will miss them)", "error", err)
			}
		}
	}
}

// consoleBudget shows the Marketo client's budget (shared through the store
// when the governor is) on the console's overview.
type consoleBudget struct {
	c      *marketo.Client
	window time.Duration
}

func (b consoleBudget) Budget(ctx context.Context) (console.Budget, error) {
	mb, err := b.c.Budget(ctx)
	if err != nil {
		return console.Budget{}, err
	}
	out := console.Budget{Day: mb.Day, Quota: mb.Quota, Used: mb.Used, ByPurpose: make(map[string]int, len(mb.ByPurpose)),
		WindowCalls: mb.WindowCalls, WindowLimit: mb.WindowLimit, Window: b.window}
	for p, n := range mb.ByPurpose {
		out.ByPurpose[string(p)] = n
	}
	return out, nil
}

// reconcileCycles reports the last reconcile cycle, which the replica that
// ran it saved in the store, so every process's console shows it.
type reconcileCycles struct {
	store interface {
		GetMeta(ctx context.Context, key string) (string, bool, error)
	}
}

func (r reconcileCycles) Cycles(ctx context.Context) ([]console.Cycle, error) {
	rep, err := reconcile.LastReport(ctx, r.store)
	if err != nil || rep == nil {
		return nil, err
	}
	c := console.Cycle{Name: "Reconcile", Started: rep.Started, Finished: rep.Started.Add(rep.Duration), OK: rep.Error == ""}
	switch {
	case rep.Error != "":
		c.Detail = rep.Error
	default:
		c.Detail = fmt.Sprintf("%d Dataverse requests, %d changes webhooks missed, %d enqueued", rep.Requests, rep.Found, rep.Enqueued)
	}
	return []console.Cycle{c}, nil
}
