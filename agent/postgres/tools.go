package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
)

// BinDir returns the directory holding the PostgreSQL programs.
func (p *Instance) BinDir() string { return p.cfg.BinDir }

// Port returns the configured TCP port.
func (p *Instance) Port() int { return p.cfg.Port }

// ConnectHost returns the address the agent uses to reach its own server.
func (p *Instance) ConnectHost() string { return p.cfg.connectHost() }

// Owner returns the uid and gid PostgreSQL programs run as; ok is false when
// the agent is not root (programs then run as the agent's own user and files
// need no chown).
func (p *Instance) Owner() (uid, gid int, ok bool) {
	if p.cred == nil {
		return 0, 0, false
	}
	return int(p.cred.Uid), int(p.cred.Gid), true
}

// Chown gives path to the OS user when the agent runs as root (no-op
// otherwise).
func (p *Instance) Chown(path string) error { return p.chown(path) }

// EnsureDataDir creates the data directory (0700, owned by the OS user) or
// fixes the mode and owner of an existing one.
func (p *Instance) EnsureDataDir() error { return p.ensureDataDir() }

// DataDirEmpty reports whether the data directory is absent or empty.
func (p *Instance) DataDirEmpty() (bool, error) { return p.dataDirEmpty() }

// ToolOptions configure [Instance.StreamTool].
type ToolOptions struct {
	// Stdout receives the program's standard output; nil discards it.
	Stdout io.Writer
	// Login, when set, is handed to the program through a temporary 0600
	// PGPASSFILE owned by the OS user, removed afterwards.
	Login *Credentials
	// Env are extra environment variables (KEY=value).
	Env []string
	// Stdin, when set, is the program's standard input.
	Stdin io.Reader
}

// StreamTool runs the PostgreSQL program name from BinDir as the OS user
// (same environment rules as every program the Instance runs: no agent
// environment besides PATH, C locale, parent-death signal SIGKILL) with
// standard output streamed to o.Stdout. It returns the program's standard
// error (the last 16 KiB). ctx cancellation kills the program. Errors carry
// the last lines of standard error and never a password.
func (p *Instance) StreamTool(ctx context.Context, name string, args []string, o ToolOptions) (string, error) {
	env := append([]string(nil), o.Env...)
	if o.Login != nil {
		passfile, remove, err := p.writeSecretFile("pgpass", passfileLine(o.Login.Username, o.Login.Password))
		if err != nil {
			return "", fmt.Errorf("run %s: %w", name, err)
		}
		defer remove()
		env = append(env, "PGPASSFILE="+passfile)
	}
	cmd := exec.CommandContext(ctx, filepath.Join(p.cfg.BinDir, name), args...)
	cmd.Dir = "/"
	cmd.Env = p.env(env...)
	cmd.SysProcAttr = p.sysProcAttr()
	cmd.WaitDelay = 5 * time.Second
	errBuf := &tailBuffer{max: 16 << 10}
	cmd.Stderr = errBuf
	if o.Stdout != nil {
		cmd.Stdout = o.Stdout
	}
	if o.Stdin != nil {
		cmd.Stdin = o.Stdin
	}
	exited, err := startPinned(cmd)
	if err != nil {
		return "", fmt.Errorf("run %s: %w", name, err)
	}
	err = <-exited
	stderr := errBuf.String()
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		return stderr, fmt.Errorf("run %s: %w; output: %s", name, err, lastLines(stderr, 15))
	}
	return stderr, nil
}

