package backup

import (
	"context"
	"crypto/rand"
	"database/sql"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/pressly/goose/v3"
	_ "modernc.org/sqlite" // database/sql driver "sqlite" (pure Go)
)

//go:embed migrations/*.sql
var migrations embed.FS

// StoreFile is the name of the SQLite file under the agent's state dir.
const StoreFile = "backup.db"

// ErrNotFound is returned when a job, run or secret does not exist.
var ErrNotFound = errors.New("not found")

// Run statuses.
const (
	StatusRunning   = "running"
	StatusSucceeded = "succeeded"
	StatusFailed    = "failed"
)

// Store is the agent's local backup database: one SQLite file in WAL mode
// holding jobs, runs, logs, the event outbox and sealed secrets. Schema
// migrations (migrations/*.sql, goose) are applied by OpenStore. Safe for
// concurrent use, also by several processes (the agent and the CLI): writes
// wait up to 10 s for the file lock.
type Store struct {
	db     *sql.DB
	sealer *Sealer
}

// OpenStore opens (creating if needed) the store at path and migrates it to
// the newest schema. sealer encrypts secrets; it may be nil for read-only
// uses that never touch secrets.
func OpenStore(ctx context.Context, path string, sealer *Sealer) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open backup store: %w", err)
	}
	q := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", "busy_timeout(10000)", "synchronous(FULL)", "foreign_keys(1)"} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open backup store %s: %w", path, err)
	}
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open backup store: %w", err)
	}
	prov, err := goose.NewProvider(goose.DialectSQLite3, db, sub)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open backup store: migrations: %w", err)
	}
	if _, err := prov.Up(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open backup store %s: migrate: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		db.Close()
		return nil, fmt.Errorf("open backup store: %w", err)
	}
	return &Store{db: db, sealer: sealer}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Job is one backup job: the whitepaper's backup job schema.
type Job struct {
	// Name is unique on the node (and should be across the cluster).
	Name        string
	Description string
	// Schedule is a cron expression (minute hour dom month dow, or
	// @daily/@hourly/@every 1h) evaluated in TimeZone.
	Schedule string
	// TimeZone is an IANA zone name ("UTC", "Europe/Paris").
	TimeZone string
	// Window is how long after its scheduled time an occurrence may still
	// start (an agent that was down catches up once within it).
	Window time.Duration
	// Retention: keep at least the newest RetentionCount good backups and
	// every backup younger than RetentionAge; 0 disables a rule; both 0
	// keeps everything.
	RetentionCount int
	RetentionAge   time.Duration
	// SourceType is the kind of source ("postgresql"); SourceLocation where
	// it is ("127.0.0.1:5432").
	SourceType     string
	SourceLocation string
	// Method is a Method name: "physical", "logical" or "verify".
	Method string
	// Repository names the repository backups go to (verify: read from).
	Repository string
	// TargetJob is, for a verify job, the job whose newest backup it
	// restores; "" means the newest physical backup of any job.
	TargetJob string
	// MaxRate throttles a physical backup (pg_basebackup --max-rate, e.g.
	// "50M" bytes per second); "" is unthrottled.
	MaxRate string
	// Compression of a physical backup: "zstd" (default, ""), "s2" or
	// "none".
	Compression string
}

// Run is one attempt of a job on this node: a backup or a restore drill.
type Run struct {
	ID         string
	Job        string
	Occurrence time.Time // zero for manual runs
	Node       string
	Method     string
	Repository string
	Status     string
	StartedAt  time.Time
	FinishedAt time.Time // zero while running
	SizeBytes  int64
	Checksum   string // "sha256:<hex>" of the stored bytes
	StartLSN   string
	StopLSN    string
	Timeline   uint32
	// RepositoryPath is the backup's location inside the repository.
	RepositoryPath string
	Error          string
	VerifiedAt     time.Time // zero if never verified
	VerifyError    string
	// RequestID is the control plane's on-demand request the run answers
	// (carried in its events; not stored in the runs table).
	RequestID string
}

// OutboxEvent is an event waiting for delivery to the control plane.
type OutboxEvent struct {
	Seq       int64
	ID        string // CloudEvents id, stable across retries
	Type      string // proto.Type*
	Payload   json.RawMessage
	CreatedAt time.Time
	Attempts  int
}

// NewID returns a random 128-bit identifier in hex.
func NewID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func fromMS(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return time.UnixMilli(v.Int64)
}

