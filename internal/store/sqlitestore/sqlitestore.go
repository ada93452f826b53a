// Package sqlitestore is the embedded store.Store: one SQLite file (WAL mode)
// that the receiver and worker processes of one machine may share.
package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/store"

	"modernc.org/sqlite" // driver "sqlite"
)

// Options configure a Store. The zero value is usable.
type Options struct {
	// Clock gives the time for lease and lock expiry and for stamping rows
	// whose UpdatedAt is zero. Default: the system clock.
	Clock clock.Clock
	// Logger receives schema migration notices. Default: slog.Default().
	Logger *slog.Logger
	// BusyTimeout is how long a statement waits for another process's write
	// lock before failing. Default: 10s.
	BusyTimeout time.Duration
}

// Store is a store.Store on a SQLite file.
type Store struct {
	// w has a single connection, so writers of this process queue in Go
	// rather than polling SQLite's file lock; other processes still contend
	// through busy_timeout.
	w    *sql.DB
	r    *sql.DB // concurrent readers (WAL lets them run beside the writer)
	clk  clock.Clock
	log  *slog.Logger
	path string
	// The hot upserts, prepared once on w: a batch runs them chunk after
	// chunk of chunkRows rows instead of parsing a new statement per chunk.
	linksStmt, versionsStmt *sql.Stmt
}

// chunkRows is the rows per prepared multi-row upsert. A shorter last chunk
// repeats its last row, which an upsert of the same values leaves as it is.
const chunkRows = 100

var _ store.Store = (*Store)(nil)

// SQLite allows 32766 bound parameters per statement; these keep statements
// well inside that and short enough to parse quickly.
const (
	maxRows = 500  // rows per multi-row INSERT
	maxIDs  = 1000 // ids per IN (...) list
)

// Open opens (creating if needed) the SQLite database at path and brings its
// schema up to date. ":memory:" gives a private in-memory database.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	if path == "" {
		return nil, errors.New("sqlitestore: open: path is empty")
	}
	if strings.ContainsRune(path, '?') {
		return nil, fmt.Errorf("sqlitestore: open %q: path must not contain '?'", path)
	}
	if opts.BusyTimeout < 0 {
		return nil, fmt.Errorf("sqlitestore: open %q: Options.BusyTimeout %v is negative", path, opts.BusyTimeout)
	}
	if opts.BusyTimeout == 0 {
		opts.BusyTimeout = 10 * time.Second
	}
	if path != ":memory:" {
		// Links and versions name people's records: the file is created
		// 0600 whatever the folder's mode, and SQLite gives its -wal and
		// -shm files the same mode.
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("sqlitestore: open %q: %w", path, err)
		}
		f.Close()
	}
	s := &Store{clk: opts.Clock, log: opts.Logger, path: path}
	if s.clk == nil {
		s.clk = clock.System{}
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	// _txlock=immediate: a write transaction takes the write lock at BEGIN,
	// so it waits (busy_timeout) instead of failing when it later upgrades.
	dsn := fmt.Sprintf("%s?_txlock=immediate&_busy_timeout=%d&_journal_mode=WAL&_synchronous=NORMAL",
		path, opts.BusyTimeout.Milliseconds())
	if path == ":memory:" {
		dsn = ":memory:?_txlock=immediate"
	}
	w, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: open %q: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	s.w, s.r = w, w
	if path != ":memory:" {
		r, err := sql.Open("sqlite", dsn)
		if err != nil {
			w.Close()
			return nil, fmt.Errorf("sqlitestore: open %q: %w", path, err)
		}
		n := max(4, runtime.GOMAXPROCS(0))
		r.SetMaxOpenConns(n)
		r.SetMaxIdleConns(n)
		s.r = r
	}
	if err := s.migrateRetrying(ctx, opts.BusyTimeout); err != nil {
		s.Close()
		return nil, fmt.Errorf("sqlitestore: open %q: %w", path, err)
	}
	if s.linksStmt, err = w.PrepareContext(ctx, upsertLinks); err == nil {
		s.versionsStmt, err = w.PrepareContext(ctx, upsertVersions)
	}
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("sqlitestore: open %q: prepare: %w", path, err)
	}
	return s, nil
}

