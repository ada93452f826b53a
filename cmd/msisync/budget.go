package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/msisync/msisync/internal/marketo"
	"github.com/msisync/msisync/internal/store"
)

// readBudget reads the budget every process on the store shares; a process
// that also has a client adds what it paused.
func (a *app) readBudget(ctx context.Context) (marketo.Budget, error) {
	if a.marketo != nil && a.marketo.Shared() {
		return a.marketo.Budget(ctx)
	}
	slots, ok := a.store.(store.CallSlots)
	if !ok {
		return marketo.Budget{}, fmt.Errorf("the store does not keep a shared Marketo budget")
	}
	return marketo.ReadBudget(ctx, slots, a.marketoLimits(), time.Now())
}

func newBudgetCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "budget",
		Short: "Show today's Marketo calls by purpose, the rolling-window use, the remaining quota and when it resets",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			a, err := openApp(c.Context(), needs{store: true})
			if err != nil {
				return err
			}
			defer a.Close()
			b, err := a.readBudget(c.Context())
			if err != nil {
				return fmt.Errorf("budget: %w", err)
			}
			if asJSON {
				return jsonTo(c.OutOrStdout(), b)
			}
			fmt.Fprint(c.OutOrStdout(), b.String())
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// mountBudget serves GET /admin/v1/budget when this process has a store.
