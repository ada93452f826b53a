package servicebus

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/azservicebus/admin"
	"github.com/Azure/go-amqp"

	"github.com/msisync/msisync/internal/queue"
	"github.com/msisync/msisync/internal/queue/queuetest"
)

// wirePython is the interpreter that sees Debian's python3-qpid-proton
// (a pyenv python3 earlier on PATH does not). MSISYNC_TEST_PYTHON overrides.
func wirePython() string {
	if p := os.Getenv("MSISYNC_TEST_PYTHON"); p != "" {
		return p
	}
	return "/usr/bin/python3"
}

// wireBroker is testdata/sbbroker.py running as a child process: the real
// azservicebus client talks AMQP 1.0 to it over a socket on 127.0.0.1.
type wireBroker struct {
	port int
	cmd  *exec.Cmd

	mu     sync.Mutex // one control command at a time
	in     io.WriteCloser
	out    *bufio.Scanner
	offset time.Duration // how far the broker's clock is ahead of the wall clock
	exited chan struct{} // closed when the process has exited
}

// alive fails t when the broker has died: the SDK would otherwise retry
// against a closed port until the test times out.
func (b *wireBroker) alive(t testing.TB) {
	t.Helper()
	select {
	case <-b.exited:
		t.Fatalf("test broker exited (%v); see its output above", b.cmd.ProcessState)
	default:
	}
}

type wireConfig struct {
	LockDuration     time.Duration
	MaxDeliveryCount int
	DuplicateWindow  time.Duration
	MaxMessageSize   int
	// AdvertiseMaxMessageSize, when set, is the link limit the broker
	// announces while it enforces MaxMessageSize.
	AdvertiseMaxMessageSize int
	Partitioned             bool
}

