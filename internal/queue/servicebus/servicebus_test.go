package servicebus

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus/admin"
	"github.com/Azure/go-amqp"
	"github.com/google/uuid"

	"github.com/msisync/msisync/internal/queue"
)

func sbErr(code azservicebus.Code) error { return &azservicebus.Error{Code: code} }

func receiveAll(t *testing.T, q *Queue, n int) []*queue.Delivery {
	t.Helper()
	var got []*queue.Delivery
	for len(got) < n {
		ds, err := q.Receive(t.Context(), n-len(got), 200*time.Millisecond)
		if err != nil {
			t.Fatalf("Receive: %v", err)
		}
		if len(ds) == 0 {
			t.Fatalf("received %d of %d", len(got), n)
		}
		got = append(got, ds...)
	}
	return got
}

func TestErrorMapping(t *testing.T) {
	msg := queue.Message{ID: "m1", Body: []byte("x")}
	tests := []struct {
		name      string
		faults    []error
		wantCalls int
		check     func(t *testing.T, err error)
	}{
		// The SDK has retried already (sdkRetry): the adapter adds no
		// second layer, so an outage surfaces instead of doubling the wait.
		{"connection lost is not retried on top of the SDK", []error{sbErr(azservicebus.CodeConnectionLost)}, 1, func(t *testing.T, err error) {
			var e *azservicebus.Error
			if !errors.As(err, &e) || e.Code != azservicebus.CodeConnectionLost {
				t.Fatalf("err = %v, want a wrapped connlost *azservicebus.Error", err)
			}
			if !strings.Contains(err.Error(), `"msisync-test"`) {
				t.Errorf("err %q does not name the queue", err)
			}
		}},
		{"timeout is not retried on top of the SDK", []error{sbErr(azservicebus.CodeTimeout)}, 1, func(t *testing.T, err error) {
			var e *azservicebus.Error
			if !errors.As(err, &e) || e.Code != azservicebus.CodeTimeout {
				t.Fatalf("err = %v, want a wrapped timeout *azservicebus.Error", err)
			}
		}},
		{"broker's message-size-exceeded is ErrTooLarge", []error{&amqp.Error{Condition: amqp.ErrCondMessageSizeExceeded, Description: "exceeds the limit"}}, 1, func(t *testing.T, err error) {
			if !errors.Is(err, queue.ErrTooLarge) {
				t.Fatalf("err = %v, want queue.ErrTooLarge", err)
			}
		}},
		{"unauthorized is permanent and names the setting", []error{sbErr(azservicebus.CodeUnauthorizedAccess)}, 1, func(t *testing.T, err error) {
			if !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("err = %v, want ErrUnauthorized", err)
			}
			if !strings.Contains(err.Error(), "MSISYNC_SERVICEBUS") {
				t.Errorf("err %q does not name MSISYNC_SERVICEBUS", err)
			}
		}},
		{"not found names the queue setting", []error{sbErr(azservicebus.CodeNotFound)}, 1, func(t *testing.T, err error) {
			if !errors.Is(err, ErrQueueNotFound) || !strings.Contains(err.Error(), "queue setup") {
				t.Fatalf("err = %v, want ErrQueueNotFound pointing at queue setup", err)
			}
		}},
		{"other errors are wrapped as they are", []error{errors.New("amqp:resource-limit-exceeded")}, 1, func(t *testing.T, err error) {
			if err == nil || !strings.Contains(err.Error(), "resource-limit-exceeded") || errors.Is(err, ErrUnauthorized) {
				t.Fatalf("err = %v", err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q, b := newFakeQueue(t, fakeConfig{})
			b.fail("SendMessageBatch", tc.faults...)
			err := q.Send(t.Context(), msg)
			tc.check(t, err)
			if got := b.callCount("SendMessageBatch"); got != tc.wantCalls {
				t.Errorf("SendMessageBatch called %d times, want %d", got, tc.wantCalls)
			}
		})
	}
}

func TestLockLostMapsToErrLockLost(t *testing.T) {
	q, b := newFakeQueue(t, fakeConfig{LockDuration: 30 * time.Second})
	if err := q.Send(t.Context(), queue.Message{ID: "a", Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	d := receiveAll(t, q, 1)[0]
	b.fail("CompleteMessage", sbErr(azservicebus.CodeLockLost))
	err := q.Complete(t.Context(), d)
	if !errors.Is(err, queue.ErrLockLost) {
		t.Fatalf("Complete with a locklost error: %v, want ErrLockLost", err)
	}
	if n := b.callCount("CompleteMessage"); n != 1 {
		t.Errorf("lock lost was retried: %d calls", n)
	}
}

func TestReceiveDoesNotStackRetries(t *testing.T) {
	q, b := newFakeQueue(t, fakeConfig{})
	if err := q.Send(t.Context(), queue.Message{ID: "a", Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	b.fail("ReceiveMessages", sbErr(azservicebus.CodeConnectionLost))
	_, err := q.Receive(t.Context(), 1, time.Second)
	var e *azservicebus.Error
	if !errors.As(err, &e) || e.Code != azservicebus.CodeConnectionLost || b.callCount("ReceiveMessages") != 1 {
		t.Fatalf("Receive = %v after %d calls, want the connlost error after 1", err, b.callCount("ReceiveMessages"))
	}
	ds := receiveAll(t, q, 1)
	if ds[0].ID != "a" {
		t.Fatalf("next Receive got %q", ds[0].ID)
	}
}

func TestSendSplitsBatches(t *testing.T) {
	// Each message is about 1 KB in the fake's accounting; a batch holds 3.
	q, b := newFakeQueue(t, fakeConfig{MaxBatchBytes: 3500})
	var msgs []queue.Message
	for i := range 10 {
		msgs = append(msgs, queue.Message{ID: uuid.NewString(), Body: []byte(strings.Repeat("x", 1000)), Properties: map[string]string{"i": string(rune('a' + i))}})
	}
	if err := q.Send(t.Context(), msgs...); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if got := b.callCount("SendMessageBatch"); got != 4 {
		t.Errorf("SendMessageBatch called %d times for 10 messages of ~1 KB with 3.5 KB batches, want 4", got)
	}
	got := receiveAll(t, q, 10)
	seen := map[string]bool{}
	for _, d := range got {
		seen[d.ID] = true
	}
	for _, m := range msgs {
		if !seen[m.ID] {
			t.Errorf("message %s was not delivered", m.ID)
		}
	}
}

func TestSendTooLarge(t *testing.T) {
	t.Run("over MaxMessageBytes: nothing is sent", func(t *testing.T) {
		q, b := newFakeQueue(t, fakeConfig{})
		err := q.Send(t.Context(),
			queue.Message{ID: "small", Body: []byte("x")},
			queue.Message{ID: "big", Body: make([]byte, q.MaxMessageBytes()-10), Properties: map[string]string{"key": "0123456789abcdef"}},
		)
		if !errors.Is(err, queue.ErrTooLarge) || !strings.Contains(err.Error(), `"big"`) {
			t.Fatalf("err = %v, want ErrTooLarge naming the message", err)
		}
		if n := b.callCount("SendMessageBatch"); n != 0 {
			t.Errorf("%d batches sent before refusing", n)
		}
	})
	t.Run("within MaxMessageBytes but over the link limit", func(t *testing.T) {
		q, _ := newFakeQueue(t, fakeConfig{MaxBatchBytes: 1000})
		err := q.Send(t.Context(), queue.Message{ID: "big", Body: make([]byte, 2000)})
		if !errors.Is(err, queue.ErrTooLarge) {
			t.Fatalf("err = %v, want ErrTooLarge", err)
		}
	})
	t.Run("the largest accepted message fits the broker", func(t *testing.T) {
		q, _ := newFakeQueue(t, fakeConfig{})
		id := strings.Repeat("i", 128)
		props := map[string]string{queue.PropEntity: "contact"}
		body := make([]byte, q.MaxMessageBytes()-len(queue.PropEntity)-len("contact"))
		if err := q.Send(t.Context(), queue.Message{ID: id, Body: body, Properties: props}); err != nil {
			t.Fatalf("Send of exactly MaxMessageBytes: %v", err)
		}
	})
}

func TestSendValidates(t *testing.T) {
	q, _ := newFakeQueue(t, fakeConfig{})
	if err := q.Send(t.Context(), queue.Message{Body: []byte("x")}); err == nil || !strings.Contains(err.Error(), "ID is required") {
		t.Errorf("Send without ID: %v", err)
	}
	if err := q.Send(t.Context(), queue.Message{ID: strings.Repeat("x", 129)}); err == nil || !strings.Contains(err.Error(), "128") {
		t.Errorf("Send with a 129-character ID: %v", err)
	}
}

func TestDataverseNativeMessage(t *testing.T) {
	q, b := newFakeQueue(t, fakeConfig{})
	orgID := amqp.UUID(uuid.MustParse("6f2b8a57-1c1e-4f2a-9d3c-0a1b2c3d4e5f"))
	when := time.Date(2026, 11, 29, 7, 30, 0, 123000000, time.FixedZone("CET", 3600))
	body := []byte(`{"MessageName":"Update","PrimaryEntityName":"contact"}`)
	id := "native-1"
	ct := "application/json"
	err := b.sendRaw(&azservicebus.Message{
		MessageID:   &id,
		ContentType: &ct,
		Body:        body,
		ApplicationProperties: map[string]any{
			"http://schemas.microsoft.com/xrm/2011/Claims/EntityLogicalName": "contact",
			"http://schemas.microsoft.com/xrm/2011/Claims/Organization":      orgID,
			"http://schemas.microsoft.com/xrm/2011/Claims/RequestName":       amqpSymbol("Update"),
			"depth":   int32(1),
			"big":     int64(9007199254740993),
			"flag":    true,
			"ratio":   0.25,
			"when":    when,
			"raw":     []byte{0xff, 0x00},
			"text":    []byte("plain"),
			"nothing": nil,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	d := receiveAll(t, q, 1)[0]
	if string(d.Body) != string(body) || d.ID != id {
		t.Fatalf("delivery %q body %q", d.ID, d.Body)
	}
	want := map[string]string{
		"http://schemas.microsoft.com/xrm/2011/Claims/EntityLogicalName": "contact",
		"http://schemas.microsoft.com/xrm/2011/Claims/Organization":      "6f2b8a57-1c1e-4f2a-9d3c-0a1b2c3d4e5f",
		"http://schemas.microsoft.com/xrm/2011/Claims/RequestName":       "Update",
		"depth":   "1",
		"big":     "9007199254740993",
		"flag":    "true",
		"ratio":   "0.25",
		"when":    "2026-11-29T06:30:00.123Z",
		"raw":     "/wA=",
		"text":    "plain",
		"nothing": "",
	}
	if len(d.Properties) != len(want) {
		t.Errorf("properties %v, want %d of them", d.Properties, len(want))
	}
	for k, v := range want {
		if d.Properties[k] != v {
			t.Errorf("property %s = %q, want %q", k, d.Properties[k], v)
		}
	}
}

// amqpSymbol stands in for a named string type from the wire.
type amqpSymbol string

func TestSettleByTokenAfterRestart(t *testing.T) {
	q, b := newFakeQueue(t, fakeConfig{})
	if err := q.Send(t.Context(), queue.Message{ID: "a", Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	d := receiveAll(t, q, 1)[0]
	// A second adapter on the same queue has never seen the message: it
	// settles with the lock token alone.
	q2 := newWithAPI(b.api(), Options{QueueName: "msisync-test", Logger: discardLogger()})
	q2.clock = b.clock
	if err := q2.Renew(t.Context(), d); err != nil {
		t.Fatalf("Renew by token: %v", err)
	}
	if err := q2.Complete(t.Context(), d); err != nil {
		t.Fatalf("Complete by token: %v", err)
	}
	if err := q.Complete(t.Context(), d); !errors.Is(err, queue.ErrLockLost) {
		t.Fatalf("second Complete: %v, want ErrLockLost", err)
	}
	bad := *d
	bad.LockToken = "not-a-token"
	if err := q.Complete(t.Context(), &bad); err == nil || !strings.Contains(err.Error(), "not-a-token") {
		t.Fatalf("Complete with a malformed token: %v", err)
	}
}

func TestDeadLetterTimesAndHiddenProps(t *testing.T) {
	q, b := newFakeQueue(t, fakeConfig{MaxDeliveryCount: 3})
	first := b.clock.Now()
	if err := q.Send(t.Context(), queue.Message{ID: "p", Body: []byte("x"), Properties: map[string]string{queue.PropEntity: "lead"}}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		d := receiveAll(t, q, 1)[0]
		for k := range d.Properties {
			if adapterProps[k] {
				t.Fatalf("delivery %d exposes adapter property %s", i, k)
			}
		}
		if err := q.Abandon(t.Context(), d); err != nil {
			t.Fatal(err)
		}
		if i < 3 {
			b.Advance(time.Minute)
		}
	}
	dls, err := q.ListDead(t.Context(), queue.Filter{})
	if err != nil || len(dls) != 1 {
		t.Fatalf("ListDead: %v %v", dls, err)
	}
	dl := dls[0]
	if dl.Reason != queue.ReasonMaxDelivery || dl.DeliveryCount != 3 {
		t.Errorf("reason %q count %d", dl.Reason, dl.DeliveryCount)
	}
	if !dl.FirstFailureAt.Equal(first) || !dl.DeadLetteredAt.Equal(first.Add(2*time.Minute)) {
		t.Errorf("first failure %v dead-lettered %v; want %v and %v", dl.FirstFailureAt, dl.DeadLetteredAt, first, first.Add(2*time.Minute))
	}
	if _, ok := dl.Properties[sbPropDeadLetterReason]; ok {
		t.Errorf("dead letter properties include %s: %v", sbPropDeadLetterReason, dl.Properties)
	}
	if _, err := q.ReplayDead(t.Context(), queue.Filter{}); err != nil {
		t.Fatal(err)
	}
	d := receiveAll(t, q, 1)[0]
	raw := b.peekActive(t)
	for k := range raw {
		if adapterProps[k] {
			t.Errorf("replayed copy carries %s on the wire", k)
		}
	}
	if d.Properties[queue.PropEntity] != "lead" || d.Properties[queue.PropOriginalID] != "p" {
		t.Errorf("replayed properties %v", d.Properties)
	}
}

// peekActive returns the application properties of the only message in the queue.
func (b *fakeBroker) peekActive(t *testing.T) map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.active) != 1 {
		t.Fatalf("queue holds %d messages, want 1", len(b.active))
	}
	return b.active[0].props
}

func TestReplaySkipsAndReleasesOthers(t *testing.T) {
	q, b := newFakeQueue(t, fakeConfig{})
	ctx := t.Context()
	entities := []string{"contact", "account", "contact", "account", "account"}
	for i, e := range entities {
		id := string(rune('a' + i))
		if err := q.Send(ctx, queue.Message{ID: id, Body: []byte(id), Properties: map[string]string{queue.PropEntity: e}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range receiveAll(t, q, len(entities)) {
		if err := q.DeadLetter(ctx, d, "Bad", "bad "+d.ID); err != nil {
			t.Fatal(err)
		}
	}
	n, err := q.ReplayDead(ctx, queue.Filter{Entity: "account", Limit: 2})
	if err != nil || n != 2 {
		t.Fatalf("ReplayDead(account, limit 2) = %d, %v; want 2", n, err)
	}
	left, err := q.ListDead(ctx, queue.Filter{})
	if err != nil || len(left) != 3 {
		t.Fatalf("left %v, %v; want 3", left, err)
	}
	// Skipped dead letters were released, not left locked: purging them works at once.
	n, err = q.PurgeDead(ctx, queue.Filter{})
	if err != nil || n != 3 {
		t.Fatalf("PurgeDead = %d, %v; want 3", n, err)
	}
	got := receiveAll(t, q, 2)
	for _, d := range got {
		if d.Properties[queue.PropEntity] != "account" || d.Properties[queue.PropReplayCount] != "1" {
			t.Errorf("replayed %v", d.Properties)
		}
	}
	if b.callCount("dlq.AbandonMessage") == 0 {
		t.Error("skipped dead letters were never abandoned")
	}
}

func TestReplayStopsWhenSendFails(t *testing.T) {
	q, b := newFakeQueue(t, fakeConfig{})
	ctx := t.Context()
	if err := q.Send(ctx, queue.Message{ID: "a", Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if err := q.DeadLetter(ctx, receiveAll(t, q, 1)[0], "r", "d"); err != nil {
		t.Fatal(err)
	}
	b.fail("SendMessageBatch", sbErr(azservicebus.CodeUnauthorizedAccess))
	n, err := q.ReplayDead(ctx, queue.Filter{})
	if n != 0 || !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("ReplayDead = %d, %v; want 0 and ErrUnauthorized", n, err)
	}
	// The dead letter is still there and not locked.
	if n, err := q.ReplayDead(ctx, queue.Filter{}); n != 1 || err != nil {
		t.Fatalf("ReplayDead after the failure = %d, %v; want 1", n, err)
	}
}

func TestPropString(t *testing.T) {
	tests := []struct {
		in   any
		want string
	}{
		{"s", "s"}, {nil, ""}, {int8(-3), "-3"}, {uint16(7), "7"}, {uint64(18446744073709551615), "18446744073709551615"},
		{float32(1.5), "1.5"}, {false, "false"}, {time.Duration(90) * time.Second, "1m30s"},
		{[]string{"a", "b"}, "[a b]"},
	}
	for _, tc := range tests {
		if got := propString(tc.in); got != tc.want {
			t.Errorf("propString(%#v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestOptionsAndConnection(t *testing.T) {
	ctx := context.Background()
	secret := "c2VjcmV0LWtleS1kby1ub3QtbG9n"
	cases := []struct {
		opts Options
		want string
	}{
		{Options{QueueName: "q"}, "MSISYNC_SERVICEBUS is empty"},
		{Options{Connection: "Endpoint=sb://x.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=" + secret, QueueName: "a b"}, "MSISYNC_SERVICEBUS_QUEUE"},
		{Options{Connection: "x", QueueName: "q", MaxMessageBytes: -1}, "MaxMessageBytes"},
		{Options{Connection: "Endpoint=sb://;SharedAccessKey=" + secret, QueueName: "q"}, "not a valid connection string"},
		{Options{Connection: "Endpoint=sb://x.servicebus.windows.net/;SharedAccessKey" + secret, QueueName: "q"}, "not a valid connection string"},
		{Options{Connection: "not a host; at all", QueueName: "q"}, "neither a connection string"},
	}
	for _, tc := range cases {
		_, err := New(ctx, tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v): %v, want %q", tc.opts.QueueName, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error leaks the key: %v", err)
		}
	}
	q, err := New(ctx, Options{Connection: "Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;"})
	if err != nil {
		t.Fatalf("New with the emulator connection string: %v", err)
	}
	if q.queueName != DefaultQueueName {
		t.Errorf("queue name %q, want the default %q", q.queueName, DefaultQueueName)
	}
	if q.MaxMessageBytes() != DefaultMaxMessageBytes-headerReserve {
		t.Errorf("MaxMessageBytes = %d", q.MaxMessageBytes())
	}
	if err := q.Close(); err != nil {
		t.Errorf("Close without ever connecting: %v", err)
	}
}

func TestNamespaceHost(t *testing.T) {
	for in, want := range map[string]string{
		"contoso":                              "contoso.servicebus.windows.net",
		"contoso.servicebus.windows.net":       "contoso.servicebus.windows.net",
		"sb://contoso.servicebus.windows.net/": "contoso.servicebus.windows.net",
		"contoso.servicebus.usgovcloudapi.net": "contoso.servicebus.usgovcloudapi.net",
	} {
		got, err := namespaceHost(in)
		if err != nil || got != want {
			t.Errorf("namespaceHost(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := namespaceHost("https://x/y?z"); err == nil {
		t.Error("namespaceHost accepted a URL with a path")
	}
}

func TestFakeRefusesConcurrentReceive(t *testing.T) {
	// The adapter serialises ReceiveMessages because the SDK refuses
	// concurrent calls; the fake must refuse them too for that to be tested.
	_, b := newFakeQueue(t, fakeConfig{})
	r := b.api().recv
	ctx, cancel := context.WithCancel(t.Context())
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		close(started)
		_, err := r.ReceiveMessages(ctx, 1, nil)
		done <- err
	}()
	<-started
	var err error
	for range 1000 { // probe until the first call is inside ReceiveMessages
		pctx, pcancel := context.WithTimeout(ctx, time.Millisecond)
		_, err = r.ReceiveMessages(pctx, 1, nil)
		pcancel()
		if err != nil && strings.Contains(err.Error(), "concurrently") {
			break
		}
	}
	if err == nil || !strings.Contains(err.Error(), "concurrently") {
		t.Fatalf("second concurrent ReceiveMessages: %v", err)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("first ReceiveMessages after cancel: %v", err)
	}
}

// TestRenewWhileReceiving runs renewals and receives at once; with -race it
// guards against sharing the SDK message's LockedUntil (rewritten by
// RenewMessageLock) with Receive's bookkeeping.
func TestRenewWhileReceiving(t *testing.T) {
	q, _ := newFakeQueue(t, fakeConfig{})
	ctx := t.Context()
	if err := q.Send(ctx, queue.Message{ID: "held", Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	d := receiveAll(t, q, 1)[0]
	first := d.LockedUntil
	done := make(chan error, 1)
	go func() {
		for range 200 {
			if err := q.Renew(ctx, d); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for i := range 200 {
		if err := q.Send(ctx, queue.Message{ID: "other-" + string(rune('A'+i%26)) + string(rune('a'+i/26)), Body: []byte("y")}); err != nil {
			t.Fatal(err)
		}
		for _, o := range receiveAll(t, q, 1) {
			if o.ID == "held" {
				t.Fatal("received the message whose lock is being renewed")
			}
			if err := q.Complete(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("Renew: %v", err)
	}
	if d.LockedUntil.Before(first) {
		t.Errorf("LockedUntil went back from %v to %v", first, d.LockedUntil)
	}
	if err := q.Complete(ctx, d); err != nil {
		t.Fatalf("Complete after renewals: %v", err)
	}
}

func TestListDeadByIDs(t *testing.T) {
	q, _ := newFakeQueue(t, fakeConfig{})
	ctx := t.Context()
	for _, id := range []string{"a", "b"} {
		if err := q.Send(ctx, queue.Message{ID: id, Body: []byte(id)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range receiveAll(t, q, 2) {
		if err := q.DeadLetter(ctx, d, "r", "d"); err != nil {
			t.Fatal(err)
		}
	}
	all, err := q.ListDead(ctx, queue.Filter{})
	if err != nil || len(all) != 2 {
		t.Fatalf("ListDead: %v %v", all, err)
	}
	got, err := q.ListDead(ctx, queue.Filter{IDs: []string{all[1].ID, all[1].ID, " " + all[1].ID + " ", "999999"}})
	if err != nil || len(got) != 1 || got[0].MessageID != all[1].MessageID {
		t.Fatalf("ListDead by repeated and unknown ids: %v, %v", got, err)
	}
	if _, err := q.ListDead(ctx, queue.Filter{IDs: []string{"abc"}}); !errors.Is(err, queue.ErrNotFound) || !strings.Contains(err.Error(), `"abc"`) {
		t.Fatalf("ListDead with a non-numeric id: %v", err)
	}
}

func TestCountsErrors(t *testing.T) {
	t.Run("unauthorized", func(t *testing.T) {
		q, b := newFakeQueue(t, fakeConfig{})
		b.fail("GetQueueRuntimeProperties", &azcore.ResponseError{StatusCode: http.StatusUnauthorized})
		_, err := q.Counts(t.Context())
		if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "Manage rights") {
			t.Fatalf("Counts error = %v, want ErrUnauthorized naming Manage rights", err)
		}
	})
	t.Run("no admin client", func(t *testing.T) {
		q, _ := newFakeQueue(t, fakeConfig{})
		q.api.stats, q.api.statsErr = nil, errors.New("no credential")
		_, err := q.Counts(t.Context())
		if err == nil || !strings.Contains(err.Error(), "no credential") || !strings.Contains(err.Error(), "msisync-test") {
			t.Fatalf("Counts error = %v, want the cause and the queue name", err)
		}
	})
	t.Run("queue missing", func(t *testing.T) {
		q := newWithAPI(api{stats: missingQueue{}}, Options{QueueName: "gone", Logger: discardLogger()})
		_, err := q.Counts(t.Context())
		if !errors.Is(err, ErrQueueNotFound) || !strings.Contains(err.Error(), `"gone"`) {
			t.Fatalf("Counts error = %v, want ErrQueueNotFound naming the queue", err)
		}
	})
}

// missingQueue answers as the SDK does for a queue that does not exist.
type missingQueue struct{}

func (missingQueue) GetQueueRuntimeProperties(context.Context, string, *admin.GetQueueRuntimePropertiesOptions) (*admin.GetQueueRuntimePropertiesResponse, error) {
	return nil, nil
}