var (
	upsertLinks = `INSERT INTO links (kind, external_id, marketo_id, entity, email, updated_at) VALUES ` +
		placeholders(chunkRows, 6) + ` ON CONFLICT (kind, external_id) DO UPDATE SET
			marketo_id = excluded.marketo_id, entity = excluded.entity, email = excluded.email,
			updated_at = excluded.updated_at`
	upsertVersions = `INSERT INTO record_versions (record, version, cols) VALUES ` + placeholders(chunkRows, 3) +
		` ON CONFLICT (record) DO UPDATE SET version = excluded.version, cols = excluded.cols`
)

// execChunks runs the prepared chunkRows-row stmt inside tx over rows rows
// of width arguments each (row i is args[i*width:(i+1)*width]).
func execChunks(ctx context.Context, tx *sql.Tx, stmt *sql.Stmt, width int, args []any) error {
	st := tx.StmtContext(ctx, stmt)
	defer st.Close()
	buf := make([]any, 0, chunkRows*width)
	for start := 0; start < len(args); start += chunkRows * width {
		chunk := args[start:min(start+chunkRows*width, len(args))]
		buf = append(buf[:0], chunk...)
		last := chunk[len(chunk)-width:]
		for len(buf) < cap(buf) {
			buf = append(buf, last...)
		}
		if _, err := st.ExecContext(ctx, buf...); err != nil {
			return err
		}
	}
	return nil
}

// migrateRetrying runs migrate, retrying SQLITE_BUSY for up to wait: while
// another process opening the same file switches it to WAL or recovers its
// WAL index, SQLite answers BEGIN with SQLITE_BUSY at once instead of
// calling the busy handler (seen when two workers start together). The wait
// is real time, as SQLite's busy timeout is.
func (s *Store) migrateRetrying(ctx context.Context, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		err := s.migrate(ctx)
		var se *sqlite.Error
		if err == nil || !errors.As(err, &se) || se.Code()&0xff != sqliteBusy || time.Now().After(deadline) {
			return err
		}
		t := time.NewTimer(25 * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return err
		}
	}
}

// sqliteBusy is SQLITE_BUSY, the primary code of every busy result.
const sqliteBusy = 5

// migrations[i] brings the schema from user_version i to i+1. Append only.
var migrations = []string{
	`CREATE TABLE links (
		kind        TEXT NOT NULL,
		external_id TEXT NOT NULL,
		marketo_id  TEXT NOT NULL,
		entity      TEXT NOT NULL,
		email       TEXT NOT NULL,
		updated_at  INTEGER NOT NULL, -- unix microseconds
		PRIMARY KEY (kind, external_id)
	) WITHOUT ROWID;
	CREATE TABLE versions (
		key     TEXT PRIMARY KEY,
		version INTEGER NOT NULL
	) WITHOUT ROWID;
	CREATE TABLE connections (
		id             TEXT PRIMARY KEY,
		opportunity_id TEXT NOT NULL,
		person_id      TEXT NOT NULL,
		role           TEXT NOT NULL,
		updated_at     INTEGER NOT NULL
	) WITHOUT ROWID;
	CREATE INDEX connections_opportunity ON connections (opportunity_id);
	CREATE TABLE msi_values (
		person_id TEXT PRIMARY KEY,
		vals      TEXT NOT NULL -- JSON object field -> value
	) WITHOUT ROWID;
	CREATE TABLE leases (
		name       TEXT PRIMARY KEY,
		holder     TEXT NOT NULL,
		expires_at INTEGER NOT NULL
	) WITHOUT ROWID;
	CREATE TABLE record_locks (
		key        TEXT PRIMARY KEY,
		owner      TEXT NOT NULL,
		expires_at INTEGER NOT NULL
	) WITHOUT ROWID;
	CREATE TABLE meta (
		key   TEXT PRIMARY KEY,
		value TEXT NOT NULL
	) WITHOUT ROWID;`,
	// Versions move to one row per record (versions.go).
	`CREATE TABLE record_versions (
		record  TEXT PRIMARY KEY, -- a key, or what precedes the first '#' of a key
		version INTEGER,          -- the version of the key itself; NULL: none
		cols    TEXT NOT NULL DEFAULT '' -- "<bytes>:<column><version>;" per "record#column" key
	) WITHOUT ROWID;
	INSERT INTO record_versions (record, version) SELECT key, version FROM versions WHERE instr(key, '#') = 0;
	INSERT INTO record_versions (record, cols)
		SELECT substr(key, 1, instr(key, '#') - 1),
			group_concat(length(CAST(substr(key, instr(key, '#') + 1) AS BLOB)) || ':' || substr(key, instr(key, '#') + 1) || version || ';', '')
		FROM versions WHERE instr(key, '#') > 0 GROUP BY 1
		ON CONFLICT (record) DO UPDATE SET cols = excluded.cols;
	DROP TABLE versions;`,
}

