// Package receiver is msisync's HTTP front door: the Dataverse webhook and
// the simple-envelope endpoint (both enqueue change events), health and
// readiness probes, Prometheus metrics and the admin API for the dead-letter
// queue. The API is described in api/openapi.yaml.
package receiver

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/msisync/msisync/api"
	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/queue"
)

// Defaults.
const (
	DefaultHeader       = "x-msisync-key"
	DefaultMaxBodyBytes = 1 << 20 // Dataverse sends at most 256 KB
	// DefaultTimeout bounds each request well inside Dataverse's 60 s.
	DefaultTimeout = 30 * time.Second
	readyTimeout   = 5 * time.Second
)

// Routes.
const (
	RouteDataverse = "/webhooks/dataverse"
	RouteEvents    = "/webhooks/events"
	RouteHealth    = "/healthz"
	RouteReady     = "/readyz"
	RouteMetrics   = "/metrics"
	RouteOpenAPI   = "/openapi.yaml"
	RouteDLQ       = "/admin/v1/dlq"
	RouteDLQItem   = "/admin/v1/dlq/{id}"
	RouteDLQReplay = "/admin/v1/dlq/replay"
	RouteDLQPurge  = "/admin/v1/dlq/purge"
)

// Config configures the receiver. Queue and at least one key are required;
// every other field has a useful zero value.
type Config struct {
	// Keys are the accepted webhook keys; several allow rotation. A request
	// authenticates with any of them, in the Header or as ?code= (Dataverse's
	// WebhookKey mode).
	Keys []string
	// Header is the header of Dataverse's HttpHeader mode (default x-msisync-key).
	Header string
	// Orgs, when set, is the allow-list of organisation ids or names
	// (case-insensitive); other organisations get 403.
	Orgs []string
	// AdminToken is the bearer token of /admin; when empty the admin API
	// answers 404.
	AdminToken string
	// MaxBodyBytes bounds request bodies (default 1 MiB).
	MaxBodyBytes int64
	// Queue receives the events.
	Queue queue.Sender
	// MaxMessageBytes is the queue's message limit (0: none). A larger event
	// is sent reduced (event.Reduced: the worker re-reads the record), never refused.
	MaxMessageBytes int
	// DeadLetters backs /admin/v1/dlq (routes absent when nil).
	DeadLetters queue.DeadLetters
	// Ready reports whether the queue and the store are reachable (/readyz);
	// nil means always ready.
	Ready func(ctx context.Context) error
	// Logger gets JSON-friendly structured logs (default slog.Default()).
	Logger *slog.Logger
	// Registerer gets the metrics (default: a new registry). Gatherer serves
	// /metrics; by default the Registerer if it is also a Gatherer (as a
	// *prometheus.Registry is), else prometheus.DefaultGatherer.
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer
	// Clock stamps events that carry no time and paces the rate limit on
	// logs of unauthenticated requests (default clock.System).
	Clock clock.Clock
	// Timeout bounds each request (default 30 s).
	Timeout time.Duration
	// Extra mounts more routes behind the admin token (full paths, e.g.
	// "/admin/v1/…"); only called when AdminToken is set.
	Extra func(r chi.Router)
	// Public mounts more routes with no auth (the local sandbox's state).
	Public func(r chi.Router)
	// Console, when set, serves /console/… (it does its own login) and /
	// redirects to it.
	Console http.Handler
	// Diagnose, when set, serves RouteDiagnosis behind the admin token.
	Diagnose DiagnoseFunc
	// Budget, when set, serves RouteBudget behind the admin token.
	Budget BudgetFunc
	// DisableWebhooks leaves out the /webhooks routes (404), for a process
	// that only works the queue but still serves health, metrics and admin.
	// Keys and Queue are then optional.
	DisableWebhooks bool
}

type server struct {
	cfg       Config
	keyHashes [][sha256.Size]byte
	adminHash [sha256.Size]byte
	orgs      map[string]bool
	log       *slog.Logger
	m         *metrics
	cpu       cpuSlots
	noise     *noiseLimiter
}