// EnsureRole creates the LOGIN role name with password on the running
// primary, or updates an existing role's password and attributes, then
// grants it the given roles (e.g. pg_read_all_data). attrs are role options
// such as "REPLICATION". Statement logging is switched off for the session so
// the password never reaches the server log. Idempotent.
//
// Errors: ErrNotRunning; ErrWrongRole on a replica; the failed statement
// (without the password).
func (p *Instance) EnsureRole(ctx context.Context, role Credentials, attrs []string, grants []string) error {
	conn, err := p.connectRunning(ctx)
	if err != nil {
		return fmt.Errorf("ensure role %q: %w", role.Username, err)
	}
	defer closeConn(ctx, conn)
	rec, err := inRecovery(ctx, conn)
	if err != nil {
		return fmt.Errorf("ensure role %q: %w", role.Username, err)
	}
	if rec {
		return fmt.Errorf("ensure role %q: server is in recovery: %w", role.Username, ErrWrongRole)
	}
	for _, q := range []string{"SET log_statement = 'none'", "SET log_min_error_statement = 'panic'", "SET log_min_duration_statement = -1"} {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("ensure role %q: %s: %w", role.Username, q, err)
		}
	}
	for _, a := range attrs {
		if strings.ContainsFunc(a, func(r rune) bool { return !(r >= 'A' && r <= 'Z') }) {
			return fmt.Errorf("ensure role %q: invalid attribute %q", role.Username, a)
		}
	}
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", role.Username).Scan(&exists); err != nil {
		return fmt.Errorf("ensure role %q: look up: %w", role.Username, err)
	}
	verb := "CREATE"
	if exists {
		verb = "ALTER"
	}
	stmt := fmt.Sprintf("%s ROLE %s WITH LOGIN %s PASSWORD %s", verb, pgx.Identifier{role.Username}.Sanitize(),
		strings.Join(attrs, " "), quoteLiteral(role.Password))
	if _, err := conn.Exec(ctx, stmt); err != nil {
		return fmt.Errorf("ensure role %q: %s ROLE: %w", role.Username, verb, err)
	}
	for _, g := range grants {
		q := fmt.Sprintf("GRANT %s TO %s", pgx.Identifier{g}.Sanitize(), pgx.Identifier{role.Username}.Sanitize())
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("ensure role %q: %s: %w", role.Username, q, err)
		}
	}
	p.log.Info("role ensured", zap.String("role", role.Username), zap.Bool("created", !exists), zap.Strings("grants", grants))
	return nil
}

// RecoveryTarget describes a targeted recovery (point-in-time recovery) for
// [Instance.StartRecovery]. At most one of Time, LSN and Immediate is set;
// none means "replay all archived WAL".
type RecoveryTarget struct {
	// Time stops replay at the first commit after this instant
	// (recovery_target_time, inclusive).
	Time time.Time
	// LSN stops replay at this WAL position (recovery_target_lsn, inclusive).
	LSN string
	// Immediate stops as soon as a consistent state is reached, i.e. at the
	// end of the base backup (recovery_target = 'immediate').
	Immediate bool
	// RestoreCommand fetches archived WAL (restore_command, %f and %p).
	// Required.
	RestoreCommand string
}

func (t RecoveryTarget) settings() map[string]string {
	s := map[string]string{
		"restore_command":           t.RestoreCommand,
		"recovery_target_action":    "promote",
		"recovery_target_inclusive": "on",
		"recovery_target_timeline":  "latest",
	}
	switch {
	case !t.Time.IsZero():
		s["recovery_target_time"] = t.Time.UTC().Format("2006-01-02 15:04:05.999999") + "+00"
	case t.LSN != "":
		s["recovery_target_lsn"] = t.LSN
	case t.Immediate:
		s["recovery_target"] = "immediate"
	}
	return s
}

// StartRecovery starts the (restored, stopped) data directory in targeted
// recovery: postgresql.conf is rendered for a primary plus the recovery
// settings of t, recovery.signal is written, and PostgreSQL replays archived
// WAL up to the target, then promotes itself. StartRecovery waits, bounded
// by ctx, until the server accepts writes (pg_is_in_recovery() is false).
// Afterwards the configuration is re-rendered without the recovery settings.
//
// Errors: ErrNotInitialized; ErrAlreadyRunning; ErrPostmasterExited with
// the server log tail, e.g. when the target lies beyond the archived WAL
// ("recovery ended before configured recovery target was reached"); ctx's
// error.
func (p *Instance) StartRecovery(ctx context.Context, t RecoveryTarget) error {
	if t.RestoreCommand == "" {
		return errors.New("start recovery: RestoreCommand is required")
	}
	if !p.IsInitialized() {
		return fmt.Errorf("start recovery: %w", ErrNotInitialized)
	}
	p.mu.Lock()
	p.recovery = t.settings()
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.recovery = nil
		p.mu.Unlock()
	}()
	proc, err := p.spawn(RolePrimary, nil)
	if err != nil {
		return fmt.Errorf("start recovery: %w", err)
	}
	// Wait on pg_control, not SQL: a cluster restored from another
	// cluster's backup has that cluster's passwords (see ResetSuperuser).
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		if cd, err := p.ControlData(ctx); err == nil && cd.ClusterState == "in production" && p.pmReady() {
			if _, err := os.Stat(filepath.Join(p.cfg.DataDir, "recovery.signal")); errors.Is(err, os.ErrNotExist) {
				break
			}
		}
		select {
		case <-proc.done:
			tail, _ := readTail(p.cfg.LogFile, 4<<10)
			return fmt.Errorf("start recovery: %w (%v); last lines of %s:\n%s", ErrPostmasterExited, proc.err, p.cfg.LogFile, lastLines(tail, 20))
		case <-ctx.Done():
			return fmt.Errorf("start recovery: wait for promotion: %w", ctx.Err())
		case <-tick.C:
		}
	}
	p.mu.Lock()
	p.recovery = nil
	err = p.renderLocked(RolePrimary, "", p.syncNames)
	p.mu.Unlock()
	if err != nil {
		return fmt.Errorf("start recovery: %w", err)
	}
	p.log.Info("recovery finished, promoted", zap.String("target", fmt.Sprint(t.Time, t.LSN, t.Immediate)))
	return nil
}

