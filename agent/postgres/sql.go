package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
)

// Connect opens a superuser connection to the local server over TCP
// (ListenAddress:Port, sslmode=disable, database postgres). The connect
// timeout is the time left on ctx, at most 10 s. The caller closes the
// connection.
func (p *Instance) Connect(ctx context.Context) (*pgx.Conn, error) {
	conn, err := p.connectTo(ctx, p.cfg.connectHost(), p.cfg.Port)
	if err != nil {
		return nil, fmt.Errorf("connect to local postgres: %w", err)
	}
	return conn, nil
}

// connectTo opens a superuser connection to host:port. The password is set
// on the parsed config, never put into a connection string.
func (p *Instance) connectTo(ctx context.Context, host string, port int) (*pgx.Conn, error) {
	timeout := 10
	if dl, ok := ctx.Deadline(); ok {
		s := int(math.Ceil(time.Until(dl).Seconds()))
		timeout = max(1, min(timeout, s))
	}
	dsn := fmt.Sprintf("host=%s port=%d user=%s dbname=postgres sslmode=disable connect_timeout=%d application_name=dbpilot",
		quoteConninfo(host), port, quoteConninfo(p.cfg.Superuser.Username), timeout)
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse connection config: %w", err)
	}
	cfg.Password = p.cfg.Superuser.Password
	return pgx.ConnectConfig(ctx, cfg)
}

// closeConn closes conn with a short bound that survives ctx's cancellation.
func closeConn(ctx context.Context, conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	conn.Close(ctx)
}

// connectRunning connects to the local server, returning ErrNotRunning if no
// postmaster is running.
func (p *Instance) connectRunning(ctx context.Context) (*pgx.Conn, error) {
	if !p.Running() {
		return nil, ErrNotRunning
	}
	return p.Connect(ctx)
}

func inRecovery(ctx context.Context, conn *pgx.Conn) (bool, error) {
	var rec bool
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&rec); err != nil {
		return false, fmt.Errorf("pg_is_in_recovery: %w", err)
	}
	return rec, nil
}

// Bootstrap prepares a freshly initialised, running primary: it creates the
// replication role (LOGIN REPLICATION with Config.Replication's password),
// or updates an existing role's attributes and password, so it is
// idempotent. Statement logging is switched off for the session so the
// password does not reach the server log even if the statement fails.
// Nothing to do if the replication user is the superuser.
//
// Errors: ErrNotRunning; ErrWrongRole on a replica.
func (p *Instance) Bootstrap(ctx context.Context) error {
	conn, err := p.connectRunning(ctx)
	if err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	defer closeConn(ctx, conn)
	rec, err := inRecovery(ctx, conn)
	if err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	if rec {
		return fmt.Errorf("bootstrap: server is in recovery: %w", ErrWrongRole)
	}
	repl := p.cfg.Replication
	if repl.Username == p.cfg.Superuser.Username {
		return nil
	}
	for _, q := range []string{
		"SET log_statement = 'none'",
		"SET log_min_error_statement = 'panic'",
		"SET log_min_duration_statement = -1",
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("bootstrap: %s: %w", q, err)
		}
	}
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", repl.Username).Scan(&exists); err != nil {
		return fmt.Errorf("bootstrap: look up role %q: %w", repl.Username, err)
	}
	verb := "CREATE"
	if exists {
		verb = "ALTER"
	}
	// Utility statements take no bind parameters; identifier and literal are quoted.
	stmt := fmt.Sprintf("%s ROLE %s WITH LOGIN REPLICATION PASSWORD %s",
		verb, pgx.Identifier{repl.Username}.Sanitize(), quoteLiteral(repl.Password))
	if _, err := conn.Exec(ctx, stmt); err != nil {
		return fmt.Errorf("bootstrap: %s replication role %q: %w", verb, repl.Username, err)
	}
	p.log.Info("replication role ensured", zap.String("role", repl.Username), zap.Bool("created", !exists))
	return nil
}

