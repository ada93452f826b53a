// Package pgstore is the store.Store on PostgreSQL (pgx), for several worker
// replicas sharing one state. Every method is a single statement, so each
// is atomic on its own; batches travel as arrays (unnest / = ANY), one round
// trip per call whatever the batch size.
//
// Replicas coordinate through rows, not sessions: a record lock or lease is
// a row with an owner and an expiry, taken by a conditional upsert
// (INSERT … ON CONFLICT DO UPDATE … WHERE owner = me OR expired). PostgreSQL
// serialises conflicting upserts on the row, so two replicas never both get
// one key, and a crashed replica's locks simply expire: nothing depends on
// a session staying open. Keys are sorted before every
// multi-row write so concurrent writers take row locks in the same order;
// the rare deadlock or serialization failure is retried.
package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/msisync/msisync/internal/clock"
	"github.com/msisync/msisync/internal/store"
)

// DefaultSchema is the schema the tables live in when Options.Schema is empty.
const DefaultSchema = "msisync"

// Options configure a Store. The zero value is usable.
type Options struct {
	// Schema holds msisync's tables; it is created if missing. Default
	// "msisync". Lower-case letters, digits and '_', starting with a letter
	// or '_', at most 63 bytes.
	Schema string
	// Clock gives the time for lease and lock expiry and for stamping rows
	// whose UpdatedAt is zero. Default: the system clock. Replicas compare
	// their own clocks' times, so keep their clocks in sync (NTP).
	Clock clock.Clock
	// Logger receives schema migration notices. Default: slog.Default().
	Logger *slog.Logger
}

// Store is a store.Store on PostgreSQL.
type Store struct {
	pool   *pgxpool.Pool
	clk    clock.Clock
	log    *slog.Logger
	schema string
	q      queries
}

var _ store.Store = (*Store)(nil)

var schemaName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// Open connects to the database at url (a postgres:// URL or key=value
// string that pgx accepts) and brings the schema up to date.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	if opts.Schema == "" {
		opts.Schema = DefaultSchema
	}
	if !schemaName.MatchString(opts.Schema) {
		return nil, fmt.Errorf("pgstore: open: Options.Schema %q must be lower-case letters, digits and '_', starting with a letter or '_', at most 63 bytes", opts.Schema)
	}
	if url == "" {
		return nil, errors.New("pgstore: open: database URL is empty")
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx's parse errors can quote the URL, password included.
		return nil, fmt.Errorf("pgstore: open %s: invalid database URL", Redact(url))
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pgstore: open %s: %w", Redact(url), err)
	}
	s := &Store{pool: pool, clk: opts.Clock, log: opts.Logger, schema: opts.Schema, q: newQueries(opts.Schema)}
	if s.clk == nil {
		s.clk = clock.System{}
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("pgstore: open %s schema %s: %w", Redact(url), opts.Schema, err)
	}
	return s, nil
}