// New builds the receiver's HTTP handler.
func New(cfg Config) (http.Handler, error) {
	if cfg.Queue == nil && !cfg.DisableWebhooks {
		return nil, errors.New("receiver: Queue is required")
	}
	s := &server{cfg: cfg, cpu: make(cpuSlots, runtime.GOMAXPROCS(0))}
	for i, k := range cfg.Keys {
		if strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf("receiver: webhook key %d of %d is empty", i+1, len(cfg.Keys))
		}
		s.keyHashes = append(s.keyHashes, sha256.Sum256([]byte(k)))
	}
	if len(s.keyHashes) == 0 && !cfg.DisableWebhooks {
		return nil, errors.New("receiver: at least one webhook key is required")
	}
	if s.cfg.Header == "" {
		s.cfg.Header = DefaultHeader
	}
	if !validHeaderName(s.cfg.Header) {
		return nil, fmt.Errorf("receiver: webhook header %q is not a valid HTTP header name", s.cfg.Header)
	}
	if s.cfg.MaxBodyBytes <= 0 {
		s.cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if s.cfg.Timeout <= 0 {
		s.cfg.Timeout = DefaultTimeout
	}
	if s.cfg.Clock == nil {
		s.cfg.Clock = clock.System{}
	}
	s.noise = newNoiseLimiter(s.cfg.Clock)
	s.log = cfg.Logger
	if s.log == nil {
		s.log = slog.Default()
	}
	s.log = s.log.With("component", "receiver")
	if len(cfg.Orgs) > 0 {
		s.orgs = make(map[string]bool, len(cfg.Orgs))
		for _, o := range cfg.Orgs {
			if o = strings.ToLower(strings.TrimSpace(o)); o != "" {
				s.orgs[o] = true
			}
		}
	}
	s.adminHash = sha256.Sum256([]byte(cfg.AdminToken))
	reg := cfg.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	gatherer := cfg.Gatherer
	if gatherer == nil {
		if g, ok := reg.(prometheus.Gatherer); ok {
			gatherer = g
		} else {
			gatherer = prometheus.DefaultGatherer
		}
	}
	var err error
	if s.m, err = newMetrics(reg); err != nil {
		return nil, fmt.Errorf("receiver: register metrics: %w", err)
	}

	r := chi.NewRouter()
	r.Use(s.observe, s.timeout)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, http.StatusNotFound, probNotFound, "Not found", "no such endpoint: "+clip(r.URL.Path, maxLoggedPath))
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, req *http.Request) {
		allowed := allowedMethods(r, req.URL.Path)
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		writeProblem(w, http.StatusMethodNotAllowed, probMethod, "Method not allowed",
			req.Method+" is not allowed here; use "+strings.Join(allowed, " or "),
			FieldIssue{Field: "method", Reason: "must be " + strings.Join(allowed, " or ")})
	})
	if !cfg.DisableWebhooks {
		r.Post(RouteDataverse, s.webhook(sourceDataverse))
		r.Post(RouteEvents, s.webhook(sourceCustom))
	}
	r.Get(RouteHealth, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	r.Get(RouteReady, s.ready)
	r.Get(RouteOpenAPI, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		_, _ = w.Write(api.OpenAPI)
	})
	r.Method(http.MethodGet, RouteMetrics, promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelError)}))
	if cfg.Public != nil {
		cfg.Public(r)
	}
	if cfg.Console != nil {
		r.Handle("/console", cfg.Console)
		r.Handle("/console/*", cfg.Console)
		r.Get("/", func(w http.ResponseWriter, req *http.Request) { http.Redirect(w, req, "/console/", http.StatusFound) })
	}
	if cfg.AdminToken != "" {
		r.Group(func(ar chi.Router) {
			ar.Use(s.adminAuth)
			if cfg.DeadLetters != nil {
				ar.Get(RouteDLQ, s.dlqList)
				ar.Post(RouteDLQReplay, s.dlqReplay)
				ar.Post(RouteDLQPurge, s.dlqPurge)
				ar.Get(RouteDLQItem, s.dlqGet)
			}
			if cfg.Diagnose != nil {
				ar.Get(RouteDiagnosis, s.diagnosis)
			}
			if cfg.Budget != nil {
				ar.Get(RouteBudget, s.budget)
			}
			if cfg.Extra != nil {
				cfg.Extra(ar)
			}
		})
	}
	return r, nil
}