// Promote promotes the running replica with pg_promote(wait => true) and
// then verifies that pg_is_in_recovery() is false. The server-side wait is
// the time left on ctx, at most 60 s. Afterwards the configuration is
// re-rendered for a primary (no primary_conninfo, synchronous_standby_names
// as last set with SetSynchronousStandbys) and reloaded. A server that is
// already a primary is left alone (nil). See
// https://www.postgresql.org/docs/15/functions-admin.html#FUNCTIONS-RECOVERY-CONTROL.
//
// Note for pg_rewind against this node: its control file shows the new
// timeline only after the first checkpoint following promotion; Rewind
// issues that CHECKPOINT on the source itself.
func (p *Instance) Promote(ctx context.Context) error {
	start := time.Now()
	conn, release, err := p.localConn(ctx)
	if err != nil {
		return fmt.Errorf("promote: %w", err)
	}
	defer release()
	rec, err := inRecovery(ctx, conn)
	if err != nil {
		return fmt.Errorf("promote: %w", err)
	}
	wasReplica := rec
	if wasReplica {
		wait := 60
		if dl, ok := ctx.Deadline(); ok {
			wait = max(1, min(wait, int(time.Until(dl).Seconds())))
		}
		// pg_promote(wait => true) checks for the end of recovery only
		// every 100 ms (PostgreSQL's WAITS_PER_SECOND); signal without
		// waiting and poll every 10 ms instead: promotion is on the
		// critical path of every failover and switchover.
		var signalled bool
		if err := conn.QueryRow(ctx, "SELECT pg_promote(false)").Scan(&signalled); err != nil {
			return fmt.Errorf("promote: pg_promote: %w", err)
		}
		if !signalled {
			return fmt.Errorf("promote: pg_promote could not signal the startup process")
		}
		deadline := time.Now().Add(time.Duration(wait) * time.Second)
		for {
			if rec, err = inRecovery(ctx, conn); err != nil {
				return fmt.Errorf("promote: verify: %w", err)
			}
			if !rec {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("promote: still in recovery %d s after pg_promote", wait)
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("promote: %w", ctx.Err())
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	p.mu.Lock()
	p.role, p.conninfo = RolePrimary, ""
	err = p.renderLocked(RolePrimary, "", p.syncNames)
	p.mu.Unlock()
	if err != nil {
		return fmt.Errorf("promote: %w", err)
	}
	if err := reload(ctx, conn); err != nil {
		return fmt.Errorf("promote: %w", err)
	}
	if wasReplica {
		p.log.Info("postgres promoted", zap.Duration("took", time.Since(start)))
	} else {
		p.log.Info("promote: already a primary")
	}
	return nil
}

func reload(ctx context.Context, conn *pgx.Conn) error {
	if _, err := conn.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
		return fmt.Errorf("pg_reload_conf: %w", err)
	}
	return nil
}

// waitSetting polls SHOW name on conn every 20 ms until it equals want or
// ctx expires. After pg_reload_conf() the postmaster re-reads the files and
// signals the backends, which apply the change between statements.
func waitSetting(ctx context.Context, conn *pgx.Conn, name, want string) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		var got string
		if err := conn.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&got); err != nil {
			return fmt.Errorf("show %s: %w", name, err)
		}
		if got == want {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s to be reloaded: %w", name, ctx.Err())
		case <-tick.C:
		}
	}
}

