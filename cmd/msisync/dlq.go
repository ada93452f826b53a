package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/queue"
)

// dlqFlags are the selectors shared by list, replay and purge.
type dlqFlags struct {
	entity string
	reason string
	since  time.Duration
	limit  int
	all    bool
	dryRun bool
	yes    bool
	json   bool
}

func (f *dlqFlags) filter(ids []string) (queue.Filter, error) {
	if f.entity != "" && !event.IsSyncedEntity(f.entity) {
		return queue.Filter{}, usagef("--entity %q is not one of %s", f.entity, strings.Join(event.SyncedEntities, ", "))
	}
	if f.limit < 0 {
		return queue.Filter{}, usagef("--limit must be 0 (no limit) or more, not %d", f.limit)
	}
	if f.since < 0 {
		return queue.Filter{}, usagef("--since must be a positive duration such as 24h")
	}
	flt := queue.Filter{IDs: ids, Entity: f.entity, Reason: f.reason, Limit: f.limit}
	if f.since > 0 {
		flt.Since = time.Now().Add(-f.since)
	}
	return flt, nil
}

// dlqPage is how many dead letters `dlq list` reads per call.
var dlqPage = 500

func newDLQCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "dlq", Short: "Inspect, replay and purge dead-lettered events (embedded queue or Service Bus, per the settings)"}
	var f dlqFlags
	selectors := func(c *cobra.Command) {
		c.Flags().StringVar(&f.entity, "entity", "", "only dead letters of this entity ("+strings.Join(event.SyncedEntities, ", ")+")")
		c.Flags().StringVar(&f.reason, "reason", "", "only dead letters whose reason or description contains TEXT (case-insensitive)")
		c.Flags().DurationVar(&f.since, "since", 0, "only dead letters from the last DURATION (e.g. 24h)")
	}

	list := &cobra.Command{
		Use:   "list",
		Short: "List dead letters",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			flt, err := f.filter(nil)
			if err != nil {
				return err
			}
			q, closeQ, err := openQueueOnly(c.Context())
			if err != nil {
				return err
			}
			defer closeQ()
			// Page through the dead letters without their bodies: a large
			// dead-letter queue is never loaded whole.
			var views []deadView
			tw := tabwriter.NewWriter(c.OutOrStdout(), 2, 4, 2, ' ', 0)
			if !f.json {
				fmt.Fprintln(tw, "ID\tENTITY\tRECORD\tMESSAGE\tDELIVERIES\tFIRST FAILURE\tLAST FAILURE\tREASON")
			}
			n := 0
			for page := flt; ; {
				page.NoBody, page.Limit = true, dlqPage
				if flt.Limit > 0 {
					page.Limit = min(dlqPage, flt.Limit-n)
				}
				items, err := q.ListDead(c.Context(), page)
				if err != nil {
					return fmt.Errorf("list dead letters: %w", err)
				}
				n += len(items)
				for _, v := range deadViews(items) {
					if f.json {
						views = append(views, v)
						continue
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", v.ID, v.Entity, v.RecordID, v.Message, v.DeliveryCount,
						v.FirstFailureAt.Format(time.RFC3339), v.LastFailureAt.Format(time.RFC3339), oneLine(v.Reason+": "+v.Description, 100))
				}
				if len(items) < page.Limit || (flt.Limit > 0 && n >= flt.Limit) {
					break
				}
				page.After = items[len(items)-1].ID
			}
			if f.json {
				if views == nil {
					views = []deadView{}
				}
				return writeJSON(c.OutOrStdout(), views)
			}
			tw.Flush()
			fmt.Fprintf(c.ErrOrStderr(), "%d dead letter(s)\n", n)
			return nil
		},
	}
	selectors(list)
	list.Flags().IntVar(&f.limit, "limit", 100, "at most N items (0 = no limit)")
	list.Flags().BoolVar(&f.json, "json", false, "print JSON")

	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show one dead letter with its event",
		Args:  exactArgs(1, "ID (from `msisync dlq list`)"),
		RunE: func(c *cobra.Command, args []string) error {
			q, closeQ, err := openQueueOnly(c.Context())
			if err != nil {
				return err
			}
			defer closeQ()
			d, err := q.GetDead(c.Context(), args[0])
			if err != nil {
				return fmt.Errorf("show dead letter %s: %w", args[0], err)
			}
			return writeJSON(c.OutOrStdout(), deadDetail(d))
		},
	}

	replay := &cobra.Command{
		Use:   "replay (--all | ID...)",
		Short: "Put dead letters back on the queue (under a new message id) so they sync again",
		RunE: func(c *cobra.Command, args []string) error {
			if f.all == (len(args) > 0) {
				return usagef("dlq replay: give either --all or one or more IDs")
			}
			flt, err := f.filter(args)
			if err != nil {
				return err
			}
			return replayOrPurge(c, flt, f, true)
		},
	}
	selectors(replay)
	replay.Flags().BoolVar(&f.all, "all", false, "replay every dead letter that matches the selectors")
	replay.Flags().BoolVar(&f.dryRun, "dry-run", false, "show what would be replayed, change nothing")

	purge := &cobra.Command{
		Use:   "purge (--all | ID...) --yes",
		Short: "Delete dead letters for good",
		RunE: func(c *cobra.Command, args []string) error {
			if f.all == (len(args) > 0) {
				return usagef("dlq purge: give either --all or one or more IDs")
			}
			if !f.yes && !f.dryRun {
				return usagef("dlq purge deletes events for good: add --yes to confirm (or --dry-run to preview)")
			}
			flt, err := f.filter(args)
			if err != nil {
				return err
			}
			return replayOrPurge(c, flt, f, false)
		},
	}
	selectors(purge)
	purge.Flags().BoolVar(&f.all, "all", false, "purge every dead letter that matches the selectors")
	purge.Flags().BoolVar(&f.yes, "yes", false, "confirm the purge")
	purge.Flags().BoolVar(&f.dryRun, "dry-run", false, "show what would be purged, change nothing")

	cmd.AddCommand(list, show, replay, purge)
	return cmd
}

