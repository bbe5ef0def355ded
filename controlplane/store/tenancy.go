package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// nsIDOf is an SQL expression for the id of the namespace named by the
// next ? argument (the empty string when there is none).
const nsIDOf = `COALESCE((SELECT id FROM namespaces WHERE name = ?), '')`

// nextSeqSQL draws the next number of the sequence scope ? (1 first).
const nextSeqSQL = `INSERT INTO sequences (scope, last) VALUES (?, 1)
 ON CONFLICT (scope) DO UPDATE SET last = sequences.last + 1 RETURNING last`

// eventsScope is the sequence numbering a namespace's events.
func eventsScope(namespace string) string { return "events:" + namespace }

// auditScope is the sequence numbering a namespace's audit entries (by
// id: entries outlive their namespace).
func auditScope(namespaceID string) string { return "audit:" + namespaceID }

// newNamespaceID returns a new random namespace id ("ns-" and 16 hex).
func newNamespaceID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "ns-" + hex.EncodeToString(b)
}

// lockSequences takes, on PostgreSQL, the row locks of the existing event
// sequences a batch draws from in one (sorted) order, so two server
// replicas applying batches of the same namespaces cannot deadlock (a
// namespace's first event creates its row in applyEvent).
func (s *Store) lockSequences(ctx context.Context, tx *txStmts, batch []EventApply) error {
	if s.dialect != Postgres {
		return nil // one writer
	}
	var scopes []string
	for _, b := range batch {
		scopes = append(scopes, eventsScope(b.Event.Namespace))
	}
	slices.Sort(scopes)
	for _, sc := range slices.Compact(scopes) {
		var last int64
		err := tx.queryRow(ctx, `SELECT last FROM sequences WHERE scope = ? FOR UPDATE`, sc).Scan(&last)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
	}
	return nil
}

// bindGrants returns gs with each namespace grant bound to the current id
// of its namespace. Errors: ErrNotFound for a namespace that does not
// exist (or a grant bound to an id the namespace no longer has).
func (s *Store) bindGrants(ctx context.Context, gs []Grant) ([]Grant, error) {
	ids, err := s.namespaceIDs(ctx, gs)
	if err != nil {
		return nil, err
	}
	out := slices.Clone(gs)
	for i, g := range out {
		if g.Namespace == "*" {
			continue
		}
		id, ok := ids[g.Namespace]
		if !ok || (g.NamespaceID != "" && g.NamespaceID != id) {
			return nil, fmt.Errorf("grant of namespace %s: %w", g.Namespace, ErrNotFound)
		}
		out[i].NamespaceID = id
	}
	return out, nil
}

// liveGrants returns the grants of gs that still refer to an existing
// namespace: "*", and grants whose NamespaceID is the current id of their
// namespace.
func (s *Store) liveGrants(ctx context.Context, gs []Grant) ([]Grant, error) {
	ids, err := s.namespaceIDs(ctx, gs)
	if err != nil {
		return nil, err
	}
	out := make([]Grant, 0, len(gs))
	for _, g := range gs {
		if g.Namespace == "*" || (g.NamespaceID != "" && ids[g.Namespace] == g.NamespaceID) {
			out = append(out, g)
		}
	}
	return out, nil
}

