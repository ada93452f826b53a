// Command msisync keeps Adobe Marketo Engage in sync with Microsoft Dynamics
// 365 (Dataverse) for Marketo Sales Insight non-native integrations.
//
// main only wires: it reads the settings, opens the adapters the settings
// select and hands them to the packages that do the work.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/msisync/msisync/internal/config"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRoot().ExecuteContext(ctx)
	stop()
	if code := exitCode(os.Stderr, err); code != 0 {
		os.Exit(code)
	}
}

// exitCode reports err on w and returns the exit status: 0 without an
// error, 2 for a usage error, the command's own status (doctor: 3, its
// report already printed), else 1.
func exitCode(w io.Writer, err error) int {
	if err == nil {
		return 0
	}
	var status *exitStatus
	if errors.As(err, &status) {
		return status.code
	}
	fmt.Fprintln(w, "msisync:", err)
	var usage *usageError
	if errors.As(err, &usage) {
		return 2
	}
	return 1
}

// usageError is a wrong flag or argument: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// exitStatus ends the program with a status of its own and no message, for
// a command whose output already said why (doctor: 3 = unhealthy record).
type exitStatus struct {
	code int
	msg  string
}

func (e *exitStatus) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "msisync",
		Short:         "Sync Dynamics 365 (Dataverse) into Marketo for Marketo Sales Insight, and MSI scores back",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usagef("%s: %v (see %s --help)", c.CommandPath(), err, c.CommandPath())
	})
	root.AddCommand(
		newServeCmd("serve", "Run everything in one process: receiver, worker and MSI write-back (zero config: embedded queue and store, Marketo sandbox)", true, true),
		newServeCmd("receiver", "Run only the webhook receiver (scale-out: several receivers, one queue)", true, false),
		newServeCmd("worker", "Run only the worker: queue consumer and MSI write-back (scale-out: several workers need Service Bus and PostgreSQL)", false, true),
		newDLQCmd(),
		newQueueCmd(),
		newDataverseCmd(),
		newBackfillCmd(),
		newReconcileCmd(),
		newMSICmd(),
		newDoctorCmd(),
		newBudgetCmd(),
		newSimCmd(),
		newBenchCmd(),
	)
	return root
}

// settingsHelp renders the settings table for --help.
func settingsHelp() string {
	var b strings.Builder
	b.WriteString("\nSettings (environment variables):\n")
	for _, s := range config.Settings {
		def := s.Default
		if def == "" {
			def = "unset"
		}
		fmt.Fprintf(&b, "  %-32s %s (default: %s)\n", s.Name, s.Help, def)
	}
	return b.String()
}

// loadConfig reads the settings and makes the logger.
func loadConfig() (*config.Config, *slog.Logger, error) {
	cfg, err := config.Load(os.Getenv)
	if err != nil {
		return nil, nil, err
	}
	return cfg, newLogger(cfg.LogLevel), nil
}

func newLogger(level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}
