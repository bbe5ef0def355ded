package store

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"sync"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

//go:embed migrations
var migrations embed.FS

// Dialect names a supported database.
type Dialect string

// Supported dialects.
const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// Store is the SQL-backed store. Its methods are safe for concurrent use.
type Store struct {
	db *sql.DB
	// rdb serves read-only queries: on SQLite a separate pool of
	// query_only connections, so reads run beside the single writer
	// connection (WAL) instead of queueing behind it; on PostgreSQL db.
	rdb     *sql.DB
	dialect Dialect
	// stmts caches the hot read queries prepared on rdb (query text →
	// *sql.Stmt), so they are not parsed again on every API call.
	stmts sync.Map
}

// Open opens (creating if needed) the store at dsn and applies every
// pending migration. A dsn starting with postgres:// or postgresql:// is
// PostgreSQL; anything else is a SQLite file path.
func Open(ctx context.Context, dsn string) (*Store, error) {
	d := SQLite
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		d = Postgres
	}
	var db, rdb *sql.DB
	var err error
	switch d {
	case Postgres:
		db, err = sql.Open("pgx", dsn)
		rdb = db
	default:
		if err := secureSQLiteFile(dsn); err != nil {
			return nil, fmt.Errorf("open %s store: %w", d, err)
		}
		// WAL lets readers proceed while the single writer commits;
		// busy_timeout makes concurrent writers wait instead of failing.
		db, err = sql.Open("sqlite", "file:"+dsn+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(ON)&_txlock=immediate")
		if err == nil {
			db.SetMaxOpenConns(1) // one writer; avoids SQLITE_BUSY under load
			rdb, err = sql.Open("sqlite", "file:"+dsn+"?_pragma=busy_timeout(10000)&_pragma=query_only(1)&_pragma=foreign_keys(ON)")
			if err != nil {
				db.Close()
			} else {
				rdb.SetMaxOpenConns(4)
				rdb.SetMaxIdleConns(4)
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("open %s store: %w", d, err)
	}
	s := &Store{db: db, rdb: rdb, dialect: d}
	if err := s.Migrate(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Dialect reports which database the store uses.
func (s *Store) Dialect() Dialect { return s.dialect }

// Close closes the database.
func (s *Store) Close() error {
	s.stmts.Range(func(_, v any) bool {
		_ = v.(*sql.Stmt).Close()
		return true
	})
	if s.rdb != s.db {
		s.rdb.Close()
	}
	return s.db.Close()
}

// readStmt returns query (in the ? placeholder form) prepared on the read
// pool; it is prepared once and kept until Close (database/sql prepares it
// again on each pool connection that runs it).
func (s *Store) readStmt(ctx context.Context, query string) (*sql.Stmt, error) {
	if st, ok := s.stmts.Load(query); ok {
		return st.(*sql.Stmt), nil
	}
	st, err := s.rdb.PrepareContext(ctx, s.q(query))
	if err != nil {
		return nil, err
	}
	if prev, loaded := s.stmts.LoadOrStore(query, st); loaded {
		_ = st.Close()
		return prev.(*sql.Stmt), nil
	}
	return st, nil
}

// readQuery runs a hot read query through readStmt.
func (s *Store) readQuery(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	st, err := s.readStmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

// readRow is readQuery for one row; a preparation error comes out of Scan.
func (s *Store) readRow(ctx context.Context, query string, args ...any) rowScanner {
	st, err := s.readStmt(ctx, query)
	if err != nil {
		return errRow{err}
	}
	return st.QueryRowContext(ctx, args...)
}

// DB returns the underlying database handle (for diagnostics and tests).
func (s *Store) DB() *sql.DB { return s.db }

// Migrate applies every pending migration of the store's dialect; it is
// idempotent and runs on Open.
func (s *Store) Migrate(ctx context.Context) error {
	sub, err := fs.Sub(migrations, "migrations/"+string(s.dialect))
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	gd := goose.DialectSQLite3
	var opts []goose.ProviderOption
	if s.dialect == Postgres {
		gd = goose.DialectPostgres
		// Several server replicas may start at once: serialise migrations.
		locker, err := lock.NewPostgresSessionLocker()
		if err != nil {
			return fmt.Errorf("migration locker: %w", err)
		}
		opts = append(opts, goose.WithSessionLocker(locker))
	}
	p, err := goose.NewProvider(gd, s.db, sub, opts...)
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("apply migrations: %w", err)
	}
	return nil
}

// q rewrites ? placeholders to $n for PostgreSQL.
func (s *Store) q(query string) string {
	if s.dialect != Postgres {
		return query
	}
	var b strings.Builder
	n := 0
	for _, c := range query {
		if c == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(c)
	}
	return b.String()
}

func (s *Store) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return s.db.ExecContext(ctx, s.q(query), args...)
}

// isUnique reports whether err is a unique-constraint violation.
func isUnique(err error) bool {
	if err == nil {
		return false
	}
	m := err.Error()
	return strings.Contains(m, "UNIQUE constraint failed") || strings.Contains(m, "SQLSTATE 23505") ||
		strings.Contains(m, "constraint failed: UNIQUE")
}

func notFound(what string, err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("store: marshal %T: %v", v, err)) // only plain structs and maps reach here
	}
	return string(b)
}

func limit(n, def, maxN int) int {
	if n <= 0 {
		return def
	}
	return min(n, maxN)
}

// ---- namespaces and projects ----

// CreateNamespace creates a namespace, with a new immutable id, and its
// "default" project.
func (s *Store) CreateNamespace(ctx context.Context, name string) (Namespace, error) {
	now := time.Now().UTC()
	id := newNamespaceID()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return Namespace{}, fmt.Errorf("create namespace %s: %w", name, err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO namespaces (id, name, created_at) VALUES (?, ?, ?)`), id, name, ms(now)); err != nil {
		if isUnique(err) {
			return Namespace{}, fmt.Errorf("create namespace %s: %w", name, ErrConflict)
		}
		return Namespace{}, fmt.Errorf("create namespace %s: %w", name, err)
	}
	if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO projects (namespace, name, created_at) VALUES (?, 'default', ?)`), name, ms(now)); err != nil {
		return Namespace{}, fmt.Errorf("create namespace %s: %w", name, err)
	}
	if err := tx.Commit(); err != nil {
		return Namespace{}, fmt.Errorf("create namespace %s: %w", name, err)
	}
	return Namespace{ID: id, Name: name, CreatedAt: fromMS(ms(now))}, nil
}

// GetNamespace returns one namespace.
func (s *Store) GetNamespace(ctx context.Context, name string) (Namespace, error) {
	var n Namespace
	var at int64
	err := s.readRow(ctx, `SELECT id, name, created_at FROM namespaces WHERE name = ?`, name).Scan(&n.ID, &n.Name, &at)
	if err != nil {
		return Namespace{}, notFound("namespace "+name, err)
	}
	n.CreatedAt = fromMS(at)
	return n, nil
}

// ListNamespaces lists namespaces by name. names, when non-nil, restricts
// the result to those names.
func (s *Store) ListNamespaces(ctx context.Context, p Page, names []string) ([]Namespace, error) {
	query := `SELECT id, name, created_at FROM namespaces WHERE name > ?`
	args := []any{p.After}
	if names != nil {
		if len(names) == 0 {
			return nil, nil
		}
		query += ` AND name IN (` + strings.TrimSuffix(strings.Repeat("?,", len(names)), ",") + `)`
		for _, n := range names {
			args = append(args, n)
		}
	}
	query += ` ORDER BY name LIMIT ?`
	args = append(args, limit(p.Limit, 100, 1000))
	rows, err := s.rdb.QueryContext(ctx, s.q(query), args...)
	if err != nil {
		return nil, fmt.Errorf("list namespaces: %w", err)
	}
	defer rows.Close()
	var out []Namespace
	for rows.Next() {
		var n Namespace
		var at int64
		if err := rows.Scan(&n.ID, &n.Name, &at); err != nil {
			return nil, fmt.Errorf("list namespaces: %w", err)
		}
		n.CreatedAt = fromMS(at)
		out = append(out, n)
	}
	return out, rows.Err()
}