// Follow points the replica at a new upstream. On a running replica it
// re-renders postgresql.conf with the new primary_conninfo and reloads it
// (primary_conninfo is reloadable since PostgreSQL 13: the WAL receiver
// restarts with the new settings; see
// https://www.postgresql.org/docs/15/runtime-config-replication.html#GUC-PRIMARY-CONNINFO),
// then waits until the server reports the new value. Before that it creates
// this node's replication slot on up if it is missing (best effort, at most
// 3 s; see [SlotName]), so the WAL receiver finds it on its first
// connection. On a stopped instance
// it only renders the replica configuration (if the data directory exists);
// the next Start renders again from its own arguments.
//
// Errors: ErrWrongRole if the running server is a primary (demoting needs a
// stop, possibly Rewind, and Start as a replica).
func (p *Instance) Follow(ctx context.Context, up Upstream) error {
	if err := validUpstream(&up); err != nil {
		return fmt.Errorf("follow: %w", err)
	}
	p.ensureUpstreamSlot(ctx, up)
	if !p.Running() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.role, p.conninfo = RoleReplica, p.cfg.primaryConninfo(up)
		if p.IsInitialized() {
			if err := p.renderLocked(RoleReplica, p.conninfo, p.syncNames); err != nil {
				return fmt.Errorf("follow %s: %w", up.Name, err)
			}
		}
		return nil
	}
	conn, release, err := p.localConn(ctx)
	if err != nil {
		return fmt.Errorf("follow %s: %w", up.Name, err)
	}
	defer release()
	rec, err := inRecovery(ctx, conn)
	if err != nil {
		return fmt.Errorf("follow %s: %w", up.Name, err)
	}
	if !rec {
		return fmt.Errorf("follow %s: running server is a primary: %w", up.Name, ErrWrongRole)
	}
	p.mu.Lock()
	p.role, p.conninfo = RoleReplica, p.cfg.primaryConninfo(up)
	err = p.renderLocked(RoleReplica, p.conninfo, p.syncNames)
	p.mu.Unlock()
	if err != nil {
		return fmt.Errorf("follow %s: %w", up.Name, err)
	}
	if err := reload(ctx, conn); err != nil {
		return fmt.Errorf("follow %s: %w", up.Name, err)
	}
	if err := waitSetting(ctx, conn, "primary_conninfo", p.cfg.primaryConninfo(up)); err != nil {
		return fmt.Errorf("follow %s: %w", up.Name, err)
	}
	p.log.Info("following new upstream", zap.String("upstream", up.Name),
		zap.String("upstream_host", up.Host), zap.Int("upstream_port", up.Port))
	return nil
}

// SetSynchronousStandbys sets synchronous_standby_names to a quorum of one
// among names (`ANY 1 ("n2","n3")`, see [SynchronousStandbyNames]), or to ""
// (asynchronous) for none. The value is kept for the lifetime of the
// Instance and rendered into every later configuration, whatever the role.
//
// On a running server it re-renders postgresql.conf, reloads it and waits
// until SHOW synchronous_standby_names reflects the change. On a primary
// that takes effect for the next commits. A standby ignores the setting, so
// setting it before Promote makes the very first commit after promotion
// wait for one of names. On a stopped instance the names are only
// remembered for the next Start.
//
// A running replica this Instance did not start keeps the primary_conninfo
// the server currently has. Errors: invalid names (see Config.NodeName);
// connection, reload or ctx errors.
func (p *Instance) SetSynchronousStandbys(ctx context.Context, names []string) error {
	for _, n := range names {
		if !validName(n) {
			return fmt.Errorf("set synchronous standbys: invalid node name %q", n)
		}
	}
	names = append([]string(nil), names...)
	want := SynchronousStandbyNames(names)
	if !p.Running() {
		p.mu.Lock()
		p.syncNames = names
		p.mu.Unlock()
		return nil
	}
	conn, release, err := p.localConn(ctx)
	if err != nil {
		return fmt.Errorf("set synchronous standbys: %w", err)
	}
	defer release()
	rec, err := inRecovery(ctx, conn)
	if err != nil {
		return fmt.Errorf("set synchronous standbys: %w", err)
	}
	p.mu.Lock()
	role, conninfo := p.role, p.conninfo
	p.mu.Unlock()
	if rec && role != RoleReplica {
		// Not started as a replica by us: keep what the server streams from.
		if err := conn.QueryRow(ctx, "SELECT current_setting('primary_conninfo')").Scan(&conninfo); err != nil {
			return fmt.Errorf("set synchronous standbys: read primary_conninfo: %w", err)
		}
	}
	role = RolePrimary
	if rec {
		role = RoleReplica
	} else {
		conninfo = ""
	}
	p.mu.Lock()
	p.syncNames, p.role, p.conninfo = names, role, conninfo
	err = p.renderLocked(role, conninfo, names)
	p.mu.Unlock()
	if err != nil {
		return fmt.Errorf("set synchronous standbys: %w", err)
	}
	if err := reload(ctx, conn); err != nil {
		return fmt.Errorf("set synchronous standbys: %w", err)
	}
	if err := waitSetting(ctx, conn, "synchronous_standby_names", want); err != nil {
		return fmt.Errorf("set synchronous standbys: %w", err)
	}
	p.log.Info("synchronous standbys set", zap.String("synchronous_standby_names", want), zap.String("role", string(role)))
	return nil
}