// SchemaVersion is the PRAGMA user_version this package writes.
const SchemaVersion = 2

func (s *Store) migrate(ctx context.Context) error {
	// The immediate transaction serialises two processes opening a new file.
	return s.tx(ctx, func(tx *sql.Tx) error {
		var v int
		if err := tx.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v); err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		if v > len(migrations) {
			return fmt.Errorf("schema version %d is newer than this msisync understands (%d)", v, len(migrations))
		}
		for i := v; i < len(migrations); i++ {
			if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
				return fmt.Errorf("migrate schema to version %d: %w", i+1, err)
			}
			s.log.Info("sqlitestore: schema migrated", "path", s.path, "version", i+1)
		}
		if v < len(migrations) {
			if _, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, len(migrations))); err != nil {
				return fmt.Errorf("write schema version: %w", err)
			}
		}
		return nil
	})
}

// Close closes the database.
func (s *Store) Close() error {
	var err error
	for _, st := range []*sql.Stmt{s.linksStmt, s.versionsStmt} {
		if st != nil {
			err = errors.Join(err, st.Close())
		}
	}
	if s.r != s.w && s.r != nil {
		err = errors.Join(err, s.r.Close())
	}
	if s.w != nil {
		err = errors.Join(err, s.w.Close())
	}
	if err != nil {
		return fmt.Errorf("sqlitestore: close %q: %w", s.path, err)
	}
	return nil
}

// Ping checks the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.r.PingContext(ctx); err != nil {
		return fmt.Errorf("sqlitestore: ping %q: %w", s.path, err)
	}
	var one int
	if err := s.r.QueryRowContext(ctx, `SELECT 1`).Scan(&one); err != nil {
		return fmt.Errorf("sqlitestore: ping %q: %w", s.path, err)
	}
	return nil
}

func (s *Store) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// now is the clock's time as stored: unix microseconds, like PostgreSQL.
func (s *Store) now() int64 { return s.clk.Now().UnixMicro() }

func (s *Store) stamp(t time.Time) int64 {
	if t.IsZero() {
		return s.now()
	}
	return t.UnixMicro()
}

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

// placeholders returns "(?,?,?),(?,?,?)" for rows rows of cols columns.
func placeholders(rows, cols int) string {
	one := "(" + strings.TrimSuffix(strings.Repeat("?,", cols), ",") + ")"
	return strings.TrimSuffix(strings.Repeat(one+",", rows), ",")
}

func inList(n int) string { return strings.TrimSuffix(strings.Repeat("?,", n), ",") }

// uniq drops duplicate and keeps order.
func uniq(ids []string) []string {
	seen := make(map[string]struct{}, len(ids))
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if _, ok := seen[id]; !ok {
			seen[id] = struct{}{}
			out = append(out, id)
		}
	}
	return out
}

// jsonEach replaces an IN list's placeholders: the ids come as one JSON
// array argument (jsonargs.go).
const jsonEach = `SELECT value FROM json_each(?)`

