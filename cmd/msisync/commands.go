package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/msisync/msisync/internal/backfill"
	"github.com/msisync/msisync/internal/bench/msibench"
	"github.com/msisync/msisync/internal/bench/receiverbench"
	"github.com/msisync/msisync/internal/bench/syncbench"
	"github.com/msisync/msisync/internal/config"
	"github.com/msisync/msisync/internal/dataverse"
	"github.com/msisync/msisync/internal/dataverse/dataversesim"
	"github.com/msisync/msisync/internal/doctor"
	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/marketo/marketosim"
	"github.com/msisync/msisync/internal/msi"
	"github.com/msisync/msisync/internal/queue/servicebus"
	"github.com/msisync/msisync/internal/syncer/mapping"
)

func jsonTo(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newQueueCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "queue", Short: "Manage the Azure Service Bus queue"}
	var dryRun bool
	var want servicebus.QueueSettings
	setup := &cobra.Command{
		Use:   "setup",
		Short: "Create or update the Service Bus queue (lock duration, max deliveries, duplicate detection, dead-lettering on expiry)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cfg, _, err := loadConfig()
			if err != nil {
				return err
			}
			if cfg.ServiceBus == "" {
				return usagef("queue setup needs MSISYNC_SERVICEBUS (the embedded queue needs no setup)")
			}
			plan, err := servicebus.Setup(c.Context(), cfg.ServiceBus, cfg.ServiceBusQueue, want, dryRun)
			if err != nil {
				return err
			}
			fmt.Fprintln(c.OutOrStdout(), plan.String())
			return nil
		},
	}
	d := servicebus.DefaultQueueSettings()
	setup.Flags().DurationVar(&want.LockDuration, "lock-duration", d.LockDuration, "peek-lock duration (≤ 5m)")
	setup.Flags().IntVar(&want.MaxDeliveryCount, "max-delivery-count", d.MaxDeliveryCount, "deliveries before Service Bus dead-letters a message")
	setup.Flags().DurationVar(&want.DuplicateDetectionWindow, "duplicate-window", d.DuplicateDetectionWindow, "duplicate detection window")
	setup.Flags().DurationVar(&want.DefaultTTL, "ttl", d.DefaultTTL, "message time to live")
	setup.Flags().BoolVar(&want.DeadLetterOnExpiry, "dead-letter-on-expiry", d.DeadLetterOnExpiry, "dead-letter expired messages")
	setup.Flags().BoolVar(&dryRun, "dry-run", false, "show the difference, change nothing")
	cmd.AddCommand(setup)
	return cmd
}

// withDataverse opens the app with the Dataverse client, runs fn and prints
// what it returns (a plan or a status).
func withDataverse(c *cobra.Command, n needs, fn func(a *app) (fmt.Stringer, error)) error {
	n.dataverse = true
	a, err := openApp(c.Context(), n)
	if err != nil {
		return err
	}
	defer a.Close()
	if err := needDataverse(a); err != nil {
		return err
	}
	out, err := fn(a)
	if err != nil {
		return err
	}
	fmt.Fprintln(c.OutOrStdout(), out.String())
	return nil
}

// stringer prints a ready-made text.
type stringer string

func (s stringer) String() string { return string(s) }

func needDataverse(a *app) error {
	if a.dataverse == nil {
		return usagef("this command needs MSISYNC_DATAVERSE_URL (and MSISYNC_DATAVERSE_TOKEN or AZURE_TENANT_ID/AZURE_CLIENT_ID/AZURE_CLIENT_SECRET)")
	}
	return nil
}

func newDataverseCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "dataverse", Short: "Register the msisync webhook in Dynamics, remove it, or show its status"}
	var url, auth, name string
	var dryRun bool
	register := &cobra.Command{
		Use:   "register --url https://<public host>/webhooks/dataverse",
		Short: "Create or update the webhook and its steps (idempotent)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if !strings.HasPrefix(url, "https://") && !strings.HasPrefix(url, "http://") {
				return usagef("--url must be the public http(s) URL of /webhooks/dataverse, got %q", url)
			}
			if auth != "WebhookKey" && auth != "HttpHeader" {
				return usagef("--auth must be WebhookKey or HttpHeader, got %q", auth)
			}
			return withDataverse(c, needs{store: true}, func(a *app) (fmt.Stringer, error) {
				if _, err := a.cfg.EnsureWebhookKey(); err != nil {
					return nil, err
				}
				m, err := loadMapping(a.cfg)
				if err != nil {
					return nil, err
				}
				salt, err := installSalt(c.Context(), a.store)
				if err != nil {
					return nil, err
				}
				return a.dataverse.Register(c.Context(), dataverse.RegisterOptions{
					URL: url, AuthType: auth, Key: a.cfg.WebhookKeys[0], Header: a.cfg.WebhookHeader, Name: name,
					Steps: stepSpecs(m), DryRun: dryRun, Salt: salt,
				})
			})
		},
	}
	register.Flags().StringVar(&url, "url", "", "public URL Dataverse posts to (…/webhooks/dataverse)")
	register.Flags().StringVar(&auth, "auth", "WebhookKey", "WebhookKey (?code=) or HttpHeader (MSISYNC_WEBHOOK_HEADER)")
	register.Flags().StringVar(&name, "name", "msisync", "service endpoint name")
	register.Flags().BoolVar(&dryRun, "dry-run", false, "print the plan, change nothing")

	unregister := &cobra.Command{
		Use:   "unregister",
		Short: "Remove the webhook and the steps msisync created",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return withDataverse(c, needs{}, func(a *app) (fmt.Stringer, error) {
				return a.dataverse.Unregister(c.Context(), name, dryRun)
			})
		},
	}
	unregister.Flags().StringVar(&name, "name", "msisync", "service endpoint name")
	unregister.Flags().BoolVar(&dryRun, "dry-run", false, "print the plan, change nothing")

	status := &cobra.Command{
		Use:   "status",
		Short: "Show the webhook, its steps, and recent failed system jobs of those steps",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return withDataverse(c, needs{}, func(a *app) (fmt.Stringer, error) {
				st, err := a.dataverse.Status(c.Context(), name)
				if err != nil {
					return nil, err
				}
				// Beside the failed system jobs: what reconcile found they lost.
				return stringer(st.String() + "\n" + reconcileStatus(c.Context(), a)), nil
			})
		},
	}
	status.Flags().StringVar(&name, "name", "msisync", "service endpoint name")
	cmd.AddCommand(register, unregister, status)
	return cmd
}

func newBackfillCmd() *cobra.Command {
	var entities string
	var since time.Duration
	var sinceDate string
	var pageSize int
	var restart bool
	cmd := &cobra.Command{
		Use:   "backfill [--entities systemuser,account,…] [--since 720h | --since-date 2026-01-01]",
		Short: "Page through Dataverse in dependency order and enqueue every record (resumes where an interrupted run stopped)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			list, err := entitiesFlag(entities)
			if err != nil {
				return err
			}
			var from time.Time
			if since > 0 {
				from = time.Now().Add(-since)
			}
			if sinceDate != "" {
				t, err := time.Parse("2006-01-02", sinceDate)
				if err != nil {
					return usagef("--since-date must be YYYY-MM-DD, got %q", sinceDate)
				}
				from = t
			}
			a, err := openApp(c.Context(), needs{queue: true, store: true, dataverse: true})
			if err != nil {
				return err
			}
			defer a.Close()
			if err := needDataverse(a); err != nil {
				return err
			}
			m, err := loadMapping(a.cfg)
			if err != nil {
				return err
			}
			rep, err := backfill.Run(c.Context(), backfill.Config{
				Dataverse: a.dataverse, Sender: a.queue, Store: a.store, Entities: list, Since: from,
				PageSize: pageSize, Restart: restart, Columns: m.Columns, Progress: c.ErrOrStderr(), Logger: a.log,
			})
			fmt.Fprintln(c.OutOrStdout(), rep.String())
			return err
		},
	}
	cmd.Flags().StringVar(&entities, "entities", "", "comma-separated entities (default: all, in dependency order: "+strings.Join(event.SyncedEntities, ",")+")")
	cmd.Flags().DurationVar(&since, "since", 0, "only records modified in the last DURATION")
	cmd.Flags().StringVar(&sinceDate, "since-date", "", "only records modified on or after this date (YYYY-MM-DD)")
	cmd.Flags().IntVar(&pageSize, "page-size", 1000, "Dataverse page size (≤ 5000)")
	cmd.Flags().BoolVar(&restart, "restart", false, "ignore saved checkpoints and read everything again")
	return cmd
}