// Status is a snapshot of the local server as the HA loop needs it.
type Status struct {
	// Running: a postmaster process is alive for the data directory.
	Running bool
	// Accepting: a connection and SELECT 1 succeeded.
	Accepting bool
	// InRecovery: the server is a standby (pg_is_in_recovery()).
	InRecovery bool
	// Timeline is the current timeline: on a primary the timeline of the WAL
	// being written (from pg_walfile_name(pg_current_wal_lsn())), on a
	// replica the higher of the WAL receiver's received_tli and the latest
	// checkpoint's (restartpoint's) timeline.
	Timeline uint32
	// WriteLSN is pg_current_wal_lsn() on a primary.
	WriteLSN LSN
	// ReceiveLSN is pg_last_wal_receive_lsn() on a replica.
	ReceiveLSN LSN
	// ReplayLSN is pg_last_wal_replay_lsn() on a replica.
	ReplayLSN LSN
	// ReplayLagSeconds is how far replay is behind in time on a replica: 0
	// when everything received is replayed, otherwise now() minus
	// pg_last_xact_replay_timestamp(); -1 when unknown (nothing replayed
	// yet) and on a primary.
	ReplayLagSeconds float64
	// Streaming: the replica's WAL receiver status is "streaming".
	Streaming bool
	// UpstreamHost is pg_stat_wal_receiver.sender_host on a replica.
	UpstreamHost string
	// UpstreamPort is pg_stat_wal_receiver.sender_port on a replica.
	UpstreamPort int
	// Replicas are the primary's WAL senders (pg_stat_replication), sorted by name.
	Replicas []ReplicaStat
	// SyncStandbyNames is the current synchronous_standby_names.
	SyncStandbyNames string
}

// LSN returns the position that matters for failover: WriteLSN on a
// primary, the larger of ReceiveLSN and ReplayLSN on a replica, 0 if the
// server could not be queried.
func (s Status) LSN() LSN {
	if !s.Accepting {
		return 0
	}
	if !s.InRecovery {
		return s.WriteLSN
	}
	return max(s.ReceiveLSN, s.ReplayLSN)
}

// ReplicaStat is one row of the primary's pg_stat_replication; see
// https://www.postgresql.org/docs/15/monitoring-stats.html#MONITORING-PG-STAT-REPLICATION-VIEW.
type ReplicaStat struct {
	// Name is the standby's application_name (its node name).
	Name string
	// State is the WAL sender state, e.g. "streaming" or "catchup".
	State string
	// SyncState is "async", "potential", "sync" or "quorum".
	SyncState string
	// SentLSN, FlushLSN and ReplayLSN are the WAL positions sent to, flushed
	// by and replayed on the standby (0 if unknown).
	SentLSN, FlushLSN, ReplayLSN LSN
}

// statusQuery reads in one round trip what every HA cycle needs from a
// primary: recovery state, synchronous_standby_names, the WAL write
// position with its WAL file name (for the timeline) and
// pg_stat_replication as a JSON array of [application_name, state,
// sync_state, sent_lsn, flush_lsn, replay_lsn] rows. The CASE arms run
// only on a primary (pg_current_wal_lsn() fails during recovery; a server
// never goes back into recovery while running).
const statusQuery = `SELECT r, ssn,
	CASE WHEN r THEN NULL ELSE (SELECT l::text || ' ' || pg_walfile_name(l) FROM pg_current_wal_lsn() AS l) END,
	CASE WHEN r THEN NULL ELSE (SELECT coalesce(json_agg(json_build_array(
		coalesce(application_name, ''), coalesce(state, ''), coalesce(sync_state, ''),
		sent_lsn::text, flush_lsn::text, replay_lsn::text) ORDER BY application_name), '[]')::text
		FROM pg_stat_replication) END
	FROM (SELECT pg_is_in_recovery() AS r, current_setting('synchronous_standby_names') AS ssn) AS s`

