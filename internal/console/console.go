// Package console is msisync's operator console: a few server-rendered pages
// under /console (overview, dead letters, record lookup, settings) behind the
// admin token, with embedded assets and no build step. It reads the same
// ports the admin API and the doctor use; main wires them.
package console

import (
	"context"
	"embed"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/config"
	"github.com/msisync/msisync/internal/doctor"
	"github.com/msisync/msisync/internal/marketo/marketotype"
	"github.com/msisync/msisync/internal/queue"
	"github.com/msisync/msisync/internal/store"
)

// Path is where the console is served.
const Path = "/console"

//go:embed assets
var assets embed.FS

// Doctor diagnoses a record (*doctor.Doctor).
type Doctor interface {
	Diagnose(ctx context.Context, entity, id string) (*doctor.Report, error)
}

// Links reads the store's Marketo ids.
type Links interface {
	GetLinks(ctx context.Context, kind string, externalIDs []string) (map[string]store.Link, error)
}

// People finds Marketo persons by email (the Marketo client).
type People interface {
	Query(ctx context.Context, obj marketotype.Object, filterType string, values []string, fields []string) ([]marketotype.Record, error)
}

// Budget is the Marketo call budget as the governor sees it.
type Budget struct {
	// Day is the quota's day (Marketo resets it at midnight US Central).
	Day string
	// Quota is the daily call budget (0: unlimited); Used is today's calls,
	// ByPurpose splits them (sync, msi, reconcile, …).
	Quota, Used int
	ByPurpose   map[string]int
	// WindowCalls were made in the rolling window of Window (20 s), of
	// WindowLimit allowed.
	WindowCalls, WindowLimit int
	Window                   time.Duration
}

// BudgetSource reports the Marketo budget (built with the shared governor;
// nil shows "not available").
type BudgetSource interface {
	Budget(ctx context.Context) (Budget, error)
}

// Cycle is the last run of a background loop (MSI write-back, reconcile).
type Cycle struct {
	Name     string // "MSI write-back", "Reconcile"
	Started  time.Time
	Finished time.Time
	OK       bool
	Detail   string // what it did, or why it failed
}

// CycleSource reports the last cycles (nil: the console falls back to the
// loops' cycle counters in the metrics).
type CycleSource interface {
	Cycles(ctx context.Context) ([]Cycle, error)
}

// Config configures the console. Token is required; every port is
// optional, and a page shows "not available" for what is nil.
type Config struct {
	// Token is the admin token the login form asks for.
	Token string
	// Secure marks cookies Secure (set behind TLS; requests over TLS get it anyway).
	Secure bool

	Queue       queue.Counter
	DeadLetters queue.DeadLetters
	Doctor      Doctor
	Links       Links
	History     store.History
	People      People
	Budget      BudgetSource
	Cycles      CycleSource
	Activity    *Activity
	Gatherer    prometheus.Gatherer
	// Settings is the effective configuration (config.Effective).
	Settings []config.Value
	// Role is what this process runs (serve, receiver, worker).
	Role string

	Clock  clock.Clock
	Logger *slog.Logger
}

type server struct {
	cfg   Config
	auth  *auth
	log   *slog.Logger
	pages map[string]*template.Template
}

// New returns the console's handler; it serves paths under /console.
func New(cfg Config) (http.Handler, error) {
	if len(cfg.Token) < 16 {
		return nil, errors.New("console: Config.Token must be the admin token (16 characters or more)")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.System{}
	}
	s := &server{cfg: cfg, log: cfg.Logger, pages: map[string]*template.Template{}}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.log = s.log.With("component", "console")
	s.auth = newAuth(cfg.Token, cfg.Secure, cfg.Clock.Now)
	for _, p := range []string{"login", "overview", "deadletters", "deadletter", "record", "settings"} {
		t, err := template.New(p).Funcs(funcs).ParseFS(assets, "assets/layout.html", "assets/"+p+".html")
		if err != nil {
			return nil, err
		}
		s.pages[p] = t
	}
	static, err := fs.Sub(assets, "assets/static")
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /console/static/", http.StripPrefix("/console/static/", staticFiles(static)))
	mux.HandleFunc("GET /console", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/console/", http.StatusFound)
	})
	mux.HandleFunc("GET /console/login", s.loginPage)
	mux.HandleFunc("POST /console/login", s.login)
	mux.Handle("POST /console/logout", s.mutating(s.logout))
	mux.Handle("GET /console/{$}", s.page(s.overview))
	mux.Handle("GET /console/deadletters", s.page(s.deadLetters))
	mux.Handle("GET /console/deadletters/{id}", s.page(s.deadLetter))
	mux.Handle("GET /console/records", s.page(s.record))
	mux.Handle("GET /console/settings", s.page(s.settings))
	mux.Handle("POST /console/api/deadletters/replay", s.mutating(s.bulk(false)))
	mux.Handle("POST /console/api/deadletters/purge", s.mutating(s.bulk(true)))
	mux.HandleFunc("/console/", func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, http.StatusNotFound, "Not found", "no console page at "+r.URL.Path)
	})
	return securityHeaders(mux), nil
}

// staticFiles serves the embedded CSS and JavaScript; they change only with
// the binary, so browsers may keep them for an hour.
func staticFiles(f fs.FS) http.Handler {
	h := http.FileServerFS(f)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "private, max-age=3600")
		h.ServeHTTP(w, r)
	})
}

// securityHeaders: no framing (clickjacking of the replay buttons), no
// inline script, no third-party anything.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		if !strings.HasPrefix(r.URL.Path, "/console/static/") {
			h.Set("Cache-Control", "no-store") // pages carry the CSRF token and live data
		}
		next.ServeHTTP(w, r)
	})
}

// page requires a session; without one a browser is sent to the login form.
func (s *server) page(h func(http.ResponseWriter, *http.Request, session)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sess, ok := s.auth.session(r)
		if !ok {
			http.Redirect(w, r, "/console/login?next="+urlQueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		h(w, r, sess)
	})
}

// mutating requires a session and the CSRF token.
func (s *server) mutating(h func(http.ResponseWriter, *http.Request, session)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
		sess, ok := s.auth.session(r)
		if !ok {
			writeProblem(w, http.StatusUnauthorized, "Unauthorized", "log in to the console first (/console/login)")
			return
		}
		if !s.auth.csrfOK(r, sess) {
			s.log.WarnContext(r.Context(), "console request refused: missing or wrong CSRF token", "path", r.URL.Path, "remote", clientAddr(r))
			writeProblem(w, http.StatusForbidden, "Forbidden", "missing or wrong CSRF token (send the page's token in the "+csrfHeader+" header or the csrf form field)")
			return
		}
		h(w, r, sess)
	})
}
