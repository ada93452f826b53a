package servicebus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus"

	"github.com/msisync/msisync/internal/queue"
)

// transient reports whether err is worth one more try here. The SDK has
// already retried with recovery by then (RetryOptions: 3 tries), so one more
// attempt covers a connection dropped mid-call without hiding an outage.
func transient(err error) bool {
	var sbErr *azservicebus.Error
	if !errors.As(err, &sbErr) {
		return false
	}
	return sbErr.Code == azservicebus.CodeConnectionLost || sbErr.Code == azservicebus.CodeTimeout
}

// do runs call, retries it once after a transient failure, and maps the
// final error.
func (q *Queue) do(ctx context.Context, op string, call func() error) error {
	err := call()
	if err != nil && transient(err) && ctx.Err() == nil {
		q.log.Warn("servicebus: transient failure, retrying once", "op", op, "err", err)
		t := time.NewTimer(q.retryDelay)
		select {
		case <-t.C:
			err = call()
		case <-ctx.Done():
			t.Stop()
		}
	}
	return q.mapErr(op, err)
}

// mapErr turns SDK errors into the port's errors and actionable messages.
// It never includes the connection setting (it may hold a key).
func (q *Queue) mapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	var sbErr *azservicebus.Error
	if errors.As(err, &sbErr) {
		switch sbErr.Code {
		case azservicebus.CodeLockLost:
			return fmt.Errorf("servicebus: %s: %w", op, queue.ErrLockLost)
		case azservicebus.CodeUnauthorizedAccess:
			// The inner text is left out on purpose: it adds nothing a
			// human can act on, and this is the error most likely logged
			// next to configuration.
			return fmt.Errorf("servicebus: %s on queue %q: %w: check MSISYNC_SERVICEBUS "+
				"(a connection string whose policy has Send and Listen rights, or an identity with the "+
				"Azure Service Bus Data Sender and Data Receiver roles)", op, q.queueName, ErrUnauthorized)
		case azservicebus.CodeNotFound:
			return fmt.Errorf("servicebus: %s: %w: %q does not exist in the namespace "+
				"(create it with `msisync queue setup`, or check MSISYNC_SERVICEBUS_QUEUE)", op, ErrQueueNotFound, q.queueName)
		case azservicebus.CodeConnectionLost, azservicebus.CodeTimeout:
			return fmt.Errorf("servicebus: %s on queue %q (failed twice): %w", op, q.queueName, err)
		}
	}
	if errors.Is(err, azservicebus.ErrMessageTooLarge) {
		return fmt.Errorf("servicebus: %s: %w", op, queue.ErrTooLarge)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("servicebus: %s: %w", op, err)
	}
	return fmt.Errorf("servicebus: %s on queue %q: %w", op, q.queueName, err)
}
