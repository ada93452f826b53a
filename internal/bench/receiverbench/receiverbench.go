// Package receiverbench measures the webhook receiver end to end over
// loopback HTTP: requests/s and latency of POST /webhooks/dataverse on the
// embedded durable queue, side by side with a bare chi handler answering 202
// (the ceiling: HTTP and the load generator alone), in the same process and
// run. Afterwards it drains the queue and counts what was actually stored,
// so a figure can never come from requests that were not durably enqueued.
package receiverbench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/msisync/msisync/api"
	"github.com/msisync/msisync/internal/event"
	"github.com/msisync/msisync/internal/queue"
	"github.com/msisync/msisync/internal/queue/sqlitequeue"
	"github.com/msisync/msisync/internal/receiver"
)

// Defaults.
const (
	DefaultRequests    = 20000
	DefaultConcurrency = 32
	// DefaultDuration bounds each target's run when the requests take longer.
	DefaultDuration = 2 * time.Minute
)

const benchKey = "receiverbench-key"

// Options configure Run. Zero values take the defaults.
type Options struct {
	Requests    int           // requests per target (default 20,000)
	Concurrency int           // keep-alive clients (default 32)
	Duration    time.Duration // per-target time limit (default 2 min); the run stops at whichever comes first
	// Payload is a Dataverse RemoteExecutionContext (default the embedded
	// example Update of a contact, ~7 KB). Its top-level OperationId is
	// replaced per request so that duplicate detection keeps every request.
	Payload []byte
	// Dir is where the queue database goes, in a new subdirectory removed
	// afterwards (default os.TempDir()). It must be on a real disk for the
	// fsync cost to count.
	Dir string
	// CommitWindow is passed to the queue (0: its default).
	CommitWindow time.Duration
	// CPUProfile, when set, receives a pprof CPU profile of the receiver
	// phase (server and load generator share the process).
	CPUProfile io.Writer
}

func (o Options) withDefaults() (Options, error) {
	if o.Requests == 0 {
		o.Requests = DefaultRequests
	}
	if o.Concurrency == 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.Duration == 0 {
		o.Duration = DefaultDuration
	}
	switch {
	case o.Requests < 1:
		return o, fmt.Errorf("receiverbench: requests must be at least 1, got %d", o.Requests)
	case o.Concurrency < 1:
		return o, fmt.Errorf("receiverbench: concurrency must be at least 1, got %d", o.Concurrency)
	case o.Duration < 0:
		return o, fmt.Errorf("receiverbench: duration must not be negative, got %s", o.Duration)
	}
	if o.Payload == nil {
		o.Payload = api.ExampleDataverseUpdate
	}
	return o, nil
}

// Result is one target's figures.
type Result struct {
	Name     string
	Requests int // requests sent (answered or failed)
	Accepted int // 202 (for the receiver: with status "queued")
	Errors   int // any other answer or a transport error
	// FirstError describes the first error, for diagnosis.
	FirstError string
	Elapsed    time.Duration
	P50, P95   time.Duration
	P99, Max   time.Duration
	// Queued is the number of distinct messages found in the queue
	// afterwards (receiver on the durable queue only; -1 otherwise).
	Queued int
	// HandlerMean and EnqueueMean are the receiver's own mean request and
	// queue Send durations (from its metrics; 0 for the bare handler): with
	// the client latency they tell waiting for the queue from waiting for CPU.
	HandlerMean, EnqueueMean time.Duration
}

// RPS is the completed requests per second.
func (r Result) RPS() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Elapsed.Seconds()
}

// Report is the outcome of Run.
type Report struct {
	Requests     int
	Concurrency  int
	PayloadBytes int
	GOMAXPROCS   int
	QueueDir     string
	Bare         Result // chi answering 202: the ceiling
	NoQueue      Result // the receiver with a Send that does nothing: parse, encode, HTTP
	Receiver     Result // the real receiver on the embedded durable queue
}