// PutJob inserts or replaces a job.
func (s *Store) PutJob(ctx context.Context, j Job) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO jobs (name, description, schedule, time_zone, window_seconds, retention_count,
		retention_age_seconds, source_type, source_location, method, repository, target_job, updated_at_ms, max_rate, compression)
		VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
		ON CONFLICT (name) DO UPDATE SET description=excluded.description, schedule=excluded.schedule, time_zone=excluded.time_zone,
		window_seconds=excluded.window_seconds, retention_count=excluded.retention_count, retention_age_seconds=excluded.retention_age_seconds,
		source_type=excluded.source_type, source_location=excluded.source_location, method=excluded.method, repository=excluded.repository,
		target_job=excluded.target_job, updated_at_ms=excluded.updated_at_ms, max_rate=excluded.max_rate, compression=excluded.compression`,
		j.Name, j.Description, j.Schedule, j.TimeZone, int64(j.Window/time.Second), j.RetentionCount, int64(j.RetentionAge/time.Second),
		j.SourceType, j.SourceLocation, j.Method, j.Repository, j.TargetJob, time.Now().UnixMilli(), j.MaxRate, j.Compression)
	if err != nil {
		return fmt.Errorf("put job %s: %w", j.Name, err)
	}
	return nil
}

// DeleteJobsExcept removes every job whose name is not in keep (jobs removed
// from the configuration). Their runs stay.
func (s *Store) DeleteJobsExcept(ctx context.Context, keep []string) error {
	b, _ := json.Marshal(append([]string{}, keep...))
	if _, err := s.db.ExecContext(ctx, `DELETE FROM jobs WHERE name NOT IN (SELECT value FROM json_each(?))`, string(b)); err != nil {
		return fmt.Errorf("delete removed jobs: %w", err)
	}
	return nil
}

// Jobs returns every job ordered by name.
func (s *Store) Jobs(ctx context.Context) ([]Job, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, description, schedule, time_zone, window_seconds, retention_count,
		retention_age_seconds, source_type, source_location, method, repository, target_job, max_rate, compression FROM jobs ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	defer rows.Close()
	var out []Job
	for rows.Next() {
		var j Job
		var win, age int64
		if err := rows.Scan(&j.Name, &j.Description, &j.Schedule, &j.TimeZone, &win, &j.RetentionCount, &age,
			&j.SourceType, &j.SourceLocation, &j.Method, &j.Repository, &j.TargetJob, &j.MaxRate, &j.Compression); err != nil {
			return nil, fmt.Errorf("list jobs: %w", err)
		}
		j.Window, j.RetentionAge = time.Duration(win)*time.Second, time.Duration(age)*time.Second
		out = append(out, j)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	return out, nil
}

// Job returns the named job. Errors: ErrNotFound.
func (s *Store) Job(ctx context.Context, name string) (Job, error) {
	jobs, err := s.Jobs(ctx)
	if err != nil {
		return Job{}, err
	}
	for _, j := range jobs {
		if j.Name == name {
			return j, nil
		}
	}
	return Job{}, fmt.Errorf("job %q: %w", name, ErrNotFound)
}

// ErrOccurrenceTaken is returned by StartRun when this node already has a
// run for the job's occurrence.
var ErrOccurrenceTaken = errors.New("occurrence already run on this node")

// StartRun records r (Status running) together with an outbox event, in one
// transaction. r.ID is generated if empty. Errors: ErrOccurrenceTaken.
func (s *Store) StartRun(ctx context.Context, r *Run, evType string, payload any) error {
	if r.ID == "" {
		r.ID = NewID()
	}
	r.Status = StatusRunning
	if r.StartedAt.IsZero() {
		r.StartedAt = time.Now()
	}
	var occ any
	if !r.Occurrence.IsZero() {
		occ = r.Occurrence.Unix()
	}
	return s.tx(ctx, "start run "+r.Job, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO runs (id, job, occurrence_unix, node, method, repository, status, started_at_ms, repository_path)
			VALUES (?,?,?,?,?,?,?,?,?)`, r.ID, r.Job, occ, r.Node, r.Method, r.Repository, r.Status, r.StartedAt.UnixMilli(), r.RepositoryPath)
		if err != nil {
			var exists int
			if occ != nil && tx.QueryRowContext(ctx, `SELECT 1 FROM runs WHERE job=? AND occurrence_unix=?`, r.Job, occ).Scan(&exists) == nil {
				return ErrOccurrenceTaken
			}
			return err
		}
		return addOutbox(ctx, tx, evType, payload)
	})
}

