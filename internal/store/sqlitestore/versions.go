package sqlitestore

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Versions. The syncer keeps, per record, a version ("contact/<id>"), often
// a RowVersion ("contact/<id>@rv") and one version per column it wrote
// ("contact/<id>#lastname"): six or more keys per record. Stored one row per
// key they were most of the store's work in a drain (B-tree inserts and
// lookups of ~130,000 rows for 30,000 events). Here a key and the keys
// "<key>#<column>" share one row of record_versions: the key's own version
// in version, the columns' in cols. The port is unchanged: any key
// round-trips (it is split at its first '#'), and versions never go down.
//
// cols is "<n>:<column><version>;" per column, n the column's length in
// bytes, so a column may hold any byte.

// splitKey returns the row and the column (ok false: none) of a key.
func splitKey(key string) (record, col string, ok bool) { return strings.Cut(key, "#") }

// parseCols calls fn for each column of an encoded cols value.
func parseCols(b []byte, fn func(col []byte, v int64)) error {
	for len(b) > 0 {
		i := bytes.IndexByte(b, ':')
		if i <= 0 {
			return fmt.Errorf("column versions %q: no length", b)
		}
		n, err := strconv.Atoi(string(b[:i]))
		if err != nil || n < 0 || i+1+n > len(b) {
			return fmt.Errorf("column versions %q: bad length", b)
		}
		col := b[i+1 : i+1+n]
		b = b[i+1+n:]
		j := bytes.IndexByte(b, ';')
		if j < 0 {
			return fmt.Errorf("column versions: column %q has no end", col)
		}
		v, err := strconv.ParseInt(string(b[:j]), 10, 64)
		if err != nil {
			return fmt.Errorf("column versions: column %q: %w", col, err)
		}
		fn(col, v)
		b = b[j+1:]
	}
	return nil
}

func appendCol[S ~string | ~[]byte](b []byte, col S, v int64) []byte {
	b = strconv.AppendInt(b, int64(len(col)), 10)
	b = append(b, ':')
	b = append(b, col...)
	b = strconv.AppendInt(b, v, 10)
	return append(b, ';')
}

// want is what GetVersions asks of one row: its own key and columns.
type want struct {
	self string // the key itself, "" when not asked
	cols []colWant
}

type colWant struct{ col, key string }

// GetVersions returns the stored versions of keys; missing keys are absent.
func (s *Store) GetVersions(ctx context.Context, keys []string) (map[string]int64, error) {
	out := make(map[string]int64, len(keys))
	rows := make(map[string]*want, len(keys))
	records := make([]string, 0, len(keys))
	for _, k := range keys {
		rec, col, isCol := splitKey(k)
		w := rows[rec]
		if w == nil {
			w = &want{}
			rows[rec] = w
			records = append(records, rec)
		}
		if isCol {
			w.cols = append(w.cols, colWant{col, k})
		} else {
			w.self = k
		}
	}
	err := queryIn(ctx, s.r, `SELECT record, version, cols FROM record_versions WHERE record IN (%s)`, nil, records,
		func(r *sql.Rows) error {
			var rec string
			var v sql.NullInt64
			var cols []byte
			if err := r.Scan(&rec, &v, &cols); err != nil {
				return err
			}
			w := rows[rec]
			if w == nil {
				return nil
			}
			if w.self != "" && v.Valid {
				out[w.self] = v.Int64
			}
			if len(w.cols) == 0 {
				return nil
			}
			return parseCols(cols, func(col []byte, v int64) {
				for _, c := range w.cols {
					if c.col == string(col) {
						out[c.key] = v
					}
				}
			})
		})
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: get %d versions: %w", len(keys), err)
	}
	return out, nil
}

// PutVersions stores versions, never lowering a stored one.
func (s *Store) PutVersions(ctx context.Context, versions map[string]int64) error {
	if len(versions) == 0 {
		return nil
	}
	if err := s.tx(ctx, func(tx *sql.Tx) error { return s.putVersions(ctx, tx, versions) }); err != nil {
		return fmt.Errorf("sqlitestore: put %d versions: %w", len(versions), err)
	}
	return nil
}

// rowPut is what putVersions writes to one row.
type rowPut struct {
	self    int64
	hasSelf bool
	cols    map[string]int64
}

// putVersions stores versions inside tx (PutVersions, Apply): it reads the
// rows concerned, keeps the higher version of each key, and writes back the
// rows that changed. The transaction holds SQLite's write lock, so no other
// writer comes between the read and the write.
func (s *Store) putVersions(ctx context.Context, tx *sql.Tx, versions map[string]int64) error {
	puts := map[string]*rowPut{}
	for k, v := range versions {
		rec, col, isCol := splitKey(k)
		p := puts[rec]
		if p == nil {
			p = &rowPut{}
			puts[rec] = p
		}
		if !isCol {
			p.self, p.hasSelf = v, true
			continue
		}
		if p.cols == nil {
			p.cols = map[string]int64{}
		}
		p.cols[col] = v
	}
	records := make([]string, 0, len(puts))
	for r := range puts {
		records = append(records, r)
	}
	slices.Sort(records)
	type stored struct {
		v    sql.NullInt64
		cols []byte
	}
	old := make(map[string]stored, len(records))
	err := queryInTx(ctx, tx, `SELECT record, version, cols FROM record_versions WHERE record IN (%s)`, records,
		func(r *sql.Rows) error {
			var rec string
			var st stored
			if err := r.Scan(&rec, &st.v, &st.cols); err != nil {
				return err
			}
			old[rec] = st
			return nil
		})
	if err != nil {
		return fmt.Errorf("read versions: %w", err)
	}
	var args []any
	var buf []byte
	for _, rec := range records {
		p, st := puts[rec], old[rec]
		changed := false
		self := st.v
		if p.hasSelf && (!self.Valid || p.self > self.Int64) {
			self, changed = sql.NullInt64{Int64: p.self, Valid: true}, true
		}
		buf = buf[:0]
		seen := 0
		perr := parseCols(st.cols, func(col []byte, v int64) {
			if nv, ok := p.cols[string(col)]; ok {
				seen++
				if nv > v {
					v, changed = nv, true
				}
			}
			buf = appendCol(buf, col, v)
		})
		if perr != nil {
			return fmt.Errorf("versions of %q: %w", rec, perr)
		}
		if seen < len(p.cols) {
			// Columns new to the row, in a stable order.
			for _, col := range sortedNew(p.cols, st.cols) {
				buf = appendCol(buf, col, p.cols[col])
			}
			changed = true
		}
		if changed { // else a redelivery: nothing goes up
			args = append(args, rec, self, string(buf))
		}
	}
	if len(args) == 0 {
		return nil
	}
	return execChunks(ctx, tx, s.versionsStmt, 3, args)
}

// sortedNew returns the columns of m that cols does not name, sorted.
func sortedNew(m map[string]int64, cols []byte) []string {
	have := map[string]bool{}
	_ = parseCols(cols, func(col []byte, _ int64) { have[string(col)] = true })
	out := make([]string, 0, len(m))
	for c := range m {
		if !have[c] {
			out = append(out, c)
		}
	}
	slices.Sort(out)
	return out
}