// Redact returns url with any password replaced, for logs and errors.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		if strings.Contains(raw, "password") || strings.Contains(raw, "@") {
			return "(connection string)"
		}
		return raw
	}
	// password, and sslpassword (the client key's passphrase).
	q, changed := u.Query(), false
	for k := range q {
		if strings.Contains(strings.ToLower(k), "password") {
			q.Set(k, "xxxxx")
			changed = true
		}
	}
	if changed {
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

// migrations[i] brings the schema from version i to i+1; "{s}" is the
// quoted schema name. Append only.
var migrations = []string{
	`CREATE TABLE {s}.links (
		kind        text COLLATE "C" NOT NULL,
		external_id text COLLATE "C" NOT NULL, -- "C": byte order, as SQLite pages
		marketo_id  text NOT NULL,
		entity      text NOT NULL,
		email       text NOT NULL,
		updated_at  timestamptz NOT NULL,
		PRIMARY KEY (kind, external_id)
	);
	CREATE TABLE {s}.versions (
		key     text PRIMARY KEY,
		version bigint NOT NULL
	);
	CREATE TABLE {s}.connections (
		id             text PRIMARY KEY,
		opportunity_id text NOT NULL,
		person_id      text NOT NULL,
		role           text NOT NULL,
		updated_at     timestamptz NOT NULL
	);
	CREATE INDEX connections_opportunity ON {s}.connections (opportunity_id);
	CREATE TABLE {s}.msi_values (
		person_id text PRIMARY KEY,
		vals      jsonb NOT NULL
	);
	CREATE TABLE {s}.leases (
		name       text PRIMARY KEY,
		holder     text NOT NULL,
		expires_at timestamptz NOT NULL
	);
	CREATE TABLE {s}.record_locks (
		key        text PRIMARY KEY,
		owner      text NOT NULL,
		expires_at timestamptz NOT NULL
	);
	CREATE TABLE {s}.meta (
		key   text PRIMARY KEY,
		value text NOT NULL
	);`,
}

// SchemaVersion is the schema version this package writes.
const SchemaVersion = 1

func (s *Store) migrate(ctx context.Context) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin migration: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after commit
	// Replicas starting together would race on CREATE ... IF NOT EXISTS
	// (unique violations in the catalogue); one migrates, the others wait.
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('msisync schema ' || $1, 0))`, s.schema); err != nil {
		return fmt.Errorf("lock schema for migration: %w", err)
	}
	id := pgx.Identifier{s.schema}.Sanitize()
	if _, err := tx.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+id); err != nil {
		return fmt.Errorf("create schema: %w", err)
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+id+`.schema_version (
		one     boolean PRIMARY KEY DEFAULT true CHECK (one),
		version integer NOT NULL)`); err != nil {
		return fmt.Errorf("create schema_version: %w", err)
	}
	var v int
	err = tx.QueryRow(ctx, `SELECT version FROM `+id+`.schema_version`).Scan(&v)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("read schema version: %w", err)
	}
	if v > len(migrations) {
		return fmt.Errorf("schema version %d is newer than this msisync understands (%d)", v, len(migrations))
	}
	for i := v; i < len(migrations); i++ {
		if _, err := tx.Exec(ctx, strings.ReplaceAll(migrations[i], "{s}", id)); err != nil {
			return fmt.Errorf("migrate schema to version %d: %w", i+1, err)
		}
		s.log.Info("pgstore: schema migrated", "schema", s.schema, "version", i+1)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO `+id+`.schema_version (version) VALUES ($1)
		ON CONFLICT (one) DO UPDATE SET version = EXCLUDED.version`, len(migrations)); err != nil {
		return fmt.Errorf("write schema version: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit migration: %w", err)
	}
	return nil
}

type queries struct {
	getLinks, putLinks, deleteLinks, listLinks, countLinks string
	getVersions, putVersions                               string
	getConns, putConns, deleteConns, connsByOpp            string
	getMSI, putMSI                                         string
	acquireLease, releaseLease, lockRecords, unlockRecords string
	getMeta, putMeta                                       string
}