// querier is a *sql.DB or a *sql.Tx.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// scanRows runs query with args and calls scan for each row.
func scanRows(ctx context.Context, db querier, query string, args []any, scan func(*sql.Rows) error) error {
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// queryIn runs query (which has a single "%s" for the IN list, after the
// fixed args) over ids in chunks and calls scan for each row.
func queryIn(ctx context.Context, db *sql.DB, query string, fixed []any, ids []string, scan func(*sql.Rows) error) error {
	if len(ids) == 0 {
		return nil
	}
	if list, ok := jsonStrings(ids); ok {
		args := append(slices.Clip(fixed), list)
		return scanRows(ctx, db, fmt.Sprintf(query, jsonEach), args, scan)
	}
	ids = uniq(ids)
	for chunk := range slices.Chunk(ids, maxIDs) {
		args := make([]any, 0, len(fixed)+len(chunk))
		args = append(args, fixed...)
		for _, id := range chunk {
			args = append(args, id)
		}
		rows, err := db.QueryContext(ctx, fmt.Sprintf(query, inList(len(chunk))), args...)
		if err != nil {
			return err
		}
		for rows.Next() {
			if err := scan(rows); err != nil {
				rows.Close()
				return err
			}
		}
		if err := rows.Close(); err != nil {
			return err
		}
		if err := rows.Err(); err != nil {
			return err
		}
	}
	return nil
}

// execIn runs stmt (a single "%s" for the IN list, after the fixed args)
// over ids in chunks inside tx.
func execIn(ctx context.Context, tx *sql.Tx, stmt string, fixed []any, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	if list, ok := jsonStrings(ids); ok {
		_, err := tx.ExecContext(ctx, fmt.Sprintf(stmt, jsonEach), append(slices.Clip(fixed), list)...)
		return err
	}
	for chunk := range slices.Chunk(uniq(ids), maxIDs) {
		args := make([]any, 0, len(fixed)+len(chunk))
		args = append(args, fixed...)
		for _, id := range chunk {
			args = append(args, id)
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf(stmt, inList(len(chunk))), args...); err != nil {
			return err
		}
	}
	return nil
}

// queryInTx is queryIn inside tx (no fixed arguments).
func queryInTx(ctx context.Context, tx *sql.Tx, query string, ids []string, scan func(*sql.Rows) error) error {
	run := func(q string, args []any) error { return scanRows(ctx, tx, q, args, scan) }
	if len(ids) == 0 {
		return nil
	}
	if list, ok := jsonStrings(ids); ok {
		return run(fmt.Sprintf(query, jsonEach), []any{list})
	}
	for chunk := range slices.Chunk(uniq(ids), maxIDs) {
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = id
		}
		if err := run(fmt.Sprintf(query, inList(len(chunk))), args); err != nil {
			return err
		}
	}
	return nil
}

// GetLinks returns the links of kind for externalIDs; missing ids are absent.
func (s *Store) GetLinks(ctx context.Context, kind string, externalIDs []string) (map[string]store.Link, error) {
	out := make(map[string]store.Link, len(externalIDs))
	err := queryIn(ctx, s.r,
		`SELECT external_id, marketo_id, entity, email, updated_at FROM links WHERE kind = ? AND external_id IN (%s)`,
		[]any{kind}, externalIDs, func(rows *sql.Rows) error {
			l := store.Link{Kind: kind}
			var at int64
			if err := rows.Scan(&l.ExternalID, &l.MarketoID, &l.Entity, &l.Email, &at); err != nil {
				return err
			}
			l.UpdatedAt = fromMicros(at)
			out[l.ExternalID] = l
			return nil
		})
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: get %d %s links: %w", len(externalIDs), kind, err)
	}
	return out, nil
}

