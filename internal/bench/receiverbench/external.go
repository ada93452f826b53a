package receiverbench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/msisync/msisync/api"
)

// The in-process Run shares its two cores between server and load. The
// functions here measure like a user instead: the target (msisync receiver,
// msisync serve, or the bare chi handler of ServeBare) runs as its own
// process and the load comes from another (wrk for saturation, Paced for a
// fixed offered rate, which wrk cannot do). See the README's benchmark
// section for the commands.

// ServeBare serves the bare chi handler (202 to POST /webhooks/dataverse,
// body read and discarded) on addr until ctx ends: the ceiling a separate
// load generator compares the receiver with.
func ServeBare(ctx context.Context, addr string) error {
	r := chi.NewRouter()
	r.Post("/webhooks/dataverse", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusAccepted)
	})
	srv := &http.Server{Addr: addr, Handler: r, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		return fmt.Errorf("receiverbench: serve bare handler on %s: %w", addr, err)
	case <-ctx.Done():
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(shut)
	}
}

// PacedOptions configure Paced.
type PacedOptions struct {
	URL         string        // the webhook URL, key included (?code=…)
	Rate        int           // requests per second offered, whatever the answers
	Duration    time.Duration // how long to offer them
	Connections int           // keep-alive connections (default 64); more are opened while all are busy
	Payload     []byte        // default the embedded example Update; OperationId varied per request
	Seed        uint64        // first request number (vary between runs so no request is a re-send)
}

// Paced offers requests at a fixed rate (open loop) and measures each one's
// latency from the moment it was due, not from when it could be sent, so a
// stalled server shows in the percentiles instead of slowing the load down
// (coordinated omission).
func Paced(ctx context.Context, o PacedOptions) (Result, error) {
	res := Result{Name: fmt.Sprintf("paced %d req/s", o.Rate), Queued: -1}
	switch {
	case o.Rate < 1:
		return res, fmt.Errorf("receiverbench: rate must be at least 1, got %d", o.Rate)
	case o.Duration <= 0:
		return res, fmt.Errorf("receiverbench: duration must be positive, got %s", o.Duration)
	}
	if u, err := url.Parse(o.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return res, fmt.Errorf("receiverbench: url %q is not an http(s) URL", o.URL)
	}
	if o.Connections == 0 {
		o.Connections = 64
	}
	if o.Payload == nil {
		o.Payload = api.ExampleDataverseUpdate
	}
	b, err := newBodies(o.Payload)
	if err != nil {
		return res, err
	}
	client := &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConnsPerHost: o.Connections,
			MaxConnsPerHost:     0,
		},
	}
	defer client.CloseIdleConnections()

	total := int(o.Duration.Seconds() * float64(o.Rate))
	lat := make([]time.Duration, total)
	var accepted, failed atomic.Int64
	var firstErr atomic.Pointer[string]
	interval := time.Second / time.Duration(o.Rate)
	bufs := sync.Pool{New: func() any { return new(bytes.Buffer) }}
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < total; i++ {
		due := start.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				total = i
			}
		}
		if ctx.Err() != nil {
			total = i
			break
		}
		wg.Add(1)
		go func(i int, due time.Time) {
			defer wg.Done()
			buf := bufs.Get().(*bytes.Buffer)
			defer bufs.Put(buf)
			buf.Reset()
			buf.Write(b.fill(make([]byte, 0, b.size+64), o.Seed+uint64(i)))
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.URL, bytes.NewReader(buf.Bytes()))
			if err == nil {
				req.Header.Set("Content-Type", "application/json")
				var resp *http.Response
				if resp, err = client.Do(req); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusAccepted {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
			}
			lat[i] = time.Since(due)
			if err != nil {
				failed.Add(1)
				msg := err.Error()
				firstErr.CompareAndSwap(nil, &msg)
				return
			}
			accepted.Add(1)
		}(i, due)
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	res.Requests = total
	res.Accepted = int(accepted.Load())
	res.Errors = int(failed.Load())
	if p := firstErr.Load(); p != nil {
		res.FirstError = *p
	}
	lat = lat[:total]
	if len(lat) == 0 {
		return res, errors.New("receiverbench: no request was sent")
	}
	slices.Sort(lat)
	res.P50, res.P95, res.P99, res.Max = pct(lat, 50), pct(lat, 95), pct(lat, 99), lat[len(lat)-1]
	return res, nil
}

// Line is a one-line summary of a result.
func (r Result) Line() string {
	s := fmt.Sprintf("%s: %d requests in %s (%.0f req/s), %d accepted, %d errors; p50 %s p95 %s p99 %s max %s",
		r.Name, r.Requests, r.Elapsed.Round(time.Millisecond), r.RPS(), r.Accepted, r.Errors, ms(r.P50), ms(r.P95), ms(r.P99), ms(r.Max))
	if r.FirstError != "" {
		s += "; first error: " + r.FirstError
	}
	return s
}