func newQueries(schema string) queries {
	id := pgx.Identifier{schema}.Sanitize()
	r := strings.NewReplacer("{s}", id)
	q := queries{
		getLinks: `SELECT external_id, marketo_id, entity, email, updated_at FROM {s}.links
			WHERE kind = $1 AND external_id = ANY($2::text[])`,
		putLinks: `INSERT INTO {s}.links AS l (kind, external_id, marketo_id, entity, email, updated_at)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])
			ON CONFLICT (kind, external_id) DO UPDATE SET marketo_id = EXCLUDED.marketo_id,
				entity = EXCLUDED.entity, email = EXCLUDED.email, updated_at = EXCLUDED.updated_at`,
		deleteLinks: `DELETE FROM {s}.links WHERE kind = $1 AND external_id = ANY($2::text[])`,
		listLinks: `SELECT external_id, marketo_id, entity, email, updated_at FROM {s}.links
			WHERE kind = $1 AND external_id > $2 ORDER BY external_id LIMIT $3`,
		countLinks:  `SELECT count(*) FROM {s}.links WHERE kind = $1`,
		getVersions: `SELECT key, version FROM {s}.versions WHERE key = ANY($1::text[])`,
		// The WHERE skips stale writes without touching the row at all.
		putVersions: `INSERT INTO {s}.versions AS v (key, version)
			SELECT * FROM unnest($1::text[], $2::bigint[])
			ON CONFLICT (key) DO UPDATE SET version = GREATEST(v.version, EXCLUDED.version)
			WHERE v.version < EXCLUDED.version`,
		getConns: `SELECT id, opportunity_id, person_id, role, updated_at FROM {s}.connections
			WHERE id = ANY($1::text[])`,
		putConns: `INSERT INTO {s}.connections AS c (id, opportunity_id, person_id, role, updated_at)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])
			ON CONFLICT (id) DO UPDATE SET opportunity_id = EXCLUDED.opportunity_id,
				person_id = EXCLUDED.person_id, role = EXCLUDED.role, updated_at = EXCLUDED.updated_at`,
		deleteConns: `DELETE FROM {s}.connections WHERE id = ANY($1::text[])`,
		connsByOpp: `SELECT id, opportunity_id, person_id, role, updated_at FROM {s}.connections
			WHERE opportunity_id = $1 ORDER BY id`,
		getMSI: `SELECT person_id, vals::text FROM {s}.msi_values WHERE person_id = ANY($1::text[])`,
		putMSI: `INSERT INTO {s}.msi_values AS m (person_id, vals)
			SELECT id, v::jsonb FROM unnest($1::text[], $2::text[]) AS u(id, v)
			ON CONFLICT (person_id) DO UPDATE SET vals = EXCLUDED.vals`,
		acquireLease: `INSERT INTO {s}.leases AS l (name, holder, expires_at) VALUES ($1, $2, $3)
			ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
			WHERE l.holder = EXCLUDED.holder OR l.expires_at <= $4`,
		releaseLease: `DELETE FROM {s}.leases WHERE name = $1 AND holder = $2`,
		// A concurrent insert of the same key makes this wait for that
		// transaction, then re-check the WHERE against the committed row, so
		// two owners can never both get a key.
		lockRecords: `INSERT INTO {s}.record_locks AS r (key, owner, expires_at)
			SELECT k, $2, $3 FROM unnest($1::text[]) AS k
			ON CONFLICT (key) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at
			WHERE r.owner = EXCLUDED.owner OR r.expires_at <= $4
			RETURNING key`,
		unlockRecords: `DELETE FROM {s}.record_locks WHERE owner = $1 AND key = ANY($2::text[])`,
		getMeta:       `SELECT value FROM {s}.meta WHERE key = $1`,
		putMeta: `INSERT INTO {s}.meta (key, value) VALUES ($1, $2)
			ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value`,
	}
	for _, p := range []*string{&q.getLinks, &q.putLinks, &q.deleteLinks, &q.listLinks, &q.countLinks,
		&q.getVersions, &q.putVersions, &q.getConns, &q.putConns, &q.deleteConns, &q.connsByOpp,
		&q.getMSI, &q.putMSI, &q.acquireLease, &q.releaseLease, &q.lockRecords, &q.unlockRecords,
		&q.getMeta, &q.putMeta} {
		*p = r.Replace(*p)
	}
	return q
}

// Close closes the connection pool.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// Ping checks the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("pgstore: ping: %w", err)
	}
	return nil
}

// exec runs a write, retrying the deadlocks and serialization failures that
// concurrent replicas can cause; they are transient by definition.
func (s *Store) exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	for attempt := 1; ; attempt++ {
		tag, err := s.pool.Exec(ctx, sql, args...)
		if err == nil || attempt == 5 || !retryable(err) || ctx.Err() != nil {
			return tag, err
		}
	}
}

func retryable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40P01" || pgErr.Code == "40001")
}

func (s *Store) stamp(t time.Time) time.Time {
	if t.IsZero() {
		return s.clk.Now()
	}
	return t
}

// uniq drops duplicate ids and sorts them, so that concurrent writers take
// row locks in one order and cannot deadlock.
func uniq(ids []string) []string {
	out := slices.Clone(ids)
	slices.Sort(out)
	return slices.Compact(out)
}

// lastByKey keeps the last of items with equal keys (PostgreSQL refuses to
// upsert one row twice in a statement) and sorts by key.
func lastByKey[T any](items []T, key func(T) string) []T {
	idx := make(map[string]int, len(items))
	out := make([]T, 0, len(items))
	for _, it := range items {
		k := key(it)
		if i, ok := idx[k]; ok {
			out[i] = it
			continue
		}
		idx[k] = len(out)
		out = append(out, it)
	}
	slices.SortFunc(out, func(a, b T) int { return strings.Compare(key(a), key(b)) })
	return out
}

// GetLinks returns the links of kind for externalIDs; missing ids are absent.
func (s *Store) GetLinks(ctx context.Context, kind string, externalIDs []string) (map[string]store.Link, error) {
	out := make(map[string]store.Link, len(externalIDs))
	if len(externalIDs) == 0 {
		return out, nil
	}
	rows, err := s.pool.Query(ctx, s.q.getLinks, kind, externalIDs)
	if err != nil {
		return nil, fmt.Errorf("pgstore: get %d %s links: %w", len(externalIDs), kind, err)
	}
	defer rows.Close()
	for rows.Next() {
		l := store.Link{Kind: kind}
		if err := rows.Scan(&l.ExternalID, &l.MarketoID, &l.Entity, &l.Email, &l.UpdatedAt); err != nil {
			return nil, fmt.Errorf("pgstore: get %d %s links: %w", len(externalIDs), kind, err)
		}
		l.UpdatedAt = l.UpdatedAt.UTC()
		out[l.ExternalID] = l
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pgstore: get %d %s links: %w", len(externalIDs), kind, err)
	}
	return out, nil
}