// CreateProject creates a project in an existing namespace.
func (s *Store) CreateProject(ctx context.Context, namespace, name string) (Project, error) {
	now := time.Now().UTC()
	if _, err := s.GetNamespace(ctx, namespace); err != nil {
		return Project{}, fmt.Errorf("create project %s/%s: %w", namespace, name, err)
	}
	if _, err := s.exec(ctx, `INSERT INTO projects (namespace, name, created_at) VALUES (?, ?, ?)`, namespace, name, ms(now)); err != nil {
		if isUnique(err) {
			return Project{}, fmt.Errorf("create project %s/%s: %w", namespace, name, ErrConflict)
		}
		return Project{}, fmt.Errorf("create project %s/%s: %w", namespace, name, err)
	}
	return Project{Namespace: namespace, Name: name, CreatedAt: fromMS(ms(now))}, nil
}

// GetProject returns one project.
func (s *Store) GetProject(ctx context.Context, namespace, name string) (Project, error) {
	p := Project{Namespace: namespace}
	var at int64
	err := s.rdb.QueryRowContext(ctx, s.q(`SELECT name, created_at FROM projects WHERE namespace = ? AND name = ?`), namespace, name).Scan(&p.Name, &at)
	if err != nil {
		return Project{}, notFound("project "+namespace+"/"+name, err)
	}
	p.CreatedAt = fromMS(at)
	return p, nil
}

// ListProjects lists a namespace's projects by name.
func (s *Store) ListProjects(ctx context.Context, namespace string, p Page) ([]Project, error) {
	rows, err := s.rdb.QueryContext(ctx, s.q(`SELECT name, created_at FROM projects WHERE namespace = ? AND name > ? ORDER BY name LIMIT ?`),
		namespace, p.After, limit(p.Limit, 100, 1000))
	if err != nil {
		return nil, fmt.Errorf("list projects: %w", err)
	}
	defer rows.Close()
	var out []Project
	for rows.Next() {
		pr := Project{Namespace: namespace}
		var at int64
		if err := rows.Scan(&pr.Name, &at); err != nil {
			return nil, fmt.Errorf("list projects: %w", err)
		}
		pr.CreatedAt = fromMS(at)
		out = append(out, pr)
	}
	return out, rows.Err()
}

// ---- tokens ----