// namespaceIDs maps the namespaces gs names (but "*") that exist to their
// ids, in one query.
func (s *Store) namespaceIDs(ctx context.Context, gs []Grant) (map[string]string, error) {
	var names []any
	for _, g := range gs {
		if g.Namespace != "*" {
			names = append(names, g.Namespace)
		}
	}
	ids := map[string]string{}
	if len(names) == 0 {
		return ids, nil
	}
	rows, err := s.rdb.QueryContext(ctx, s.q(`SELECT name, id FROM namespaces WHERE name IN (`+
		strings.TrimSuffix(strings.Repeat("?,", len(names)), ",")+`)`), names...)
	if err != nil {
		return nil, fmt.Errorf("namespace ids: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var name, id string
		if err := rows.Scan(&name, &id); err != nil {
			return nil, fmt.Errorf("namespace ids: %w", err)
		}
		ids[name] = id
	}
	return ids, rows.Err()
}

// DeleteNamespace deletes an empty namespace (no clusters, no running
// operation) and everything scoped to it, in one transaction: its
// projects, templates, events and finished operations; every token grant
// of it (a token left with no grant is revoked). Audit entries stay,
// bound to the deleted namespace's id: a namespace created again under the
// name gets a new id and sees none of them. Errors: ErrNotFound (no such
// namespace), ErrConflict (clusters or running operations remain).
func (s *Store) DeleteNamespace(ctx context.Context, name string) error {
	fail := func(err error) error { return fmt.Errorf("delete namespace %s: %w", name, err) }
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fail(err)
	}
	defer tx.Rollback()
	exec := func(query string, args ...any) error {
		_, err := tx.ExecContext(ctx, s.q(query), args...)
		return err
	}
	var id string
	if err := tx.QueryRowContext(ctx, s.q(`SELECT id FROM namespaces WHERE name = ?`), name).Scan(&id); err != nil {
		return notFound("delete namespace "+name, err)
	}
	var n, running int
	if err := tx.QueryRowContext(ctx, s.q(`SELECT COUNT(*) FROM clusters WHERE namespace = ?`), name).Scan(&n); err != nil {
		return fail(err)
	}
	if n > 0 {
		return fmt.Errorf("delete namespace %s: %d clusters remain: %w", name, n, ErrConflict)
	}
	if err := tx.QueryRowContext(ctx, s.q(`SELECT COUNT(*) FROM operations WHERE namespace = ? AND state NOT IN (?, ?)`),
		name, OpSucceeded, OpFailed).Scan(&running); err != nil {
		return fail(err)
	}
	if running > 0 {
		return fmt.Errorf("delete namespace %s: %d operations still run: %w", name, running, ErrConflict)
	}
	for _, q := range []string{
		`DELETE FROM projects WHERE namespace = ?`,
		`DELETE FROM templates WHERE namespace = ?`,
		`DELETE FROM events WHERE namespace = ?`,
		`DELETE FROM operations WHERE namespace = ?`,
	} {
		if err := exec(q, name); err != nil {
			return fail(err)
		}
	}
	if err := exec(`DELETE FROM sequences WHERE scope = ?`, eventsScope(name)); err != nil {
		return fail(err)
	}
	if err := deleteNamespaceAlerts(ctx, tx, s.q, name); err != nil {
		return fail(err)
	}
	if err := s.dropGrants(ctx, tx, name); err != nil {
		return fail(err)
	}
	if err := exec(`DELETE FROM namespaces WHERE id = ?`, id); err != nil {
		return fail(err)
	}
	if err := tx.Commit(); err != nil {
		return fail(err)
	}
	return nil
}

// dropGrants removes the grants of namespace name from every active
// token, revoking the tokens left with none.
func (s *Store) dropGrants(ctx context.Context, tx *sql.Tx, name string) error {
	rows, err := tx.QueryContext(ctx, s.q(`SELECT id, grants FROM tokens WHERE revoked_at = 0`))
	if err != nil {
		return err
	}
	type change struct {
		id     string
		grants []Grant
	}
	var changes []change
	for rows.Next() {
		var id, raw string
		if err := rows.Scan(&id, &raw); err != nil {
			rows.Close()
			return err
		}
		var gs []Grant
		if err := json.Unmarshal([]byte(raw), &gs); err != nil {
			rows.Close()
			return fmt.Errorf("token %s grants: %w", id, err)
		}
		kept := slices.DeleteFunc(slices.Clone(gs), func(g Grant) bool { return g.Namespace == name })
		if len(kept) != len(gs) {
			changes = append(changes, change{id, kept})
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	now := ms(time.Now())
	for _, c := range changes {
		query, args := `UPDATE tokens SET grants = ? WHERE id = ?`, []any{mustJSON(c.grants), c.id}
		if len(c.grants) == 0 {
			query, args = `UPDATE tokens SET revoked_at = ? WHERE id = ?`, []any{now, c.id}
		}
		if _, err := tx.ExecContext(ctx, s.q(query), args...); err != nil {
			return err
		}
	}
	return nil
}

// PruneAudit deletes up to limit audit entries (oldest first) recorded
// before cutoff and returns how many it deleted; callers loop until that
// is below limit. Errors: the database's.
func (s *Store) PruneAudit(ctx context.Context, cutoff time.Time, limit int) (int64, error) {
	res, err := s.exec(ctx, `DELETE FROM audit WHERE seq IN (SELECT seq FROM audit WHERE at < ? ORDER BY seq LIMIT ?)`, ms(cutoff), max(limit, 1))
	if err != nil {
		return 0, fmt.Errorf("prune audit: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("prune audit: %w", err)
	}
	return n, nil
}

// secureSQLiteFile makes the SQLite store at path private to the server's
// OS user before it is opened: its folder is created 0700 when missing,
// the file 0600 (an existing file is narrowed to 0600, and so are its
// -wal and -shm files; SQLite creates those with the file's mode).
func secureSQLiteFile(path string) error {
	if path == "" || path == ":memory:" || strings.HasPrefix(path, "file:") {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("store folder: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("store file: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("store file: %w", err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Chmod(p, 0o600); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("store file mode: %w", err)
		}
	}
	return nil
}
