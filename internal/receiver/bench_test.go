package receiver

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/msisync/msisync/internal/queue"
)

type nopSender struct{}

func (nopSender) Send(context.Context, ...queue.Message) error { return nil }

func benchServe(b *testing.B, h http.Handler, path string, body []byte, status int) {
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
			r.Header.Set("Content-Type", "application/json")
			r.Header.Set(DefaultHeader, key)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != status {
				b.Fatalf("status %d: %s", w.Code, w.Body)
			}
		}
	})
}

// BenchmarkWebhook measures the receiver's own cost for a ~7 KB Dataverse
// Update (auth, parse, encode, metrics) against a sender that does nothing;
// BenchmarkBareChi202 is the ceiling: a chi router answering 202.
func BenchmarkWebhook(b *testing.B) {
	h, err := New(Config{Keys: []string{key}, Queue: nopSender{}, Registerer: prometheus.NewRegistry(),
		Logger: slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	if err != nil {
		b.Fatal(err)
	}
	benchServe(b, h, RouteDataverse, read(b, exampleU), http.StatusAccepted)
}

func BenchmarkBareChi202(b *testing.B) {
	r := chi.NewRouter()
	r.Post(RouteDataverse, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusAccepted)
	})
	benchServe(b, r, RouteDataverse, read(b, exampleU), http.StatusAccepted)
}

// benchLoopback drives h through a real HTTP server on loopback with
// keep-alive clients (as a load generator would) and reports req/s and the
// p50/p99 latency seen by the clients.
func benchLoopback(b *testing.B, h http.Handler, path string, body []byte) {
	srv := httptest.NewServer(h)
	defer srv.Close()
	tr := &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	url := srv.URL + path
	var mu sync.Mutex
	var lat []time.Duration
	b.SetParallelism(8) // 16 concurrent clients on 2 cores
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		local := make([]time.Duration, 0, 1024)
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set(DefaultHeader, key)
			t0 := time.Now()
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			local = append(local, time.Since(t0))
			if resp.StatusCode != http.StatusAccepted {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
		mu.Lock()
		lat = append(lat, local...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	b.StopTimer()
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkWebhookLoopback and BenchmarkBareChiLoopback: the receiver with a
// no-op queue, and the ceiling (chi answering 202), over real HTTP on loopback.
func BenchmarkWebhookLoopback(b *testing.B) {
	h, err := New(Config{Keys: []string{key}, Queue: nopSender{}, Registerer: prometheus.NewRegistry(),
		Logger: slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	if err != nil {
		b.Fatal(err)
	}
	benchLoopback(b, h, RouteDataverse, read(b, exampleU))
}

func BenchmarkBareChiLoopback(b *testing.B) {
	r := chi.NewRouter()
	r.Post(RouteDataverse, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusAccepted)
	})
	benchLoopback(b, r, RouteDataverse, read(b, exampleU))
}