// msiFields are the MSI write-back fields: MSISYNC_MSI_FIELDS or the defaults.
func msiFields(cfg *config.Config) ([]msi.FieldMap, error) {
	if cfg.MSIFields == "" {
		return msi.DefaultFields(cfg.ScoreField), nil
	}
	f, err := msi.ParseFields(cfg.MSIFields)
	if err != nil {
		return nil, fmt.Errorf("MSISYNC_MSI_FIELDS: %w", err)
	}
	return f, nil
}

func newMSICmd() *cobra.Command {
	cmd := &cobra.Command{Use: "msi", Short: "MSI write-back (Marketo → Dataverse)"}
	var once, full bool
	sync := &cobra.Command{
		Use:   "sync --once",
		Short: "Copy MSI fields from Marketo onto the Dynamics leads/contacts that changed",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if full && !once {
				return usagef("msi sync: --full needs --once (a running write-back sweeps on its own, see MSISYNC_MSI_SWEEP)")
			}
			a, err := openApp(c.Context(), needs{store: true, marketo: true, dataverse: true})
			if err != nil {
				return err
			}
			defer a.Close()
			if err := needDataverse(a); err != nil {
				return err
			}
			w, err := newMSIWriter(a)
			if err != nil {
				return err
			}
			if !once {
				return w.Run(c.Context())
			}
			run := w.RunOnce
			if full {
				run = w.RunOnceFull
			}
			rep, err := run(c.Context())
			fmt.Fprintln(c.OutOrStdout(), rep.String())
			return err
		},
	}
	sync.Flags().BoolVar(&once, "once", false, "run one cycle and exit: the activities since the last cycle plus the due slice of the rolling sweep (default: loop every MSISYNC_MSI_INTERVAL)")
	sync.Flags().BoolVar(&full, "full", false, "with --once: read every synced person (a whole sweep) instead of the changes")
	cmd.AddCommand(sync)
	return cmd
}

func newDoctorCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "doctor ENTITY ID",
		Short: "Diagnose one record's linkage in Marketo (lead ↔ company ↔ sales person, email match, MSI fields)",
		Args:  exactArgs(2, "ENTITY (contact, lead, account, systemuser, opportunity) and a record GUID"),
		RunE: func(c *cobra.Command, args []string) error {
			a, err := openApp(c.Context(), needs{store: true, marketo: true, dataverse: true})
			if err != nil {
				return err
			}
			defer a.Close()
			d := &doctor.Doctor{Marketo: a.marketo, Store: a.store, ScoreField: a.cfg.ScoreField}
			if a.dataverse != nil {
				d.Dataverse = a.dataverse
			}
			rep, err := d.Diagnose(c.Context(), strings.ToLower(args[0]), args[1])
			if err != nil {
				return err
			}
			if asJSON {
				err = jsonTo(c.OutOrStdout(), rep)
			} else {
				fmt.Fprint(c.OutOrStdout(), rep.String())
			}
			if err == nil && !rep.Healthy() {
				// Exit status 3 (after the deferred Close), no further message:
				// the report says what is wrong.
				return &exitStatus{code: 3, msg: "doctor: " + args[0] + " " + args[1] + " has failing checks"}
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newSimCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "sim", Short: "Run a simulator (for demos, tests and benchmarks)"}
	var addr, clientID, clientSecret, scoreField string
	var lookup, crm, dvc bool
	var tick time.Duration
	var tickN, imType int
	mk := &cobra.Command{
		Use:   "marketo --addr :9090",
		Short: "Run the Marketo simulator",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if scoreField != "relativeScore" && scoreField != "relativeScoring" {
				return usagef("--score-field must be relativeScore or relativeScoring, got %q", scoreField)
			}
			if tick < 0 || tickN < 1 {
				return usagef("--msi-tick must be a positive duration (or 0 for off) and --msi-tick-leads at least 1")
			}
			if imType != 41 && imType != 46 {
				return usagef("--interesting-moment-type-id must be 41 or 46, got %d", imType)
			}
			return marketosim.ListenAndServe(c.Context(), addr, marketosim.Options{
				ClientID: clientID, ClientSecret: clientSecret, ScoreField: scoreField,
				LookupExternalPersonID: lookup, CRMEnabled: crm, TickMSIEvery: tick, TickMSILeads: tickN,
				InterestingMomentTypeID: imType, MSIChangeActivities: dvc,
			}, newLogger("info"))
		},
	}
	mk.Flags().StringVar(&addr, "addr", "127.0.0.1:9090", "listen address")
	mk.Flags().StringVar(&clientID, "client-id", "msisync", "client id the identity endpoint accepts")
	mk.Flags().StringVar(&clientSecret, "client-secret", "secret", "client secret the identity endpoint accepts")
	mk.Flags().StringVar(&scoreField, "score-field", "relativeScore", "relativeScore or relativeScoring")
	mk.Flags().BoolVar(&lookup, "lookup-external-person-id", false, "accept lookupField=externalPersonId on Sync Leads (else 1011)")
	mk.Flags().BoolVar(&crm, "crm-enabled", false, "behave as an instance with native CRM sync on (1018)")
	mk.Flags().DurationVar(&tick, "msi-tick", 0, "change the MSI fields of some leads this often, as Marketo does (0 = off)")
	mk.Flags().IntVar(&tickN, "msi-tick-leads", 5, "leads changed per --msi-tick")
	mk.Flags().IntVar(&imType, "interesting-moment-type-id", 46, "activity type id of Interesting Moment: 41 or 46 (UNCONFIRMED which is real)")
	mk.Flags().BoolVar(&dvc, "msi-change-activities", false, "log computed MSI field changes as Data Value Change activities (UNCONFIRMED on Marketo)")

	var dvAddr, token, untracked string
	var drop, failJobs float64
	dv := &cobra.Command{
		Use:   "dataverse --addr :9091",
		Short: "Run the Dataverse simulator (Web API, registration tables, webhook delivery)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if drop < 0 || failJobs < 0 || drop+failJobs > 1 {
				return usagef("--drop-webhooks (%v) and --fail-webhooks (%v) must be fractions ≥ 0 adding up to ≤ 1", drop, failJobs)
			}
			var off []string
			for _, e := range strings.Split(untracked, ",") {
				if e = strings.TrimSpace(e); e != "" {
					if !event.IsSyncedEntity(e) {
						return usagef("--no-change-tracking: %q is not one of %s", e, strings.Join(event.SyncedEntities, ", "))
					}
					off = append(off, e)
				}
			}
			return dataversesim.ListenAndServe(c.Context(), dvAddr, dataversesim.Options{Token: token,
				WebhookFaults: dataversesim.WebhookFaults{Drop: drop, Fail: failJobs, Seed: time.Now().UnixNano()}, Untracked: off}, newLogger("info"))
		},
	}
	dv.Flags().StringVar(&dvAddr, "addr", "127.0.0.1:9091", "listen address")
	dv.Flags().StringVar(&token, "token", "dev-token", "bearer token the Web API accepts (set MSISYNC_DATAVERSE_TOKEN to the same)")
	dv.Flags().Float64Var(&drop, "drop-webhooks", 0, "fraction of webhook deliveries silently lost (0-1), for trying msisync reconcile")
	dv.Flags().Float64Var(&failJobs, "fail-webhooks", 0, "fraction of webhook deliveries failed as system jobs (statuscode 31) without a call (0-1)")
	dv.Flags().StringVar(&untracked, "no-change-tracking", "", "comma-separated tables without change tracking (reconciled by modifiedon)")
	cmd.AddCommand(mk, dv)
	return cmd
}

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "bench", Short: "Benchmarks against the simulators"}
	var o syncbench.Options
	sync := &cobra.Command{
		Use:   "sync [--events 30000]",
		Short: "Drain a backlog of mixed events into the Marketo simulator at Marketo's real limits and report efficiency",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if o.Events < 1 {
				return usagef("--events must be at least 1, got %d", o.Events)
			}
			if o.CallsPerWindow < 1 || o.CallsPerWindow > 100 {
				return usagef("--calls-per-20s must be from 1 to 100, got %d", o.CallsPerWindow)
			}
			if o.MaxConcurrent < 1 || o.MaxConcurrent > 10 {
				return usagef("--concurrency must be from 1 to 10, got %d", o.MaxConcurrent)
			}
			bar := progressbar.NewOptions(o.Events, progressbar.OptionSetDescription("drain"), progressbar.OptionSetWriter(os.Stderr),
				progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetPredictTime(true), progressbar.OptionClearOnFinish())
			o.Progress = func(settled, _ int) { _ = bar.Set(settled) }
			o.Logger = newLogger("warn")
			rep, err := syncbench.Bench(c.Context(), o)
			_ = bar.Finish()
			if err != nil {
				return err
			}
			fmt.Fprintln(c.OutOrStdout(), rep.String())
			return nil
		},
	}
	sync.Flags().IntVar(&o.Events, "events", 30000, "events in the backlog")
	sync.Flags().IntVar(&o.CallsPerWindow, "calls-per-20s", 100, "Marketo calls per 20 s (simulator limit and client governor)")
	sync.Flags().IntVar(&o.MaxConcurrent, "concurrency", 10, "concurrent Marketo calls (simulator limit and client governor)")
	sync.Flags().BoolVar(&o.LookupExternalPersonID, "lookup-external-person-id", false, "simulate a Marketo that accepts lookupField=externalPersonId")
	sync.Flags().BoolVar(&o.Cold, "cold", false, "start with an empty rate window (measures the initial burst too)")
	cmd.AddCommand(sync, newBenchReceiverCmd(), newBenchMSICmd(), newBenchBareCmd(), newBenchPacedCmd())
	return cmd
}

