package servicebus

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/msisync/msisync/internal/queue"
)

var _ queue.Counter = (*Queue)(nil)

// Counts reads the queue's runtime properties from the management API,
// which needs Manage rights (or the Azure Service Bus Data Owner role) that
// sending and receiving do not. Service Bus does not report how many
// messages are locked: Locked is -1 and locked messages count as Active.
// The numbers are the broker's and may lag a few seconds.
func (q *Queue) Counts(ctx context.Context) (queue.Counts, error) {
	const op = "count messages"
	if q.api.stats == nil {
		err := q.api.statsErr
		if err == nil {
			err = errors.New("no management client")
		}
		return queue.Counts{}, fmt.Errorf("servicebus: %s in queue %q: %w", op, q.queueName, err)
	}
	resp, err := q.api.stats.GetQueueRuntimeProperties(ctx, q.queueName, nil)
	var re *azcore.ResponseError
	switch {
	case errors.As(err, &re) && (re.StatusCode == http.StatusUnauthorized || re.StatusCode == http.StatusForbidden):
		return queue.Counts{}, fmt.Errorf("servicebus: %s in queue %q: %w: reading queue counts needs Manage rights "+
			"(or the Azure Service Bus Data Owner role) in MSISYNC_SERVICEBUS (HTTP %d)", op, q.queueName, ErrUnauthorized, re.StatusCode)
	case err != nil:
		return queue.Counts{}, fmt.Errorf("servicebus: %s in queue %q: %w", op, q.queueName, err)
	case resp == nil: // the SDK's answer for a queue that does not exist
		return queue.Counts{}, fmt.Errorf("servicebus: %s: %w: %q does not exist in the namespace", op, ErrQueueNotFound, q.queueName)
	}
	return queue.Counts{
		Active:    int(resp.ActiveMessageCount),
		Scheduled: int(resp.ScheduledMessageCount),
		Locked:    -1,
		Dead:      int(resp.DeadLetterMessageCount),
	}, nil
}
