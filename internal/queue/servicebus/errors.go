package servicebus

import (
	"context"
	"errors"
	"fmt"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus"
	"github.com/Azure/go-amqp"

	"github.com/msisync/msisync/internal/queue"
)

// do runs call once and maps its error. The SDK has already retried with
// recovery (sdkRetry); a second layer here would only stack delays.
func (q *Queue) do(ctx context.Context, op string, call func() error) error {
	return q.mapErr(op, call())
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
			return fmt.Errorf("servicebus: %s on queue %q (after the SDK's retries): %w", op, q.queueName, err)
		}
	}
	var amqpErr *amqp.Error
	if errors.As(err, &amqpErr) && amqpErr.Condition == amqp.ErrCondMessageSizeExceeded {
		// The broker's own check (the link's max-message-size): the
		// SDK's batch accounting let it through.
		return fmt.Errorf("servicebus: %s: the broker refused it as too large (%s): %w", op, amqpErr.Description, queue.ErrTooLarge)
	}
	if errors.Is(err, azservicebus.ErrMessageTooLarge) {
		return fmt.Errorf("servicebus: %s: %w", op, queue.ErrTooLarge)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("servicebus: %s: %w", op, err)
	}
	return fmt.Errorf("servicebus: %s on queue %q: %w", op, q.queueName, err)
}
