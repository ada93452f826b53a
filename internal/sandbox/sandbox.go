// Package sandbox is msisync's zero-config Marketo: the Marketo simulator
// (marketosim) on a loopback port, with its records kept in SQLite in the
// data folder. Every record a call changes is committed before the call's
// response is written, as the queue and the store commit theirs, so a
// SIGKILL at any moment leaves queue, store and sandbox consistent: a link
// the store holds names a record the sandbox has.
package sandbox

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	_ "modernc.org/sqlite" // driver "sqlite"

	"github.com/msisync/msisync/internal/marketo/marketosim"
)

// Files in the data folder.
const (
	DBFile       = "marketo-sandbox.db"            // the records (SQLite)
	EndpointFile = "marketo-sandbox.endpoint.json" // where a running serve's sandbox answers
	legacyFile   = "marketo-sandbox.json"          // the records as saved by earlier versions
)

// Options configure Open.
type Options struct {
	DataDir    string // required
	ScoreField string // Marketo's MSI score field name (marketosim.Options.ScoreField)
	// Publish writes the endpoint to the data folder so other commands
	// (doctor, msi sync) use this sandbox instead of a copy of their own.
	Publish bool
	Logger  *slog.Logger
	// Configure, when set, sees the simulator before it serves (tests give
	// it Marketo's latency).
	Configure func(*marketosim.Server)
}

// Sandbox is a running sandbox. Point a Marketo client at URL with
// ClientID and ClientSecret.
type Sandbox struct {
	Sim                         *marketosim.Server
	URL, ClientID, ClientSecret string

	db      *sql.DB
	srv     *http.Server
	log     *slog.Logger
	dataDir string
	ep      *Endpoint // published
}

// Open loads the sandbox's records from the data folder and starts serving
// them on 127.0.0.1.
func Open(ctx context.Context, opts Options) (*Sandbox, error) {
	if opts.DataDir == "" {
		return nil, errors.New("sandbox: open: DataDir is empty")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(opts.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("sandbox: open %s: %w", opts.DataDir, err)
	}
	s := &Sandbox{log: opts.Logger, dataDir: opts.DataDir, ClientID: "sandbox-" + randomHex(4), ClientSecret: randomHex(16)}
	path := filepath.Join(opts.DataDir, DBFile)
	db, err := openDB(ctx, path)
	if err != nil {
		return nil, err
	}
	s.db = db
	fail := func(err error) (*Sandbox, error) { s.Close(); return nil, err }

	s.Sim = marketosim.New(marketosim.Options{ClientID: s.ClientID, ClientSecret: s.ClientSecret, ScoreField: opts.ScoreField, Persist: s.persist})
	if err := s.importLegacy(ctx); err != nil {
		return fail(err)
	}
	st, err := s.load(ctx)
	if err != nil {
		return fail(err)
	}
	if err := s.Sim.Restore(st); err != nil {
		return fail(fmt.Errorf("sandbox: restore from %s: %w", path, err))
	}
	if opts.Configure != nil {
		opts.Configure(s.Sim)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(fmt.Errorf("sandbox: listen on 127.0.0.1: %w", err))
	}
	s.srv = &http.Server{Handler: s.Sim, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.srv.Serve(ln) }()
	s.URL = "http://" + ln.Addr().String()
	if opts.Publish {
		ep := Endpoint{URL: s.URL, ClientID: s.ClientID, ClientSecret: s.ClientSecret}
		if err := publish(filepath.Join(opts.DataDir, EndpointFile), ep); err != nil {
			return fail(err)
		}
		s.ep = &ep
	}
	return s, nil
}

func openDB(ctx context.Context, path string) (*sql.DB, error) {
	// Synced contacts are personal data: 0600, and SQLite gives the -wal
	// and -shm files the database file's mode.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sandbox: open %s: %w", path, err)
	}
	f.Close()
	// synchronous=FULL: a commit is on disk before the call answers.
	db, err := sql.Open("sqlite", path+"?_txlock=immediate&_busy_timeout=10000&_journal_mode=WAL&_synchronous=FULL")
	if err != nil {
		return nil, fmt.Errorf("sandbox: open %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS records (
		object TEXT NOT NULL,
		key    TEXT NOT NULL,
		fields TEXT NOT NULL,
		PRIMARY KEY (object, key))`); err != nil {
		db.Close()
		return nil, fmt.Errorf("sandbox: open %s: create table: %w", path, err)
	}
	return db, nil
}

// persist is the simulator's Persist hook: one transaction per call.
func (s *Sandbox) persist(changes []marketosim.Change) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return s.persistErr(len(changes), err)
	}
	defer tx.Rollback() // after Commit it is a no-op
	for _, c := range changes {
		if c.Fields == nil {
			if _, err := tx.ExecContext(ctx, `DELETE FROM records WHERE object = ? AND key = ?`, c.Object, c.Key); err != nil {
				return s.persistErr(len(changes), err)
			}
			continue
		}
		b, err := json.Marshal(c.Fields)
		if err != nil {
			return s.persistErr(len(changes), fmt.Errorf("%s %s: %w", c.Object, c.Key, err))
		}
		// The upsert keeps an existing row's rowid: records load in the
		// order they were created.
		if _, err := tx.ExecContext(ctx, `INSERT INTO records (object, key, fields) VALUES (?, ?, ?)
			ON CONFLICT (object, key) DO UPDATE SET fields = excluded.fields`, c.Object, c.Key, string(b)); err != nil {
			return s.persistErr(len(changes), err)
		}
	}
	if err := tx.Commit(); err != nil {
		return s.persistErr(len(changes), err)
	}
	return nil
}

func (s *Sandbox) persistErr(n int, err error) error {
	err = fmt.Errorf("sandbox: save %d changed records: %w", n, err)
	s.log.Error("the Marketo sandbox cannot save its records; the call fails and is retried", "error", err)
	return err
}

func (s *Sandbox) load(ctx context.Context) (marketosim.State, error) {
	var st marketosim.State
	rows, err := s.db.QueryContext(ctx, `SELECT object, key, fields FROM records ORDER BY rowid`)
	if err != nil {
		return st, fmt.Errorf("sandbox: load records: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var obj, key, fields string
		if err := rows.Scan(&obj, &key, &fields); err != nil {
			return st, fmt.Errorf("sandbox: load records: %w", err)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(fields), &m); err != nil {
			return st, fmt.Errorf("sandbox: load %s %s: %w", obj, key, err)
		}
		st.Add(obj, m)
	}
	if err := rows.Err(); err != nil {
		return st, fmt.Errorf("sandbox: load records: %w", err)
	}
	return st, nil
}

// importLegacy moves the records an earlier version saved as JSON into the
// database, once (the file is renamed afterwards).
func (s *Sandbox) importLegacy(ctx context.Context) error {
	path := filepath.Join(s.dataDir, legacyFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sandbox: read %s: %w", path, err)
	}
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM records`).Scan(&n); err != nil {
		return fmt.Errorf("sandbox: import %s: %w", path, err)
	}
	if n == 0 {
		var st marketosim.State
		if err := json.Unmarshal(b, &st); err != nil {
			return fmt.Errorf("sandbox: import %s: %w (delete the file to start the sandbox empty)", path, err)
		}
		// Restoring and dumping through the simulator yields the records
		// with their ids, as the Persist hook writes them.
		if err := s.Sim.Restore(st); err != nil {
			return fmt.Errorf("sandbox: import %s: %w", path, err)
		}
		var changes []marketosim.Change
		d := s.Sim.Dump()
		for obj, recs := range map[string][]map[string]any{"salespersons": d.SalesPersons, "companies": d.Companies,
			"leads": d.Leads, "opportunities": d.Opportunities, "opportunities/roles": d.Roles} {
			for _, r := range recs {
				key := fmt.Sprint(r["id"])
				if g, ok := r["marketoGUID"].(string); ok && g != "" {
					key = g
				}
				changes = append(changes, marketosim.Change{Object: obj, Key: key, Fields: r})
			}
		}
		if err := s.persist(changes); err != nil {
			return fmt.Errorf("sandbox: import %s: %w", path, err)
		}
	}
	if err := os.Rename(path, path+".imported"); err != nil {
		return fmt.Errorf("sandbox: import %s: %w", path, err)
	}
	s.log.Info("imported the Marketo sandbox's records into its database", "from", path, "to", DBFile)
	return nil
}