// PutLinks upserts links; a zero UpdatedAt is stamped with the clock. When
// one batch holds the same link twice, the last one wins.
func (s *Store) PutLinks(ctx context.Context, links []store.Link) error {
	if len(links) == 0 {
		return nil
	}
	rows := lastByKey(links, func(l store.Link) string { return l.Kind + "\x00" + l.ExternalID })
	kinds := make([]string, len(rows))
	ids := make([]string, len(rows))
	mids := make([]string, len(rows))
	ents := make([]string, len(rows))
	emails := make([]string, len(rows))
	ats := make([]time.Time, len(rows))
	for i, l := range rows {
		kinds[i], ids[i], mids[i], ents[i], emails[i], ats[i] = l.Kind, l.ExternalID, l.MarketoID, l.Entity, l.Email, s.stamp(l.UpdatedAt)
	}
	if _, err := s.exec(ctx, s.q.putLinks, kinds, ids, mids, ents, emails, ats); err != nil {
		return fmt.Errorf("pgstore: put %d links: %w", len(links), err)
	}
	return nil
}

// DeleteLinks deletes the links of kind for externalIDs.
func (s *Store) DeleteLinks(ctx context.Context, kind string, externalIDs []string) error {
	if len(externalIDs) == 0 {
		return nil
	}
	if _, err := s.exec(ctx, s.q.deleteLinks, kind, uniq(externalIDs)); err != nil {
		return fmt.Errorf("pgstore: delete %d %s links: %w", len(externalIDs), kind, err)
	}
	return nil
}

// ListLinks returns up to limit links of kind with external id > after, in
// external-id (byte) order.
func (s *Store) ListLinks(ctx context.Context, kind string, after string, limit int) ([]store.Link, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("pgstore: list %s links: limit %d must be positive", kind, limit)
	}
	rows, err := s.pool.Query(ctx, s.q.listLinks, kind, after, limit)
	if err != nil {
		return nil, fmt.Errorf("pgstore: list %s links after %q: %w", kind, after, err)
	}
	defer rows.Close()
	var out []store.Link
	for rows.Next() {
		l := store.Link{Kind: kind}
		if err := rows.Scan(&l.ExternalID, &l.MarketoID, &l.Entity, &l.Email, &l.UpdatedAt); err != nil {
			return nil, fmt.Errorf("pgstore: list %s links after %q: %w", kind, after, err)
		}
		l.UpdatedAt = l.UpdatedAt.UTC()
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pgstore: list %s links after %q: %w", kind, after, err)
	}
	return out, nil
}

// CountLinks counts the links of kind.
func (s *Store) CountLinks(ctx context.Context, kind string) (int, error) {
	var n int
	if err := s.pool.QueryRow(ctx, s.q.countLinks, kind).Scan(&n); err != nil {
		return 0, fmt.Errorf("pgstore: count %s links: %w", kind, err)
	}
	return n, nil
}

