package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/msisync/msisync/internal/bench/receiverbench"
)

// newBenchBareCmd serves the bare chi handler a separate load generator
// compares msisync receiver/serve with.
func newBenchBareCmd() *cobra.Command {
	var addr string
	cmd := &cobra.Command{
		Use:   "bare [--listen 127.0.0.1:8090]",
		Short: "Serve a bare chi handler answering 202 to POST /webhooks/dataverse (the baseline for wrk or bench paced)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if addr == "" {
				return usagef("--listen must not be empty")
			}
			return receiverbench.ServeBare(c.Context(), addr)
		},
	}
	cmd.Flags().StringVar(&addr, "listen", "127.0.0.1:8090", "address to listen on")
	return cmd
}

// newBenchPacedCmd offers webhook requests at a fixed rate from this process.
func newBenchPacedCmd() *cobra.Command {
	var o receiverbench.PacedOptions
	var payload string
	cmd := &cobra.Command{
		Use:   "paced --url URL [--rate 2000] [--duration 10s]",
		Short: "Offer webhook requests at a fixed rate (open loop) and report p50/p99 from each request's due time",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if o.URL == "" {
				return usagef("--url is required (the webhook URL with ?code=KEY)")
			}
			if o.Rate < 1 || o.Rate > 100000 {
				return usagef("--rate must be from 1 to 100000 req/s, got %d", o.Rate)
			}
			if o.Duration <= 0 || o.Duration > time.Hour {
				return usagef("--duration must be positive and at most 1h, got %s", o.Duration)
			}
			if o.Connections < 1 {
				return usagef("--connections must be at least 1, got %d", o.Connections)
			}
			if payload != "" {
				b, err := os.ReadFile(payload)
				if err != nil {
					return usagef("--payload: %v", err)
				}
				o.Payload = b
			}
			if o.Seed == 0 {
				o.Seed = uint64(time.Now().UnixNano()) << 20
			}
			res, err := receiverbench.Paced(c.Context(), o)
			if err != nil {
				return err
			}
			fmt.Println(res.Line())
			return nil
		},
	}
	cmd.Flags().StringVar(&o.URL, "url", "", "webhook URL, key included (http://127.0.0.1:8080/webhooks/dataverse?code=KEY)")
	cmd.Flags().IntVar(&o.Rate, "rate", 2000, "requests per second offered")
	cmd.Flags().DurationVar(&o.Duration, "duration", 10*time.Second, "how long to offer them")
	cmd.Flags().IntVar(&o.Connections, "connections", 64, "keep-alive connections kept idle between requests")
	cmd.Flags().StringVar(&payload, "payload", "", "RemoteExecutionContext JSON file (default: the embedded example Update); its OperationId is varied per request")
	cmd.Flags().Uint64Var(&o.Seed, "seed", 0, "first request number (default from the clock, so runs never re-send an id)")
	return cmd
}