// FinishRun stores the final state of r (status, sizes, LSNs, error) with an
// outbox event, in one transaction.
func (s *Store) FinishRun(ctx context.Context, r *Run, evType string, payload any) error {
	if r.FinishedAt.IsZero() {
		r.FinishedAt = time.Now()
	}
	return s.tx(ctx, "finish run "+r.ID, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE runs SET status=?, finished_at_ms=?, size_bytes=?, checksum=?, start_lsn=?, stop_lsn=?,
			timeline=?, repository_path=?, error=? WHERE id=?`,
			r.Status, r.FinishedAt.UnixMilli(), r.SizeBytes, r.Checksum, r.StartLSN, r.StopLSN, r.Timeline, r.RepositoryPath, r.Error, r.ID)
		if err != nil {
			return err
		}
		if evType == "" {
			return nil
		}
		return addOutbox(ctx, tx, evType, payload)
	})
}

// SetRepositoryPath records where a running backup writes, so an
// interrupted run's partial files can be found and removed.
func (s *Store) SetRepositoryPath(ctx context.Context, id, path string) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE runs SET repository_path=? WHERE id=?`, path, id); err != nil {
		return fmt.Errorf("run %s: set repository path: %w", id, err)
	}
	return nil
}

// MarkVerified records the outcome of a restore drill of the backup at
// repository path path (every local run with that path): verifyErr "" means
// success. It also queues an outbox event.
func (s *Store) MarkVerified(ctx context.Context, path string, at time.Time, verifyErr string, evType string, payload any) error {
	return s.tx(ctx, "mark verified "+path, func(tx *sql.Tx) error {
		var err error
		if verifyErr == "" {
			_, err = tx.ExecContext(ctx, `UPDATE runs SET verified_at_ms=?, verify_error='' WHERE repository_path=? AND status=?`, at.UnixMilli(), path, StatusSucceeded)
		} else {
			_, err = tx.ExecContext(ctx, `UPDATE runs SET verify_error=? WHERE repository_path=? AND status=?`, verifyErr, path, StatusSucceeded)
		}
		if err != nil {
			return err
		}
		return addOutbox(ctx, tx, evType, payload)
	})
}

const runColumns = `id, job, occurrence_unix, node, method, repository, status, started_at_ms, finished_at_ms, size_bytes,
	checksum, start_lsn, stop_lsn, timeline, repository_path, error, verified_at_ms, verify_error`

func scanRun(sc interface{ Scan(...any) error }) (Run, error) {
	var r Run
	var occ, fin, ver sql.NullInt64
	var started int64
	err := sc.Scan(&r.ID, &r.Job, &occ, &r.Node, &r.Method, &r.Repository, &r.Status, &started, &fin, &r.SizeBytes,
		&r.Checksum, &r.StartLSN, &r.StopLSN, &r.Timeline, &r.RepositoryPath, &r.Error, &ver, &r.VerifyError)
	if occ.Valid {
		r.Occurrence = time.Unix(occ.Int64, 0)
	}
	r.StartedAt, r.FinishedAt, r.VerifiedAt = time.UnixMilli(started), fromMS(fin), fromMS(ver)
	return r, err
}