// startWireBroker starts the broker, or skips the test with the reason when
// its dependency is missing; under CI=true a missing dependency fails.
func startWireBroker(t testing.TB, cfg wireConfig) *wireBroker {
	t.Helper()
	py := wirePython()
	if out, err := exec.Command(py, "-c", "import proton").CombinedOutput(); err != nil {
		msg := fmt.Sprintf("wire-level Service Bus test broker needs Qpid Proton for %s "+
			"(apt-get install -y python3-qpid-proton, or set MSISYNC_TEST_PYTHON): %v: %s", py, err, strings.TrimSpace(string(out)))
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	script, err := filepath.Abs(filepath.Join("testdata", "sbbroker.py"))
	if err != nil {
		t.Fatal(err)
	}
	args := []string{script, "--port", strconv.Itoa(port),
		"--lock-duration", fmt.Sprint(cfg.LockDuration.Seconds()),
		"--max-delivery", strconv.Itoa(cfg.MaxDeliveryCount),
		"--dup-window", fmt.Sprint(cfg.DuplicateWindow.Seconds()),
	}
	if cfg.MaxMessageSize > 0 {
		args = append(args, "--max-message-size", strconv.Itoa(cfg.MaxMessageSize))
	}
	if cfg.AdvertiseMaxMessageSize > 0 {
		args = append(args, "--advertise-max-message-size", strconv.Itoa(cfg.AdvertiseMaxMessageSize))
	}
	if cfg.Partitioned {
		args = append(args, "--partitioned")
	}
	cmd := exec.Command(py, args...)
	cmd.Stderr = &testWriter{t: t}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start test broker: %v", err)
	}
	b := &wireBroker{port: port, cmd: cmd, in: in, out: bufio.NewScanner(outPipe), exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(b.exited) }()
	t.Cleanup(func() {
		_ = in.Close() // the broker exits when its stdin closes
		select {
		case <-b.exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-b.exited
		}
	})
	ready := make(chan string, 1)
	go func() {
		if b.out.Scan() {
			ready <- b.out.Text()
			return
		}
		ready <- ""
	}()
	select {
	case line := <-ready:
		if !strings.HasPrefix(line, "ready ") {
			t.Fatalf("test broker did not start (said %q)", line)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("test broker did not say ready within 20s")
	}
	// The listener is set up in the same reactor turn; wait until it accepts.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", b.addr())
		if err == nil {
			_ = c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("test broker does not accept on %s: %v", b.addr(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return b
}

func (b *wireBroker) addr() string { return "127.0.0.1:" + strconv.Itoa(b.port) }

// connectionString is the emulator form: UseDevelopmentEmulator=true makes
// the SDK speak plain AMQP (no TLS) and take any key.
func (b *wireBroker) connectionString() string {
	return "Endpoint=sb://127.0.0.1:" + strconv.Itoa(b.port) +
		";SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true"
}

// command sends one control line and returns the broker's answer.
func (b *wireBroker) command(line string) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, err := io.WriteString(b.in, line+"\n"); err != nil {
		return "", fmt.Errorf("test broker %q: %w", line, err)
	}
	if !b.out.Scan() {
		return "", fmt.Errorf("test broker %q: no answer: %v", line, b.out.Err())
	}
	ans := b.out.Text()
	if strings.HasPrefix(ans, "error") {
		return "", fmt.Errorf("test broker %q: %s", line, ans)
	}
	return ans, nil
}

// Advance moves the broker's clock; lock expiry and scheduled messages
// follow on the broker's next turn (every 20 ms, and before each operation).
func (b *wireBroker) Advance(t testing.TB, d time.Duration) {
	if _, err := b.command(fmt.Sprintf("advance %f", d.Seconds())); err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	b.offset += d
	b.mu.Unlock()
}

// Now is the broker's clock.
func (b *wireBroker) Now() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return time.Now().Add(b.offset)
}

// GetQueueRuntimeProperties answers Counts from the broker's control
// channel: the management API is HTTP (ATOM), which the broker does not serve.
func (b *wireBroker) GetQueueRuntimeProperties(ctx context.Context, name string, _ *admin.GetQueueRuntimePropertiesOptions) (*admin.GetQueueRuntimePropertiesResponse, error) {
	ans, err := b.command("counts " + name)
	if err != nil {
		return nil, err
	}
	var active, scheduled, dead int32
	if _, err := fmt.Sscanf(ans, "%d %d %d", &active, &scheduled, &dead); err != nil {
		return nil, fmt.Errorf("test broker counts %q: %w", ans, err)
	}
	p := admin.QueueRuntimeProperties{ActiveMessageCount: active, ScheduledMessageCount: scheduled, DeadLetterMessageCount: dead}
	return &admin.GetQueueRuntimePropertiesResponse{QueueName: name, QueueRuntimeProperties: p}, nil
}

type brokerClock struct{ b *wireBroker }

func (c brokerClock) Now() time.Time { return c.b.Now() }

type testWriter struct{ t testing.TB }

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Logf("sbbroker: %s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// newWireQueue opens the adapter through the real SDK on queue name at b.
func newWireQueue(t *testing.T, b *wireBroker, name string) *Queue {
	t.Helper()
	q, err := New(t.Context(), Options{Connection: b.connectionString(), QueueName: name, Logger: discardLogger()})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	q.clock = brokerClock{b}
	q.api.stats, q.api.statsErr = b, nil
	t.Cleanup(func() {
		if err := q.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return q
}

// TestConformanceWire runs the conformance suite through the real
// azservicebus client over a real socket against testdata/sbbroker.py. Each
// subtest gets its own queue on one broker.
func TestConformanceWire(t *testing.T) {
	cfg := queuetest.DefaultConfig
	b := startWireBroker(t, wireConfig{
		LockDuration:     cfg.LockDuration,
		MaxDeliveryCount: cfg.MaxDeliveryCount,
		DuplicateWindow:  cfg.DuplicateWindow,
	})
	n := 0
	queuetest.Run(t, func(t *testing.T, _ queuetest.Config) *queuetest.Harness {
		n++
		b.alive(t)
		q := newWireQueue(t, b, fmt.Sprintf("wire-%d", n))
		return &queuetest.Harness{Queue: q, Advance: func(d time.Duration) { b.Advance(t, d) }, Now: b.Now}
	})
}

// wireSDKSender is a plain SDK sender on b's queue name, to send what other
// producers send (non-string ids, odd property types), bypassing the adapter.
func wireSDKSender(t *testing.T, b *wireBroker, name string) *azservicebus.Sender {
	t.Helper()
	c, err := azservicebus.NewClientFromConnectionString(b.connectionString(), nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.NewSender(name, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()); _ = c.Close(context.Background()) })
	return s
}

// Review item 1: the SDK leaves MessageID "" for a ulong, UUID or binary
// AMQP message-id; the adapter takes it from the raw AMQP properties.
func TestWireNonStringMessageIDs(t *testing.T) {
	b := startWireBroker(t, wireConfig{LockDuration: 30 * time.Second, MaxDeliveryCount: 3})
	s := wireSDKSender(t, b, "ids")
	q := newWireQueue(t, b, "ids")
	ids := []any{uint64(42), amqp.UUID{0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 1, 2, 3, 4, 5, 6, 7, 8}, []byte{0xca, 0xfe}}
	for _, id := range ids {
		m := &azservicebus.AMQPAnnotatedMessage{
			Body:       azservicebus.AMQPAnnotatedMessageBody{Data: [][]byte{[]byte("x")}},
			Properties: &azservicebus.AMQPAnnotatedMessageProperties{MessageID: id},
		}
		if err := s.SendAMQPAnnotatedMessage(t.Context(), m, nil); err != nil {
			t.Fatalf("send id %v: %v", id, err)
		}
	}
	got := map[string]bool{}
	for len(got) < len(ids) {
		ds, err := q.Receive(t.Context(), 10, 2*time.Second)
		if err != nil || len(ds) == 0 {
			t.Fatalf("Receive = %d, %v; have %v", len(ds), err, got)
		}
		for _, d := range ds {
			got[d.ID] = true
		}
	}
	for _, want := range []string{"42", "12345678-9abc-def0-0102-030405060708", "bin-cafe"} {
		if !got[want] {
			t.Errorf("ids received %v, want %q among them", got, want)
		}
	}
}

// Review item 5: the SDK's batch envelope copies the first message's
// application properties, so a message within MaxMessageBytes whose
// properties are long (a requeue with msisync-last-description) does not
// fit a batch; alone it does.
func TestWireLongPropertiesFitAlone(t *testing.T) {
	b := startWireBroker(t, wireConfig{LockDuration: 30 * time.Second, MaxDeliveryCount: 3})
	q := newWireQueue(t, b, "envelope")
	props := map[string]string{"msisync-last-description": strings.Repeat("d", 2048)}
	body := make([]byte, q.MaxMessageBytes()-2100)
	m := queue.Message{ID: "long-props", Body: body, Properties: props}
	if m.Size() > q.MaxMessageBytes() {
		t.Fatalf("test message of %d bytes is over MaxMessageBytes %d", m.Size(), q.MaxMessageBytes())
	}
	if err := q.Send(t.Context(), m); err != nil {
		t.Fatalf("Send of %d bytes (limit %d) with 2 KB of properties: %v", m.Size(), q.MaxMessageBytes(), err)
	}
	ds, err := q.Receive(t.Context(), 1, 5*time.Second)
	if err != nil || len(ds) != 1 {
		t.Fatalf("Receive = %d, %v", len(ds), err)
	}
	if len(ds[0].Body) != len(body) || ds[0].Properties["msisync-last-description"] != props["msisync-last-description"] {
		t.Fatalf("received body %d bytes, description %d bytes", len(ds[0].Body), len(ds[0].Properties["msisync-last-description"]))
	}
}

// Review item 5: a message the broker itself refuses as too large (the
// SDK's batch check, sized by the link, let it through) is
// queue.ErrTooLarge, not a generic error.
func TestWireBrokerSizeLimitIsErrTooLarge(t *testing.T) {
	b := startWireBroker(t, wireConfig{LockDuration: 30 * time.Second, MaxDeliveryCount: 3,
		MaxMessageSize: 64 * 1024, AdvertiseMaxMessageSize: 1 << 20})
	q, err := New(t.Context(), Options{Connection: b.connectionString(), QueueName: "small", MaxMessageBytes: 1 << 20, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = q.Close() })
	err = q.Send(t.Context(), queue.Message{ID: "big", Body: make([]byte, 100*1024)})
	if !errors.Is(err, queue.ErrTooLarge) {
		t.Fatalf("Send of 100 KB to a 64 KB link: %v, want queue.ErrTooLarge", err)
	}
}

// Review item 7: the SDK asserts DeadLetterReason is a string and panics
// inside ReceiveMessages otherwise; the adapter recovers and says why.
func TestWireNonStringDeadLetterReasonDoesNotPanic(t *testing.T) {
	b := startWireBroker(t, wireConfig{LockDuration: 30 * time.Second, MaxDeliveryCount: 3})
	s := wireSDKSender(t, b, "odd")
	q := newWireQueue(t, b, "odd")
	id := "odd-reason"
	if err := s.SendMessage(t.Context(), &azservicebus.Message{MessageID: &id, Body: []byte("x"),
		ApplicationProperties: map[string]any{"DeadLetterReason": int64(7)}}, nil); err != nil {
		t.Fatal(err)
	}
	_, err := q.Receive(t.Context(), 1, 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), "DeadLetterReason") {
		t.Fatalf("Receive = %v, want an error naming DeadLetterReason", err)
	}
}

// Review item 6: with the broker process killed (SIGKILL), Receive reports
// an error within its probe bound instead of "nothing arrived".
func TestWireOutageIsNotAnIdleQueue(t *testing.T) {
	b := startWireBroker(t, wireConfig{LockDuration: 30 * time.Second, MaxDeliveryCount: 3})
	q := newWireQueue(t, b, "outage")
	q.probeWait = 3 * time.Second
	if err := q.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if err := b.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-b.exited
	q.mu.Lock()
	q.lastOK = time.Time{} // the Ping above would spare the probe for probeEvery
	q.mu.Unlock()
	ds, err := q.Receive(t.Context(), 1, time.Second)
	if err == nil {
		t.Fatalf("Receive with the broker killed = %d deliveries and no error, want an error", len(ds))
	}
	if !strings.Contains(err.Error(), "did not answer") {
		t.Errorf("err = %v, want it to say the broker did not answer", err)
	}
}

// Review item 3 over the wire: a partitioned queue with duplicate detection
// refuses a batch of distinct ids; sending singly (what CheckQueue turns on
// for a partitioned queue) works.
func TestWirePartitionedQueue(t *testing.T) {
	b := startWireBroker(t, wireConfig{LockDuration: 30 * time.Second, MaxDeliveryCount: 3, DuplicateWindow: time.Minute, Partitioned: true})
	q := newWireQueue(t, b, "partitioned")
	msgs := []queue.Message{{ID: "p1", Body: []byte("1")}, {ID: "p2", Body: []byte("2")}, {ID: "p3", Body: []byte("3")}}
	err := q.Send(t.Context(), msgs...)
	if err == nil || !strings.Contains(err.Error(), "distinct MessageId") {
		t.Fatalf("batch of distinct ids on a partitioned queue: %v, want the broker's refusal", err)
	}
	q.single = true
	if err := q.Send(t.Context(), msgs...); err != nil {
		t.Fatalf("Send singly: %v", err)
	}
	got := map[string]bool{}
	for len(got) < 3 {
		ds, err := q.Receive(t.Context(), 3, 2*time.Second)
		if err != nil || len(ds) == 0 {
			t.Fatalf("Receive = %d, %v; have %v", len(ds), err, got)
		}
		for _, d := range ds {
			got[d.ID] = true
		}
	}
}