// GetVersions returns the stored versions of keys; missing keys are absent.
func (s *Store) GetVersions(ctx context.Context, keys []string) (map[string]int64, error) {
	out := make(map[string]int64, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	rows, err := s.pool.Query(ctx, s.q.getVersions, keys)
	if err != nil {
		return nil, fmt.Errorf("pgstore: get %d versions: %w", len(keys), err)
	}
	defer rows.Close()
	for rows.Next() {
		var k string
		var v int64
		if err := rows.Scan(&k, &v); err != nil {
			return nil, fmt.Errorf("pgstore: get %d versions: %w", len(keys), err)
		}
		out[k] = v
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pgstore: get %d versions: %w", len(keys), err)
	}
	return out, nil
}

// PutVersions stores versions, never lowering a stored one.
func (s *Store) PutVersions(ctx context.Context, versions map[string]int64) error {
	if len(versions) == 0 {
		return nil
	}
	keys := make([]string, 0, len(versions))
	for k := range versions {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	vals := make([]int64, len(keys))
	for i, k := range keys {
		vals[i] = versions[k]
	}
	if _, err := s.exec(ctx, s.q.putVersions, keys, vals); err != nil {
		return fmt.Errorf("pgstore: put %d versions: %w", len(versions), err)
	}
	return nil
}

func (s *Store) queryConns(ctx context.Context, sql string, arg any) ([]store.Connection, error) {
	rows, err := s.pool.Query(ctx, sql, arg)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.Connection
	for rows.Next() {
		var c store.Connection
		if err := rows.Scan(&c.ID, &c.OpportunityID, &c.PersonID, &c.Role, &c.UpdatedAt); err != nil {
			return nil, err
		}
		c.UpdatedAt = c.UpdatedAt.UTC()
		out = append(out, c)
	}
	return out, rows.Err()
}

// GetConnections returns the stored connections by id; missing ids are absent.
func (s *Store) GetConnections(ctx context.Context, ids []string) (map[string]store.Connection, error) {
	out := make(map[string]store.Connection, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	conns, err := s.queryConns(ctx, s.q.getConns, ids)
	if err != nil {
		return nil, fmt.Errorf("pgstore: get %d connections: %w", len(ids), err)
	}
	for _, c := range conns {
		out[c.ID] = c
	}
	return out, nil
}

// PutConnections upserts connections; a zero UpdatedAt is stamped with the clock.
func (s *Store) PutConnections(ctx context.Context, conns []store.Connection) error {
	if len(conns) == 0 {
		return nil
	}
	rows := lastByKey(conns, func(c store.Connection) string { return c.ID })
	ids := make([]string, len(rows))
	opps := make([]string, len(rows))
	persons := make([]string, len(rows))
	roles := make([]string, len(rows))
	ats := make([]time.Time, len(rows))
	for i, c := range rows {
		ids[i], opps[i], persons[i], roles[i], ats[i] = c.ID, c.OpportunityID, c.PersonID, c.Role, s.stamp(c.UpdatedAt)
	}
	if _, err := s.exec(ctx, s.q.putConns, ids, opps, persons, roles, ats); err != nil {
		return fmt.Errorf("pgstore: put %d connections: %w", len(conns), err)
	}
	return nil
}

// DeleteConnections deletes connections by id.
func (s *Store) DeleteConnections(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	if _, err := s.exec(ctx, s.q.deleteConns, uniq(ids)); err != nil {
		return fmt.Errorf("pgstore: delete %d connections: %w", len(ids), err)
	}
	return nil
}

// ConnectionsByOpportunity lists an opportunity's connections by id.
func (s *Store) ConnectionsByOpportunity(ctx context.Context, opportunityID string) ([]store.Connection, error) {
	conns, err := s.queryConns(ctx, s.q.connsByOpp, opportunityID)
	if err != nil {
		return nil, fmt.Errorf("pgstore: connections of opportunity %s: %w", opportunityID, err)
	}
	return conns, nil
}

// GetMSIValues returns the MSI values last written per person; persons
// never written are absent.
func (s *Store) GetMSIValues(ctx context.Context, personIDs []string) (map[string]map[string]string, error) {
	out := make(map[string]map[string]string, len(personIDs))
	if len(personIDs) == 0 {
		return out, nil
	}
	rows, err := s.pool.Query(ctx, s.q.getMSI, personIDs)
	if err != nil {
		return nil, fmt.Errorf("pgstore: get MSI values of %d persons: %w", len(personIDs), err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, raw string
		if err := rows.Scan(&id, &raw); err != nil {
			return nil, fmt.Errorf("pgstore: get MSI values of %d persons: %w", len(personIDs), err)
		}
		vals := map[string]string{}
		if err := json.Unmarshal([]byte(raw), &vals); err != nil {
			return nil, fmt.Errorf("pgstore: get MSI values: decode values of person %s: %w", id, err)
		}
		out[id] = vals
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pgstore: get MSI values of %d persons: %w", len(personIDs), err)
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
	slices.Sort(ids)
	raws := make([]string, len(ids))
	for i, id := range ids {
		vals := values[id]
		if vals == nil {
			vals = map[string]string{}
		}
		raw, err := json.Marshal(vals)
		if err != nil {
			return fmt.Errorf("pgstore: put MSI values: encode values of person %s: %w", id, err)
		}
		raws[i] = string(raw)
	}
	if _, err := s.exec(ctx, s.q.putMSI, ids, raws); err != nil {
		return fmt.Errorf("pgstore: put MSI values of %d persons: %w", len(values), err)
	}
	return nil
}

// AcquireLease takes or renews the named lease for holder until now+ttl.
func (s *Store) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error) {
	if ttl <= 0 {
		return false, fmt.Errorf("pgstore: acquire lease %q: ttl %v must be positive", name, ttl)
	}
	now := s.clk.Now()
	tag, err := s.exec(ctx, s.q.acquireLease, name, holder, now.Add(ttl), now)
	if err != nil {
		return false, fmt.Errorf("pgstore: acquire lease %q for %q: %w", name, holder, err)
	}
	return tag.RowsAffected() == 1, nil
}

// ReleaseLease gives up holder's lease; another holder's lease is untouched.
func (s *Store) ReleaseLease(ctx context.Context, name, holder string) error {
	if _, err := s.exec(ctx, s.q.releaseLease, name, holder); err != nil {
		return fmt.Errorf("pgstore: release lease %q for %q: %w", name, holder, err)
	}
	return nil
}

// LockRecords locks the free (or own, or expired) keys for owner until
// now+ttl and returns them in the order asked.
func (s *Store) LockRecords(ctx context.Context, owner string, keys []string, ttl time.Duration) ([]string, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("pgstore: lock %d records for %q: ttl %v must be positive", len(keys), owner, ttl)
	}
	sorted := uniq(keys)
	if len(sorted) == 0 {
		return nil, nil
	}
	now := s.clk.Now()
	var got map[string]struct{}
	for attempt := 1; ; attempt++ {
		var err error
		got, err = s.lockOnce(ctx, owner, sorted, now.Add(ttl), now)
		if err == nil {
			break
		}
		if attempt == 5 || !retryable(err) || ctx.Err() != nil {
			return nil, fmt.Errorf("pgstore: lock %d records for %q: %w", len(keys), owner, err)
		}
	}
	out := make([]string, 0, len(got))
	for _, k := range keys {
		if _, ok := got[k]; ok {
			out = append(out, k)
			delete(got, k) // report duplicates once
		}
	}
	return out, nil
}

func (s *Store) lockOnce(ctx context.Context, owner string, keys []string, expires, now time.Time) (map[string]struct{}, error) {
	rows, err := s.pool.Query(ctx, s.q.lockRecords, keys, owner, expires, now)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	got := make(map[string]struct{}, len(keys))
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return nil, err
		}
		got[k] = struct{}{}
	}
	return got, rows.Err()
}

// UnlockRecords frees owner's locks on keys; other owners' locks stay.
func (s *Store) UnlockRecords(ctx context.Context, owner string, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	if _, err := s.exec(ctx, s.q.unlockRecords, owner, uniq(keys)); err != nil {
		return fmt.Errorf("pgstore: unlock %d records for %q: %w", len(keys), owner, err)
	}
	return nil
}

// RecordLockExpiry returns when each key's unexpired lock ends.
func (s *Store) RecordLockExpiry(ctx context.Context, keys []string) (map[string]time.Time, error) {
	keys = uniq(keys)
	out := make(map[string]time.Time, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	q := `SELECT key, expires_at FROM ` + pgx.Identifier{s.schema}.Sanitize() + `.record_locks WHERE key = ANY($1::text[]) AND expires_at > $2`
	rows, err := s.pool.Query(ctx, q, keys, s.clk.Now())
	if err != nil {
		return nil, fmt.Errorf("pgstore: lock expiry of %d records: %w", len(keys), err)
	}
	defer rows.Close()
	for rows.Next() {
		var k string
		var exp time.Time
		if err := rows.Scan(&k, &exp); err != nil {
			return nil, fmt.Errorf("pgstore: lock expiry of %d records: %w", len(keys), err)
		}
		out[k] = exp
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pgstore: lock expiry of %d records: %w", len(keys), err)
	}
	return out, nil
}

// GetMeta returns the value stored under key and whether there is one.
func (s *Store) GetMeta(ctx context.Context, key string) (string, bool, error) {
	var v string
	err := s.pool.QueryRow(ctx, s.q.getMeta, key).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("pgstore: get meta %q: %w", key, err)
	}
	return v, true, nil
}

// PutMeta stores value under key.
func (s *Store) PutMeta(ctx context.Context, key, value string) error {
	if _, err := s.exec(ctx, s.q.putMeta, key, value); err != nil {
		return fmt.Errorf("pgstore: put meta %q: %w", key, err)
	}
	return nil
}