// String renders the report as a table.
func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "POST %s: %d requests per target, %d keep-alive clients, %d-byte payload, GOMAXPROCS=%d, queue in %s\n",
		receiver.RouteDataverse, r.Requests, r.Concurrency, r.PayloadBytes, r.GOMAXPROCS, r.QueueDir)
	fmt.Fprintf(&b, "%-22s %7s %8s %8s %8s %8s %8s %6s %7s %8s %8s %8s\n",
		"target", "req/s", "p50", "p95", "p99", "max", "accepted", "errors", "queued", "elapsed", "handler", "enqueue")
	all := []Result{r.Bare, r.NoQueue, r.Receiver}
	for _, x := range all {
		queued, handler, enqueue := "-", "-", "-"
		if x.Queued >= 0 {
			queued = fmt.Sprint(x.Queued)
		}
		if x.HandlerMean > 0 {
			handler, enqueue = ms(x.HandlerMean), ms(x.EnqueueMean)
		}
		fmt.Fprintf(&b, "%-22s %7.0f %8s %8s %8s %8s %8d %6d %7s %8s %8s %8s\n",
			x.Name, x.RPS(), ms(x.P50), ms(x.P95), ms(x.P99), ms(x.Max), x.Accepted, x.Errors, queued,
			x.Elapsed.Round(time.Millisecond), handler, enqueue)
	}
	if r.Bare.RPS() > 0 {
		fmt.Fprintf(&b, "durable receiver/bare: %.0f%%; handler and enqueue are the server's own means\n", 100*r.Receiver.RPS()/r.Bare.RPS())
	}
	for _, x := range all {
		if x.FirstError != "" {
			fmt.Fprintf(&b, "%s first error: %s\n", x.Name, x.FirstError)
		}
	}
	return strings.TrimRight(b.String(), "\n")
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d.Microseconds())/1000) }

// Run measures the bare chi handler, the receiver with a no-op queue, then
// the receiver on a fresh embedded queue, with the same load, and counts the
// queue's messages afterwards.
func Run(ctx context.Context, o Options) (Report, error) {
	o, err := o.withDefaults()
	if err != nil {
		return Report{}, err
	}
	bodies, err := newBodies(o.Payload)
	if err != nil {
		return Report{}, err
	}
	rep := Report{Requests: o.Requests, Concurrency: o.Concurrency, PayloadBytes: len(o.Payload), GOMAXPROCS: runtime.GOMAXPROCS(0)}

	bare := chi.NewRouter()
	bare.Post(receiver.RouteDataverse, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusAccepted)
	})
	rep.Bare, err = drive(ctx, "bare chi 202", bare, bodies, 0, o, func(status int, _ []byte) bool {
		return status == http.StatusAccepted
	})
	if err != nil {
		return rep, err
	}
	rep.Bare.Queued = -1

	queued := []byte(`"status":"queued"`)
	isQueued := func(status int, body []byte) bool {
		return status == http.StatusAccepted && bytes.Contains(body, queued)
	}
	reg := prometheus.NewRegistry()
	h, err := newReceiver(nopSender{}, 0, reg)
	if err != nil {
		return rep, err
	}
	if rep.NoQueue, err = drive(ctx, "receiver, no-op queue", h, bodies, 1<<32, o, isQueued); err != nil {
		return rep, err
	}
	rep.NoQueue.Queued = -1
	rep.NoQueue.HandlerMean, rep.NoQueue.EnqueueMean = means(reg)

	// A fresh directory each run, so the count afterwards is this run's.
	dir, err := os.MkdirTemp(o.Dir, "receiverbench-")
	if err != nil {
		return rep, fmt.Errorf("receiverbench: queue directory in %q: %w", o.Dir, err)
	}
	defer os.RemoveAll(dir)
	rep.QueueDir = dir
	q, err := sqlitequeue.Open(ctx, filepath.Join(dir, "queue.db"), sqlitequeue.Options{CommitWindow: o.CommitWindow})
	if err != nil {
		return rep, fmt.Errorf("receiverbench: %w", err)
	}
	defer q.Close()
	reg = prometheus.NewRegistry()
	if h, err = newReceiver(q, q.MaxMessageBytes(), reg); err != nil {
		return rep, err
	}
	if o.CPUProfile != nil {
		if err := pprof.StartCPUProfile(o.CPUProfile); err != nil {
			return rep, fmt.Errorf("receiverbench: cpu profile: %w", err)
		}
	}
	// A different id range than the bare run's, so nothing could be a duplicate
	// of anything but itself.
	rep.Receiver, err = drive(ctx, "receiver+sqlitequeue", h, bodies, 2<<32, o, isQueued)
	if o.CPUProfile != nil {
		pprof.StopCPUProfile()
	}
	if err != nil {
		return rep, err
	}
	rep.Receiver.HandlerMean, rep.Receiver.EnqueueMean = means(reg)
	if rep.Receiver.Queued, err = drain(ctx, q); err != nil {
		return rep, err
	}
	return rep, nil
}

