package servicebus

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus/admin"
	"github.com/Azure/go-amqp"

	"github.com/msisync/msisync/internal/queue"
)

// Tests for the review of the adapter against the SDK v1.11 source (issue
// 16), one or more per item; the wire-level ones are in wire_test.go.

// Item 1: ids of messages whose AMQP message-id is not a string are taken
// from the raw properties, else derived from the sequence number, and are
// distinct: a requeue under "" + suffix would make duplicate detection drop
// all but the first.
func TestNonStringMessageIDsAreDistinct(t *testing.T) {
	q, b := newFakeQueue(t, fakeConfig{DuplicateWindow: time.Minute})
	b.sendRawID(uint64(7), []byte("a"))
	b.sendRawID(amqp.UUID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, []byte("b"))
	b.sendRawID([]byte{0xbe, 0xef}, []byte("c"))
	ds := receiveAll(t, q, 3)
	got := map[string]string{}
	for _, d := range ds {
		got[string(d.Body)] = d.ID
	}
	want := map[string]string{"a": "7", "b": "01020304-0506-0708-090a-0b0c0d0e0f10", "c": "bin-beef"}
	for body, id := range want {
		if got[body] != id {
			t.Errorf("message %q: ID %q, want %q", body, got[body], id)
		}
	}
	seq := int64(12)
	if id := messageID(&azservicebus.ReceivedMessage{SequenceNumber: &seq}); id != "sb-seq-12" {
		t.Errorf("id of a message with no id at all = %q, want sb-seq-12", id)
	}
}

