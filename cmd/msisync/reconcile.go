package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/reconcile"
)

func newReconcileCmd() *cobra.Command {
	var once bool
	var entities string
	cmd := &cobra.Command{
		Use:   "reconcile [--once] [--entities account,contact,…]",
		Short: "Read what changed in Dataverse (change tracking) and enqueue what the webhooks missed; a loop every MSISYNC_RECONCILE_INTERVAL, or one cycle with --once",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			list, err := entitiesFlag(entities)
			if err != nil {
				return err
			}
			a, err := openApp(c.Context(), needs{queue: true, store: true, dataverse: true})
			if err != nil {
				return err
			}
			defer a.Close()
			if err := needDataverse(a); err != nil {
				return err
			}
			interval := a.cfg.ReconcileInterval
			if !once && interval == 0 {
				return usagef("MSISYNC_RECONCILE_INTERVAL is 0 (reconcile off): set it, or run one cycle with --once")
			}
			r, err := newReconciler(a, list, interval)
			if err != nil {
				return err
			}
			if untracked, err := r.CheckTables(c.Context()); err != nil {
				a.log.Warn("cannot check which tables have change tracking", "error", err)
			} else if len(untracked) > 0 {
				fmt.Fprintf(c.ErrOrStderr(), "Change tracking is off on: %s. Those tables are reconciled by a modifiedon read.\n"+
					"Turn it on in Power Apps: Tables → the table → Properties → Advanced options → Track changes.\n", strings.Join(untracked, ", "))
			}
			if !once {
				return r.Run(c.Context())
			}
			rep, err := r.RunOnce(c.Context())
			fmt.Fprintln(c.OutOrStdout(), rep.String())
			return err
		},
	}
	cmd.Flags().BoolVar(&once, "once", false, "run one cycle and exit")
	cmd.Flags().StringVar(&entities, "entities", "", "comma-separated entities (default: all, in dependency order: "+strings.Join(event.SyncedEntities, ",")+")")
	return cmd
}

// newReconciler wires reconcile to the app's Dataverse client, queue and store.
func newReconciler(a *app, entities []string, interval time.Duration) (*reconcile.Reconciler, error) {
	m, err := loadMapping(a.cfg)
	if err != nil {
		return nil, err
	}
	if interval <= 0 {
		interval = reconcile.DefaultInterval
	}
	host, _ := os.Hostname()
	r, err := reconcile.New(reconcile.Config{
		Dataverse: a.dataverse, Sender: a.queue, Store: a.store, Entities: entities, Columns: m.Columns,
		Interval: interval, Holder: host + "-" + randomHex(3), AppUserID: a.cfg.DataverseAppUserID, Logger: a.log, Registerer: a.registry,
	})
	if err != nil {
		return nil, fmt.Errorf("reconcile: %w", err)
	}
	return r, nil
}

// reconcileStatus describes the last reconcile cycle for `dataverse status`.
func reconcileStatus(ctx context.Context, a *app) string {
	if a.store == nil {
		if err := a.openStore(ctx); err != nil {
			return "Last reconcile: unknown (" + err.Error() + ")"
		}
	}
	rep, err := reconcile.LastReport(ctx, a.store)
	switch {
	case err != nil:
		return "Last reconcile: unknown (" + err.Error() + ")"
	case rep == nil:
		return "Last reconcile: none yet (msisync reconcile --once, or serve/worker every MSISYNC_RECONCILE_INTERVAL)"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Last reconcile: %s (%s ago), %d requests, %d changes the webhooks missed, %d events enqueued",
		rep.Started.Format(time.RFC3339), time.Since(rep.Started).Round(time.Second), rep.Requests, rep.Found, rep.Enqueued)
	if rep.Error != "" {
		fmt.Fprintf(&b, "\n  error: %s", rep.Error)
	}
	for _, t := range rep.Tables {
		if t.Found() > 0 || t.Error != "" || t.Method != reconcile.MethodDelta {
			fmt.Fprintf(&b, "\n  %-12s %-10s missed %d, new %d, deleted %d", t.Entity, t.Method, t.Missed, t.New, t.Deleted)
			if t.Error != "" {
				fmt.Fprintf(&b, " ERROR %s", t.Error)
			}
		}
	}
	if len(rep.Untracked) > 0 {
		fmt.Fprintf(&b, "\n  change tracking off (read by modifiedon): %s", strings.Join(rep.Untracked, ", "))
	}
	return b.String()
}
