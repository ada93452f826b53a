package receiver

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

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