// allowedMethods lists the methods the router accepts on path, for Allow.
func allowedMethods(r chi.Routes, path string) []string {
	var out []string
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions} {
		if r.Match(chi.NewRouteContext(), m, path) {
			out = append(out, m)
		}
	}
	return out
}

func validHeaderName(h string) bool {
	if h == "" {
		return false
	}
	for _, c := range h {
		if c <= ' ' || c >= 0x7f || strings.ContainsRune("()<>@,;:\\\"/[]?={}", c) {
			return false
		}
	}
	return true
}

// authorized checks the webhook key in the header and in ?code= against
// every configured key in constant time (the hashes equalise lengths).
func (s *server) authorized(r *http.Request) bool {
	var candidates []string
	if v := r.Header.Get(s.cfg.Header); v != "" {
		candidates = append(candidates, v)
	}
	if v := queryValue(r.URL.RawQuery, "code"); v != "" {
		candidates = append(candidates, v)
	}
	ok := 0
	for _, c := range candidates {
		h := sha256.Sum256([]byte(c))
		for i := range s.keyHashes {
			ok |= subtle.ConstantTimeCompare(h[:], s.keyHashes[i][:])
		}
	}
	return ok == 1
}

// queryValue is r.URL.Query().Get(key) without building the whole map: the
// first value of key, "" when absent or badly escaped (ParseQuery skips
// those pairs too, and pairs with a semicolon).
func queryValue(rawQuery, key string) string {
	for rawQuery != "" {
		var pair string
		pair, rawQuery, _ = strings.Cut(rawQuery, "&")
		if pair == "" || strings.Contains(pair, ";") {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		if k != key {
			if !strings.ContainsAny(k, "%+") {
				continue
			}
			if uk, err := url.QueryUnescape(k); err != nil || uk != key {
				continue
			}
		}
		if !strings.ContainsAny(v, "%+") {
			return v
		}
		if uv, err := url.QueryUnescape(v); err == nil {
			return uv
		}
	}
	return ""
}

func (s *server) adminAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, found := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		h := sha256.Sum256([]byte(strings.TrimSpace(token)))
		if !found || subtle.ConstantTimeCompare(h[:], s.adminHash[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="msisync-admin"`)
			writeProblem(w, http.StatusUnauthorized, probUnauthorized, "Unauthorized", "a valid admin bearer token is required")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *server) ready(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		defer cancel()
		if err := s.cfg.Ready(ctx); err != nil {
			s.log.WarnContext(r.Context(), "not ready", "error", err)
			writeProblem(w, http.StatusServiceUnavailable, probNotReady, "Not ready", err.Error())
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (s *server) timeout(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), s.cfg.Timeout)
		defer cancel()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// statusWriter records the status code for metrics and logs.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// observe counts and times every request by route pattern. It logs only the
// path, never the query string (it may carry ?code=).
func (s *server) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		route := "unmatched"
		if rc := chi.RouteContext(r.Context()); rc != nil && rc.RoutePattern() != "" {
			route = rc.RoutePattern()
		}
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		elapsed := time.Since(start)
		s.m.request(route, sw.status, elapsed.Seconds())
		level := slog.LevelDebug
		if sw.status >= 500 {
			level = slog.LevelError
		} else if sw.status >= 400 {
			level = slog.LevelWarn
		}
		if !s.log.Enabled(r.Context(), level) {
			return
		}
		attrs := []any{"method", clip(r.Method, maxLoggedHeader), "path", clip(r.URL.Path, maxLoggedPath), "route", route, "status", sw.status,
			"duration_ms", float64(elapsed.Microseconds()) / 1000,
			"correlation_id", clip(r.Header.Get("x-ms-correlation-request-id"), maxLoggedHeader), "remote", r.RemoteAddr}
		if noisy(sw.status) {
			ok, suppressed := s.noise.allow()
			if !ok {
				s.m.suppressed.Inc()
				return
			}
			if suppressed > 0 {
				attrs = append(attrs, "suppressed_since_last", suppressed)
			}
		}
		s.log.Log(r.Context(), level, "request", attrs...)
	})
}

func statusLabel(c int) string { return strconv.Itoa(c) }