// Status observes the local server over a pooled connection; every query
// is bounded by ctx: one round trip on a primary (statusQuery), two on a
// replica. If no postmaster is running it returns Status{} and nil.
// If one is running but cannot be queried (starting up, shutting down, wrong
// password) it returns what it could observe (at least Running: true,
// Accepting reports whether the connection worked) together with the error.
func (p *Instance) Status(ctx context.Context) (Status, error) {
	st := Status{Running: p.Running()}
	if !st.Running {
		return st, nil
	}
	conn, release, err := p.localConn(ctx)
	if err != nil {
		return st, fmt.Errorf("status: %w", err)
	}
	defer release()
	var walPos, replicas *string
	if err := conn.QueryRow(ctx, statusQuery).Scan(&st.InRecovery, &st.SyncStandbyNames, &walPos, &replicas); err != nil {
		return st, fmt.Errorf("status: %w", err)
	}
	st.Accepting = true
	if st.InRecovery {
		err = replicaStatus(ctx, conn, &st)
	} else {
		err = primaryStatus(walPos, replicas, &st)
	}
	if err != nil {
		return st, fmt.Errorf("status: %w", err)
	}
	return st, nil
}

// primaryStatus fills st from statusQuery's WAL position ("LSN walfile")
// and replication rows.
func primaryStatus(walPos, replicas *string, st *Status) error {
	if walPos == nil || replicas == nil {
		return errors.New("primary status: no WAL position or pg_stat_replication read")
	}
	lsn, walfile, _ := strings.Cut(*walPos, " ")
	var err error
	if st.WriteLSN, err = ParseLSN(lsn); err != nil {
		return err
	}
	if len(walfile) < 8 {
		return fmt.Errorf("unexpected WAL file name %q", walfile)
	}
	tli, err := strconv.ParseUint(walfile[:8], 16, 32)
	if err != nil {
		return fmt.Errorf("timeline from WAL file name %q: %w", walfile, err)
	}
	st.Timeline = uint32(tli)

	var rows [][6]*string
	if err := json.Unmarshal([]byte(*replicas), &rows); err != nil {
		return fmt.Errorf("pg_stat_replication: %w", err)
	}
	for _, row := range rows {
		var r ReplicaStat
		r.Name, r.State, r.SyncState = deref(row[0]), deref(row[1]), deref(row[2])
		if r.SentLSN, err = parseNullLSN(row[3]); err != nil {
			return err
		}
		if r.FlushLSN, err = parseNullLSN(row[4]); err != nil {
			return err
		}
		if r.ReplayLSN, err = parseNullLSN(row[5]); err != nil {
			return err
		}
		st.Replicas = append(st.Replicas, r)
	}
	return nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func replicaStatus(ctx context.Context, conn *pgx.Conn, st *Status) error {
	var (
		receive, replay, status, host *string
		port, recvTLI                 *int32
		ckptTLI                       int32
		lagSeconds                    *float64
	)
	err := conn.QueryRow(ctx, `SELECT pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text,
		(SELECT timeline_id FROM pg_control_checkpoint()),
		r.status, r.sender_host, r.sender_port, r.received_tli,
		CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
		     ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8 END
		FROM (SELECT 1) AS one LEFT JOIN pg_stat_wal_receiver AS r ON true`,
	).Scan(&receive, &replay, &ckptTLI, &status, &host, &port, &recvTLI, &lagSeconds)
	if err != nil {
		return fmt.Errorf("replica status: %w", err)
	}
	if st.ReceiveLSN, err = parseNullLSN(receive); err != nil {
		return err
	}
	if st.ReplayLSN, err = parseNullLSN(replay); err != nil {
		return err
	}
	st.Timeline = uint32(ckptTLI)
	if recvTLI != nil && uint32(*recvTLI) > st.Timeline {
		st.Timeline = uint32(*recvTLI)
	}
	st.Streaming = status != nil && *status == "streaming"
	st.ReplayLagSeconds = -1
	if lagSeconds != nil {
		st.ReplayLagSeconds = max(*lagSeconds, 0)
	}
	if host != nil {
		st.UpstreamHost = *host
	}
	if port != nil {
		st.UpstreamPort = int(*port)
	}
	return nil
}

func parseNullLSN(s *string) (LSN, error) {
	if s == nil {
		return 0, nil
	}
	return ParseLSN(*s)
}