// newBenchReceiverCmd measures POST /webhooks/dataverse on the embedded
// durable queue against a bare chi handler, over loopback.
func newBenchReceiverCmd() *cobra.Command {
	var o receiverbench.Options
	var payload, cpuprofile string
	cmd := &cobra.Command{
		Use:   "receiver [--requests 20000] [--concurrency 32]",
		Short: "Measure the webhook receiver on the embedded durable queue against a bare chi handler (req/s, latency percentiles)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if o.Requests < 1 {
				return usagef("--requests must be at least 1, got %d", o.Requests)
			}
			if o.Concurrency < 1 || o.Concurrency > 4096 {
				return usagef("--concurrency must be from 1 to 4096, got %d", o.Concurrency)
			}
			if o.Duration <= 0 {
				return usagef("--duration must be positive, got %s", o.Duration)
			}
			if payload != "" {
				b, err := os.ReadFile(payload)
				if err != nil {
					return usagef("--payload: %v", err)
				}
				o.Payload = b
			}
			if cpuprofile != "" {
				f, err := os.Create(cpuprofile)
				if err != nil {
					return usagef("--cpuprofile: %v", err)
				}
				defer f.Close()
				o.CPUProfile = f
			}
			rep, err := receiverbench.Run(c.Context(), o)
			if err != nil {
				return err
			}
			fmt.Println(rep.String())
			return nil
		},
	}
	cmd.Flags().IntVar(&o.Requests, "requests", receiverbench.DefaultRequests, "requests per target")
	cmd.Flags().IntVar(&o.Concurrency, "concurrency", receiverbench.DefaultConcurrency, "keep-alive clients")
	cmd.Flags().DurationVar(&o.Duration, "duration", receiverbench.DefaultDuration, "time limit per target (stops early)")
	cmd.Flags().StringVar(&payload, "payload", "", "RemoteExecutionContext JSON file (default: api/examples/dataverse-update-contact.json); its OperationId is varied per request")
	cmd.Flags().StringVar(&o.Dir, "dir", "", "directory for the queue database (default: the temporary directory; must be on a real disk)")
	cmd.Flags().DurationVar(&o.CommitWindow, "commit-window", 0, "queue group-commit window (0: the queue's default)")
	cmd.Flags().StringVar(&cpuprofile, "cpuprofile", "", "write a CPU profile of the receiver phase to this file")
	return cmd
}