// replayOrPurge works in chunks so a long replay shows progress and an
// interruption leaves a consistent queue (each chunk is complete or not started).
func replayOrPurge(c *cobra.Command, flt queue.Filter, f dlqFlags, replay bool) error {
	q, closeQ, err := openQueueOnly(c.Context())
	if err != nil {
		return err
	}
	defer closeQ()
	verb := map[bool]string{true: "replay", false: "purge"}[replay]
	past := map[bool]string{true: "replayed", false: "purged"}[replay]
	matched, err := q.ListDead(c.Context(), flt)
	if err != nil {
		return fmt.Errorf("%s dead letters: list: %w", verb, err)
	}
	if len(flt.IDs) > 0 && len(matched) < len(flt.IDs) {
		found := map[string]bool{}
		for _, m := range matched {
			found[m.ID] = true
		}
		for _, id := range flt.IDs {
			if !found[id] {
				return fmt.Errorf("%s: dead letter %s not found (see `msisync dlq list`)", verb, id)
			}
		}
	}
	if f.dryRun {
		for _, v := range deadViews(matched) {
			fmt.Fprintf(c.OutOrStdout(), "would %s %s %s %s/%s: %s\n", verb, v.ID, v.Message, v.Entity, v.RecordID, oneLine(v.Reason, 80))
		}
		fmt.Fprintf(c.OutOrStdout(), "%d dead letter(s) would be %s\n", len(matched), past)
		return nil
	}
	bar := progressbar.NewOptions(len(matched), progressbar.OptionSetDescription(verb), progressbar.OptionSetWriter(c.ErrOrStderr()),
		progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetPredictTime(true), progressbar.OptionClearOnFinish())
	done := 0
	const chunk = 100
	for i := 0; i < len(matched); i += chunk {
		ids := make([]string, 0, chunk)
		for _, m := range matched[i:min(i+chunk, len(matched))] {
			ids = append(ids, m.ID)
		}
		var n int
		if replay {
			n, err = q.ReplayDead(c.Context(), queue.Filter{IDs: ids})
		} else {
			n, err = q.PurgeDead(c.Context(), queue.Filter{IDs: ids})
		}
		done += n
		_ = bar.Add(n)
		if err != nil {
			return fmt.Errorf("%s dead letters: %d done, then: %w", verb, done, err)
		}
	}
	_ = bar.Finish()
	fmt.Fprintf(c.OutOrStdout(), "%s %d dead letter(s)\n", past, done)
	return nil
}

// deadView is a dead letter as operators see it.
type deadView struct {
	ID             string    `json:"id"`
	MessageID      string    `json:"messageId"`
	Entity         string    `json:"entity"`
	RecordID       string    `json:"recordId"`
	Message        string    `json:"message"`
	Reason         string    `json:"reason"`
	Description    string    `json:"description"`
	DeliveryCount  int       `json:"deliveryCount"`
	FirstFailureAt time.Time `json:"firstFailureAt"`
	LastFailureAt  time.Time `json:"lastFailureAt"`
}

func deadViews(items []queue.DeadLetter) []deadView {
	out := make([]deadView, 0, len(items))
	for _, d := range items {
		out = append(out, deadView{
			ID: d.ID, MessageID: d.MessageID, Entity: d.Properties[queue.PropEntity], RecordID: d.Properties[queue.PropRecordID],
			Message: d.Properties[queue.PropMessage], Reason: d.Reason, Description: d.Description, DeliveryCount: d.DeliveryCount,
			FirstFailureAt: d.FirstFailureAt, LastFailureAt: d.DeadLetteredAt,
		})
	}
	return out
}

func deadDetail(d queue.DeadLetter) any {
	v := deadViews([]queue.DeadLetter{d})[0]
	var body any = string(d.Body)
	if json.Valid(d.Body) {
		body = json.RawMessage(d.Body)
	}
	return struct {
		deadView
		Properties map[string]string `json:"properties"`
		Event      any               `json:"event"`
	}{v, d.Properties, body}
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > max {
		return s[:max-1] + "…"
	}
	return s
}

func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("%s takes %s", c.CommandPath(), what)
		}
		return nil
	}
}
