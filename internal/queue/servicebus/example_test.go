package servicebus_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"

	"github.com/msisync/msisync/internal/queue"
	"github.com/msisync/msisync/internal/queue/servicebus"
)

// How `msisync receiver` / `msisync worker` open the queue when
// MSISYNC_SERVICEBUS is set (compile-checked, not run).
func ExampleNew() {
	ctx := context.Background()
	q, err := servicebus.New(ctx, servicebus.Options{
		Connection: os.Getenv("MSISYNC_SERVICEBUS"),       // connection string or <ns>.servicebus.windows.net
		QueueName:  os.Getenv("MSISYNC_SERVICEBUS_QUEUE"), // "" means "msisync"
		Logger:     slog.Default(),
	})
	if err != nil {
		log.Fatal(err) // names the setting at fault, never its value
	}
	defer q.Close()

	var _ queue.Queue = q // what serve, receiver and worker take
	if err := q.Ping(ctx); err != nil {
		log.Print(err) // readiness: unreachable, unauthorized or missing queue
	}
}

// How `msisync queue setup [--dry-run]` runs.
func ExampleSetup() {
	ctx := context.Background()
	dryRun := true
	plan, err := servicebus.Setup(ctx, os.Getenv("MSISYNC_SERVICEBUS"), os.Getenv("MSISYNC_SERVICEBUS_QUEUE"),
		servicebus.DefaultQueueSettings(), dryRun)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(plan) // lists the differences and any warning (duplicate detection off)
}