// Control is the sandbox's own API (state, stats, MSI changes) for
// /sandbox/marketo.
func (s *Sandbox) Control() http.Handler { return s.Sim.Control() }

// RunMSI changes the MSI fields of n random leads every interval until ctx
// ends, as Marketo's scoring does, so the write-back has something to copy.
func (s *Sandbox) RunMSI(ctx context.Context, every time.Duration, n int) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.Sim.TickMSI(n) // persisted by the hook
		}
	}
}

// Close stops serving, withdraws the published endpoint and closes the
// database. Nothing is left to save: every change is committed already.
func (s *Sandbox) Close() error {
	var errs []error
	if s.srv != nil {
		errs = append(errs, s.srv.Close())
	}
	if s.ep != nil {
		errs = append(errs, unpublish(filepath.Join(s.dataDir, EndpointFile), *s.ep))
	}
	if s.db != nil {
		errs = append(errs, s.db.Close())
	}
	return errors.Join(errs...)
}

// Endpoint is where a running serve's sandbox answers (loopback; the file is
// 0600 like the webhook key).
type Endpoint struct {
	URL          string `json:"url"`
	ClientID     string `json:"clientId"`
	ClientSecret string `json:"clientSecret"`
}

func publish(path string, ep Endpoint) error {
	b, err := json.Marshal(ep)
	if err != nil {
		return fmt.Errorf("sandbox: publish endpoint: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("sandbox: publish endpoint %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("sandbox: publish endpoint %s: %w", path, err)
	}
	return nil
}

// unpublish removes the endpoint file if it is still ours (a second worker
// on the folder may have published its own since).
func unpublish(path string, ep Endpoint) error {
	var cur Endpoint
	b, err := os.ReadFile(path)
	if err != nil || json.Unmarshal(b, &cur) != nil || cur != ep {
		return nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("sandbox: withdraw endpoint %s: %w", path, err)
	}
	return nil
}

// Live reads the endpoint a running serve published in dataDir and checks
// that it answers with those credentials (a file left by a killed serve
// does not).
func Live(ctx context.Context, dataDir string) (Endpoint, bool) {
	var ep Endpoint
	b, err := os.ReadFile(filepath.Join(dataDir, EndpointFile))
	if err != nil || json.Unmarshal(b, &ep) != nil || ep.URL == "" {
		return ep, false
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	q := url.Values{"grant_type": {"client_credentials"}, "client_id": {ep.ClientID}, "client_secret": {ep.ClientSecret}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ep.URL+"/identity/oauth/token?"+q.Encode(), nil)
	if err != nil {
		return ep, false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ep, false
	}
	resp.Body.Close()
	return ep, resp.StatusCode == http.StatusOK
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