// PutLinks upserts links; a zero UpdatedAt is stamped with the clock. When
// one batch holds the same link twice, the last one wins.
func (s *Store) PutLinks(ctx context.Context, links []store.Link) error {
	if len(links) == 0 {
		return nil
	}
	if err := s.tx(ctx, func(tx *sql.Tx) error { return s.putLinks(ctx, tx, links) }); err != nil {
		return fmt.Errorf("sqlitestore: put %d links: %w", len(links), err)
	}
	return nil
}

// putLinks upserts links inside tx (PutLinks, Apply). SQLite applies the
// rows in order, so a repeated key ends with its last values.
func (s *Store) putLinks(ctx context.Context, tx *sql.Tx, links []store.Link) error {
	args := make([]any, 0, 6*len(links))
	for _, l := range links {
		args = append(args, l.Kind, l.ExternalID, l.MarketoID, l.Entity, l.Email, s.stamp(l.UpdatedAt))
	}
	return execChunks(ctx, tx, s.linksStmt, 6, args)
}

// DeleteLinks deletes the links of kind for externalIDs.
func (s *Store) DeleteLinks(ctx context.Context, kind string, externalIDs []string) error {
	if len(externalIDs) == 0 {
		return nil
	}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		return execIn(ctx, tx, `DELETE FROM links WHERE kind = ? AND external_id IN (%s)`, []any{kind}, externalIDs)
	})
	if err != nil {
		return fmt.Errorf("sqlitestore: delete %d %s links: %w", len(externalIDs), kind, err)
	}
	return nil
}

// ListLinks returns up to limit links of kind with external id > after, in
// external-id (byte) order.
func (s *Store) ListLinks(ctx context.Context, kind string, after string, limit int) ([]store.Link, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("sqlitestore: list %s links: limit %d must be positive", kind, limit)
	}
	rows, err := s.r.QueryContext(ctx, `SELECT external_id, marketo_id, entity, email, updated_at FROM links
		WHERE kind = ? AND external_id > ? ORDER BY external_id LIMIT ?`, kind, after, limit)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: list %s links after %q: %w", kind, after, err)
	}
	defer rows.Close()
	var out []store.Link
	for rows.Next() {
		l := store.Link{Kind: kind}
		var at int64
		if err := rows.Scan(&l.ExternalID, &l.MarketoID, &l.Entity, &l.Email, &at); err != nil {
			return nil, fmt.Errorf("sqlitestore: list %s links after %q: %w", kind, after, err)
		}
		l.UpdatedAt = fromMicros(at)
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlitestore: list %s links after %q: %w", kind, after, err)
	}
	return out, nil
}