// CreateToken stores a token (its hash, never the secret).
//
// Each grant of a namespace (not "*") is bound to the namespace's current
// id; a grant of a namespace that does not exist fails with ErrNotFound.
func (s *Store) CreateToken(ctx context.Context, t Token) error {
	grants, err := s.bindGrants(ctx, t.Grants)
	if err != nil {
		return fmt.Errorf("create token %s: %w", t.ID, err)
	}
	t.Grants = grants
	_, err = s.exec(ctx, `INSERT INTO tokens (id, name, hash, grants, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
		t.ID, t.Name, t.Hash, mustJSON(t.Grants), t.CreatedBy, ms(t.CreatedAt))
	if isUnique(err) {
		return fmt.Errorf("create token %s: %w", t.ID, ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("create token %s: %w", t.ID, err)
	}
	return nil
}

const tokenCols = `id, name, hash, grants, created_by, created_at, revoked_at`

func scanToken(sc interface{ Scan(...any) error }) (Token, error) {
	var t Token
	var grants string
	var at, rev int64
	if err := sc.Scan(&t.ID, &t.Name, &t.Hash, &grants, &t.CreatedBy, &at, &rev); err != nil {
		return Token{}, err
	}
	if err := json.Unmarshal([]byte(grants), &t.Grants); err != nil {
		return Token{}, fmt.Errorf("token %s grants: %w", t.ID, err)
	}
	t.CreatedAt, t.RevokedAt = fromMS(at), fromMS(rev)
	return t, nil
}

// TokenByHash returns the active (not revoked) token with this hash,
// with only its live grants: a grant bound to a namespace id that is not
// the current id of its namespace name (deleted, maybe created again) is
// left out.
func (s *Store) TokenByHash(ctx context.Context, hash string) (Token, error) {
	t, err := scanToken(s.readRow(ctx, `SELECT `+tokenCols+` FROM tokens WHERE hash = ? AND revoked_at = 0`, hash))
	if err != nil {
		return Token{}, notFound("token", err)
	}
	if t.Grants, err = s.liveGrants(ctx, t.Grants); err != nil {
		return Token{}, fmt.Errorf("token: %w", err)
	}
	return t, nil
}

// GetToken returns a token by id.
func (s *Store) GetToken(ctx context.Context, id string) (Token, error) {
	t, err := scanToken(s.rdb.QueryRowContext(ctx, s.q(`SELECT `+tokenCols+` FROM tokens WHERE id = ?`), id))
	if err != nil {
		return Token{}, notFound("token "+id, err)
	}
	return t, nil
}

// ListTokens lists tokens by id.
func (s *Store) ListTokens(ctx context.Context, p Page) ([]Token, error) {
	rows, err := s.rdb.QueryContext(ctx, s.q(`SELECT `+tokenCols+` FROM tokens WHERE id > ? ORDER BY id LIMIT ?`), p.After, limit(p.Limit, 100, 1000))
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	defer rows.Close()
	var out []Token
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, fmt.Errorf("list tokens: %w", err)
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// RevokeToken marks a token revoked.
func (s *Store) RevokeToken(ctx context.Context, id string) error {
	res, err := s.exec(ctx, `UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at = 0`, ms(time.Now()), id)
	if err != nil {
		return fmt.Errorf("revoke token %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("revoke token %s: %w", id, ErrNotFound)
	}
	return nil
}

// ---- clusters and nodes ----

const clusterCols = `id, namespace, project, name, engine, version, template, plan, provider, replicas, synchronous_mode,
 phase, reason, primary_node, term, revision, stale_events, ingest_key_hash, created_at, updated_at, last_event_at`

func scanCluster(sc interface{ Scan(...any) error }) (Cluster, error) {
	var c Cluster
	var term int64
	var ca, ua, la int64
	err := sc.Scan(&c.ID, &c.Namespace, &c.Project, &c.Name, &c.Engine, &c.Version, &c.Template, &c.Plan, &c.Provider,
		&c.Replicas, &c.SynchronousMode, &c.Phase, &c.Reason, &c.Primary, &term, &c.Revision, &c.StaleEvents,
		&c.IngestKeyHash, &ca, &ua, &la)
	if err != nil {
		return Cluster{}, err
	}
	c.Term = uint64(term)
	c.CreatedAt, c.UpdatedAt, c.LastEventAt = fromMS(ca), fromMS(ua), fromMS(la)
	return c, nil
}

// CreateCluster inserts a cluster together with the operation that
// provisions it, in one transaction (the operation is the outbox: a crash
// after commit still provisions the cluster on restart).
func (s *Store) CreateCluster(ctx context.Context, c Cluster, op Operation) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("create cluster %s: %w", c.Name, err)
	}
	defer tx.Rollback()
	_, err = tx.ExecContext(ctx, s.q(`INSERT INTO clusters (`+clusterCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		c.ID, c.Namespace, c.Project, c.Name, c.Engine, c.Version, c.Template, c.Plan, c.Provider, c.Replicas, c.SynchronousMode,
		c.Phase, c.Reason, c.Primary, int64(c.Term), c.Revision, c.StaleEvents, c.IngestKeyHash, ms(c.CreatedAt), ms(c.UpdatedAt), ms(c.LastEventAt))
	if isUnique(err) {
		return fmt.Errorf("create cluster %s/%s/%s: %w", c.Namespace, c.Project, c.Name, ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("create cluster %s: %w", c.Name, err)
	}
	if err := s.insertOp(ctx, tx, op); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("create cluster %s: %w", c.Name, err)
	}
	return nil
}

// GetCluster returns a cluster by id.
func (s *Store) GetCluster(ctx context.Context, id string) (Cluster, error) {
	c, err := scanCluster(s.readRow(ctx, `SELECT `+clusterCols+` FROM clusters WHERE id = ?`, id))
	if err != nil {
		return Cluster{}, notFound("cluster "+id, err)
	}
	return c, nil
}

// FindClusters returns the clusters of namespace named name (in any
// project when project is "").
func (s *Store) FindClusters(ctx context.Context, namespace, project, name string) ([]Cluster, error) {
	query := `SELECT ` + clusterCols + ` FROM clusters WHERE namespace = ? AND name = ?`
	args := []any{namespace, name}
	if project != "" {
		query += ` AND project = ?`
		args = append(args, project)
	}
	return s.queryClusters(ctx, query+` ORDER BY id`, args...)
}

// ListClusters lists a namespace's clusters by id ("" lists every
// namespace, for internal use).
func (s *Store) ListClusters(ctx context.Context, namespace string, p Page) ([]Cluster, error) {
	if namespace == "" {
		return s.queryClusters(ctx, `SELECT `+clusterCols+` FROM clusters WHERE id > ? ORDER BY id LIMIT ?`, p.After, limit(p.Limit, 100, 100000))
	}
	return s.queryClusters(ctx, `SELECT `+clusterCols+` FROM clusters WHERE namespace = ? AND id > ? ORDER BY id LIMIT ?`,
		namespace, p.After, limit(p.Limit, 100, 1000))
}

func (s *Store) queryClusters(ctx context.Context, query string, args ...any) ([]Cluster, error) {
	rows, err := s.readQuery(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list clusters: %w", err)
	}
	defer rows.Close()
	var out []Cluster
	for rows.Next() {
		c, err := scanCluster(rows)
		if err != nil {
			return nil, fmt.Errorf("list clusters: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// SetClusterPhase sets phase and reason (and replicas when > 0).
func (s *Store) SetClusterPhase(ctx context.Context, id, phase, reason string, replicas int) error {
	query := `UPDATE clusters SET phase = ?, reason = ?, updated_at = ?`
	args := []any{phase, reason, ms(time.Now())}
	if replicas > 0 {
		query += `, replicas = ?`
		args = append(args, replicas)
	}
	res, err := s.exec(ctx, query+` WHERE id = ?`, append(args, id)...)
	if err != nil {
		return fmt.Errorf("set cluster %s phase: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("set cluster %s phase: %w", id, ErrNotFound)
	}
	return nil
}

// SetClusterPhaseAs is SetClusterPhase made by the runner of an operation:
// applied only while claim holds (ErrConflict otherwise), in the same
// transaction that checks it.
func (s *Store) SetClusterPhaseAs(ctx context.Context, claim Claim, id, phase, reason string, replicas int) error {
	return s.asOwner(ctx, claim, "set cluster "+id+" phase", func(tx *sql.Tx) error {
		return s.setPhase(ctx, tx, id, ClusterChange{Phase: phase, Reason: reason, Replicas: replicas})
	})
}

// setPhase applies ch to cluster id in tx (ErrNotFound: no cluster, or
// one whose phase is not in ch.IfPhase).
func (s *Store) setPhase(ctx context.Context, tx *sql.Tx, id string, ch ClusterChange) error {
	query := `UPDATE clusters SET phase = ?, reason = ?, updated_at = ?`
	args := []any{ch.Phase, ch.Reason, ms(time.Now())}
	if ch.Replicas > 0 {
		query += `, replicas = ?`
		args = append(args, ch.Replicas)
	}
	query += ` WHERE id = ?`
	args = append(args, id)
	if len(ch.IfPhase) > 0 {
		query += ` AND phase IN (?` + strings.Repeat(`, ?`, len(ch.IfPhase)-1) + `)`
		for _, p := range ch.IfPhase {
			args = append(args, p)
		}
	}
	res, err := tx.ExecContext(ctx, s.q(query), args...)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("cluster %s: %w", id, ErrNotFound)
	}
	return nil
}

// SetClusterSynchronousMode records the cluster's synchronous_mode ("on" |
// "off"): what new nodes' agent configurations and the spec key carry.
// Errors: ErrNotFound when there is no cluster id.
func (s *Store) SetClusterSynchronousMode(ctx context.Context, id, mode string) error {
	res, err := s.exec(ctx, `UPDATE clusters SET synchronous_mode = ?, updated_at = ? WHERE id = ?`, mode, ms(time.Now()), id)
	if err != nil {
		return fmt.Errorf("set cluster %s synchronous_mode: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("set cluster %s synchronous_mode: %w", id, ErrNotFound)
	}
	return nil
}

// SetClusterSynchronousModeAs is SetClusterSynchronousMode made by the
// runner of an operation (the update workflow): applied only while claim
// holds (ErrConflict otherwise).
func (s *Store) SetClusterSynchronousModeAs(ctx context.Context, claim Claim, id, mode string) error {
	return s.asOwner(ctx, claim, "set cluster "+id+" synchronous_mode", func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`UPDATE clusters SET synchronous_mode = ?, updated_at = ? WHERE id = ?`), mode, ms(time.Now()), id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	})
}

// DeleteCluster removes a cluster row and its nodes, allocations and
// backup records (the backups themselves stay in the repository; events and operations are kept as history).
func (s *Store) DeleteCluster(ctx context.Context, id string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("delete cluster %s: %w", id, err)
	}
	defer tx.Rollback()
	if err := s.deleteCluster(ctx, tx, id); err != nil {
		return fmt.Errorf("delete cluster %s: %w", id, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("delete cluster %s: %w", id, err)
	}
	return nil
}

// DeleteClusterAs is DeleteCluster made by the runner of an operation (the
// delete workflow's last step): applied only while claim holds
// (ErrConflict otherwise).
func (s *Store) DeleteClusterAs(ctx context.Context, claim Claim, id string) error {
	return s.asOwner(ctx, claim, "delete cluster "+id, func(tx *sql.Tx) error { return s.deleteCluster(ctx, tx, id) })
}

func (s *Store) deleteCluster(ctx context.Context, tx *sql.Tx, id string) error {
	for _, q := range []string{`DELETE FROM nodes WHERE cluster_id = ?`, `DELETE FROM allocations WHERE cluster_id = ?`,
		`DELETE FROM cluster_credentials WHERE cluster_id = ?`, `DELETE FROM backups WHERE cluster_id = ?`,
		`DELETE FROM alert_thresholds WHERE cluster_id = ?`, `DELETE FROM clusters WHERE id = ?`} {
		if _, err := tx.ExecContext(ctx, s.q(q), id); err != nil {
			return err
		}
	}
	return nil
}

const nodeCols = `cluster_id, name, host, state, role, member_state, healthy, lsn, lag_bytes, timeline, term, revision, handle, updated_at`

func scanNode(sc interface{ Scan(...any) error }) (Node, error) {
	var n Node
	var term int64
	var tl int64
	var handle string
	var ua int64
	if err := sc.Scan(&n.ClusterID, &n.Name, &n.Host, &n.State, &n.Role, &n.MemberState, &n.Healthy, &n.LSN, &n.LagBytes,
		&tl, &term, &n.Revision, &handle, &ua); err != nil {
		return Node{}, err
	}
	n.Term, n.Timeline, n.Handle, n.UpdatedAt = uint64(term), uint32(tl), json.RawMessage(handle), fromMS(ua)
	return n, nil
}

// UpsertNode creates a node row or updates its provider fields (host,
// state, handle), leaving the member projection alone.
func (s *Store) UpsertNode(ctx context.Context, n Node) error {
	handle := string(n.Handle)
	if handle == "" {
		handle = "{}"
	}
	_, err := s.exec(ctx, `INSERT INTO nodes (`+nodeCols+`) VALUES (?, ?, ?, ?, '', '', FALSE, '', -1, 0, 0, 0, ?, ?)
 ON CONFLICT (cluster_id, name) DO UPDATE SET host = excluded.host, state = excluded.state, handle = excluded.handle, updated_at = excluded.updated_at`,
		n.ClusterID, n.Name, n.Host, n.State, handle, ms(time.Now()))
	if err != nil {
		return fmt.Errorf("upsert node %s/%s: %w", n.ClusterID, n.Name, err)
	}
	return nil
}

// ReserveNode records node name of cluster clusterID as being provisioned
// (state NodeProvisioning) unless a row exists: called before the
// provider's Create, so that the new agent's first events find their node.
func (s *Store) ReserveNode(ctx context.Context, clusterID, name string) error {
	_, err := s.exec(ctx, `INSERT INTO nodes (`+nodeCols+`) VALUES (?, ?, '', ?, '', '', FALSE, '', -1, 0, 0, 0, '{}', ?)
 ON CONFLICT (cluster_id, name) DO NOTHING`, clusterID, name, NodeProvisioning, ms(time.Now()))
	if err != nil {
		return fmt.Errorf("reserve node %s/%s: %w", clusterID, name, err)
	}
	return nil
}

// DeleteNode removes one node row.
func (s *Store) DeleteNode(ctx context.Context, clusterID, name string) error {
	if _, err := s.exec(ctx, `DELETE FROM nodes WHERE cluster_id = ? AND name = ?`, clusterID, name); err != nil {
		return fmt.Errorf("delete node %s/%s: %w", clusterID, name, err)
	}
	return nil
}

// ListNodes lists a cluster's nodes by name.
func (s *Store) ListNodes(ctx context.Context, clusterID string) ([]Node, error) {
	rows, err := s.readQuery(ctx, `SELECT `+nodeCols+` FROM nodes WHERE cluster_id = ? ORDER BY name`, clusterID)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	defer rows.Close()
	var out []Node
	for rows.Next() {
		n, err := scanNode(rows)
		if err != nil {
			return nil, fmt.Errorf("list nodes: %w", err)
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// ---- events and the projection ----

// ApplyEvent records ev and applies p to the projection in one
// transaction: idempotent on ev.ID (Duplicate) and order-aware (an event
// positioned below its subject's (term, revision) is recorded as stale, not
// applied, and counted in the cluster's stale_events).
func (s *Store) ApplyEvent(ctx context.Context, ev Event, p Projection) (ApplyResult, error) {
	rs, err := s.ApplyEvents(ctx, []EventApply{{Event: ev, Projection: p}})
	if err != nil {
		return 0, err
	}
	return rs[0], nil
}

// EventApply is one event and what it changes, for ApplyEvents.
type EventApply struct {
	Event      Event
	Projection Projection
}

// ApplyEvents is ApplyEvent for several events in one transaction (group
// commit), in order: a later event sees the earlier ones' effects. It
// returns one result per event, or an error and no effect at all.
func (s *Store) ApplyEvents(ctx context.Context, batch []EventApply) ([]ApplyResult, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("apply events: %w", err)
	}
	defer tx.Rollback()
	st := &txStmts{s: s, tx: tx, m: map[string]*sql.Stmt{}}
	defer st.close()
	if err := s.lockSequences(ctx, st, batch); err != nil {
		return nil, fmt.Errorf("apply events: %w", err)
	}
	rs := make([]ApplyResult, len(batch))
	for i, b := range batch {
		if rs[i], err = s.applyEvent(ctx, st, b.Event, b.Projection); err != nil {
			return nil, err
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("apply events: %w", err)
	}
	return rs, nil
}

// txStmts prepares each statement once per transaction (a batch of events
// runs the same few statements many times; parsing dominated otherwise).
type txStmts struct {
	s  *Store
	tx *sql.Tx
	m  map[string]*sql.Stmt
}

func (t *txStmts) prep(ctx context.Context, query string) (*sql.Stmt, error) {
	if st, ok := t.m[query]; ok {
		return st, nil
	}
	st, err := t.tx.PrepareContext(ctx, t.s.q(query))
	if err != nil {
		return nil, err
	}
	t.m[query] = st
	return st, nil
}

func (t *txStmts) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	st, err := t.prep(ctx, query)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

// queryRow returns the row, or an error through Scan (like
// sql.Tx.QueryRowContext).
func (t *txStmts) queryRow(ctx context.Context, query string, args ...any) rowScanner {
	st, err := t.prep(ctx, query)
	if err != nil {
		return errRow{err}
	}
	return st.QueryRowContext(ctx, args...)
}

func (t *txStmts) close() {
	for _, st := range t.m {
		st.Close()
	}
}

// rowScanner is *sql.Row or *sql.Rows.
type rowScanner interface{ Scan(dest ...any) error }

// errRow is a row whose Scan fails with err.
type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

func (s *Store) applyEvent(ctx context.Context, tx *txStmts, ev Event, p Projection) (ApplyResult, error) {
	var clusterID string
	var cterm, crev int64
	err := tx.queryRow(ctx, `SELECT id, term, revision FROM clusters WHERE namespace = ? AND project = ? AND name = ?`,
		ev.Namespace, ev.Project, ev.Cluster).Scan(&clusterID, &cterm, &crev)
	if errors.Is(err, sql.ErrNoRows) {
		return UnknownCluster, nil
	}
	if err != nil {
		return 0, fmt.Errorf("apply event %s: %w", ev.ID, err)
	}
	// The subject's position; only provisioned nodes speak.
	hterm, hrev := cterm, crev
	if !p.AnyNode || p.Scope == ScopeMember {
		var nterm, nrev int64
		var state string
		err := tx.queryRow(ctx, `SELECT term, revision, state FROM nodes WHERE cluster_id = ? AND name = ?`, clusterID, ev.Node).Scan(&nterm, &nrev, &state)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return UnknownNode, nil
		case err != nil:
			return 0, fmt.Errorf("apply event %s: %w", ev.ID, err)
		case !p.AnyNode && !(Node{State: state}).Provisioned():
			return UnknownNode, nil
		}
		if p.Scope == ScopeMember {
			hterm, hrev = nterm, nrev
		}
	}
	stale := p.Scope != ScopeUnordered && (ev.Term < uint64(hterm) || (ev.Term == uint64(hterm) && ev.Revision < hrev))
	now := ms(time.Now())
	// Dedup on the event id: a unique violation would abort a PostgreSQL
	// transaction (and the rest of a batch), so do nothing and count rows.
	// The event's number in its namespace (a duplicate below uses one up:
	// a gap only the namespace's own duplicates explain).
	var nsSeq int64
	if err := tx.queryRow(ctx, nextSeqSQL, eventsScope(ev.Namespace)).Scan(&nsSeq); err != nil {
		return 0, fmt.Errorf("apply event %s: %w", ev.ID, err)
	}
	res, err := tx.exec(ctx, `INSERT INTO events (id, namespace, project, cluster, node, type, term, revision, time, stale, data, ns_seq)
 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
		ev.ID, ev.Namespace, ev.Project, ev.Cluster, ev.Node, ev.Type, int64(ev.Term), ev.Revision, ms(ev.Time), stale, string(ev.Data), nsSeq)
	if err != nil {
		return 0, fmt.Errorf("apply event %s: %w", ev.ID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return 0, fmt.Errorf("apply event %s: %w", ev.ID, err)
	} else if n == 0 {
		return Duplicate, nil
	}
	if stale {
		if _, err := tx.exec(ctx, `UPDATE clusters SET stale_events = stale_events + 1 WHERE id = ?`, clusterID); err != nil {
			return 0, fmt.Errorf("apply event %s: %w", ev.ID, err)
		}
		return Stale, nil
	}
	switch p.Scope {
	case ScopeCluster:
		query := `UPDATE clusters SET term = ?, revision = ?, last_event_at = ?`
		args := []any{int64(ev.Term), ev.Revision, now}
		if p.Primary != "" {
			query += `, primary_node = ?`
			args = append(args, p.Primary)
		}
		if _, err := tx.exec(ctx, query+` WHERE id = ?`, append(args, clusterID)...); err != nil {
			return 0, fmt.Errorf("apply event %s: %w", ev.ID, err)
		}
	case ScopeMember:
		query := `UPDATE nodes SET term = ?, revision = ?, updated_at = ?`
		args := []any{int64(ev.Term), ev.Revision, now}
		if m := p.Member; m != nil {
			query += `, role = ?, member_state = ?, healthy = ?, lsn = ?, lag_bytes = ?, timeline = ?`
			args = append(args, m.Role, m.MemberState, m.Healthy, m.LSN, m.LagBytes, int64(m.Timeline))
		}
		if _, err := tx.exec(ctx, query+` WHERE cluster_id = ? AND name = ?`, append(args, clusterID, ev.Node)...); err != nil {
			return 0, fmt.Errorf("apply event %s: %w", ev.ID, err)
		}
		if _, err := tx.exec(ctx, `UPDATE clusters SET last_event_at = ? WHERE id = ?`, now, clusterID); err != nil {
			return 0, fmt.Errorf("apply event %s: %w", ev.ID, err)
		}
	case ScopeUnordered:
		if b := p.Backup; b != nil {
			if err := applyBackup(ctx, tx, clusterID, ev.Node, b); err != nil {
				return 0, fmt.Errorf("apply event %s: %w", ev.ID, err)
			}
		}
	}
	return Applied, nil
}

// applyBackup projects one backup event onto the backups table.
func applyBackup(ctx context.Context, tx *txStmts, clusterID, node string, b *BackupUpdate) error {
	r := b.Record
	switch b.Kind {
	case BackupEventStarted:
		_, err := tx.exec(ctx, `INSERT INTO backups (cluster_id, id, node, job, method, repository, status, request_id, started_at, path)
 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (cluster_id, id) DO NOTHING`,
			clusterID, r.ID, node, r.Job, r.Method, r.Repository, BackupRunning, r.RequestID, ms(r.StartedAt), r.Path)
		return err
	case BackupEventFinished:
		_, err := tx.exec(ctx, `INSERT INTO backups (cluster_id, id, node, job, method, repository, status, request_id, started_at, finished_at,
 size_bytes, checksum, start_lsn, stop_lsn, timeline, path, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
 ON CONFLICT (cluster_id, id) DO UPDATE SET status = excluded.status, finished_at = excluded.finished_at, size_bytes = excluded.size_bytes,
 checksum = excluded.checksum, start_lsn = excluded.start_lsn, stop_lsn = excluded.stop_lsn, timeline = excluded.timeline,
 path = CASE WHEN excluded.path = '' THEN backups.path ELSE excluded.path END, error = excluded.error,
 request_id = CASE WHEN excluded.request_id = '' THEN backups.request_id ELSE excluded.request_id END`,
			clusterID, r.ID, node, r.Job, r.Method, r.Repository, r.Status, r.RequestID, ms(r.StartedAt), ms(r.FinishedAt),
			r.SizeBytes, r.Checksum, r.StartLSN, r.StopLSN, int64(r.Timeline), r.Path, r.Error)
		return err
	case BackupEventVerified:
		_, err := tx.exec(ctx, `UPDATE backups SET verified_at = ?, verify_error = ? WHERE cluster_id = ? AND path = ?`,
			ms(r.VerifiedAt), r.VerifyError, clusterID, r.Path)
		return err
	}
	return fmt.Errorf("unknown backup event kind %d", b.Kind)
}

const backupCols = `cluster_id, id, node, job, method, repository, status, request_id, started_at, finished_at, size_bytes, checksum,
 start_lsn, stop_lsn, timeline, path, error, verified_at, verify_error`

func scanBackup(sc interface{ Scan(...any) error }) (Backup, error) {
	var b Backup
	var started, finished, verified, tl int64
	err := sc.Scan(&b.ClusterID, &b.ID, &b.Node, &b.Job, &b.Method, &b.Repository, &b.Status, &b.RequestID, &started, &finished,
		&b.SizeBytes, &b.Checksum, &b.StartLSN, &b.StopLSN, &tl, &b.Path, &b.Error, &verified, &b.VerifyError)
	b.StartedAt, b.FinishedAt, b.VerifiedAt, b.Timeline = fromMS(started), fromMS(finished), fromMS(verified), uint32(tl)
	return b, err
}

// ListBackups lists a cluster's backup records, newest first (by id; the
// agents' ids start with the UTC start time), keyset-paginated on the id.
func (s *Store) ListBackups(ctx context.Context, clusterID string, p Page) ([]Backup, error) {
	rows, err := s.rdb.QueryContext(ctx, s.q(`SELECT `+backupCols+` FROM backups WHERE cluster_id = ? AND (? = '' OR id < ?) ORDER BY id DESC LIMIT ?`),
		clusterID, p.After, p.After, limit(p.Limit, 100, 1000))
	if err != nil {
		return nil, fmt.Errorf("list backups: %w", err)
	}
	defer rows.Close()
	var out []Backup
	for rows.Next() {
		b, err := scanBackup(rows)
		if err != nil {
			return nil, fmt.Errorf("list backups: %w", err)
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

// BackupsByRequest returns the backup records answering on-demand request
// requestID.
func (s *Store) BackupsByRequest(ctx context.Context, clusterID, requestID string) ([]Backup, error) {
	rows, err := s.rdb.QueryContext(ctx, s.q(`SELECT `+backupCols+` FROM backups WHERE cluster_id = ? AND request_id = ? ORDER BY id`), clusterID, requestID)
	if err != nil {
		return nil, fmt.Errorf("backups of request %s: %w", requestID, err)
	}
	defer rows.Close()
	var out []Backup
	for rows.Next() {
		b, err := scanBackup(rows)
		if err != nil {
			return nil, fmt.Errorf("backups of request %s: %w", requestID, err)
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

// GetBackup returns backup id of a cluster.
func (s *Store) GetBackup(ctx context.Context, clusterID, id string) (Backup, error) {
	b, err := scanBackup(s.rdb.QueryRowContext(ctx, s.q(`SELECT `+backupCols+` FROM backups WHERE cluster_id = ? AND id = ?`), clusterID, id))
	if err != nil {
		return Backup{}, notFound("backup "+id, err)
	}
	return b, nil
}

// PruneEvents deletes up to limit events (oldest first, by seq) whose
// time is before cutoff; with types non-empty only events of those types,
// otherwise events of any type except those in keep. It returns how many it
// deleted; callers loop until that is below limit, so each call is one
// short write transaction beside the projection's. Errors: the database's.
func (s *Store) PruneEvents(ctx context.Context, cutoff time.Time, types, keep []string, limit int) (int64, error) {
	where := `time < ?`
	args := []any{ms(cutoff)}
	in := func(col string, vals []string, not bool) {
		if len(vals) == 0 {
			return
		}
		op := " IN ("
		if not {
			op = " NOT IN ("
		}
		where += ` AND ` + col + op + strings.TrimSuffix(strings.Repeat("?, ", len(vals)), ", ") + `)`
		for _, v := range vals {
			args = append(args, v)
		}
	}
	in("type", types, false)
	in("type", keep, true)
	res, err := s.exec(ctx, `DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE `+where+` ORDER BY seq LIMIT ?)`, append(args, max(limit, 1))...)
	if err != nil {
		return 0, fmt.Errorf("prune events: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("prune events: %w", err)
	}
	return n, nil
}

// ListEvents lists events in arrival order matching f: with f.Namespace
// by the per-namespace number (Event.Seq is that number), else by the
// store-wide one.
func (s *Store) ListEvents(ctx context.Context, f EventFilter) ([]Event, error) {
	seqCol := "seq"
	if f.Namespace != "" {
		seqCol = "ns_seq"
	}
	query := `SELECT ` + seqCol + `, id, namespace, project, cluster, node, type, term, revision, time, stale, data FROM events WHERE ` + seqCol + ` > ?`
	args := []any{f.AfterSeq}
	for _, c := range []struct{ col, v string }{{"namespace", f.Namespace}, {"cluster", f.Cluster}, {"node", f.Node}, {"type", f.Type}} {
		if c.v != "" {
			query += ` AND ` + c.col + ` = ?`
			args = append(args, c.v)
		}
	}
	query += ` ORDER BY ` + seqCol + ` LIMIT ?`
	args = append(args, limit(f.Limit, 100, 1000))
	rows, err := s.rdb.QueryContext(ctx, s.q(query), args...)
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		var e Event
		var term, at int64
		var data string
		if err := rows.Scan(&e.Seq, &e.ID, &e.Namespace, &e.Project, &e.Cluster, &e.Node, &e.Type, &term, &e.Revision, &at, &e.Stale, &data); err != nil {
			return nil, fmt.Errorf("list events: %w", err)
		}
		e.Term, e.Time, e.Data = uint64(term), fromMS(at), json.RawMessage(data)
		out = append(out, e)
	}
	return out, rows.Err()
}

// ---- operations ----

const opCols = `id, namespace, cluster_id, kind, state, step, attempts, error, params, owner, lease_until, created_at, updated_at`

func (s *Store) insertOp(ctx context.Context, tx *sql.Tx, op Operation) error {
	params := string(op.Params)
	if params == "" {
		params = "{}"
	}
	_, err := tx.ExecContext(ctx, s.q(`INSERT INTO operations (`+opCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		op.ID, op.Namespace, op.ClusterID, op.Kind, op.State, op.Step, op.Attempts, op.Error, params, op.Owner,
		ms(op.LeaseUntil), ms(op.CreatedAt), ms(op.UpdatedAt))
	if err != nil {
		return fmt.Errorf("create operation %s: %w", op.ID, err)
	}
	return nil
}

// CreateOperation inserts an operation. When phase is non-empty, the
// cluster's phase is set in the same transaction; ErrConflict is returned
// if another operation of the cluster is still pending or running.
func (s *Store) CreateOperation(ctx context.Context, op Operation, phase string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("create operation: %w", err)
	}
	defer tx.Rollback()
	var busy int
	if err := tx.QueryRowContext(ctx, s.q(`SELECT COUNT(*) FROM operations WHERE cluster_id = ? AND state IN ('pending', 'running')`), op.ClusterID).Scan(&busy); err != nil {
		return fmt.Errorf("create operation: %w", err)
	}
	if busy > 0 {
		return fmt.Errorf("create %s operation: another operation of cluster %s is in progress: %w", op.Kind, op.ClusterID, ErrConflict)
	}
	if err := s.insertOp(ctx, tx, op); err != nil {
		return err
	}
	if phase != "" {
		if _, err := tx.ExecContext(ctx, s.q(`UPDATE clusters SET phase = ?, reason = '', updated_at = ? WHERE id = ?`), phase, ms(time.Now()), op.ClusterID); err != nil {
			return fmt.Errorf("create operation: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("create operation: %w", err)
	}
	return nil
}

func scanOp(sc interface{ Scan(...any) error }) (Operation, error) {
	var o Operation
	var params string
	var lu, ca, ua int64
	if err := sc.Scan(&o.ID, &o.Namespace, &o.ClusterID, &o.Kind, &o.State, &o.Step, &o.Attempts, &o.Error, &params, &o.Owner, &lu, &ca, &ua); err != nil {
		return Operation{}, err
	}
	o.Params, o.LeaseUntil, o.CreatedAt, o.UpdatedAt = json.RawMessage(params), fromMS(lu), fromMS(ca), fromMS(ua)
	return o, nil
}

// GetOperation returns an operation by id.
func (s *Store) GetOperation(ctx context.Context, id string) (Operation, error) {
	o, err := scanOp(s.rdb.QueryRowContext(ctx, s.q(`SELECT `+opCols+` FROM operations WHERE id = ?`), id))
	if err != nil {
		return Operation{}, notFound("operation "+id, err)
	}
	return o, nil
}

// ListOperations lists a namespace's operations by id.
func (s *Store) ListOperations(ctx context.Context, namespace, clusterID string, p Page) ([]Operation, error) {
	query := `SELECT ` + opCols + ` FROM operations WHERE namespace = ? AND id > ?`
	args := []any{namespace, p.After}
	if clusterID != "" {
		query += ` AND cluster_id = ?`
		args = append(args, clusterID)
	}
	return s.queryOps(ctx, query+` ORDER BY id LIMIT ?`, append(args, limit(p.Limit, 100, 1000))...)
}

// LatestOperations lists cluster clusterID's operations of kind (every
// kind when ""), newest first, at most n (1..1000, default 100).
func (s *Store) LatestOperations(ctx context.Context, clusterID, kind string, n int) ([]Operation, error) {
	query := `SELECT ` + opCols + ` FROM operations WHERE cluster_id = ?`
	args := []any{clusterID}
	if kind != "" {
		query += ` AND kind = ?`
		args = append(args, kind)
	}
	return s.queryOps(ctx, query+` ORDER BY created_at DESC, id DESC LIMIT ?`, append(args, limit(n, 100, 1000))...)
}

// UnfinishedOperations lists every pending or running operation, oldest
// first: what a starting server resumes.
func (s *Store) UnfinishedOperations(ctx context.Context) ([]Operation, error) {
	return s.queryOps(ctx, `SELECT `+opCols+` FROM operations WHERE state IN ('pending', 'running') ORDER BY created_at, id`)
}

func (s *Store) queryOps(ctx context.Context, query string, args ...any) ([]Operation, error) {
	rows, err := s.rdb.QueryContext(ctx, s.q(query), args...)
	if err != nil {
		return nil, fmt.Errorf("list operations: %w", err)
	}
	defer rows.Close()
	var out []Operation
	for rows.Next() {
		o, err := scanOp(rows)
		if err != nil {
			return nil, fmt.Errorf("list operations: %w", err)
		}
		out = append(out, o)
	}
	return out, rows.Err()
}

// ClaimOperation makes owner the operation's runner until leaseUntil, if
// it is unfinished and unowned, its lease ran out, or owner already holds
// it. It returns ErrConflict when another runner holds it: with several
// server replicas on one PostgreSQL store, exactly one runs each workflow.
func (s *Store) ClaimOperation(ctx context.Context, id, owner string, leaseUntil time.Time) (Operation, error) {
	now := time.Now()
	res, err := s.exec(ctx, `UPDATE operations SET owner = ?, lease_until = ?, state = 'running', updated_at = ?
 WHERE id = ? AND state IN ('pending', 'running') AND (owner = '' OR owner = ? OR lease_until < ?)`,
		owner, ms(leaseUntil), ms(now), id, owner, ms(now))
	if err != nil {
		return Operation{}, fmt.Errorf("claim operation %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return Operation{}, fmt.Errorf("claim operation %s: %w", id, ErrConflict)
	}
	return s.GetOperation(ctx, id)
}

// UpdateOperation saves an operation's progress (state, step, attempts,
// error, params, lease), provided it is unfinished and op.Owner still
// holds it (ErrConflict otherwise: a finished operation never changes
// again). The workflow engine ends operations with FinishOperation.
func (s *Store) UpdateOperation(ctx context.Context, op Operation) error {
	params := string(op.Params)
	if params == "" {
		params = "{}"
	}
	res, err := s.exec(ctx, `UPDATE operations SET state = ?, step = ?, attempts = ?, error = ?, params = ?, lease_until = ?, updated_at = ?
 WHERE id = ? AND owner = ? AND state IN ('pending', 'running')`, op.State, op.Step, op.Attempts, op.Error, params, ms(op.LeaseUntil), ms(time.Now()), op.ID, op.Owner)
	if err != nil {
		return fmt.Errorf("update operation %s: %w", op.ID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("update operation %s: not owned by %s, or finished: %w", op.ID, op.Owner, ErrConflict)
	}
	return nil
}

// RenewOperation extends claim's lease to leaseUntil (ErrConflict when the
// operation is finished or another runner owns it). The workflow engine
// renews the lease of every operation it runs every third of the lease.
func (s *Store) RenewOperation(ctx context.Context, claim Claim, leaseUntil time.Time) error {
	res, err := s.exec(ctx, `UPDATE operations SET lease_until = ? WHERE id = ? AND owner = ? AND state IN ('pending', 'running')`,
		ms(leaseUntil), claim.OperationID, claim.Owner)
	if err != nil {
		return fmt.Errorf("renew operation %s: %w", claim.OperationID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("renew operation %s: not owned by %s, or finished: %w", claim.OperationID, claim.Owner, ErrConflict)
	}
	return nil
}

// FinishOperation saves op in its final state (op.State succeeded or
// failed) and, when change is not nil, sets the phase of cluster
// op.ClusterID, in one transaction, provided the operation is unfinished
// and op.Owner still holds it: ErrConflict otherwise, and nothing is
// written. A cluster that is gone (or not in change.IfPhase) is left
// alone.
func (s *Store) FinishOperation(ctx context.Context, op Operation, change *ClusterChange) error {
	if op.State != OpSucceeded && op.State != OpFailed {
		return fmt.Errorf("finish operation %s: state %q is not final", op.ID, op.State)
	}
	params := string(op.Params)
	if params == "" {
		params = "{}"
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("finish operation %s: %w", op.ID, err)
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, s.q(`UPDATE operations SET state = ?, step = ?, attempts = ?, error = ?, params = ?, updated_at = ?
 WHERE id = ? AND owner = ? AND state IN ('pending', 'running')`), op.State, op.Step, op.Attempts, op.Error, params, ms(time.Now()), op.ID, op.Owner)
	if err != nil {
		return fmt.Errorf("finish operation %s: %w", op.ID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("finish operation %s: not owned by %s, or finished: %w", op.ID, op.Owner, ErrConflict)
	}
	if change != nil {
		if err := s.setPhase(ctx, tx, op.ClusterID, *change); err != nil && !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("finish operation %s: set cluster phase: %w", op.ID, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("finish operation %s: %w", op.ID, err)
	}
	return nil
}

// asOwner runs fn in a transaction that first checks (and locks, by
// touching its row) that claim's operation is unfinished and owned by
// claim.Owner: a concurrent ClaimOperation by another runner waits for the
// transaction, so fn's writes happen while the claim holds.
func (s *Store) asOwner(ctx context.Context, claim Claim, what string, fn func(tx *sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, s.q(`UPDATE operations SET updated_at = ? WHERE id = ? AND owner = ? AND state IN ('pending', 'running')`),
		ms(time.Now()), claim.OperationID, claim.Owner)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("%s: operation %s is not owned by %s, or finished: %w", what, claim.OperationID, claim.Owner, ErrConflict)
	}
	if err := fn(tx); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// ---- catalog templates ----

// PutTemplate creates a user template (ErrConflict if the name exists).
func (s *Store) PutTemplate(ctx context.Context, t Template) error {
	_, err := s.exec(ctx, `INSERT INTO templates (namespace, namespace_id, name, body, created_at) VALUES (?, `+nsIDOf+`, ?, ?, ?)`,
		t.Namespace, t.Namespace, t.Name, string(t.Body), ms(t.CreatedAt))
	if isUnique(err) {
		return fmt.Errorf("create template %s: %w", t.Name, ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("create template %s: %w", t.Name, err)
	}
	return nil
}

// GetTemplate returns a user template.
func (s *Store) GetTemplate(ctx context.Context, namespace, name string) (Template, error) {
	t := Template{Namespace: namespace, Name: name}
	var body string
	var at int64
	err := s.rdb.QueryRowContext(ctx, s.q(`SELECT body, created_at FROM templates WHERE namespace = ? AND namespace_id = `+nsIDOf+` AND name = ?`), namespace, namespace, name).Scan(&body, &at)
	if err != nil {
		return Template{}, notFound("template "+name, err)
	}
	t.Body, t.CreatedAt = json.RawMessage(body), fromMS(at)
	return t, nil
}

// ListTemplates lists a namespace's user templates by name.
func (s *Store) ListTemplates(ctx context.Context, namespace string) ([]Template, error) {
	rows, err := s.rdb.QueryContext(ctx, s.q(`SELECT name, body, created_at FROM templates WHERE namespace = ? AND namespace_id = `+nsIDOf+` ORDER BY name`), namespace, namespace)
	if err != nil {
		return nil, fmt.Errorf("list templates: %w", err)
	}
	defer rows.Close()
	var out []Template
	for rows.Next() {
		t := Template{Namespace: namespace}
		var body string
		var at int64
		if err := rows.Scan(&t.Name, &body, &at); err != nil {
			return nil, fmt.Errorf("list templates: %w", err)
		}
		t.Body, t.CreatedAt = json.RawMessage(body), fromMS(at)
		out = append(out, t)
	}
	return out, rows.Err()
}

// DeleteTemplate deletes a user template.
func (s *Store) DeleteTemplate(ctx context.Context, namespace, name string) error {
	res, err := s.exec(ctx, `DELETE FROM templates WHERE namespace = ? AND namespace_id = `+nsIDOf+` AND name = ?`, namespace, namespace, name)
	if err != nil {
		return fmt.Errorf("delete template %s: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("delete template %s: %w", name, ErrNotFound)
	}
	return nil
}

// ---- fleet ----

// CreateJoinToken stores a one-time join token's hash.
func (s *Store) CreateJoinToken(ctx context.Context, j JoinToken) error {
	if _, err := s.exec(ctx, `INSERT INTO join_tokens (hash, labels, expires_at, created_at) VALUES (?, ?, ?, ?)`,
		j.Hash, mustJSON(j.Labels), ms(j.ExpiresAt), ms(j.CreatedAt)); err != nil {
		return fmt.Errorf("create join token: %w", err)
	}
	return nil
}

// EnrollHost consumes the join token with hash joinHash (once, before it
// expires) and creates h with the token's labels merged under h's own. It
// returns ErrNotFound for an unknown, used or expired token and ErrConflict
// for a taken host name.
func (s *Store) EnrollHost(ctx context.Context, joinHash string, h Host) (Host, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return Host{}, fmt.Errorf("enroll host: %w", err)
	}
	defer tx.Rollback()
	var labels string
	now := time.Now()
	err = tx.QueryRowContext(ctx, s.q(`SELECT labels FROM join_tokens WHERE hash = ? AND used_at = 0 AND expires_at > ?`), joinHash, ms(now)).Scan(&labels)
	if err != nil {
		return Host{}, notFound("enroll host: join token", err)
	}
	if _, err := tx.ExecContext(ctx, s.q(`UPDATE join_tokens SET used_at = ? WHERE hash = ?`), ms(now), joinHash); err != nil {
		return Host{}, fmt.Errorf("enroll host: %w", err)
	}
	merged := map[string]string{}
	if err := json.Unmarshal([]byte(labels), &merged); err != nil {
		return Host{}, fmt.Errorf("enroll host: token labels: %w", err)
	}
	if merged == nil {
		merged = map[string]string{}
	}
	for k, v := range h.Labels {
		merged[k] = v
	}
	h.Labels, h.CreatedAt, h.State = merged, now.UTC(), "ready"
	_, err = tx.ExecContext(ctx, s.q(`INSERT INTO hosts (id, name, address, labels, capacity, state, credential_hash, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`),
		h.ID, h.Name, h.Address, mustJSON(h.Labels), mustJSON(h.Capacity), h.State, h.CredentialHash, ms(h.CreatedAt))
	if isUnique(err) {
		return Host{}, fmt.Errorf("enroll host %s: %w", h.Name, ErrConflict)
	}
	if err != nil {
		return Host{}, fmt.Errorf("enroll host: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return Host{}, fmt.Errorf("enroll host: %w", err)
	}
	return h, nil
}

const hostCols = `id, name, address, labels, capacity, state, credential_hash, created_at, last_seen`

func scanHost(sc interface{ Scan(...any) error }) (Host, error) {
	var h Host
	var labels, capacity string
	var at, seen int64
	if err := sc.Scan(&h.ID, &h.Name, &h.Address, &labels, &capacity, &h.State, &h.CredentialHash, &at, &seen); err != nil {
		return Host{}, err
	}
	if err := json.Unmarshal([]byte(labels), &h.Labels); err != nil {
		return Host{}, fmt.Errorf("host %s labels: %w", h.ID, err)
	}
	if err := json.Unmarshal([]byte(capacity), &h.Capacity); err != nil {
		return Host{}, fmt.Errorf("host %s capacity: %w", h.ID, err)
	}
	h.CreatedAt, h.LastSeen = fromMS(at), fromMS(seen)
	return h, nil
}

// ListHosts lists fleet hosts by id.
func (s *Store) ListHosts(ctx context.Context) ([]Host, error) {
	rows, err := s.rdb.QueryContext(ctx, s.q(`SELECT `+hostCols+` FROM hosts ORDER BY id`))
	if err != nil {
		return nil, fmt.Errorf("list hosts: %w", err)
	}
	defer rows.Close()
	var out []Host
	for rows.Next() {
		h, err := scanHost(rows)
		if err != nil {
			return nil, fmt.Errorf("list hosts: %w", err)
		}
		out = append(out, h)
	}
	return out, rows.Err()
}

// HostByCredential returns the host whose credential hashes to hash.
func (s *Store) HostByCredential(ctx context.Context, hash string) (Host, error) {
	h, err := scanHost(s.rdb.QueryRowContext(ctx, s.q(`SELECT `+hostCols+` FROM hosts WHERE credential_hash = ?`), hash))
	if err != nil {
		return Host{}, notFound("host", err)
	}
	return h, nil
}

// Allocate places a cluster node on the first of candidates (host ids, in
// preference order) whose free capacity fits need and that holds no other
// node of the same cluster. It is serialised by the transaction, so two
// concurrent allocations never overbook a host. ErrNotFound: no host fits.
func (s *Store) Allocate(ctx context.Context, candidates []string, a Allocation) (Allocation, error) {
	return s.AllocateWith(ctx, candidates, a, AllocateOptions{})
}

// AllocateWith is Allocate with options (AllowColocation lifts the
// one-node-of-a-cluster-per-host rule).
func (s *Store) AllocateWith(ctx context.Context, candidates []string, a Allocation, opts AllocateOptions) (Allocation, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return Allocation{}, fmt.Errorf("allocate: %w", err)
	}
	defer tx.Rollback()
	var existing, state string
	err = tx.QueryRowContext(ctx, s.q(`SELECT host_id, state FROM allocations WHERE cluster_id = ? AND node = ?`), a.ClusterID, a.Node).Scan(&existing, &state)
	if err == nil {
		a.HostID, a.State = existing, state
		return a, nil // idempotent: already placed
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return Allocation{}, fmt.Errorf("allocate: %w", err)
	}
	if s.dialect == Postgres {
		if _, err := tx.ExecContext(ctx, `LOCK TABLE allocations IN EXCLUSIVE MODE`); err != nil {
			return Allocation{}, fmt.Errorf("allocate: %w", err)
		}
	}
	for _, id := range candidates {
		h, err := scanHost(tx.QueryRowContext(ctx, s.q(`SELECT `+hostCols+` FROM hosts WHERE id = ? AND state = 'ready'`), id))
		if err != nil {
			continue
		}
		var used Resources
		var same int
		rows, err := tx.QueryContext(ctx, s.q(`SELECT cluster_id, resources FROM allocations WHERE host_id = ?`), id)
		if err != nil {
			return Allocation{}, fmt.Errorf("allocate: %w", err)
		}
		for rows.Next() {
			var cid, res string
			var r Resources
			if err := rows.Scan(&cid, &res); err != nil {
				rows.Close()
				return Allocation{}, fmt.Errorf("allocate: %w", err)
			}
			_ = json.Unmarshal([]byte(res), &r)
			used.CPU, used.MemoryMB, used.DiskGB = used.CPU+r.CPU, used.MemoryMB+r.MemoryMB, used.DiskGB+r.DiskGB
			if cid == a.ClusterID {
				same++
			}
		}
		rows.Close()
		if (same > 0 && !opts.AllowColocation) || used.CPU+a.Resources.CPU > h.Capacity.CPU || used.MemoryMB+a.Resources.MemoryMB > h.Capacity.MemoryMB ||
			used.DiskGB+a.Resources.DiskGB > h.Capacity.DiskGB {
			continue
		}
		a.HostID, a.CreatedAt, a.State = id, time.Now().UTC(), AllocActive
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO allocations (host_id, cluster_id, node, resources, config, created_at) VALUES (?, ?, ?, ?, ?, ?)`),
			a.HostID, a.ClusterID, a.Node, mustJSON(a.Resources), a.Config, ms(a.CreatedAt)); err != nil {
			return Allocation{}, fmt.Errorf("allocate: %w", err)
		}
		if err := tx.Commit(); err != nil {
			return Allocation{}, fmt.Errorf("allocate: %w", err)
		}
		return a, nil
	}
	return Allocation{}, fmt.Errorf("allocate %s/%s: no host with enough free capacity: %w", a.ClusterID, a.Node, ErrNotFound)
}

// ListAllocations lists the allocations of a host ("" = all hosts).
func (s *Store) ListAllocations(ctx context.Context, hostID string) ([]Allocation, error) {
	query := `SELECT ` + allocCols + ` FROM allocations`
	var args []any
	if hostID != "" {
		query += ` WHERE host_id = ?`
		args = append(args, hostID)
	}
	rows, err := s.rdb.QueryContext(ctx, s.q(query+` ORDER BY cluster_id, node`), args...)
	if err != nil {
		return nil, fmt.Errorf("list allocations: %w", err)
	}
	defer rows.Close()
	var out []Allocation
	for rows.Next() {
		a, err := scanAllocation(rows)
		if err != nil {
			return nil, fmt.Errorf("list allocations: %w", err)
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// Release deletes a node's allocation.
func (s *Store) Release(ctx context.Context, clusterID, node string) error {
	if _, err := s.exec(ctx, `DELETE FROM allocations WHERE cluster_id = ? AND node = ?`, clusterID, node); err != nil {
		return fmt.Errorf("release %s/%s: %w", clusterID, node, err)
	}
	return nil
}

// ---- audit ----

// Audit appends an audit entry. An entry of an existing namespace is
// bound to the namespace's id and numbered in it (ListAudit).
func (s *Store) Audit(ctx context.Context, a AuditEntry) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	defer tx.Rollback()
	var nsID string
	var nsSeq int64
	if a.Namespace != "" {
		err := tx.QueryRowContext(ctx, s.q(`SELECT id FROM namespaces WHERE name = ?`), a.Namespace).Scan(&nsID)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("audit: %w", err)
		}
	}
	if nsID != "" {
		if err := tx.QueryRowContext(ctx, s.q(nextSeqSQL), auditScope(nsID)).Scan(&nsSeq); err != nil {
			return fmt.Errorf("audit: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO audit (at, actor, namespace, namespace_id, ns_seq, action, resource, status, result) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		ms(a.At), a.Actor, a.Namespace, nsID, nsSeq, a.Action, a.Resource, a.Status, a.Result); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return nil
}

// ListAudit lists audit entries after afterSeq, oldest first. With a
// namespace, the entries of the namespace that has that name now (not of
// an earlier one of the same name), by their number in it; with namespace
// "", every entry by the store-wide number.
func (s *Store) ListAudit(ctx context.Context, namespace string, afterSeq int64, n int) ([]AuditEntry, error) {
	query := `SELECT seq, at, actor, namespace, action, resource, status, result FROM audit WHERE seq > ?`
	args := []any{afterSeq}
	order := `seq`
	if namespace != "" {
		query = `SELECT ns_seq, at, actor, namespace, action, resource, status, result FROM audit
 WHERE namespace_id = (SELECT id FROM namespaces WHERE name = ?) AND ns_seq > ?`
		args = []any{namespace, afterSeq}
		order = `ns_seq`
	}
	rows, err := s.rdb.QueryContext(ctx, s.q(query+` ORDER BY `+order+` LIMIT ?`), append(args, limit(n, 100, 1000))...)
	if err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	defer rows.Close()
	var out []AuditEntry
	for rows.Next() {
		var a AuditEntry
		var at int64
		if err := rows.Scan(&a.Seq, &at, &a.Actor, &a.Namespace, &a.Action, &a.Resource, &a.Status, &a.Result); err != nil {
			return nil, fmt.Errorf("list audit: %w", err)
		}
		a.At = fromMS(at)
		out = append(out, a)
	}
	return out, rows.Err()
}
