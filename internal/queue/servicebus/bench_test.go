package servicebus

import (
	"strconv"
	"testing"
	"time"

	"github.com/msisync/msisync/internal/queue"
)

// BenchmarkSendReceiveCompleteFake measures the adapter's own cost per
// message (mapping, batching, lock bookkeeping) over the in-memory fake, in
// batches of 100. The fake's own bookkeeping is part of the figure, and on a
// real namespace network round trips dominate.
func BenchmarkSendReceiveCompleteFake(b *testing.B) {
	q, _ := newFakeQueue(b, fakeConfig{MaxDeliveryCount: 10})
	ctx := b.Context()
	props := map[string]string{queue.PropEntity: "contact", queue.PropRecordID: "0f8fad5b-d9cb-469f-a165-70867728950e"}
	body := make([]byte, 1024)
	const batch = 100
	msgs := make([]queue.Message, batch)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		for i := range msgs {
			n++
			msgs[i] = queue.Message{ID: "m" + strconv.Itoa(n), Body: body, Properties: props}
		}
		if err := q.Send(ctx, msgs...); err != nil {
			b.Fatal(err)
		}
		got := 0
		for got < batch {
			ds, err := q.Receive(ctx, batch-got, time.Second)
			if err != nil || len(ds) == 0 {
				b.Fatalf("Receive: %d, %v", len(ds), err)
			}
			for _, d := range ds {
				if err := q.Complete(ctx, d); err != nil {
					b.Fatal(err)
				}
			}
			got += len(ds)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/msg")
}