func newReceiver(q queue.Sender, maxMessageBytes int, reg *prometheus.Registry) (http.Handler, error) {
	h, err := receiver.New(receiver.Config{
		Keys: []string{benchKey}, Queue: q, MaxMessageBytes: maxMessageBytes, Registerer: reg,
		// As serve logs by default: info, so the per-request debug lines are skipped.
		Logger: slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	if err != nil {
		return nil, fmt.Errorf("receiverbench: %w", err)
	}
	return h, nil
}

type nopSender struct{}

func (nopSender) Send(context.Context, ...queue.Message) error { return nil }

// means reads the receiver's mean webhook request and enqueue durations
// from its metrics.
func means(g prometheus.Gatherer) (handler, enqueue time.Duration) {
	mfs, err := g.Gather()
	if err != nil {
		return 0, 0
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			h := m.GetHistogram()
			if h == nil || h.GetSampleCount() == 0 {
				continue
			}
			mean := time.Duration(h.GetSampleSum() / float64(h.GetSampleCount()) * float64(time.Second))
			switch mf.GetName() {
			case "msisync_receiver_request_duration_seconds":
				handler = mean // one route only: the webhook
			case "msisync_receiver_enqueue_duration_seconds":
				enqueue = mean
			}
		}
	}
	return handler, enqueue
}

// bodies produces the per-request payloads: the template with every
// occurrence of its OperationId replaced by a per-request GUID.
type bodies struct {
	parts [][]byte // the template split around the OperationId
	size  int
}

func newBodies(payload []byte) (*bodies, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(payload, &top); err != nil {
		return nil, fmt.Errorf("receiverbench: payload is not a JSON object: %w", err)
	}
	var op string
	if raw, ok := top["OperationId"]; !ok || json.Unmarshal(raw, &op) != nil || !event.IsGUID(op) {
		return nil, errors.New("receiverbench: payload has no top-level OperationId GUID to vary per request (is it a Dataverse RemoteExecutionContext?)")
	}
	parts := bytes.Split(payload, []byte(op))
	return &bodies{parts: parts, size: len(payload)}, nil
}

// fill writes the body of request n into buf.
func (b *bodies) fill(buf []byte, n uint64) []byte {
	buf = buf[:0]
	id := fmt.Appendf(nil, "%08x-%04x-4000-8000-%012x", uint32(n>>32), uint16(n>>16), n&0xffff)
	for i, p := range b.parts {
		if i > 0 {
			buf = append(buf, id...)
		}
		buf = append(buf, p...)
	}
	return buf
}

// drive serves h on loopback and sends o.Requests requests from
// o.Concurrency keep-alive clients, stopping early at o.Duration or when ctx
// ends.
func drive(ctx context.Context, name string, h http.Handler, b *bodies, base uint64, o Options, ok func(int, []byte) bool) (Result, error) {
	res := Result{Name: name}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return res, fmt.Errorf("receiverbench: %s: listen: %w", name, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	tr := &http.Transport{
		MaxIdleConns: o.Concurrency, MaxIdleConnsPerHost: o.Concurrency, MaxConnsPerHost: o.Concurrency,
		DisableCompression: true, IdleConnTimeout: time.Minute,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	url := "http://" + ln.Addr().String() + receiver.RouteDataverse

	// The time limit stops new requests but lets those in flight finish, so
	// every request the server may have enqueued gets its answer counted.
	deadline := time.Now().Add(o.Duration)
	var (
		next     atomic.Int64
		mu       sync.Mutex
		lat      = make([]time.Duration, 0, o.Requests)
		accepted int
		errs     int
		firstErr string
		wg       sync.WaitGroup
	)
	start := time.Now()
	for range o.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, o.Requests/o.Concurrency+1)
			var nAcc, nErr int
			var fe string
			buf := make([]byte, 0, b.size+64)
			var resp bytes.Buffer
			for ctx.Err() == nil && time.Now().Before(deadline) {
				n := next.Add(1)
				if n > int64(o.Requests) {
					break
				}
				buf = b.fill(buf, base+uint64(n))
				req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(buf))
				if err != nil {
					nErr++
					fe = cmp(fe, err.Error())
					continue
				}
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set(receiver.DefaultHeader, benchKey)
				t0 := time.Now()
				r, err := client.Do(req)
				if err != nil {
					if ctx.Err() != nil {
						break // interrupted: not an answer
					}
					local = append(local, time.Since(t0))
					nErr++
					fe = cmp(fe, err.Error())
					continue
				}
				resp.Reset()
				_, rerr := resp.ReadFrom(r.Body)
				r.Body.Close()
				local = append(local, time.Since(t0))
				if rerr == nil && ok(r.StatusCode, resp.Bytes()) {
					nAcc++
				} else {
					nErr++
					fe = cmp(fe, fmt.Sprintf("status %d: %.200s", r.StatusCode, resp.Bytes()))
				}
			}
			mu.Lock()
			lat = append(lat, local...)
			accepted += nAcc
			errs += nErr
			if firstErr == "" {
				firstErr = fe
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	res.Requests, res.Accepted, res.Errors, res.FirstError = len(lat), accepted, errs, firstErr
	if len(lat) > 0 {
		slices.Sort(lat)
		res.P50, res.P95, res.P99 = pct(lat, 50), pct(lat, 95), pct(lat, 99)
		res.Max = lat[len(lat)-1]
	}
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("receiverbench: %s: %w", name, err)
	}
	return res, nil
}

func cmp(first, msg string) string {
	if first != "" {
		return first
	}
	return msg
}

// pct is the p-th percentile (nearest rank) of sorted latencies.
func pct(sorted []time.Duration, p int) time.Duration {
	i := (len(sorted)*p+99)/100 - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// drain receives every message in the queue and counts the distinct ids of
// those that decode as events.
func drain(ctx context.Context, q *sqlitequeue.Queue) (int, error) {
	seen := make(map[string]bool)
	for {
		ds, err := q.Receive(ctx, 1000, 0)
		if err != nil {
			return len(seen), fmt.Errorf("receiverbench: drain queue: %w", err)
		}
		if len(ds) == 0 {
			return len(seen), nil
		}
		for _, d := range ds {
			e, err := event.Decode(d.Message.Body)
			if err != nil {
				return len(seen), fmt.Errorf("receiverbench: drain queue: message %q: %w", d.Message.ID, err)
			}
			if e.ID != d.Message.ID {
				return len(seen), fmt.Errorf("receiverbench: drain queue: message %q carries event %q", d.Message.ID, e.ID)
			}
			seen[d.Message.ID] = true
		}
	}
}