// Runs returns the runs of job ("" for all), newest first, at most limit
// (0: all).
func (s *Store) Runs(ctx context.Context, job string, limit int) ([]Run, error) {
	if limit <= 0 {
		limit = -1
	}
	rows, err := s.db.QueryContext(ctx, `SELECT `+runColumns+` FROM runs WHERE (?='' OR job=?) ORDER BY started_at_ms DESC, id LIMIT ?`, job, job, limit)
	if err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	defer rows.Close()
	var out []Run
	for rows.Next() {
		r, err := scanRun(rows)
		if err != nil {
			return nil, fmt.Errorf("list runs: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	return out, nil
}

// Run returns one run. Errors: ErrNotFound.
func (s *Store) Run(ctx context.Context, id string) (Run, error) {
	r, err := scanRun(s.db.QueryRowContext(ctx, `SELECT `+runColumns+` FROM runs WHERE id=?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Run{}, fmt.Errorf("run %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Run{}, fmt.Errorf("run %s: %w", id, err)
	}
	return r, nil
}

// HasOccurrence reports whether this node has a run of job for occurrence.
func (s *Store) HasOccurrence(ctx context.Context, job string, occurrence time.Time) (bool, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM runs WHERE job=? AND occurrence_unix=?`, job, occurrence.Unix()).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("look up occurrence of %s: %w", job, err)
	}
	return n > 0, nil
}

// RunningRuns returns the runs still marked running (at start-up: runs a
// crash interrupted).
func (s *Store) RunningRuns(ctx context.Context) ([]Run, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+runColumns+` FROM runs WHERE status=? ORDER BY started_at_ms`, StatusRunning)
	if err != nil {
		return nil, fmt.Errorf("list running runs: %w", err)
	}
	defer rows.Close()
	var out []Run
	for rows.Next() {
		r, err := scanRun(rows)
		if err != nil {
			return nil, fmt.Errorf("list running runs: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// AddLog appends a log line to a run.
func (s *Store) AddLog(ctx context.Context, runID, level, msg string) error {
	if _, err := s.db.ExecContext(ctx, `INSERT INTO logs (run_id, at_ms, level, message) VALUES (?,?,?,?)`,
		runID, time.Now().UnixMilli(), level, msg); err != nil {
		return fmt.Errorf("add log to run %s: %w", runID, err)
	}
	return nil
}

// Logs returns a run's log lines, oldest first, as "level message".
func (s *Store) Logs(ctx context.Context, runID string) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT level, message FROM logs WHERE run_id=? ORDER BY id`, runID)
	if err != nil {
		return nil, fmt.Errorf("logs of run %s: %w", runID, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var l, m string
		if err := rows.Scan(&l, &m); err != nil {
			return nil, fmt.Errorf("logs of run %s: %w", runID, err)
		}
		out = append(out, l+" "+m)
	}
	return out, rows.Err()
}

func addOutbox(ctx context.Context, tx *sql.Tx, typ string, payload any) error {
	b, err := json.Marshal(payload)
	if err != nil {
		return fmt.Errorf("encode %s event: %w", typ, err)
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO outbox (id, type, payload, created_at_ms) VALUES (?,?,?,?)`,
		NewID(), typ, b, time.Now().UnixMilli())
	return err
}

// PendingEvents returns up to limit undelivered outbox events, oldest first.
func (s *Store) PendingEvents(ctx context.Context, limit int) ([]OutboxEvent, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT seq, id, type, payload, created_at_ms, attempts FROM outbox
		WHERE delivered_at_ms IS NULL ORDER BY seq LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	defer rows.Close()
	var out []OutboxEvent
	for rows.Next() {
		var e OutboxEvent
		var created int64
		if err := rows.Scan(&e.Seq, &e.ID, &e.Type, &e.Payload, &created, &e.Attempts); err != nil {
			return nil, fmt.Errorf("read outbox: %w", err)
		}
		e.CreatedAt = time.UnixMilli(created)
		out = append(out, e)
	}
	return out, rows.Err()
}

// MarkDelivered records that the receiver accepted event id.
func (s *Store) MarkDelivered(ctx context.Context, id string) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE outbox SET delivered_at_ms=?, attempts=attempts+1, last_error='' WHERE id=?`,
		time.Now().UnixMilli(), id); err != nil {
		return fmt.Errorf("outbox: mark %s delivered: %w", id, err)
	}
	return nil
}

// MarkAttempt records a failed delivery attempt of event id.
func (s *Store) MarkAttempt(ctx context.Context, id string, deliveryErr error) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE outbox SET attempts=attempts+1, last_error=? WHERE id=?`, deliveryErr.Error(), id); err != nil {
		return fmt.Errorf("outbox: record attempt of %s: %w", id, err)
	}
	return nil
}

// PutSecret seals value with the host key and stores it under name.
func (s *Store) PutSecret(ctx context.Context, name string, value []byte) error {
	if s.sealer == nil {
		return fmt.Errorf("put secret %s: store opened without a host key", name)
	}
	sealed, err := s.sealer.Seal(name, value)
	if err != nil {
		return err
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO secrets (name, sealed, updated_at_ms) VALUES (?,?,?)
		ON CONFLICT (name) DO UPDATE SET sealed=excluded.sealed, updated_at_ms=excluded.updated_at_ms`,
		name, sealed, time.Now().UnixMilli()); err != nil {
		return fmt.Errorf("put secret %s: %w", name, err)
	}
	return nil
}

// Secret returns the plaintext of the named secret. Errors: ErrNotFound,
// ErrKeyMismatch. The value is never part of an error.
func (s *Store) Secret(ctx context.Context, name string) ([]byte, error) {
	if s.sealer == nil {
		return nil, fmt.Errorf("secret %s: store opened without a host key", name)
	}
	var sealed []byte
	err := s.db.QueryRowContext(ctx, `SELECT sealed FROM secrets WHERE name=?`, name).Scan(&sealed)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("secret %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("secret %s: %w", name, err)
	}
	return s.sealer.Open(name, sealed)
}

// SealedSecret returns the stored (encrypted) bytes of a secret, for tests
// and audits that check nothing is stored in clear.
func (s *Store) SealedSecret(ctx context.Context, name string) ([]byte, error) {
	var sealed []byte
	if err := s.db.QueryRowContext(ctx, `SELECT sealed FROM secrets WHERE name=?`, name).Scan(&sealed); err != nil {
		return nil, fmt.Errorf("secret %s: %w", name, err)
	}
	return sealed, nil
}

func (s *Store) tx(ctx context.Context, op string, f func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if err := f(tx); err != nil {
		tx.Rollback()
		if errors.Is(err, ErrOccurrenceTaken) {
			return fmt.Errorf("%s: %w", op, err)
		}
		return fmt.Errorf("%s: %w", op, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("%s: commit: %w", op, err)
	}
	return nil
}
