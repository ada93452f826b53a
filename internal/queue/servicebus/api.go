package servicebus

import (
	"context"
	"errors"
	"fmt"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus/admin"
)

// sender is the part of *azservicebus.Sender the adapter uses. The batch sits
// behind an interface because azservicebus.MessageBatch cannot be built
// outside the SDK, and the fake needs its own.
type sender interface {
	NewMessageBatch(ctx context.Context, options *azservicebus.MessageBatchOptions) (messageBatch, error)
	SendMessageBatch(ctx context.Context, batch messageBatch, options *azservicebus.SendMessageBatchOptions) error
	// SendMessage sends one message without a batch envelope: for a
	// message whose properties would count twice in a batch (the envelope
	// copies the first message's), and for partitioned queues.
	SendMessage(ctx context.Context, message *azservicebus.Message, options *azservicebus.SendMessageOptions) error
	Close(ctx context.Context) error
}

// messageBatch is the part of *azservicebus.MessageBatch the adapter uses.
type messageBatch interface {
	AddMessage(m *azservicebus.Message, options *azservicebus.AddMessageOptions) error
	NumMessages() int32
	NumBytes() uint64
}

// receiver is the part of *azservicebus.Receiver the adapter uses; the SDK
// type satisfies it as is. It serves both the queue and its dead-letter
// sub-queue.
type receiver interface {
	ReceiveMessages(ctx context.Context, maxMessages int, options *azservicebus.ReceiveMessagesOptions) ([]*azservicebus.ReceivedMessage, error)
	PeekMessages(ctx context.Context, maxMessageCount int, options *azservicebus.PeekMessagesOptions) ([]*azservicebus.ReceivedMessage, error)
	CompleteMessage(ctx context.Context, message *azservicebus.ReceivedMessage, options *azservicebus.CompleteMessageOptions) error
	AbandonMessage(ctx context.Context, message *azservicebus.ReceivedMessage, options *azservicebus.AbandonMessageOptions) error
	DeadLetterMessage(ctx context.Context, message *azservicebus.ReceivedMessage, options *azservicebus.DeadLetterOptions) error
	RenewMessageLock(ctx context.Context, message *azservicebus.ReceivedMessage, options *azservicebus.RenewMessageLockOptions) error
	Close(ctx context.Context) error
}

var _ receiver = (*azservicebus.Receiver)(nil)

// api is everything the adapter needs from one Service Bus queue: a sender,
// a peek-lock receiver on the queue and one on its dead-letter sub-queue.
type api struct {
	send        sender
	recv        receiver
	deadLetters receiver
	// stats reads the queue's message counts (Counts); nil when no admin
	// client could be made, and then statsErr says why.
	stats    stats
	statsErr error
	// props reads the queue's properties (CheckQueue); nil like stats.
	props queueReader
	// close releases what the three share (the SDK client); may be nil.
	close func(ctx context.Context) error
}

// stats is the part of *admin.Client Counts uses.
type stats interface {
	GetQueueRuntimeProperties(ctx context.Context, queueName string, options *admin.GetQueueRuntimePropertiesOptions) (*admin.GetQueueRuntimePropertiesResponse, error)
}

var _ stats = (*admin.Client)(nil)

// sdkSender adapts *azservicebus.Sender to sender.
type sdkSender struct{ s *azservicebus.Sender }

func (w sdkSender) NewMessageBatch(ctx context.Context, options *azservicebus.MessageBatchOptions) (messageBatch, error) {
	return w.s.NewMessageBatch(ctx, options)
}

func (w sdkSender) SendMessageBatch(ctx context.Context, batch messageBatch, options *azservicebus.SendMessageBatchOptions) error {
	b, ok := batch.(*azservicebus.MessageBatch)
	if !ok {
		return fmt.Errorf("send batch: batch of type %T was not made by this sender", batch)
	}
	return w.s.SendMessageBatch(ctx, b, options)
}

func (w sdkSender) SendMessage(ctx context.Context, m *azservicebus.Message, options *azservicebus.SendMessageOptions) error {
	return w.s.SendMessage(ctx, m, options)
}

func (w sdkSender) Close(ctx context.Context) error { return w.s.Close(ctx) }

// sdkAPI opens the sender and both receivers on client for queueName.
func sdkAPI(client *azservicebus.Client, queueName string) (api, error) {
	s, err := client.NewSender(queueName, nil)
	if err != nil {
		return api{}, fmt.Errorf("new sender: %w", err)
	}
	r, err := client.NewReceiverForQueue(queueName, &azservicebus.ReceiverOptions{ReceiveMode: azservicebus.ReceiveModePeekLock})
	if err != nil {
		return api{}, fmt.Errorf("new receiver: %w", err)
	}
	dlq, err := client.NewReceiverForQueue(queueName, &azservicebus.ReceiverOptions{
		ReceiveMode: azservicebus.ReceiveModePeekLock,
		SubQueue:    azservicebus.SubQueueDeadLetter,
	})
	if err != nil {
		return api{}, fmt.Errorf("new dead-letter receiver: %w", err)
	}
	return api{
		send:        sdkSender{s},
		recv:        r,
		deadLetters: dlq,
		close: func(ctx context.Context) error {
			return errors.Join(s.Close(ctx), r.Close(ctx), dlq.Close(ctx), client.Close(ctx))
		},
	}, nil
}