// CountLinks counts the links of kind.
func (s *Store) CountLinks(ctx context.Context, kind string) (int, error) {
	var n int
	if err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM links WHERE kind = ?`, kind).Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlitestore: count %s links: %w", kind, err)
	}
	return n, nil
}

func scanConn(rows *sql.Rows) (store.Connection, error) {
	var c store.Connection
	var at int64
	if err := rows.Scan(&c.ID, &c.OpportunityID, &c.PersonID, &c.Role, &at); err != nil {
		return c, err
	}
	c.UpdatedAt = fromMicros(at)
	return c, nil
}

// GetConnections returns the stored connections by id; missing ids are absent.
func (s *Store) GetConnections(ctx context.Context, ids []string) (map[string]store.Connection, error) {
	out := make(map[string]store.Connection, len(ids))
	err := queryIn(ctx, s.r,
		`SELECT id, opportunity_id, person_id, role, updated_at FROM connections WHERE id IN (%s)`, nil, ids,
		func(rows *sql.Rows) error {
			c, err := scanConn(rows)
			if err != nil {
				return err
			}
			out[c.ID] = c
			return nil
		})
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: get %d connections: %w", len(ids), err)
	}
	return out, nil
}

// PutConnections upserts connections; a zero UpdatedAt is stamped with the clock.
func (s *Store) PutConnections(ctx context.Context, conns []store.Connection) error {
	if len(conns) == 0 {
		return nil
	}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		for chunk := range slices.Chunk(conns, maxRows) {
			args := make([]any, 0, 5*len(chunk))
			for _, c := range chunk {
				args = append(args, c.ID, c.OpportunityID, c.PersonID, c.Role, s.stamp(c.UpdatedAt))
			}
			q := `INSERT INTO connections (id, opportunity_id, person_id, role, updated_at) VALUES ` +
				placeholders(len(chunk), 5) + ` ON CONFLICT (id) DO UPDATE SET
				opportunity_id = excluded.opportunity_id, person_id = excluded.person_id,
				role = excluded.role, updated_at = excluded.updated_at`
			if _, err := tx.ExecContext(ctx, q, args...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlitestore: put %d connections: %w", len(conns), err)
	}
	return nil
}

// DeleteConnections deletes connections by id.
func (s *Store) DeleteConnections(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		return execIn(ctx, tx, `DELETE FROM connections WHERE id IN (%s)`, nil, ids)
	})
	if err != nil {
		return fmt.Errorf("sqlitestore: delete %d connections: %w", len(ids), err)
	}
	return nil
}

// ConnectionsByOpportunity lists an opportunity's connections by id.
func (s *Store) ConnectionsByOpportunity(ctx context.Context, opportunityID string) ([]store.Connection, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT id, opportunity_id, person_id, role, updated_at FROM connections
		WHERE opportunity_id = ? ORDER BY id`, opportunityID)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: connections of opportunity %s: %w", opportunityID, err)
	}
	defer rows.Close()
	var out []store.Connection
	for rows.Next() {
		c, err := scanConn(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlitestore: connections of opportunity %s: %w", opportunityID, err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlitestore: connections of opportunity %s: %w", opportunityID, err)
	}
	return out, nil
}

// GetMSIValues returns the MSI values last written per person; persons
// never written are absent.
func (s *Store) GetMSIValues(ctx context.Context, personIDs []string) (map[string]map[string]string, error) {
	out := make(map[string]map[string]string, len(personIDs))
	err := queryIn(ctx, s.r, `SELECT person_id, vals FROM msi_values WHERE person_id IN (%s)`, nil, personIDs,
		func(rows *sql.Rows) error {
			var id string
			var raw []byte
			if err := rows.Scan(&id, &raw); err != nil {
				return err
			}
			vals := map[string]string{}
			if err := json.Unmarshal(raw, &vals); err != nil {
				return fmt.Errorf("decode values of person %s: %w", id, err)
			}
			out[id] = vals
			return nil
		})
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: get MSI values of %d persons: %w", len(personIDs), err)
	}
	return out, nil
}