// pmReady reports whether postmaster.pid says the postmaster is ready to
// accept connections (its status line, PM_STATUS_READY).
func (p *Instance) pmReady() bool {
	b, err := os.ReadFile(filepath.Join(p.cfg.DataDir, "postmaster.pid"))
	if err != nil {
		return false
	}
	lines := strings.Split(string(b), "\n")
	return len(lines) > 7 && strings.TrimSpace(lines[7]) == "ready"
}

// ResetSuperuser sets the superuser's password (creating the role if it
// does not exist) in the stopped data directory through single-user mode
// (`postgres --single`, no authentication, the statement on standard input,
// never in argv or the server log). A cluster restored from a backup keeps
// the source's roles; this makes it reachable with this Instance's
// credentials. Errors: ErrAlreadyRunning; postgres's failure.
func (p *Instance) ResetSuperuser(ctx context.Context) error {
	if p.Running() {
		return fmt.Errorf("reset superuser: %w", ErrAlreadyRunning)
	}
	su := p.cfg.Superuser
	id, lit := pgx.Identifier{su.Username}.Sanitize(), quoteLiteral(su.Password)
	stmt := fmt.Sprintf("DO $dbpilot$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %s) THEN ALTER ROLE %s WITH SUPERUSER LOGIN PASSWORD %s; ELSE CREATE ROLE %s WITH SUPERUSER LOGIN PASSWORD %s; END IF; END $dbpilot$;\n",
		quoteLiteral(su.Username), id, lit, id, lit)
	if _, err := p.StreamTool(ctx, "postgres", []string{"--single", "-D", p.cfg.DataDir, "-c", "log_statement=none", "-c", "log_min_error_statement=panic", "postgres"},
		ToolOptions{Stdin: strings.NewReader(stmt)}); err != nil {
		return fmt.Errorf("reset superuser: %w", err)
	}
	return nil
}

// QueryInt runs a query returning one int64 on the local server (as the
// superuser, database db) and returns it; for probes such as row counts.
func (p *Instance) QueryInt(ctx context.Context, db, query string) (int64, error) {
	conn, err := p.connectDB(ctx, db)
	if err != nil {
		return 0, fmt.Errorf("query %s: %w", db, err)
	}
	defer closeConn(ctx, conn)
	var n int64
	if err := conn.QueryRow(ctx, query).Scan(&n); err != nil {
		return 0, fmt.Errorf("query %s: %w", db, err)
	}
	return n, nil
}

// Databases lists the connectable databases other than template0/template1.
func (p *Instance) Databases(ctx context.Context) ([]string, error) {
	conn, err := p.Connect(ctx)
	if err != nil {
		return nil, fmt.Errorf("list databases: %w", err)
	}
	defer closeConn(ctx, conn)
	rows, err := conn.Query(ctx, "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname")
	if err != nil {
		return nil, fmt.Errorf("list databases: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list databases: %w", err)
	}
	return names, nil
}

func (p *Instance) connectDB(ctx context.Context, db string) (*pgx.Conn, error) {
	dsn := fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable connect_timeout=10 application_name=dbpilot",
		quoteConninfo(p.cfg.connectHost()), p.cfg.Port, quoteConninfo(p.cfg.Superuser.Username), quoteConninfo(db))
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse connection config: %w", err)
	}
	cfg.Password = p.cfg.Superuser.Password
	return pgx.ConnectConfig(ctx, cfg)
}

// SuperuserLogin returns the superuser credentials (for tools such as
// pg_amcheck run against this instance).
func (p *Instance) SuperuserLogin() Credentials { return p.cfg.Superuser }

// ConnArgs returns "-h host -p port -U user" for PostgreSQL client programs
// connecting to this instance as login.
func (p *Instance) ConnArgs(user string) []string {
	return []string{"-h", p.cfg.connectHost(), "-p", strconv.Itoa(p.cfg.Port), "-U", user, "--no-password"}
}

// WriteOwnedFile writes data to path atomically (temp file, fsync, rename),
// mode 0600 and owned by the OS user.
func (p *Instance) WriteOwnedFile(path string, data []byte) error {
	return p.writeFileAtomic(path, data, 0o600)
}