// stepSpecs are the webhook steps for the mapping in use: filtering on the
// mapped columns and never on the MSI write-back columns.
func stepSpecs(m *mapping.Mapping) []dataverse.StepSpec {
	return dataverse.StepsFor(m.Columns, m.WriteBack())
}

// newBenchMSICmd compares the Marketo calls of the MSI write-back's full
// scan with the incremental design, on the Marketo simulator.
func newBenchMSICmd() *cobra.Command {
	var o msibench.Options
	cmd := &cobra.Command{
		Use:   "msi [--persons 200000] [--change-per-hour 0.01] [--hours 24]",
		Short: "Count the MSI write-back's Marketo calls per day: today's full scan beside the incremental design (activities + rolling sweep)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if o.Persons < 1 {
				return usagef("--persons must be at least 1, got %d", o.Persons)
			}
			if o.ChangePerHour <= 0 || o.ChangePerHour > 1 {
				return usagef("--change-per-hour must be a fraction in (0, 1], got %g", o.ChangePerHour)
			}
			if o.Hours < 1 || o.Hours > 24*14 {
				return usagef("--hours must be from 1 to 336, got %d", o.Hours)
			}
			o.Logger = newLogger("warn")
			r, err := msibench.Run(c.Context(), o)
			if err != nil {
				return err
			}
			fmt.Fprint(c.OutOrStdout(), r.String())
			return nil
		},
	}
	cmd.Flags().IntVar(&o.Persons, "persons", 200000, "synced persons in the simulator")
	cmd.Flags().Float64Var(&o.ChangePerHour, "change-per-hour", 0.01, "share of persons whose MSI values change per hour")
	cmd.Flags().IntVar(&o.Hours, "hours", 24, "hours of the incremental design to simulate")
	cmd.Flags().DurationVar(&o.Interval, "interval", msi.DefaultInterval, "write-back interval")
	cmd.Flags().DurationVar(&o.Sweep, "sweep", msi.DefaultSweep, "rolling sweep period")
	return cmd
}

// entitiesFlag parses --entities: a comma-separated list of synced tables
// (empty: all of them, in dependency order, as the caller decides).
func entitiesFlag(v string) ([]string, error) {
	var list []string
	for _, e := range strings.Split(v, ",") {
		if e = strings.TrimSpace(e); e != "" {
			if !event.IsSyncedEntity(e) {
				return nil, usagef("--entities: %q is not one of %s", e, strings.Join(event.SyncedEntities, ", "))
			}
			list = append(list, e)
		}
	}
	return list, nil
}