// PutMSIValues replaces the whole map of each given person.
func (s *Store) PutMSIValues(ctx context.Context, values map[string]map[string]string) error {
	if len(values) == 0 {
		return nil
	}
	ids := make([]string, 0, len(values))
	for id := range values {
		ids = append(ids, id)
	}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		for chunk := range slices.Chunk(ids, maxRows) {
			args := make([]any, 0, 2*len(chunk))
			for _, id := range chunk {
				vals := values[id]
				if vals == nil {
					vals = map[string]string{}
				}
				raw, err := json.Marshal(vals)
				if err != nil {
					return fmt.Errorf("encode values of person %s: %w", id, err)
				}
				args = append(args, id, string(raw))
			}
			q := `INSERT INTO msi_values (person_id, vals) VALUES ` + placeholders(len(chunk), 2) +
				` ON CONFLICT (person_id) DO UPDATE SET vals = excluded.vals`
			if _, err := tx.ExecContext(ctx, q, args...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlitestore: put MSI values of %d persons: %w", len(values), err)
	}
	return nil
}

// AcquireLease takes or renews the named lease for holder until now+ttl.
func (s *Store) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error) {
	if ttl <= 0 {
		return false, fmt.Errorf("sqlitestore: acquire lease %q: ttl %v must be positive", name, ttl)
	}
	now := s.clk.Now()
	res, err := s.w.ExecContext(ctx, `INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
		WHERE leases.holder = excluded.holder OR leases.expires_at <= ?`,
		name, holder, now.Add(ttl).UnixMicro(), now.UnixMicro())
	if err != nil {
		return false, fmt.Errorf("sqlitestore: acquire lease %q for %q: %w", name, holder, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("sqlitestore: acquire lease %q for %q: %w", name, holder, err)
	}
	return n == 1, nil
}

// ReleaseLease gives up holder's lease; another holder's lease is untouched.
func (s *Store) ReleaseLease(ctx context.Context, name, holder string) error {
	if _, err := s.w.ExecContext(ctx, `DELETE FROM leases WHERE name = ? AND holder = ?`, name, holder); err != nil {
		return fmt.Errorf("sqlitestore: release lease %q for %q: %w", name, holder, err)
	}
	return nil
}

// LockRecords locks the free (or own, or expired) keys for owner until
// now+ttl and returns them in the order asked.
func (s *Store) LockRecords(ctx context.Context, owner string, keys []string, ttl time.Duration) ([]string, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("sqlitestore: lock %d records for %q: ttl %v must be positive", len(keys), owner, ttl)
	}
	keys = uniq(keys)
	if len(keys) == 0 {
		return nil, nil
	}
	now := s.clk.Now()
	expires := now.Add(ttl).UnixMicro()
	got := make(map[string]struct{}, len(keys))
	collect := func(rows *sql.Rows) error {
		for rows.Next() {
			var k string
			if err := rows.Scan(&k); err != nil {
				rows.Close()
				return err
			}
			got[k] = struct{}{}
		}
		if err := rows.Close(); err != nil {
			return err
		}
		return rows.Err()
	}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if list, ok := jsonStrings(keys); ok {
			// Usually every key is taken (or re-taken by its owner): then
			// the number of rows changed says so, without returning them.
			res, err := tx.ExecContext(ctx, `INSERT INTO record_locks (key, owner, expires_at)
				SELECT value, ?, ? FROM json_each(?) WHERE true
				ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
				WHERE record_locks.owner = excluded.owner OR (record_locks.expires_at <= ? AND NOT EXISTS (SELECT 1 FROM leases WHERE name = 'record-locks/' || record_locks.owner AND expires_at > ?))`, owner, expires, list, now.UnixMicro(), now.UnixMicro())
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err == nil && n == int64(len(keys)) {
				for _, k := range keys {
					got[k] = struct{}{}
				}
				return nil
			}
			// One statement for the whole batch.
			rows, err := tx.QueryContext(ctx, `INSERT INTO record_locks (key, owner, expires_at)
				SELECT value, ?, ? FROM json_each(?) WHERE true
				ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
				WHERE record_locks.owner = excluded.owner OR (record_locks.expires_at <= ? AND NOT EXISTS (SELECT 1 FROM leases WHERE name = 'record-locks/' || record_locks.owner AND expires_at > ?))
				RETURNING key`, owner, expires, list, now.UnixMicro(), now.UnixMicro())
			if err != nil {
				return err
			}
			return collect(rows)
		}
		for chunk := range slices.Chunk(keys, maxRows) {
			args := make([]any, 0, 3*len(chunk)+1)
			for _, k := range chunk {
				args = append(args, k, owner, expires)
			}
			args = append(args, now.UnixMicro(), now.UnixMicro())
			q := `INSERT INTO record_locks (key, owner, expires_at) VALUES ` + placeholders(len(chunk), 3) + `
				ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
				WHERE record_locks.owner = excluded.owner OR (record_locks.expires_at <= ? AND NOT EXISTS (SELECT 1 FROM leases WHERE name = 'record-locks/' || record_locks.owner AND expires_at > ?))
				RETURNING key`
			rows, err := tx.QueryContext(ctx, q, args...)
			if err != nil {
				return err
			}
			if err := collect(rows); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: lock %d records for %q: %w", len(keys), owner, err)
	}
	out := make([]string, 0, len(got))
	for _, k := range keys {
		if _, ok := got[k]; ok {
			out = append(out, k)
		}
	}
	return out, nil
}

