package servicebus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus/admin"
)

// queueReader is the part of *admin.Client CheckQueue uses.
type queueReader interface {
	GetQueue(ctx context.Context, queueName string, options *admin.GetQueueOptions) (*admin.GetQueueResponse, error)
}

var _ queueReader = (*admin.Client)(nil)

// checkWait bounds CheckQueue's read of the queue's properties.
const checkWait = 5 * time.Second

// Problem is one queue property msisync cannot work with (Fatal) or that
// makes it unsafe, with what to do about it.
type Problem struct {
	Field string
	Fatal bool
	What  string // what is wrong and what follows from it
	Fix   string // how to fix it
}

func (p Problem) String() string { return p.Field + ": " + p.What + " Fix: " + p.Fix }

// Minimums below which the worker misbehaves: a lock shorter than a
// Marketo call plus retries runs out mid-batch (the syncer renews, but each
// renewal is a round trip), and a delivery count under 3 dead-letters on
// the first transient failure.
const (
	minLockDuration     = 30 * time.Second
	minMaxDeliveryCount = 3
)

// checkProperties lists what is wrong with a queue's properties for msisync.
func checkProperties(name string, p admin.QueueProperties) []Problem {
	var out []Problem
	if p.RequiresSession != nil && *p.RequiresSession {
		out = append(out, Problem{Field: "RequiresSession", Fatal: true,
			What: fmt.Sprintf("queue %q requires sessions, and msisync's messages carry no session id: Service Bus refuses them.", name),
			Fix:  "create a queue without sessions (`msisync queue setup` with a new MSISYNC_SERVICEBUS_QUEUE) and point msisync at it."})
	}
	if p.ForwardTo != nil && *p.ForwardTo != "" {
		out = append(out, Problem{Field: "ForwardTo", Fatal: true,
			What: fmt.Sprintf("queue %q auto-forwards to %q: messages leave it before msisync can receive them.", name, *p.ForwardTo),
			Fix:  "remove auto-forwarding from the queue (portal: Queue > Properties > Forward messages to), or point MSISYNC_SERVICEBUS_QUEUE at the destination."})
	}
	if p.ForwardDeadLetteredMessagesTo != nil && *p.ForwardDeadLetteredMessagesTo != "" {
		out = append(out, Problem{Field: "ForwardDeadLetteredMessagesTo",
			What: fmt.Sprintf("queue %q forwards dead letters to %q: `msisync dlq` will not see them.", name, *p.ForwardDeadLetteredMessagesTo),
			Fix:  "remove dead-letter forwarding from the queue."})
	}
	if p.RequiresDuplicateDetection == nil || !*p.RequiresDuplicateDetection {
		out = append(out, Problem{Field: "RequiresDuplicateDetection",
			What: fmt.Sprintf("queue %q has duplicate detection off: repeated webhook deliveries, a Send retried after a partial failure and a replay run twice all queue duplicates.", name),
			Fix:  "Service Bus can only enable it when a queue is created: drain the queue, delete it and run `msisync queue setup`."})
	}
	if p.EnablePartitioning != nil && *p.EnablePartitioning {
		out = append(out, Problem{Field: "EnablePartitioning",
			What: fmt.Sprintf("queue %q is partitioned: Service Bus rejects batches of distinct message ids there, so msisync sends one message at a time (slower).", name),
			Fix:  "nothing is needed; for batched sends create an unpartitioned queue with `msisync queue setup`."})
	}
	if p.LockDuration != nil {
		if d, err := parseISODuration(*p.LockDuration); err == nil && d < minLockDuration {
			out = append(out, Problem{Field: "LockDuration",
				What: fmt.Sprintf("queue %q locks messages for %v: a batch that waits on Marketo can outlive the lock and be delivered twice.", name, d),
				Fix:  fmt.Sprintf("raise it to at least %v (`msisync queue setup` sets 1m).", minLockDuration)})
		}
	}
	if p.MaxDeliveryCount != nil && int(*p.MaxDeliveryCount) < minMaxDeliveryCount {
		out = append(out, Problem{Field: "MaxDeliveryCount",
			What: fmt.Sprintf("queue %q dead-letters after %d deliveries: one transient failure (a restart, a Marketo outage) dead-letters a message.", name, *p.MaxDeliveryCount),
			Fix:  fmt.Sprintf("raise it to at least %d (`msisync queue setup` sets 10).", minMaxDeliveryCount)})
	}
	return out
}

// CheckQueue reads the queue's properties and checks them: problems that
// make msisync fail (sessions, auto-forwarding) are the error; the others
// are logged. On a partitioned queue it switches to sending one message at
// a time. When the properties cannot be read (no Manage rights, the
// emulator's management port unreachable) it logs that and returns nil:
// sending and receiving do not need them.
func (q *Queue) CheckQueue(ctx context.Context) error {
	if q.api.props == nil {
		q.log.Warn("servicebus: cannot check the queue's properties (duplicate detection, sessions, forwarding, partitioning)",
			"err", q.api.statsErr)
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, checkWait)
	defer cancel()
	resp, err := q.api.props.GetQueue(cctx, q.queueName, nil)
	switch {
	case err != nil:
		q.log.Warn("servicebus: cannot read the queue's properties to check them (needs Manage rights); "+
			"make sure the queue has duplicate detection on, no sessions and no auto-forwarding", "err", err)
		return nil
	case resp == nil:
		return fmt.Errorf("servicebus: check queue: %w: %q does not exist in the namespace (create it with `msisync queue setup`, or check MSISYNC_SERVICEBUS_QUEUE)", ErrQueueNotFound, q.queueName)
	}
	problems := checkProperties(q.queueName, resp.QueueProperties)
	var fatal []string
	for _, p := range problems {
		switch {
		case p.Fatal:
			fatal = append(fatal, p.String())
		case p.Field == "EnablePartitioning":
			q.single = true
			q.log.Info("servicebus: "+p.What, "fix", p.Fix)
		default:
			q.log.Error("servicebus: "+p.What, "fix", p.Fix)
		}
	}
	if len(fatal) > 0 {
		return fmt.Errorf("servicebus: queue %q cannot be used: %w", q.queueName, errors.New(strings.Join(fatal, "; ")))
	}
	return nil
}