// Item 2: a replay retried after a partial failure (the copy was sent, the
// dead letter not completed) sends the same id again, which duplicate
// detection drops: one copy, not two.
func TestReplayRetriedSendsOneCopy(t *testing.T) {
	q, b := newFakeQueue(t, fakeConfig{DuplicateWindow: time.Hour, MaxDeliveryCount: 5})
	ctx := t.Context()
	if err := q.Send(ctx, queue.Message{ID: "r1", Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	d := receiveAll(t, q, 1)[0]
	if err := q.DeadLetter(ctx, d, "bad", "it failed"); err != nil {
		t.Fatal(err)
	}
	b.fail("dlq.CompleteMessage", errors.New("amqp: link detached"))
	if _, err := q.ReplayDead(ctx, queue.Filter{}); err == nil {
		t.Fatal("first replay: want the injected completion failure")
	}
	b.Advance(time.Minute) // the dead letter's lock runs out
	n, err := q.ReplayDead(ctx, queue.Filter{})
	if err != nil || n != 1 {
		t.Fatalf("second replay = %d, %v", n, err)
	}
	ds := receiveAll(t, q, 1)
	if more, _ := q.Receive(ctx, 10, 50*time.Millisecond); len(more) != 0 {
		t.Fatalf("replay retried queued %d copies, want 1", 1+len(more))
	}
	if want := "r1.replay-1"; ds[0].ID != want || ds[0].Properties[queue.PropReplayCount] != "1" {
		t.Errorf("copy id %q, replay count %q; want %q, 1", ds[0].ID, ds[0].Properties[queue.PropReplayCount], want)
	}
	if long := replayID(strings.Repeat("x", 128), 3); len(long) > 128 || !strings.HasSuffix(long, ".replay-3") {
		t.Errorf("replayID of a 128-character id = %q (%d characters)", long, len(long))
	}
}

// Item 3: a partitioned queue with duplicate detection rejects batches of
// distinct ids; CheckQueue finds the partitioning and Send goes singly.
func TestPartitionedQueueSendsSingly(t *testing.T) {
	q, b := newFakeQueue(t, fakeConfig{DuplicateWindow: time.Minute, Partitioned: true})
	msgs := []queue.Message{{ID: "p1", Body: []byte("1")}, {ID: "p2", Body: []byte("2")}, {ID: "p3", Body: []byte("3")}}
	if err := q.Send(t.Context(), msgs...); err == nil {
		t.Fatal("the fake accepted a batch of distinct ids on a partitioned queue")
	}
	if err := q.CheckQueue(t.Context()); err != nil {
		t.Fatalf("CheckQueue: %v", err)
	}
	if err := q.Send(t.Context(), msgs...); err != nil {
		t.Fatalf("Send after CheckQueue: %v", err)
	}
	if n := b.callCount("SendMessage"); n != 3 {
		t.Errorf("SendMessage called %d times, want 3", n)
	}
	if got := receiveAll(t, q, 3); len(got) != 3 {
		t.Fatalf("received %d", len(got))
	}
}

// Item 4 and the start-up check: CheckQueue says what is wrong and how to
// fix it; sessions and forwarding stop it, duplicate detection off is an
// error in the log.
func TestCheckQueue(t *testing.T) {
	base := func() admin.QueueProperties {
		return admin.QueueProperties{LockDuration: ptr("PT1M"), MaxDeliveryCount: ptr(int32(10)),
			RequiresDuplicateDetection: ptr(true), RequiresSession: ptr(false)}
	}
	tests := []struct {
		name    string
		edit    func(p *admin.QueueProperties)
		wantErr string // "" = CheckQueue succeeds
		wantLog string // in the log ("" = nothing at warn or above)
	}{
		{"good queue", func(p *admin.QueueProperties) {}, "", ""},
		{"duplicate detection off", func(p *admin.QueueProperties) { p.RequiresDuplicateDetection = ptr(false) }, "", "duplicate detection off"},
		{"sessions", func(p *admin.QueueProperties) { p.RequiresSession = ptr(true) }, "requires sessions", ""},
		{"forwarding", func(p *admin.QueueProperties) { p.ForwardTo = ptr("elsewhere") }, "auto-forwards", ""},
		{"short lock", func(p *admin.QueueProperties) { p.LockDuration = ptr("PT5S") }, "", "locks messages for 5s"},
		{"low delivery count", func(p *admin.QueueProperties) { p.MaxDeliveryCount = ptr(int32(1)) }, "", "after 1 deliveries"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := base()
			tc.edit(&p)
			q, _ := newFakeQueue(t, fakeConfig{Queue: &p})
			var logs bytes.Buffer
			q.log = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
			err := q.CheckQueue(t.Context())
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("CheckQueue: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "Fix:")):
				t.Fatalf("CheckQueue = %v, want an error with %q and a fix", err, tc.wantErr)
			}
			if tc.wantLog == "" && tc.wantErr == "" && logs.Len() > 0 {
				t.Errorf("unexpected log: %s", logs.String())
			}
			if tc.wantLog != "" && (!strings.Contains(logs.String(), tc.wantLog) || !strings.Contains(logs.String(), "fix=")) {
				t.Errorf("log %q, want %q with a fix", logs.String(), tc.wantLog)
			}
		})
	}
	t.Run("properties unreadable: warn and go on", func(t *testing.T) {
		q, b := newFakeQueue(t, fakeConfig{})
		b.fail("GetQueue", errors.New("401 unauthorized"))
		if err := q.CheckQueue(t.Context()); err != nil {
			t.Fatalf("CheckQueue without Manage rights: %v", err)
		}
	})
}

// queue setup reports what it cannot change on an existing queue.
func TestSetupWarnsAboutPartitioningSessionsForwarding(t *testing.T) {
	p := existing()
	p.RequiresDuplicateDetection = ptr(true)
	p.EnablePartitioning = ptr(true)
	p.RequiresSession = ptr(true)
	p.ForwardTo = ptr("other")
	f := &fakeAdmin{queues: map[string]admin.QueueProperties{"q": p}}
	plan, err := setupWith(t.Context(), f, "q", DefaultQueueSettings(), true)
	if err != nil {
		t.Fatal(err)
	}
	text := plan.String()
	for _, want := range []string{"partitioned", "requires sessions", "auto-forwards"} {
		if !strings.Contains(text, want) {
			t.Errorf("plan does not warn about %q:\n%s", want, text)
		}
	}
}

// Item 5: the fake's batch counts the envelope as the SDK's does; a message
// too large for a batch only because of it goes alone.
func TestEnvelopeSizedSend(t *testing.T) {
	q, b := newFakeQueue(t, fakeConfig{})
	props := map[string]string{"msisync-last-description": strings.Repeat("d", 2000)}
	m := queue.Message{ID: "big-props", Body: make([]byte, q.MaxMessageBytes()-2100), Properties: props}
	// First in a batch, its properties would go into the envelope too.
	if err := q.Send(t.Context(), m, queue.Message{ID: "small", Body: []byte("s")}); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if b.callCount("SendMessage") != 1 || b.callCount("SendMessageBatch") != 1 {
		t.Errorf("SendMessage %d, SendMessageBatch %d; want 1 and 1", b.callCount("SendMessage"), b.callCount("SendMessageBatch"))
	}
	if got := receiveAll(t, q, 2); len(got) != 2 {
		t.Fatalf("received %d", len(got))
	}
}

// Item 5: a Send that fails after some batches went through says so.
func TestPartialSendIsReported(t *testing.T) {
	q, b := newFakeQueue(t, fakeConfig{MaxBatchBytes: 3500})
	var msgs []queue.Message
	for i := range 6 {
		msgs = append(msgs, queue.Message{ID: "m" + string(rune('a'+i)), Body: bytes.Repeat([]byte("x"), 1000)})
	}
	b.fail("SendMessageBatch", nil, errors.New("amqp: link detached"))
	err := q.Send(t.Context(), msgs...)
	var pe *PartialSendError
	if !errors.As(err, &pe) || pe.Sent != 3 || pe.Total != 6 {
		t.Fatalf("err = %v, want a PartialSendError with 3 of 6 sent", err)
	}
	if !strings.Contains(err.Error(), "3 of 6") {
		t.Errorf("err %q does not say how many were queued", err)
	}
}

// Item 7: reason and description stay within the 2 KB reserve kept free of
// MaxMessageBytes, so a message at the limit can still be dead-lettered.
func TestDeadLetterTextFitsTheReserve(t *testing.T) {
	q, _ := newFakeQueue(t, fakeConfig{})
	if err := q.Send(t.Context(), queue.Message{ID: "d", Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	d := receiveAll(t, q, 1)[0]
	if err := q.DeadLetter(t.Context(), d, strings.Repeat("r", 4096), strings.Repeat("e", 16*1024)); err != nil {
		t.Fatal(err)
	}
	dl, err := q.ListDead(t.Context(), queue.Filter{})
	if err != nil || len(dl) != 1 {
		t.Fatalf("ListDead = %d, %v", len(dl), err)
	}
	extra := len(dl[0].Reason) + len(dl[0].Description) + 3*len("2026-11-29T08:00:00.000000000Z") + 200
	if extra > headerReserve {
		t.Errorf("dead-lettering adds about %d bytes, more than the %d reserved", extra, headerReserve)
	}
}

// Item 7: EntityPath in a connection string names the queue.
func TestEntityPath(t *testing.T) {
	const conn = "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=c2VjcmV0;EntityPath=orders"
	for _, tc := range []struct{ queue, want, wantErr string }{
		{"", "orders", ""},
		{"orders", "orders", ""},
		{"other", "", "EntityPath=orders"},
	} {
		got, err := queueFromEntityPath(conn, tc.queue)
		if got != tc.want || (tc.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("queue %q: got %q, %v; want %q, error with %q", tc.queue, got, err, tc.want, tc.wantErr)
		}
		if err != nil && strings.Contains(err.Error(), "c2VjcmV0") {
			t.Errorf("error leaks the key: %v", err)
		}
	}
	q, err := New(context.Background(), Options{Connection: conn, Logger: discardLogger()})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer q.Close()
	if q.queueName != "orders" {
		t.Errorf("New with EntityPath=orders and no queue name: queue %q", q.queueName)
	}
}

// Item 7: an emulator connection string naming the AMQP port (:5672) sends
// admin calls to the management port 5300, not to the AMQP port.
func TestEmulatorAdminPort(t *testing.T) {
	for in, want := range map[string]string{
		"https://localhost:5672/q": "localhost:5300",
		"https://localhost/q":      "localhost:5300",
		"https://localhost:8300/q": "localhost:8300",
	} {
		u, _ := url.Parse(in)
		if got := emulatorAdminHost(u); got != want {
			t.Errorf("%s: admin host %s, want %s", in, got, want)
		}
	}
}

// The fake releases a message that arrives on a receiver's leftover credit,
// as the SDK's releaser does, without counting a delivery.
func TestFakeReleasesOnLeftoverCredit(t *testing.T) {
	q, b := newFakeQueue(t, fakeConfig{})
	if err := q.Send(t.Context(), queue.Message{ID: "first", Body: []byte("1")}); err != nil {
		t.Fatal(err)
	}
	if ds := receiveAll(t, q, 1); len(ds) != 1 {
		t.Fatal("no first message")
	}
	// Receive asked for 1 and got 1: no credit left, nothing to release.
	if err := q.Send(t.Context(), queue.Message{ID: "second", Body: []byte("2")}); err != nil {
		t.Fatal(err)
	}
	if n := b.callCount("ReleaseMessage"); n != 0 {
		t.Fatalf("released %d with no leftover credit", n)
	}
	ds, err := q.Receive(t.Context(), 10, time.Second) // 9 credits left over
	if err != nil || len(ds) != 1 {
		t.Fatalf("Receive = %d, %v", len(ds), err)
	}
	if err := q.Send(t.Context(), queue.Message{ID: "third", Body: []byte("3")}); err != nil {
		t.Fatal(err)
	}
	if n := b.callCount("ReleaseMessage"); n != 1 {
		t.Fatalf("ReleaseMessage called %d times for a message on leftover credit, want 1", n)
	}
	ds = receiveAll(t, q, 1)
	if ds[0].ID != "third" || ds[0].DeliveryCount != 1 {
		t.Fatalf("after the release got %q with delivery count %d, want third with 1", ds[0].ID, ds[0].DeliveryCount)
	}
}