// RenewLockLease extends owner's lock lease to now+ttl (store.LockLeaser):
// every record lock of owner then lasts at least as long. It reports whether
// the lease was still alive.
func (s *Store) RenewLockLease(ctx context.Context, owner string, ttl time.Duration) (bool, error) {
	if ttl <= 0 {
		return false, fmt.Errorf("sqlitestore: renew lock lease of %q: ttl %v must be positive", owner, ttl)
	}
	now := s.clk.Now()
	var alive bool
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var cur int64
		err := tx.QueryRowContext(ctx, `SELECT expires_at FROM leases WHERE name = ?`, lockLease(owner)).Scan(&cur)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		alive = err == nil && cur > now.UnixMicro()
		if !alive {
			// Each worker process has an owner name of its own: forget the
			// lock leases of processes gone for an hour (rare, not per renewal).
			if _, err := tx.ExecContext(ctx, `DELETE FROM leases WHERE name LIKE 'record-locks/%' AND expires_at < ?`,
				now.Add(-time.Hour).UnixMicro()); err != nil {
				return err
			}
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at`,
			lockLease(owner), owner, now.Add(ttl).UnixMicro())
		return err
	})
	if err != nil {
		return false, fmt.Errorf("sqlitestore: renew lock lease of %q: %w", owner, err)
	}
	return alive, nil
}

// lockLease is the leases row of owner's record locks (the SQL above builds
// the same name from record_locks.owner).
func lockLease(owner string) string { return "record-locks/" + owner }

// UnlockRecords frees owner's locks on keys; other owners' locks stay.
func (s *Store) UnlockRecords(ctx context.Context, owner string, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		return execIn(ctx, tx, `DELETE FROM record_locks WHERE owner = ? AND key IN (%s)`, []any{owner}, keys)
	})
	if err != nil {
		return fmt.Errorf("sqlitestore: unlock %d records for %q: %w", len(keys), owner, err)
	}
	return nil
}

// RecordLockExpiry returns when each key's unexpired lock ends.
func (s *Store) RecordLockExpiry(ctx context.Context, keys []string) (map[string]time.Time, error) {
	keys = uniq(keys)
	out := make(map[string]time.Time, len(keys))
	now := s.clk.Now().UnixMicro()
	for chunk := range slices.Chunk(keys, maxRows) {
		args := make([]any, 0, len(chunk)+1)
		args = append(args, now)
		for _, k := range chunk {
			args = append(args, k)
		}
		// A lock lasts while its own expiry or its owner's lock lease does.
		rows, err := s.r.QueryContext(ctx, `SELECT r.key, max(r.expires_at, coalesce(l.expires_at, 0)) AS e
			FROM record_locks r LEFT JOIN leases l ON l.name = 'record-locks/' || r.owner
			WHERE e > ? AND r.key IN (`+inList(len(chunk))+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("sqlitestore: lock expiry of %d records: %w", len(keys), err)
		}
		for rows.Next() {
			var k string
			var exp int64
			if err := rows.Scan(&k, &exp); err != nil {
				rows.Close()
				return nil, fmt.Errorf("sqlitestore: lock expiry of %d records: %w", len(keys), err)
			}
			out[k] = time.UnixMicro(exp)
		}
		if err := rows.Close(); err != nil {
			return nil, fmt.Errorf("sqlitestore: lock expiry of %d records: %w", len(keys), err)
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("sqlitestore: lock expiry of %d records: %w", len(keys), err)
		}
	}
	return out, nil
}

// GetMeta returns the value stored under key and whether there is one.
func (s *Store) GetMeta(ctx context.Context, key string) (string, bool, error) {
	var v string
	err := s.r.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("sqlitestore: get meta %q: %w", key, err)
	}
	return v, true, nil
}

// PutMeta stores value under key.
func (s *Store) PutMeta(ctx context.Context, key, value string) error {
	_, err := s.w.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES (?, ?)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value)
	if err != nil {
		return fmt.Errorf("sqlitestore: put meta %q: %w", key, err)
	}
	return nil
}
